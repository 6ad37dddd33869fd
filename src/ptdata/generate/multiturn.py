"""Multi-turn construction: a simulated user and a teacher extend seeds into conversations,
checked turn by turn.

Three ways to get the user turns, one loop for everything else:
- `simulate` (UltraChat / Baize style, with PersonaHub personas): a user model is given a
  persona, a goal and the history, and writes the next user turn in one of a mix of follow-up
  styles (clarify, go deeper, apply to a new case, challenge, switch to a related task), or
  says the goal is reached;
- `magpie`: an aligned model is given only its chat template's user prefix after the history
  (raw completion) and writes the user turn itself (Magpie, Xu et al. 2024);
- `shard`: a fully specified instruction is split into shards the user reveals one per turn
  (Laban et al., arXiv 2505.06120), the teacher answering with the whole history each time.

The assistant (teacher) always answers with the whole history. Every conversation advances one
exchange per round, all conversations of a batch together (each round's requests run concurrently
and go through the disk cache, so a rerun makes no calls). After each new exchange the checks
run: structural validation, repetition against earlier turns (n-gram containment), coherence of
the new user turn (its embedding similarity to the history, and a judge), drift from the seed
(embedding distance), and consistency of the new answer with the earlier ones (the consistency
judge, on every new turn); the judges are asked only about turns the cheap checks passed. A failed check cuts the conversation back to its last good exchange
when that still has `min_turns` exchanges, else rejects it with the reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import orjson
import xxhash

from ..errors import InputError, RecordError
from ..llm import Backend, Request, Sampling
from ..ops.base import Drop
from ..records import Record
from ..text import is_cjk, shingles
from ..validation import validate
from . import prompts as P
from .ask import ask, judge_messages
from .parse import AnswerError, extract_json, parse_consistency

Outcome = tuple[list[Record], list[tuple[Record, Drop]]]
METHODS = ("simulate", "magpie", "shard")
GOAL_REACHED = "GOAL_REACHED"

STYLES = {
    "clarify": ("Ask the assistant to clarify one specific thing in its last answer that was unclear, ambiguous or "
                "too brief for you.",
                "请助手澄清它上一个回答中某个让你不清楚、有歧义或过于简略的具体地方。"),
    "deeper": ("Go deeper into what the assistant just said: ask about the mechanism, the reasons, an edge case or the "
               "next level of detail.",
               "就助手刚才说的内容深入追问：问它的原理、原因、某个边界情况或更深一层的细节。"),
    "apply": ("Apply what the assistant said to a new concrete case of your own (your data, your situation, another "
              "example) and ask how it works there.",
              "把助手所说的内容应用到你自己的一个新的具体情况（你的数据、你的处境或另一个例子），问它在那里怎么做。"),
    "challenge": ("Challenge or correct the assistant: point out a possible mistake, a missing case or a doubtful claim "
                  "in its last answer and ask it to reconsider.",
                  "质疑或纠正助手：指出它上一个回答中可能的错误、遗漏的情况或可疑的说法，请它重新考虑。"),
    "switch": ("Switch to a closely related task that builds on this conversation (for example the same thing in "
               "another library, language or setting).",
               "转到一个与本次对话紧密相关、并以它为基础的任务（例如在另一个库、语言或场景中做同样的事）。"),
}
OPEN = ("Write your first message to the assistant: one specific question or task about the topic.",
        "写下你给助手的第一条消息：关于这个话题的一个具体问题或任务。")


@dataclass
class Checks:
    """Bounds of the per-turn checks; a value of None turns a check off."""
    max_repetition: float | None = 0.6       # n-gram containment of a new turn in the earlier turns of its role
    min_history_similarity: float | None = 0.15  # embedding cosine of the new user turn with the history
    max_drift: float | None = 0.85           # 1 - cosine of the new exchange with the seed exchange
    coherence_judge: bool = True
    consistency_judge: bool = True


@dataclass
class Settings:
    method: str = "simulate"
    turns: int = 3                            # user turns in the finished conversation, seed turns included
    min_turns: int = 2                        # a conversation cut back below this is rejected
    styles: dict[str, float] = field(default_factory=lambda: {s: 1.0 for s in STYLES})
    personas: list[str] = field(default_factory=list)
    seed: int = 0
    retries: int = 2                          # judge re-asks
    system: str = ""                          # the assistant's system prompt, if any
    checks: Checks = field(default_factory=Checks)
    # magpie: the history rendered by the user model's chat template, up to where a user message starts
    magpie_prefix: Callable[[list[dict]], str] | None = None
    magpie_stop: tuple[str, ...] = ()          # the template's end-of-turn text


def load_personas(path: str) -> list[str]:
    """One persona per line: PersonaHub's JSONL (`{"persona": …}`) or plain text. Blank lines skipped."""
    out = []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read personas ({e})") from None
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("{"):
            try:
                d = orjson.loads(s)
            except orjson.JSONDecodeError:
                raise InputError(f"{path}:{n}: not a JSON object") from None
            p = d.get("persona") if isinstance(d, dict) else None
            if not isinstance(p, str) or not p.strip():
                raise InputError(f"{path}:{n}: a persona row needs a non-empty \"persona\" string")
            s = p.strip()
        out.append(s)
    if not out:
        raise InputError(f"{path}: no personas")
    return out


