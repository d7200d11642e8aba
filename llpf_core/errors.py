"""Exceptions of the core, split by whether retrying the work could help."""

from __future__ import annotations


class LLPFError(Exception):
    """Base of llpf's own errors."""


class NonTransientError(LLPFError):
    """Retrying cannot help: the inputs or the numerics are wrong. Recorded, never retried."""


class NonFiniteLossError(NonTransientError):
    """The training loss became NaN or infinite; the stage cannot go on from this point."""

    def __init__(self, where: str, value: float) -> None:
        super().__init__(f"training loss became {value} during {where}")
        self.where = where
        self.value = value
