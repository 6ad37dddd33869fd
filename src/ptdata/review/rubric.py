"""A review rubric: the questions a reviewer answers about each record, from YAML.

    name: default
    questions:
      - {id: helpfulness, type: rating, help: "Does it do what was asked, usefully?"}
      - {id: labels, type: labels, options: [factual_error, unsafe, off_topic]}
      - {id: decision, type: decision}          # accept / reject
      - {id: note, type: note}                  # free text
      - {id: correction, type: edit}            # an edited answer (shown as a diff)
      - {id: choice, type: choice}              # pairs: which side is better (or a tie)

A rating is an integer 1-5. For a preference pair each rating is given for both sides
(stored as `chosen.<id>` / `rejected.<id>`: the record's sides, never the screen's). The
rubric's version is a hash of its validated content, so an answer always names the exact
questions it answered.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from ..errors import InputError

QID = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
Option = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,39}$")]
Text = Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]
# the mission's preference principles
DEFAULT_ASPECTS = ("helpfulness", "truthfulness", "harmlessness", "instruction_following")
HELP = {"helpfulness": "Does the answer do what the user needs, usefully and completely?",
        "truthfulness": "Is every claim correct; does it admit what it does not know?",
        "harmlessness": "Is it free of harm, unsafe advice and disrespect?",
        "instruction_following": "Does it follow every instruction and constraint of the prompt?"}
MAX_NOTE, MAX_EDIT = 10_000, 100_000


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: QID
    type: Literal["rating", "labels", "decision", "note", "edit", "choice"]
    label: Text | None = None
    help: Text | None = None
    options: list[Option] = Field(default_factory=list, max_length=9)  # labels: toggled by the keys 1-9
    required: bool | None = None  # default: ratings, the decision and the choice are required

    @model_validator(mode="after")
    def _check(self) -> "Question":
        if self.type == "labels" and not self.options:
            raise ValueError(f"question {self.id!r}: a labels question lists its options")
        if self.type != "labels" and self.options:
            raise ValueError(f"question {self.id!r}: only a labels question has options")
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"question {self.id!r}: options repeat")
        if self.required is None:
            self.required = self.type in ("rating", "decision", "choice")
        if self.label is None:
            self.label = self.id.replace("_", " ")
        if self.help is None and self.id in HELP:
            self.help = HELP[self.id]
        return self


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")] = "default"
    questions: list[Question] = Field(min_length=1, max_length=40)

    @model_validator(mode="after")
    def _unique(self) -> "Rubric":
        ids = [q.id for q in self.questions]
        if len(set(ids)) != len(ids):
            raise ValueError("question ids repeat")
        for t in ("decision", "note", "edit", "choice"):
            if sum(q.type == t for q in self.questions) > 1:
                raise ValueError(f"at most one {t} question")
        return self

    @property
    def version(self) -> str:
        """A hash of the validated content: the same questions give the same version."""
        return hashlib.sha256(orjson.dumps(self.model_dump(), option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

    def of(self, kind: str) -> list[Question]:
        return [q for q in self.questions if q.type == kind]

    @property
    def aspects(self) -> list[str]:
        return [q.id for q in self.of("rating")]

    def as_dict(self) -> dict[str, Any]:
        return {**self.model_dump(), "version": self.version}


def default_rubric() -> Rubric:
    return Rubric(name="default", questions=[
        *({"id": a, "type": "rating"} for a in DEFAULT_ASPECTS),
        {"id": "labels", "type": "labels", "options": ["factual_error", "unsafe", "off_topic", "incomplete", "formatting"]},
        {"id": "decision", "type": "decision"}, {"id": "note", "type": "note"}, {"id": "correction", "type": "edit"},
        {"id": "choice", "type": "choice"}])


def load_rubric(path: str | Path | None) -> Rubric:
    """The rubric in a YAML file (None: the default rubric); a bad one is one InputError line."""
    if path is None:
        return default_rubric()
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"--rubric {p}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"--rubric {p}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise InputError(f"--rubric {p}: not YAML ({str(e).splitlines()[0]})") from None
    try:
        return Rubric.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise InputError(f"--rubric {p}: {where + ': ' if where else ''}{re.sub(r'^Value error, ', '', first['msg'])}") from None