def _draw(key: str, seed: int) -> int:
    return xxhash.xxh3_64_intdigest(f"{seed}\x00{key}".encode())


def pick_persona(personas: list[str], seed_id: str, seed: int) -> str | None:
    return personas[_draw(seed_id, seed) % len(personas)] if personas else None


def pick_style(styles: dict[str, float], seed_id: str, turn: int, seed: int) -> str:
    """A follow-up style drawn by weight, reproducibly from (seed id, turn, seed)."""
    names = sorted(k for k, w in styles.items() if w > 0)
    if not names:
        raise InputError("styles: give at least one follow-up style a weight above 0")
    total = sum(styles[k] for k in names)
    x = (_draw(f"{seed_id}\x00{turn}", seed) % 1_000_000) / 1_000_000 * total
    for k in names:
        x -= styles[k]
        if x < 0:
            return k
    return names[-1]


# --- the conversation state -------------------------------------------------------------------


@dataclass
class Conversation:
    seed: Record
    messages: list[dict]
    zh: bool
    goal: str
    persona: str | None
    shards: list[str] | None = None
    styles: list[str] = field(default_factory=list)  # per user turn: seed, open, a follow-up style, magpie, shard
    checks: list[dict] = field(default_factory=list)        # per new exchange
    good: int = 0              # messages through the last exchange that passed every check
    done: str | None = None    # why it stopped: turns, goal_reached, cut:<reason>, or a reject reason
    drop: Drop | None = None

    @property
    def exchanges(self) -> int:
        return sum(m["role"] == "user" for m in self.messages)


def seed_conversation(rec: Record, s: Settings) -> Conversation:
    """The history a seed starts with: an sft record's turns, a prompt's (answered first), a
    preference record's prompt and chosen side, or nothing but a topic (`meta.topic`)."""
    topic = rec.meta.get("topic")
    if rec.kind == "prompt" and isinstance(topic, str) and topic.strip():
        # a topic seed: nothing said yet (a system turn kept). Only a prompt: an sft or preference
        # record that carries a `meta.topic` label is a conversation to continue, not to discard
        msgs = [dict(m) for m in rec.messages if m["role"] == "system"]
        if s.method == "magpie" and not msgs and not s.system:  # Magpie's steer: the topic in the system prompt
            zh_topic = is_cjk(topic)
            msgs = [{"role": "system", "content": f"你是一个乐于助人的助手。用户想了解：{topic}" if zh_topic
                     else f"You are a helpful assistant. The user wants help with: {topic}."}]
    elif rec.kind == "preference":
        msgs = [dict(m) for m in rec.messages] + [dict(m) for m in rec.chosen or []]
    else:
        msgs = [dict(m) for m in rec.messages]
    first_user = next((m.get("content") or "" for m in msgs if m["role"] == "user"), "")
    text = first_user or topic or ""
    zh = is_cjk(text)
    goal = (f"得到关于这个问题的完整、可用的帮助：{text}" if zh else f"get complete, usable help with: {text}") \
        if first_user else (f"了解并解决与“{topic}”有关的一个实际问题" if zh else f"learn about and solve a real problem about: {topic}")
    return Conversation(rec, msgs, zh, goal, pick_persona(s.personas, rec.id, s.seed),
                        styles=["seed"] * sum(m["role"] == "user" for m in msgs))


