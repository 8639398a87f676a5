"""The run's outcome as numbers: the totals, the ``--json`` document and the exit code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stomper.unit import FIX_ENDINGS, Status, UnitResult

EXIT_CLEAN = 0
EXIT_REMAINING = 1
EXIT_USER = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Metrics:
    wall_s: float
    peak_concurrency: int
    agent_s: float
    landing_s: float
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = None
    """What the tokens cost, in dollars, at the model's price; None: it has none."""
    executor: str = "local"
    resent: int = 0
    """Groups of units sent to the cluster again because their worker died (``ray``)."""


@dataclass(frozen=True)
class LeftOut:
    """Diagnostics in scope that no unit was made for: the agent cannot fix their tool's."""

    diagnostics: int
    files: int
    """Files that had nothing else to fix, so were no unit at all."""
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"diagnostics": self.diagnostics, "files": self.files, "reason": self.reason}


@dataclass(frozen=True)
class RunReport:
    run_id: str
    command: str
    status: str
    """completed, interrupted, failed, or budget (spent before every unit began)"""
    base: str
    target: str
    max_parallel_files: int
    results: tuple[UnitResult, ...]
    metrics: Metrics
    dry_run: bool = False
    left_out: LeftOut | None = None

    def totals(self) -> dict[str, int]:
        """Counted from the results, each unit once."""
        count = dict.fromkeys(FIX_ENDINGS, 0)
        for result in self.results:
            count[result.status] += 1
        before = sum(len(result.before) for result in self.results)
        fixed = sum(
            len(result.fixed) for result in self.results if _counts_as_fixed(result, self.dry_run)
        )
        return {
            "units": len(self.results),
            **{status.value: count[status] for status in FIX_ENDINGS},
            "commits": sum(1 for result in self.results if result.commit),
            "diagnostics_before": before,
            "diagnostics_fixed": fixed,
            "diagnostics_remaining": sum(_left(result, self.dry_run) for result in self.results),
        }

    def exit_code(self) -> int:
        if self.status == "interrupted":
            return EXIT_INTERRUPTED
        totals = self.totals()
        remaining = totals["diagnostics_remaining"] or self.left_out is not None
        if self.status != "completed" or totals["failed"] or remaining:
            return EXIT_REMAINING
        return EXIT_CLEAN

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "command": self.command,
            "status": self.status,
            "dry_run": self.dry_run,
            "base": self.base,
            "target": self.target,
            "max_parallel_files": self.max_parallel_files,
            "units": [result.to_json() for result in self.results],
            "totals": self.totals(),
            "metrics": {
                "wall_s": round(self.metrics.wall_s, 3),
                "peak_concurrency": self.metrics.peak_concurrency,
                "agent_s": round(self.metrics.agent_s, 3),
                "landing_s": round(self.metrics.landing_s, 3),
                "tokens": {"input": self.metrics.tokens_in, "output": self.metrics.tokens_out},
                "cost": round(self.metrics.cost, 6) if self.metrics.cost is not None else None,
                "executor": {"name": self.metrics.executor, "resent": self.metrics.resent},
            },
            "left_out": self.left_out.to_json() if self.left_out is not None else None,
        }


def _counts_as_fixed(result: UnitResult, dry_run: bool) -> bool:
    """A fix counts once it is on the target (or, in a dry run, once it would land)."""
    if dry_run:
        return result.status in (Status.FIXED, Status.PARTIAL)
    return result.commit is not None


def _left(result: UnitResult, dry_run: bool) -> int:
    """How many of the unit's targeted diagnostics are left: those its fix left, once it
    counts as fixed; all of them when it did not land; for a skipped unit, those it knows
    to be in the file now (none for a file the user committed to during the run: that
    version is not the one counted)."""
    if _counts_as_fixed(result, dry_run):
        return len(result.before) - len(result.fixed)
    if result.status is Status.SKIPPED:
        return len(result.remaining)
    return len(result.before)


def ordered(results: Sequence[UnitResult]) -> tuple[UnitResult, ...]:
    return tuple(sorted(results, key=lambda result: result.path))
