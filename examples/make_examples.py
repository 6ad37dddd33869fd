"""Regenerate the example data in examples/data (deterministic; the files are committed).

A few hundred records written for this project, English and Chinese, in six formats, with
defects planted on purpose so that every validation rule and reader error has something to
catch. PLANTED lists them; tests/test_examples.py checks that each is found.

    python examples/make_examples.py
"""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).parent / "data"
R = random.Random(20261124)

TOPICS_EN = [
    ("photosynthesis", "Photosynthesis is how plants turn light, water and carbon dioxide into glucose and oxygen."),
    ("the water cycle", "Water evaporates, condenses into clouds, falls as precipitation and flows back to the sea."),
    ("compound interest", "Compound interest is interest earned on both the principal and the interest already added."),
    ("binary search", "Binary search halves a sorted range at each step, so it needs about log2(n) comparisons."),
    ("the French Revolution", "The French Revolution (1789-1799) ended the absolute monarchy and spread ideas of citizenship."),
    ("vaccines", "Vaccines train the immune system to recognise a pathogen without causing the disease."),
    ("plate tectonics", "Earth's lithosphere is split into plates whose motion causes earthquakes and builds mountains."),
    ("supply and demand", "Prices rise when demand exceeds supply and fall when supply exceeds demand."),
    ("recursion", "A recursive function solves a problem by calling itself on a smaller instance until a base case."),
    ("the Pythagorean theorem", "In a right triangle the square of the hypotenuse equals the sum of the squares of the other sides."),
    ("black holes", "A black hole is a region where gravity is so strong that not even light can escape."),
    ("TCP handshakes", "TCP opens a connection with SYN, SYN-ACK and ACK so both sides agree on sequence numbers."),
]
TOPICS_ZH = [
    ("光合作用", "光合作用是植物利用光能把水和二氧化碳转化为葡萄糖和氧气的过程。"),
    ("水循环", "水蒸发后凝结成云，以降水形式落下，再流回海洋，如此循环往复。"),
    ("复利", "复利是指利息也会继续产生利息，时间越长，增长越明显。"),
    ("二分查找", "二分查找每一步把有序区间缩小一半，大约需要 log2(n) 次比较。"),
    ("唐朝", "唐朝（618年—907年）是中国历史上经济繁荣、文化开放的朝代之一。"),
    ("疫苗", "疫苗让免疫系统提前认识病原体，从而在真正感染时迅速应对。"),
    ("板块构造", "地球岩石圈分成许多板块，板块运动会引发地震并形成山脉。"),
    ("供求关系", "需求大于供给时价格上涨，供给大于需求时价格下降。"),
    ("递归", "递归函数通过调用自身来解决更小的子问题，直到遇到基本情况。"),
    ("勾股定理", "直角三角形中，斜边的平方等于两条直角边的平方和。"),
]
ASK_EN = ["Explain {t} in simple terms.", "Give a short summary of {t}.", "What is the key idea behind {t}?",
          "Describe {t} for a high-school student.", "Why does {t} matter?"]
ASK_ZH = ["请用简单的话解释{t}。", "简要介绍一下{t}。", "{t}的核心思想是什么？", "给高中生讲讲{t}。", "为什么{t}很重要？"]
MORE_EN = ["In short, it is a good example of how simple rules produce complex behaviour.",
           "It is worth studying because it appears in many other fields.",
           "A good way to remember it is to draw a small diagram."]
MORE_ZH = ["总之，这是一个简单规则产生复杂现象的好例子。", "它在很多领域都有应用，值得深入学习。", "画一张小图有助于记住它。"]

PLANTED: dict[str, int] = {}


def plant(reason: str) -> None:
    PLANTED[reason] = PLANTED.get(reason, 0) + 1


def answer(fact: str, zh: bool) -> str:
    return fact + ("" if zh else " ") + R.choice(MORE_ZH if zh else MORE_EN)


