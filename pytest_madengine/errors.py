"""One base for this plugin's errors: each says what the user needs in its message (shown without a
traceback) and, when an item fails with it, which perf.csv `reason` the row gets."""

from __future__ import annotations

from typing import ClassVar


class MadengineError(Exception):
    """An error about the user's input, the model or the engine, never about plugin code."""

    perf_reason: ClassVar[str] = ""  # the perf.csv reason; empty: the error's type and message

    def reason_text(self) -> str:
        return self.perf_reason or f"{type(self).__name__}: {self}"

    def describe(self) -> str:
        """What a failed item shows in place of a traceback."""
        return str(self)
