"""Curation ops. Importing this package registers every op (see `ptdata ops`)."""
from . import base  # noqa: F401
from . import decontam, dedup, filters, language, llm, pii, quality  # noqa: F401,E401
from .base import OPS, GlobalOp, MapOp, Op, get_op  # noqa: F401