def _transcript(msgs: list[dict], zh: bool) -> str:
    names = {"user": "用户" if zh else "User", "assistant": "助手" if zh else "Assistant", "system": "System",
             "tool": "Tool"}
    return "\n\n".join(f"[{names.get(m['role'], m['role'])}]\n{m.get('content') or ''}" for m in msgs)


def user_prompt(c: Conversation, style: str) -> list[dict]:
    """The user simulator's request: persona, goal, history, the style of the next turn."""
    zh = c.zh
    idx = 1 if zh else 0
    how = STYLES[style][idx] if style in STYLES else OPEN[idx]
    if zh:
        system = ("你在扮演一位正在和 AI 助手对话的真实用户。只写用户的下一条消息，不要写助手的回答，不要解释。"
                  + (f"\n你的身份：{c.persona}" if c.persona else "") + f"\n你的目标：{c.goal}")
        user = ((f"### 到目前为止的对话\n{_transcript(c.messages, zh)}\n### 对话结束\n\n" if c.messages else "")
                + f"下一条消息的写法：{how}\n消息必须接着上面的对话（提到助手说过的内容），不能重复已经问过的问题，"
                "用中文写一到三句话。如果你的目标已经完全达到、你会结束对话，就只回复 " + GOAL_REACHED + "。")
    else:
        system = ("You are role-playing a real human user talking to an AI assistant. Write only the user's next "
                  "message: no assistant reply, no explanation." + (f"\nWho you are: {c.persona}" if c.persona else "")
                  + f"\nYour goal: {c.goal}")
        user = ((f"### Conversation so far\n{_transcript(c.messages, zh)}\n### End of conversation\n\n" if c.messages else "")
                + f"How to write the next message: {how}\nIt must build on the conversation above (refer to what the "
                "assistant said) and must not repeat a question already asked. Write one to three sentences, in the "
                f"language of the conversation. If your goal is fully reached and you would end the conversation, "
                f"reply with exactly {GOAL_REACHED} instead.")
    return judge_messages(system, user)


_LEAD = re.compile(r"^\s*(?:\[?(?:user|用户|human)\]?\s*[:：]\s*|\[(?:user|用户)\]\s*)", re.I)


def parse_user_turn(text: str) -> str | None:
    """The user simulator's message, without a role label or wrapping quotes; None: goal reached.
    Raises AnswerError for an empty message."""
    t = text.strip()
    if t.strip("*`'\" .") == GOAL_REACHED:
        return None
    t = _LEAD.sub("", t).strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'“”":
        t = t[1:-1].strip()
    if t.startswith("“") and t.endswith("”"):
        t = t[1:-1].strip()
    if not t:
        raise AnswerError("user_turn_empty", "the user simulator wrote an empty message")
    if GOAL_REACHED in t:
        t = t.replace(GOAL_REACHED, "").strip()
        if not t:
            return None
    return t