def alpaca_rows() -> list[dict]:
    rows = []
    for i in range(120):
        zh = i % 3 == 0
        topic, fact = R.choice(TOPICS_ZH if zh else TOPICS_EN)
        ask = R.choice(ASK_ZH if zh else ASK_EN).format(t=topic)
        row = {"instruction": ask, "input": "", "output": answer(fact, zh)}
        if i % 10 == 1:
            row["system"] = "你是一个乐于助人的助手。" if zh else "You are a concise, accurate assistant."
        if i % 12 == 5:
            t2, f2 = R.choice(TOPICS_ZH if zh else TOPICS_EN)
            row["history"] = [[R.choice(ASK_ZH if zh else ASK_EN).format(t=t2), answer(f2, zh)]]
        if i % 15 == 7:
            row["instruction"] = "Summarize the text below in one sentence." if not zh else "用一句话总结下面的文字。"
            row["input"] = fact
            row["output"] = fact.split("," if not zh else "，")[0] + ("." if not zh else "。")
        rows.append(row)
    # planted defects
    rows[3]["output"] = ""
    plant("empty_turn")
    rows[10]["output"] = rows[10]["instruction"]
    plant("repeated_turn")
    rows[17]["output"] = "光合作用是植物利用光能把水和二氧化碳转化为葡萄糖和氧气的过程，这个过程发生在叶绿体中。"
    rows[17]["instruction"] = "Explain photosynthesis in simple terms, in one or two sentences please."
    rows[17].pop("system", None), rows[17].pop("history", None)
    plant("flag:language_switch")
    rows[22]["output"] = "Here is a loop:\n```python\nfor i in range(3):\n    print(i)\n"
    plant("flag:unbalanced_code_fence")
    rows[29]["output"] = ("Compound interest grows savings faster than simple interest because every period the interest "
                          "that was already earned is added to the balance and then earns interest itself, which over many "
                          "years makes a large difference for long-term savers and for anyone paying off a loan with a high rate,")
    plant("flag:truncated_answer")
    rows[33]["instruction"] = 42
    plant("wrong_type")
    rows[41]["output"] = "x" * 30_000
    plant("turn_too_long")
    rows.append(dict(rows[2]))  # an exact duplicate (kept by validation, counted by stats)
    return rows


