"""The path of one unit: isolate, run the agent, verify, land, release."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from stomper import git
from stomper.agents import Agent, AgentTask
from stomper.diagnostics import Collector, Diagnostic
from stomper.events import Phase, UnitEvent
from stomper.landing import Lander, LandingRefused, commit_message
from stomper.unit import LANDABLE, Patch, Status, Unit, UnitResult
from stomper.verify import judge
from stomper.workspace import Workspaces

Emit = Callable[[Phase], None]


@dataclass(frozen=True)
class Pipeline:
    """Everything a unit needs, shared by all the units of a run."""

    run_id: str
    workspaces: Workspaces
    agent: Agent
    collectors: Sequence[Collector]
    lander: Lander | None
    """None for a dry run: everything but landing."""

    async def work(self, unit: Unit, emit: Emit) -> UnitResult:
        """Work one unit to its result; a failure of the unit is a result, never a raise."""
        started = time.monotonic()
        try:
            result = await self._work(unit, emit)
        except Exception as exc:  # one unit's failure must not cancel its siblings
            result = UnitResult(
                unit.path,
                Status.FAILED,
                unit.diagnostics,
                remaining=unit.diagnostics,
                attempts=1,
                reason=f"{type(exc).__name__}: {exc}",
            )
        return replace(result, duration_s=time.monotonic() - started)

    async def _work(self, unit: Unit, emit: Emit) -> UnitResult:
        emit(Phase.ISOLATING)
        async with self.workspaces.isolate(str(unit.index)) as tree:
            before = await self._baseline(unit, tree)
            emit(Phase.AGENT)
            agent_started = time.monotonic()
            outcome = await self.agent.fix(AgentTask(unit=unit, workspace=tree))
            agent_s = time.monotonic() - agent_started
            emit(Phase.VERIFYING)
            touched = await git.changed_in_worktree(tree)
            outside = [path for path in touched if path != unit.path]
            if outside:
                return UnitResult(
                    unit.path,
                    Status.FAILED,
                    unit.diagnostics,
                    remaining=unit.diagnostics,
                    attempts=1,
                    reason=f"the agent touched files outside the unit: {', '.join(outside)}",
                )
            changed = unit.path in touched
            after = await self._diagnostics(tree, unit.path) if changed else list(before)
            verdict = judge(unit.diagnostics, before, after, changed=changed)
            result = UnitResult(
                unit.path,
                verdict.status,
                unit.diagnostics,
                verdict.fixed,
                verdict.remaining,
                verdict.introduced,
                attempts=1,
                reason=verdict.reason or outcome.note,
                agent_s=agent_s,
            )
            if verdict.status not in LANDABLE:
                return result
            new_blob = await git.hash_file(tree, unit.path)
            patch = Patch(unit.path, unit.mode, unit.base_blob, new_blob)
            diff = await git.diff_blobs(tree, patch.old_blob, patch.new_blob, unit.path)
            result = replace(result, diff=diff)
        if self.lander is None:
            return result
        emit(Phase.LANDING)
        message = commit_message(
            path=unit.path,
            tools=sorted({diag.tool for diag in result.fixed}),
            codes=[diag.code for diag in result.fixed],
            run_id=self.run_id,
        )
        try:
            landed = await self.lander.land(patch, message)
        except LandingRefused as refused:
            status = Status.SKIPPED if refused.skipped else Status.FAILED
            return UnitResult(
                unit.path,
                status,
                unit.diagnostics,
                remaining=unit.diagnostics,
                attempts=1,
                reason=refused.reason,
                agent_s=agent_s,
                diff=diff,
            )
        return replace(result, commit=landed.commit, landing_s=landed.seconds)

    async def _baseline(self, unit: Unit, tree: Path) -> list[Diagnostic]:
        """The file's findings before the agent: collected again only where they may differ."""
        again = [c for c in self.collectors if not c.per_file]
        if not again:
            return list(unit.baseline)
        found = [d for d in unit.baseline if d.tool not in {c.name for c in again}]
        for collector in again:
            found += await collector.collect(tree, [unit.path])
        return found

    async def _diagnostics(self, tree: Path, path: str) -> list[Diagnostic]:
        found: list[Diagnostic] = []
        for collector in self.collectors:
            found += await collector.collect(tree, [path])
        return found


def event(unit: Unit, phase: Phase, running: int, result: UnitResult | None = None) -> UnitEvent:
    if result is None:
        return UnitEvent(unit.path, phase, running)
    return UnitEvent(unit.path, phase, running, result.status.value, result.reason, result.commit)