def shard_prompt(instruction: str, zh: bool) -> list[dict]:
    if zh:
        user = ("把下面这个完整的指令拆成若干“分片”，让用户在多轮对话中逐步透露需求：第一个分片只说出核心请求（简短、不完整），"
                "之后每个分片补充且只补充一个原指令中的要求或细节；所有分片合起来必须包含原指令的全部信息，不能添加新要求。"
                "每个分片用用户的口吻写。\n\n### 指令\n" + instruction + "\n### 指令结束\n\n"
                '只回复一个 JSON 对象：{"shards": ["…", "…"]}')
    else:
        user = ("Split the fully specified instruction below into shards that a user reveals over several turns: the "
                "first shard states only the core request (short and underspecified), each later shard adds exactly "
                "one requirement or detail of the original; together the shards must carry all of the original's "
                "information and add nothing new. Write each shard in the user's voice.\n\n### Instruction\n"
                f"{instruction}\n### End of instruction\n\n"
                'Reply with exactly one JSON object and nothing else: {"shards": ["...", "..."]}')
    return judge_messages(P.JUDGE_SYSTEM, user)


def parse_shards(text: str, most: int) -> list[str]:
    d = extract_json(text)
    sh = d.get("shards")
    if not isinstance(sh, list) or not all(isinstance(x, str) and x.strip() for x in sh):
        raise AnswerError("shards_malformed", "shards must be a list of non-empty strings")
    if len(sh) < 2:
        raise AnswerError("shards_malformed", f"an instruction split into {len(sh)} shard(s) is not a conversation")
    if len(sh) > most:  # more shards than turns: the last turn gets the rest
        sh = sh[:most - 1] + [" ".join(sh[most - 1:])]
    return [x.strip() for x in sh]


def coherence_prompt(msgs: list[dict], zh: bool) -> list[dict]:
    *history, last = msgs
    user = ("Read the conversation and the user's latest message. Does the latest message follow from the "
            "conversation: does it refer to and depend on what was said before, so that it could not be understood "
            "or answered as well without the history?\n\n"
            f"### Conversation\n{_transcript(history, zh)}\n### End of conversation\n\n"
            f"### Latest user message\n{last.get('content') or ''}\n### End of message\n\n"
            'Reply with exactly one JSON object and nothing else: {"coherent": true | false, '
            '"explanation": "<one sentence>"}')
    return judge_messages(P.JUDGE_SYSTEM, user)


def parse_coherence(text: str) -> tuple[bool, str]:
    d = extract_json(text)
    c = d.get("coherent")
    if not isinstance(c, bool):
        raise AnswerError("judge_bad_verdict", f"coherent must be true or false, got {c!r}")
    e = d.get("explanation", "")
    return c, e if isinstance(e, str) else ""


SENTINEL = "\x00ptdata-user-turn\x00"


def magpie_renderer(template: str, user: Backend) -> tuple[Callable[[list[dict]], str], tuple[str, ...]]:
    """(history -> the text an aligned model continues with a user message, the end-of-turn text).

    The history plus a sentinel user message is rendered with the chat template and cut at the
    sentinel, so the prefix is exactly what the template puts before a user's words (a default
    system prompt included, as Magpie's pre-query template has it); what the template puts after
    them, up to its first newline, is where the user turn ends."""
    if template:
        from ..export.tokenize import load_tokenizer

        tok = load_tokenizer(template)
    else:
        tok = getattr(user, "tokenizer", None)
        if tok is None:
            raise InputError("magpie needs the user model's chat template: magpie_template (qwen, qwen2.5, qwen3 or a "
                             "tokenizer directory)")

    def render(history: list[dict]) -> str:
        msgs = [{k: m[k] for k in ("role", "content", "tool_calls", "tool_call_id", "name") if k in m} for m in history]
        text = tok.apply_chat_template(msgs + [{"role": "user", "content": SENTINEL}], tokenize=False)
        return text[:text.index(SENTINEL)]

    probe = tok.apply_chat_template([{"role": "user", "content": SENTINEL}], tokenize=False)
    end = probe[probe.index(SENTINEL) + len(SENTINEL):].split("\n")[0].strip()
    return render, ((end,) if end else ())


# --- checks that need no model ------------------------------------------------------------------


def containment(new: str, earlier: list[str]) -> float:
    """Share of the new turn's 3-gram shingles (characters for CJK text, words otherwise) found in
    any earlier turn: 1.0 is a turn that says again what was said."""
    a = set(shingles(new, word_n=3, char_n=3))
    if not a or not earlier:
        return 0.0
    return max(len(a & set(shingles(t, word_n=3, char_n=3))) / len(a) for t in earlier)


