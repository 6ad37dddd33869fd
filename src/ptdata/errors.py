"""Errors that carry a machine-readable reason, so every failure can become a reject row."""
from __future__ import annotations


class RecordError(ValueError):
    """One record cannot be read, converted or validated.

    `reason` is a stable snake_case code (what tests and downstream tools match on);
    `detail` is the human sentence.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class InputError(Exception):
    """A whole input cannot be used (missing, empty, unknown format). Printed as one line, exit 1."""