def sharegpt_rows() -> list[dict]:
    rows = []
    weather_tool = json.dumps([{"name": "get_weather", "description": "Current weather for a city",
                                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
    cities = ["Paris", "Tokyo", "北京", "Berlin", "上海", "Lima"]
    for i in range(60):
        zh = i % 2 == 1
        if i % 4 == 0:
            city = R.choice(cities)
            temp = R.randint(-5, 35)
            rows.append({"conversations": [
                {"from": "human", "value": f"{city}现在天气怎么样？" if zh else f"What's the weather like in {city} right now?"},
                {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": city}}, ensure_ascii=False)},
                {"from": "observation", "value": json.dumps({"temp_c": temp, "sky": "clear"})},
                {"from": "gpt", "value": f"{city}现在晴朗，气温{temp}°C。" if zh else f"It is clear in {city}, {temp}°C."},
            ], "tools": weather_tool})
            continue
        t1, f1 = R.choice(TOPICS_ZH if zh else TOPICS_EN)
        t2, f2 = R.choice(TOPICS_ZH if zh else TOPICS_EN)
        conv = [
            {"from": "human", "value": R.choice(ASK_ZH if zh else ASK_EN).format(t=t1)},
            {"from": "gpt", "value": answer(f1, zh)},
            {"from": "human", "value": R.choice(ASK_ZH if zh else ASK_EN).format(t=t2)},
            {"from": "gpt", "value": answer(f2, zh)},
        ]
        row = {"conversations": conv}
        if i % 5 == 1:
            row["system"] = "Answer briefly." if not zh else "请简短回答。"
        rows.append(row)
    # planted defects
    rows[5]["conversations"].insert(2, {"from": "gpt", "value": "Let me add one more thing."})
    plant("roles_out_of_order")
    rows[9]["conversations"].insert(1, {"from": "observation", "value": "{\"temp_c\": 20}"})
    plant("tool_without_call")
    rows[13]["conversations"].insert(2, {"from": "system", "value": "Now answer in French."})
    plant("system_not_first")
    rows[21]["conversations"][0]["from"] = "robot"
    plant("unknown_role")
    return rows


def openai_rows() -> list[dict]:
    rows = []
    for i in range(50):
        zh = i % 2 == 0
        t, f = R.choice(TOPICS_ZH if zh else TOPICS_EN)
        msgs = [{"role": "system", "content": "You are a helpful tutor." if not zh else "你是一位耐心的老师。"},
                {"role": "user", "content": R.choice(ASK_ZH if zh else ASK_EN).format(t=t)},
                {"role": "assistant", "content": "草稿答案，不要用于训练。" if zh else "Draft answer, do not train on this.", "weight": 0},
                {"role": "user", "content": "Please try again." if not zh else "请再回答一次。"},
                {"role": "assistant", "content": answer(f, zh), "weight": 1}]
        if i % 3 == 0:
            msgs = [msgs[0], msgs[1], msgs[4]]
        if i % 7 == 3:
            n1, n2 = R.randint(2, 99), R.randint(2, 99)
            msgs = [{"role": "user", "content": f"What is {n1} * {n2}? Use the calculator."},
                    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "multiply", "arguments": json.dumps({"a": n1, "b": n2})}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": str(n1 * n2)},
                    {"role": "assistant", "content": f"{n1} * {n2} = {n1 * n2}."}]
            rows.append({"messages": msgs, "tools": [{"type": "function", "function": {"name": "multiply", "parameters": {
                "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}]})
            continue
        rows.append({"messages": msgs})
    rows[4]["messages"][-1]["content"] = "   "
    plant("empty_turn")
    rows[8]["messages"].append({"role": "tool", "content": "orphan result"})
    plant("tool_without_call")
    return rows


def hh_rows() -> list[dict]:
    rows = []
    for i in range(40):
        t, f = R.choice(TOPICS_EN)
        prompt = f"\n\nHuman: {R.choice(ASK_EN).format(t=t)}"
        if i % 4 == 0:
            prompt += f"\n\nAssistant: Sure. {f}\n\nHuman: Can you say more?"
        good = f"\n\nAssistant: {answer(f, False)}"
        bad = "\n\nAssistant: I don't know, look it up yourself."
        rows.append({"chosen": prompt + good, "rejected": prompt + bad})
    rows[6]["rejected"] = rows[6]["chosen"]
    plant("chosen_equals_rejected")
    rows[11]["chosen"] = rows[11]["chosen"].rsplit("\n\nAssistant:", 1)[0] + "\n\nAssistant: "
    plant("empty_turn")
    return rows


def trl_rows() -> list[dict]:
    rows = []
    for i in range(40):
        zh = i % 2 == 0
        t, f = R.choice(TOPICS_ZH if zh else TOPICS_EN)
        q = R.choice(ASK_ZH if zh else ASK_EN).format(t=t)
        bad = "我不知道。" if zh else "No idea, sorry."
        if i % 4 == 3:  # unpaired (KTO)
            rows.append({"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": answer(f, zh)}], "label": True})
        else:
            rows.append({"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": answer(f, zh)}],
                         "rejected": [{"role": "assistant", "content": bad}]})
    rows[2]["rejected"] = []
    plant("preference_missing_side")
    return rows


def qa_rows() -> list[dict]:
    rows = []
    for i in range(30):
        a, b, c = R.randint(3, 40), R.randint(2, 9), R.randint(1, 30)
        total = a * b + c
        rows.append({"problem": f"A shop sells {b} boxes with {a} pencils each and {c} loose pencils. How many pencils in total?",
                     "solution": f"Boxes hold {b}*{a} = <<{b}*{a}={a * b}>>{a * b} pencils.\nWith the loose ones: {a * b}+{c} = <<{a * b}+{c}={total}>>{total}.\n#### {total}"})
    return rows


BENCHMARK = [
    ("A baker makes 24 muffins each hour for 7 hours and then sells all but 15 of them. How many muffins does the baker sell?", "24*7-15 = 153\n#### 153"),
    ("Tom reads 12 pages on Monday and twice as many pages on Tuesday. How many pages did he read on the two days together?", "12+24 = 36\n#### 36"),
    ("一个农场有 35 只鸡和 18 只鸭，卖掉了 9 只鸡以后，农场里一共还剩下多少只家禽？请写出计算过程并给出最后的答案。", "35-9+18 = 44\n#### 44"),
    ("A train travels 60 miles per hour for 3 hours and then 40 miles per hour for 2 hours. What total distance does it cover?", "180+80 = 260\n#### 260"),
]
FATES: dict[str, str] = {}
WATER = ("The sun warms the water in seas, lakes and rivers, and some of it turns into an invisible gas called water vapour. "
         "The vapour rises, cools high in the sky and condenses into tiny droplets that gather as clouds. When the droplets "
         "grow heavy they fall back as rain, snow or hail. The water then soaks into the ground or runs along streams and "
         "rivers until it reaches the sea again, where the whole journey starts over.")  # "file:line" -> expected reason ("kept" or "kept:<note>")


def pii_junk_rows() -> list[dict]:
    """Curation targets, one per line; FATES says what the recipe must do with each."""
    rows: list[tuple[dict, str]] = [
        ({"instruction": "How can I reach the support team?", "input": "", "output": "Write to support.desk@example.org or call +1 (415) 555-0134 during office hours."}, "kept:pii"),
        ({"instruction": "我的联系方式是什么？", "input": "", "output": "你的手机号是13812345678，邮箱是li.lei@example.cn，身份证号110101199003074477。"}, "kept:pii"),
        ({"instruction": "Which card did I use last time?", "input": "", "output": "You paid with the card 4111 1111 1111 1111 from the server at 192.168.10.24."}, "kept:pii"),
        ({"instruction": "Show me how to call the API.", "input": "", "output": "Send the header Authorization: Bearer sk-proj-9fT2xQ7LmN4pR8sV1wY6zA3bC5dE0gH and the request body as JSON."}, "kept:pii"),
        ({"instruction": "What is the meaning of life?", "input": "", "output": "As an AI language model, I do not have personal opinions about the meaning of life."}, "refusal"),
        ({"instruction": "你对这件事有什么看法？", "input": "", "output": "作为一个人工智能语言模型，我没有个人观点，无法回答这个问题。"}, "refusal"),
        ({"instruction": "Write a short poem about rain.", "input": "", "output": "Rain falls down. " * 30}, "repetitive"),
        ({"instruction": "写一段关于春天的话。", "input": "", "output": "春天来了，花开了。" * 25}, "repetitive"),
        ({"instruction": "Summarize the article.", "input": "", "output": "The article explains thatâ€™s why the cafÃ© was closed, and itâ€™s not clear when it will reopen."}, "garbled_text"),
        ({"instruction": "Explique la photosynthèse en termes simples, s'il vous plaît.", "input": "", "output": "La photosynthèse permet aux plantes de transformer la lumière, l'eau et le dioxyde de carbone en sucre et en oxygène."}, "wrong_language"),
        ({"instruction": "Solve this word problem: " + BENCHMARK[0][0], "input": "", "output": "The baker sells 153 muffins."}, "contaminated"),
        ({"instruction": BENCHMARK[2][0].replace("35", "36"), "input": "", "output": "答案是 45 只。"}, "contaminated"),
        ({"instruction": "Explain the water cycle in simple terms, for a ten year old child who loves the sea.", "input": "", "output": WATER}, "kept"),
        ({"instruction": "Explain the water cycle in simple terms, for a ten year old child who loves the sea!", "input": "", "output": WATER.replace(".", "!")}, "exact_duplicate"),
        ({"instruction": "Explain the water cycle in simple terms, for a ten year old child who loves the sea.", "input": "",
          "output": WATER.replace("warms the water", "heats the water")}, "near_duplicate"),
    ]
    for i, (_, fate) in enumerate(rows, 1):
        FATES[f"examples/data/pii_and_junk.jsonl:{i}"] = fate  # as meta.source names it: relative to the repository root
    return [r for r, _ in rows]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    alpaca = alpaca_rows()
    with open(OUT / "alpaca_mixed.jsonl", "wb") as f:
        for i, row in enumerate(alpaca):
            f.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
            if i == 50:
                f.write(b'{"instruction": "Name a prime number", "input": "", "output": "7"\n')  # malformed JSON
                plant("malformed_json")
            if i == 60:
                f.write(b'{"instruction": "caf\xe9 au lait?", "input": "", "output": "A coffee."}\n')  # Latin-1 byte
                plant("invalid_utf8")
            if i == 70:
                f.write(json.dumps({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}).encode() + b"\n")
                plant("format_mismatch")
    (OUT / "sharegpt_tools.json").write_text(json.dumps(sharegpt_rows(), ensure_ascii=False, indent=1), encoding="utf-8")
    with gzip.GzipFile(OUT / "openai_chat.jsonl.gz", "wb", mtime=0) as f:
        for row in openai_rows():
            f.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
    with open(OUT / "hh_pairs.jsonl", "w", encoding="utf-8") as f:
        for row in hh_rows():
            f.write(json.dumps(row) + "\n")
    # an explicit schema: from_pylist alone would take the columns of the first row only
    from ptdata.formats import arrow_row, parquet_schema

    schema = parquet_schema("trl", {})
    pq.write_table(pa.Table.from_pylist([arrow_row(r) for r in trl_rows()], schema=schema), OUT / "trl_prefs.parquet")
    with open(OUT / "gsm_style.jsonl", "w", encoding="utf-8") as f:
        for row in qa_rows():
            f.write(json.dumps(row) + "\n")
    with open(OUT / "pii_and_junk.jsonl", "w", encoding="utf-8") as f:
        for row in pii_junk_rows():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(OUT / "benchmark_test.jsonl", "w", encoding="utf-8") as f:
        for q, a in BENCHMARK:
            f.write(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n")
    (OUT / "PLANTED.json").write_text(json.dumps(dict(sorted(PLANTED.items())), indent=1) + "\n")
    (OUT / "FATES.json").write_text(json.dumps(FATES, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
