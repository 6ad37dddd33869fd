"""The prompts ptdata sends to teacher and judge models, written for this project.

Judges answer with one JSON object; every section a parser or a scripted test server must
find is fenced by a fixed marker line, so answers and conversations never bleed together.
"""
from __future__ import annotations

ASPECTS = {
    "helpfulness": "Does the answer address the user's request completely and usefully?",
    "truthfulness": "Are its statements factually correct, with nothing invented or misleading?",
    "harmlessness": "Is it free of unsafe, unethical, hateful or dangerous content?",
    "instruction_following": "Does it obey every explicit instruction and constraint (format, length, language, style)?",
}

JUDGE_SYSTEM = "You are a strict and fair evaluator of AI assistant answers. You answer only with JSON."


def render_conversation(messages: list[dict]) -> str:
    return "\n\n".join(f"[{m['role']}]\n{m.get('content') or ''}" for m in messages)


def aspect_prompt(context: list[dict], answer: str, aspects: list[str]) -> str:
    listing = "\n".join(f"- {a}: {ASPECTS.get(a, 'Rate this aspect of the answer.')}" for a in aspects)
    form = ", ".join(f'"{a}": {{"rating": <1-5>, "rationale": "<one sentence>"}}' for a in aspects)
    return (
        "Rate the final assistant answer below on each aspect, from 1 (very poor) to 5 (excellent).\n\n"
        f"Aspects:\n{listing}\n\n"
        f"### Conversation\n{render_conversation(context)}\n### End of conversation\n\n"
        f"### Answer to rate\n{answer}\n### End of answer\n\n"
        f"Reply with exactly one JSON object and nothing else: {{{form}}}"
    )


def complexity_prompt(instruction: str) -> str:
    return (
        "Rate how complex the instruction below is to carry out well, from 1 (trivial: a single fact or a copy) "
        "to 6 (very demanding: many constraints, several reasoning steps, expert knowledge).\n\n"
        f"### Instruction\n{instruction}\n### End of instruction\n\n"
        'Reply with exactly one JSON object and nothing else: {"complexity": <1-6>}'
    )


def quality_prompt(instruction: str, answer: str) -> str:
    return (
        "Rate the quality of the answer to the instruction below, from 1 (wrong, useless or unsafe) to 6 "
        "(correct, complete, precise, well organized and informative).\n\n"
        f"### Instruction\n{instruction}\n### End of instruction\n\n"
        f"### Answer to rate\n{answer}\n### End of answer\n\n"
        'Reply with exactly one JSON object and nothing else: {"quality": <1-6>}'
    )


def pairwise_prompt(context: list[dict], first: str, second: str) -> str:
    return (
        "Compare the two answers to the conversation below and decide which one is better overall "
        "(helpful, correct, harmless, follows the instructions). Judge the content, not the order or the length.\n\n"
        f"### Conversation\n{render_conversation(context)}\n### End of conversation\n\n"
        f"### Answer A\n{first}\n### End of answer A\n\n"
        f"### Answer B\n{second}\n### End of answer B\n\n"
        'Reply with exactly one JSON object and nothing else: {"winner": "A" | "B" | "tie", "rationale": "<one sentence>"}'
    )


def consistency_prompt(messages: list[dict]) -> str:
    turns = []
    k = 0
    for m in messages:
        if m["role"] == "assistant":
            k += 1
            turns.append(f"[assistant turn {k}]\n{m.get('content') or ''}")
        else:
            turns.append(f"[{m['role']}]\n{m.get('content') or ''}")
    body = "\n\n".join(turns)
    return (
        "Read the conversation below. Does any later assistant turn contradict a fact, number, decision or "
        "statement made in an earlier assistant turn (without acknowledging a correction)?\n\n"
        f"### Conversation\n{body}\n### End of conversation\n\n"
        'Reply with exactly one JSON object and nothing else: {"consistent": true | false, '
        '"turn": <number of the first contradicting assistant turn, or null>, "explanation": "<one sentence>"}'
    )


EVOL_METHODS = {
    "constraints": "Add exactly one more constraint or requirement to it.",
    "deepen": "If it asks about a specific issue, increase the depth and breadth of what it asks.",
    "concretize": "Replace general concepts in it with more specific ones.",
    "reasoning": "If it can be solved with a few simple steps, rewrite it so that it explicitly needs several "
                 "steps of reasoning.",
    "complicate_input": "Add a concrete input for it to work on (a table, a code snippet, data or a short passage) "
                        "in a suitable format.",
}
EVOL_BREADTH = "breadth"

EVOL_TEMPLATE_MARKERS = ("#Given Instruction#", "#Rewritten Instruction#", "#New Instruction#", "Given Instruction",
                         "Rewritten Instruction", "New Instruction", "given instruction", "rewritten instruction",
                         "I want you to act as")


def evol_prompt(method: str, instruction: str) -> str:
    if method == EVOL_BREADTH:
        return (
            "I want you to act as an instruction creator. Draw inspiration from the given instruction to create a "
            "brand-new instruction in the same domain, but rarer. It should be of similar length and difficulty, "
            "and reasonable: a human must be able to understand and answer it. Write only the new instruction.\n\n"
            f"#Given Instruction#:\n{instruction}\n\n#New Instruction#:\n"
        )
    return (
        "I want you to act as an instruction rewriter. Rewrite the given instruction into a more complex version "
        "that well-known AI assistants would find harder to handle, while a human can still understand and answer "
        f"it. {EVOL_METHODS[method]} Keep any non-text part (tables, code) of the given instruction. The rewritten "
        "instruction may add only 10 to 20 words. Write only the rewritten instruction.\n\n"
        f"#Given Instruction#:\n{instruction}\n\n#Rewritten Instruction#:\n"
    )


def rewrite_prompt(context: list[dict], answer: str) -> str:
    return (
        "Improve the answer below to the conversation. Fix every factual or logical error, make it more precise "
        "and informative (add the key facts, definitions, steps or examples an expert would give), keep every "
        "instruction of the user (format, length, language), and remove filler. Write only the improved answer.\n\n"
        f"### Conversation\n{render_conversation(context)}\n### End of conversation\n\n"
        f"### Answer to improve\n{answer}\n### End of answer\n"
    )
