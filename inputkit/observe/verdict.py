"""The judgement's result, shared by the diagnosis and the modules that hold its rules."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """``kind`` (``fetch-bound``, ...) and ``text``: the evidence, then the change to try, if
    any. ``starved``: the consumer waits on the input (a live warning)."""

    kind: str
    text: str
    starved: bool = False

    def line(self, where: str) -> str:
        return f"{where}: {self.kind}. {self.text}"