Embed = Callable[[list[str]], np.ndarray]


# --- the loop -------------------------------------------------------------------------------------


class Builder:
    """Extends a batch of seeds; one instance per op and process (the backends are built once)."""

    def __init__(self, settings: Settings, assistant: Backend, user: Backend, judge: Backend,
                 sampling: Sampling, user_sampling: Sampling, judge_sampling: Sampling, embed: Embed | None) -> None:
        if settings.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}")
        if settings.method == "magpie" and settings.magpie_prefix is None:
            raise InputError("method magpie needs the user model's chat template (magpie_template)")
        if settings.method == "simulate" and not any(w > 0 for w in settings.styles.values()):
            raise InputError("styles: give at least one follow-up style a weight above 0")
        self.s, self.assistant, self.user, self.judge = settings, assistant, user, judge
        self.sampling, self.user_sampling, self.judge_sampling, self.embed = sampling, user_sampling, judge_sampling, embed

    def run(self, batch: list[Record]) -> Outcome:
        convs = [seed_conversation(r, self.s) for r in batch]
        if self.s.method == "magpie" and self.s.system:  # the user model sees the system prompt the answers get
            for c in convs:
                c.messages = [{"role": "system", "content": self.s.system}] + [m for m in c.messages if m["role"] != "system"]
        for c in convs:
            users = c.exchanges
            if self.s.method == "shard" and users != 1:
                self._reject(c, "not_single_turn", f"sharding splits one fully specified instruction; the seed has "
                             f"{users} user turns")
            elif self.s.method != "shard" and users >= self.s.turns:
                self._reject(c, "seed_has_enough_turns", f"the seed has {users} user turns; turns is {self.s.turns}")
        if self.s.method == "shard":
            self._shard([c for c in convs if c.done is None])
        # a seed that ends with a user turn (a prompt) is answered first: that exchange is the seed's
        self._answer([c for c in convs if c.done is None and c.messages and c.messages[-1]["role"] == "user"])
        for c in convs:
            if c.done is None:
                c.good = len(c.messages)
        while active := [c for c in convs if c.done is None]:
            self._next_user(active)
            self._answer([c for c in active if c.done is None])
            self._check([c for c in active if c.done is None])
            for c in active:
                if c.done is None and c.exchanges >= self.target(c):
                    c.done = "turns"
        return self._finish(convs)

    def target(self, c: Conversation) -> int:
        return len(c.shards) if c.shards is not None else self.s.turns

    def _next_user(self, convs: list[Conversation]) -> None:
        if self.s.method == "shard":
            for c in convs:
                c.messages.append({"role": "user", "content": c.shards[c.exchanges]})
                c.styles.append("shard")
            return
        if self.s.method == "magpie":
            styles = ["magpie"] * len(convs)
            stop = self.s.magpie_stop or None
            sampling = Sampling(**{**self.user_sampling.__dict__, "stop": stop})
            results = self.user.generate([Request([], sampling, prompt=self.s.magpie_prefix(c.messages), tag=c.seed.id)
                                          for c in convs])
        else:
            styles = [pick_style(self.s.styles, c.seed.id, c.exchanges, self.s.seed) if c.messages else "open"
                      for c in convs]
            results = self.user.generate([Request(user_prompt(c, st), self.user_sampling, tag=c.seed.id)
                                          for c, st in zip(convs, styles)])
        for c, st, res in zip(convs, styles, results):
            if not res.ok:
                self._stop(c, f"llm_{res.error}", f"user simulator: {res.detail}")
                continue
            if res.samples[0].finish_reason == "length":
                self._stop(c, "truncated_user_turn", "the user simulator's message hit the token limit")
                continue
            text = res.text
            if self.s.method == "magpie":  # a server that ignored `stop`: the turn ends at the template's end of turn
                for stop_text in self.s.magpie_stop:
                    text = text.split(stop_text, 1)[0]
            try:
                turn = parse_user_turn(text)
            except AnswerError as e:
                self._stop(c, e.reason, e.detail)
                continue
            if turn is None:
                self._stop(c, "goal_reached", "the user simulator said the goal is reached")
                continue
            c.messages.append({"role": "user", "content": turn})
            c.styles.append(st)

    def _answer(self, convs: list[Conversation]) -> None:
        if not convs:
            return
        system = [{"role": "system", "content": self.s.system}] if self.s.system else []
        results = self.assistant.generate([Request(system + [m for m in c.messages if not (system and m["role"] == "system")],
                                                   self.sampling, tag=c.seed.id) for c in convs])
        for c, res in zip(convs, results):
            if not res.ok:
                self._stop(c, f"llm_{res.error}", f"assistant: {res.detail}")
            elif not res.text.strip():
                self._stop(c, "empty_answer", "the assistant wrote an empty answer")
            elif res.samples[0].finish_reason == "length":
                self._stop(c, "truncated_answer", "the assistant's answer hit the token limit")
            else:
                c.messages.append({"role": "assistant", "content": res.text.strip()})

    def _check(self, convs: list[Conversation]) -> None:
        """Every check on the newest exchange of each conversation; the first failure stops it.
        An exchange with nothing before it (a topic's opening) gets the structural check only."""
        if not convs:
            return
        ck = self.s.checks
        results = {id(c): {"turn": c.exchanges, "style": c.styles[-1]} for c in convs}
        failed: dict[int, tuple[str, str]] = {}
        later = [c for c in convs if c.exchanges > 1]

        def fail(c: Conversation, reason: str, detail: str) -> None:
            failed.setdefault(id(c), (reason, detail))

        for c in convs:
            try:
                validate(Record("sft", c.messages))
            except RecordError as e:
                fail(c, e.reason, e.detail)
        for c in later:
            user, answer = c.messages[-2]["content"], c.messages[-1]["content"]
            rep = max(containment(user, [m["content"] for m in c.messages[:-2] if m["role"] == "user"]),
                      containment(answer, [m["content"] for m in c.messages[:-2] if m["role"] == "assistant"]))
            results[id(c)]["repetition"] = round(rep, 4)
            if ck.max_repetition is not None and rep > ck.max_repetition:
                fail(c, "repetitive_turn", f"turn {c.exchanges} repeats an earlier turn ({rep:.0%} of its 3-grams)")
        if self.embed is not None and later and (ck.min_history_similarity is not None or ck.max_drift is not None):
            texts = []
            for c in later:
                seed_end = next(i for i, m in enumerate(c.messages) if m["role"] == "assistant") + 1
                texts += [c.messages[-2]["content"], _plain(c.messages[:-2]), _plain(c.messages[-2:]),
                          _plain(c.messages[:seed_end])]
            emb = self.embed(texts).reshape(len(later), 4, -1)
            for c, (u, h, ex, sd) in zip(later, emb):
                sim, drift = float(u @ h), 1 - float(ex @ sd)
                results[id(c)].update(history_similarity=round(sim, 4), drift=round(drift, 4))
                if ck.min_history_similarity is not None and sim < ck.min_history_similarity:
                    fail(c, "unrelated_turn", f"user turn {c.exchanges} has similarity {sim:.2f} with the history "
                         f"(< {ck.min_history_similarity})")
                if ck.max_drift is not None and drift > ck.max_drift:
                    fail(c, "topic_drift", f"turn {c.exchanges} drifted {drift:.2f} from the seed (> {ck.max_drift})")
        jobs: list[tuple[Conversation, str, list[dict], Callable[[str], Any]]] = []
        for c in later:
            if id(c) in failed:  # a turn the cheap checks failed costs no judge call
                continue
            if ck.coherence_judge:
                jobs.append((c, "coherence", coherence_prompt(c.messages[:-1], c.zh), parse_coherence))
            n = sum(m["role"] == "assistant" for m in c.messages)
            if ck.consistency_judge and n >= 2:
                jobs.append((c, "consistency", judge_messages(P.JUDGE_SYSTEM, P.consistency_prompt(c.messages)),
                             lambda t, n=n: parse_consistency(t, n)))
        answers = ask(self.judge, [j[2] for j in jobs], [j[3] for j in jobs], self.judge_sampling, self.s.retries)
        for (c, what, _, _), a in zip(jobs, answers):
            r = results[id(c)]
            if not a.ok:
                r[what] = None
                fail(c, a.reason, f"{what} judge: {a.detail}")
            elif what == "coherence":
                r["coherent"], why = a.value
                if not r["coherent"]:
                    fail(c, "incoherent_turn", f"user turn {c.exchanges} does not follow from the conversation: {why}")
            else:
                r["consistent"], turn, why = a.value
                if not r["consistent"]:
                    fail(c, "inconsistent_turns", f"assistant turn {turn} contradicts an earlier turn: {why}")
        for c in convs:
            r, f = results[id(c)], failed.get(id(c))
            r["ok"] = f is None
            if f:
                r["reason"] = f[0]
            c.checks.append(r)
            if f:
                self._stop(c, *f)
            else:
                c.good = len(c.messages)

    def _reject(self, c: Conversation, reason: str, detail: str) -> None:
        c.done, c.drop = reason, Drop(reason, detail)

    def _stop(self, c: Conversation, reason: str, detail: str) -> None:
        """End the conversation: keep it through its last good exchange when that has `min_turns`
        exchanges and at least one made here, else reject it with the reason."""
        good = sum(m["role"] == "user" for m in c.messages[:c.good])
        made = good - c.styles.count("seed")
        if good >= self.s.min_turns and made >= 1:
            c.messages = c.messages[:c.good]
            c.styles = c.styles[:good]
            c.done = "goal_reached" if reason == "goal_reached" else f"cut:{reason}"
            return
        if reason == "goal_reached":
            reason, detail = "too_few_turns", f"the user simulator ended the conversation after {good} turn(s)"
        self._reject(c, reason, detail + (f" (cut back to {good} turn(s), fewer than min_turns {self.s.min_turns})"
                                          if good and reason != "too_few_turns" else ""))

    def _shard(self, convs: list[Conversation]) -> None:
        if not convs:
            return
        instr = [next(m["content"] for m in c.messages if m["role"] == "user") for c in convs]
        answers = ask(self.user, [shard_prompt(i, c.zh) for i, c in zip(instr, convs)],
                      [lambda t: parse_shards(t, self.s.turns)] * len(convs), self.judge_sampling, self.s.retries)
        for c, a in zip(convs, answers):
            if not a.ok:
                self._reject(c, a.reason, f"sharding: {a.detail}")
                continue
            c.shards = a.value
            c.messages = [m for m in c.messages if m["role"] == "system"]  # the shards replace the instruction
            c.styles = []

    def _finish(self, convs: list[Conversation]) -> Outcome:
        kept: list[Record] = []
        dropped: list[tuple[Record, Drop]] = []
        for c in convs:
            if c.drop is not None:
                dropped.append((c.seed, c.drop))
                continue
            meta = {k: v for k, v in c.seed.meta.items() if k not in ("candidates", "pairwise", "rationales", "judge", "topic")}
            meta["parent"] = c.seed.id
            meta["synthesis"] = {
                "method": self.s.method, "seed_id": c.seed.id, "persona": c.persona, "styles": c.styles,
                "user_model": self.user.model, "assistant_model": self.assistant.model, "judge_model": self.judge.model,
                "checks": c.checks, "stopped": c.done,
                **({"topic": c.seed.meta["topic"]} if "topic" in c.seed.meta else {}),
                **({"shards": c.shards} if c.shards is not None else {}),
            }
            kept.append(Record("sft", c.messages, meta=meta))
        return kept, dropped


def _plain(msgs: list[dict]) -> str:
    return "\n".join(m.get("content") or "" for m in msgs if m["role"] != "system")
