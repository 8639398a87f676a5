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
    base: str
    """The commit the unit works from: the run's base, or a newer tip on resume."""
    diagnostics: tuple[Diagnostic, ...]
    """The findings the unit targets."""
    baseline: tuple[Diagnostic, ...]
    """Every finding of the file at the base commit, targeted or not."""
    base_blob: str
    mode: str

    def to_record(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "path": self.path,
            "base": self.base,
            "diagnostics": [diag.to_record() for diag in self.diagnostics],
            "baseline": [diag.to_record() for diag in self.baseline],
            "base_blob": self.base_blob,
            "mode": self.mode,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Unit:
        return cls(
            index=int(record["index"]),
            path=record["path"],
            base=record["base"],
            diagnostics=_diagnostics(record["diagnostics"]),
            baseline=_diagnostics(record["baseline"]),
            base_blob=record["base_blob"],
            mode=record["mode"],
        )


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

    def to_record(self) -> dict[str, Any]:
        """Everything but the diff, for the run's journal."""
        return {
            "path": self.path,
            "status": self.status.value,
            "before": [diag.to_record() for diag in self.before],
            "fixed": [diag.to_record() for diag in self.fixed],
            "remaining": [diag.to_record() for diag in self.remaining],
            "introduced": [diag.to_record() for diag in self.introduced],
            "commit": self.commit,
            "attempts": self.attempts,
            "reason": self.reason,
            "duration_s": self.duration_s,
            "agent_s": self.agent_s,
            "landing_s": self.landing_s,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> UnitResult:
        return cls(
            path=record["path"],
            status=Status(record["status"]),
            before=_diagnostics(record["before"]),
            fixed=_diagnostics(record["fixed"]),
            remaining=_diagnostics(record["remaining"]),
            introduced=_diagnostics(record["introduced"]),
            commit=record["commit"],
            attempts=int(record["attempts"]),
            reason=record["reason"],
            duration_s=float(record["duration_s"]),
            agent_s=float(record["agent_s"]),
            landing_s=float(record["landing_s"]),
            tokens_in=int(record["tokens_in"]),
            tokens_out=int(record["tokens_out"]),
        )


def _diagnostics(records: list[Any]) -> tuple[Diagnostic, ...]:
    return tuple(Diagnostic.from_record(record) for record in records)
