"""The plain data of one unit of work: what it targets, what it produced, how it ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stomper.diagnostics import Diagnostic


class Status(StrEnum):
    FIXED = "fixed"
    PARTIAL = "partial"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNCHANGED = "unchanged"


LANDABLE = frozenset({Status.FIXED, Status.PARTIAL})


@dataclass(frozen=True)
class Unit:
    """One file and the diagnostics targeted in it, at the run's base commit."""

    index: int
    path: str
    diagnostics: tuple[Diagnostic, ...]
    """The findings the unit targets."""
    baseline: tuple[Diagnostic, ...]
    """Every finding of the file at the base commit, targeted or not."""
    base_blob: str
    mode: str

    @property
    def tools(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(diag.tool for diag in self.diagnostics))


@dataclass(frozen=True)
class Patch:
    """A unit's change: one file from ``old_blob`` to ``new_blob``."""

    path: str
    mode: str
    old_blob: str
    new_blob: str


@dataclass(frozen=True)
class UnitResult:
    path: str
    status: Status
    before: tuple[Diagnostic, ...]
    fixed: tuple[Diagnostic, ...] = ()
    remaining: tuple[Diagnostic, ...] = ()
    introduced: tuple[Diagnostic, ...] = ()
    commit: str | None = None
    attempts: int = 0
    reason: str | None = None
    duration_s: float = 0.0
    agent_s: float = 0.0
    landing_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    diff: str | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status.value,
            "commit": self.commit,
            "attempts": self.attempts,
            "diagnostics_before": len(self.before),
            "diagnostics_after": len(self.remaining) + len(self.introduced),
            "fixed": [diag.to_json() for diag in self.fixed],
            "remaining": [diag.to_json() for diag in self.remaining],
            "reason": self.reason,
            "duration_s": round(self.duration_s, 3),
            "tokens": {"input": self.tokens_in, "output": self.tokens_out},
        }
