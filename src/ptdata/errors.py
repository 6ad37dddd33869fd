"""Errors that carry a machine-readable reason, so every failure can become a reject row."""
from __future__ import annotations


class RecordError(ValueError):
    """One record cannot be read, converted or validated.

    `reason` is a stable snake_case code (what tests and downstream tools match on);
    `detail` is the human sentence.
    """

    def __init__(self, reason: str, detail: str = "", raw: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.raw = raw  # the text of a row that could not be parsed (invalid bytes backslash-escaped)


class InputError(Exception):
    """A whole input cannot be used (missing, empty, unknown format). Printed as one line, exit 1."""
