"""The path of one unit: isolate, run the agent, verify (retrying with feedback), land."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from stomper import git
from stomper.agents import Agent, AgentTask, AttemptFailed
from stomper.diagnostics import Collector, Diagnostic
from stomper.events import Phase
from stomper.gate import TestGate
from stomper.guardrails import scope_violation, suppression_violation
from stomper.landing import Lander, LandingRefused, commit_message
from stomper.unit import LANDABLE, Patch, Status, Unit, UnitResult
from stomper.verify import Verdict, describe, judge
from stomper.workspace import Workspaces

Emit = Callable[[Phase], None]


@dataclass(frozen=True)
class Policy:
    """How hard a unit is tried and what it must pass."""

    max_attempts: int = 3
    agent_timeout: float = 600.0
    """Seconds the agent may take on one unit, all attempts included."""
    allow_suppressions: bool = False


@dataclass(frozen=True)
class Pipeline:
    """Everything a unit needs, shared by all the units of a run."""

    run_id: str
    workspaces: Workspaces
    agent: Agent
    collectors: Sequence[Collector]
    lander: Lander | None
    """None for a dry run: everything but landing."""
    policy: Policy = field(default_factory=Policy)
    gate: TestGate | None = None

    async def work(self, unit: Unit, emit: Emit) -> UnitResult:
        """Work one unit to its result; a failure of the unit is a result, never a raise."""
        started = time.monotonic()
        try:
            result = await self._work(unit, emit)
        except Exception as exc:  # one unit's failure must not cancel its siblings
            result = _failed(unit, f"{type(exc).__name__}: {exc}", attempts=1)
        return replace(result, duration_s=time.monotonic() - started)

    async def _work(self, unit: Unit, emit: Emit) -> UnitResult:
        emit(Phase.ISOLATING)
        async with self.workspaces.isolate(str(unit.index), unit.base) as tree:
            before = await self._baseline(unit, tree)
            result = await self._attempts(unit, tree, before, emit)
            if result.status not in LANDABLE:
                return result
            if self.gate is not None:
                emit(Phase.VERIFYING)
                blame = await self.gate.judge(tree)
                if blame is not None:
                    return _refuse(result, blame)
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
            return _refuse(result, refused.reason, status=status)
        return replace(result, commit=landed.commit, landing_s=landed.seconds)

    async def _attempts(
        self, unit: Unit, tree: Path, before: list[Diagnostic], emit: Emit
    ) -> UnitResult:
        """Let the agent try until the unit is fixed, stops improving, or runs out of tries.

        Each attempt starts from the best state so far and is told what the last one left
        (or broke). An attempt that does not lower the count of what is left ends the tries;
        an answer the agent could not even apply is fed back and tried again.
        """
        file = tree / unit.path
        original = best_source = file.read_bytes()
        best: Verdict | None = None
        reason: str | None = None
        feedback: str | None = None
        touched = False
        spent = tokens_in = tokens_out = 0
        agent_s = 0.0
        deadline = time.monotonic() + self.policy.agent_timeout
        for attempt in range(1, self.policy.max_attempts + 1):
            spent = attempt
            emit(Phase.AGENT)
            started = time.monotonic()
            try:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    outcome = await self.agent.fix(AgentTask(unit, tree, attempt, feedback))
            except AttemptFailed as failed:
                tokens_in += failed.tokens_in
                tokens_out += failed.tokens_out
                touched, feedback = True, failed.feedback
                reason = f"attempt {attempt}: {failed.feedback}"
                await _restore(tree, unit.path, best_source, original)
                continue
            except TimeoutError:
                touched = True
                reason = f"the agent ran past {self.policy.agent_timeout:g}s on this unit"
                await _restore(tree, unit.path, best_source, original)
                break
            finally:
                agent_s += time.monotonic() - started
            tokens_in += outcome.tokens_in
            tokens_out += outcome.tokens_out
            emit(Phase.VERIFYING)
            verdict = await self._verify(unit, tree, before, original)
            if verdict.status is Status.UNCHANGED:
                reason = outcome.note or verdict.reason
                break
            if verdict.status in LANDABLE and file.read_bytes() == best_source:
                reason = f"attempt {attempt} changed nothing more"
                break
            touched = True
            if _better(verdict, best):
                best, best_source, reason = verdict, file.read_bytes(), None
                if verdict.status is Status.FIXED:
                    break
                feedback = _feedback(verdict)
                continue
            await _restore(tree, unit.path, best_source, original)
            reason = (
                f"stopped after attempt {attempt}, which did not reduce what is left: "
                f"{verdict.reason or describe(verdict.remaining)}"
            )
            break
        if best is None:
            return UnitResult(
                unit.path,
                Status.FAILED if touched else Status.UNCHANGED,
                unit.diagnostics,
                remaining=unit.diagnostics,
                attempts=spent,
                reason=reason or "the agent changed nothing",
                agent_s=agent_s,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
            )
        return UnitResult(
            unit.path,
            best.status,
            unit.diagnostics,
            best.fixed,
            best.remaining,
            best.introduced,
            attempts=spent,
            reason=best.reason or reason,
            agent_s=agent_s,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
        )

    async def _verify(
        self, unit: Unit, tree: Path, before: list[Diagnostic], original: bytes
    ) -> Verdict:
        """Judge the worktree's state: guardrails first, then the diagnostics."""
        scope = await scope_violation(tree, unit.path, unit.mode)
        if scope is not None:
            return Verdict(Status.FAILED, (), unit.diagnostics, (), scope)
        now = (tree / unit.path).read_bytes()
        if now == original:
            return judge(unit.diagnostics, before, before, changed=False)
        if not self.policy.allow_suppressions:
            cheat = suppression_violation(
                original.decode(errors="replace"), now.decode(errors="replace"), unit.diagnostics
            )
            if cheat is not None:
                return Verdict(Status.FAILED, (), unit.diagnostics, (), cheat)
        after: list[Diagnostic] = []
        for collector in self.collectors:
            after += await collector.collect(tree, [unit.path])
        return judge(unit.diagnostics, before, after, changed=True)

    async def _baseline(self, unit: Unit, tree: Path) -> list[Diagnostic]:
        """The file's findings before the agent: collected again only where they may differ."""
        again = [c for c in self.collectors if not c.per_file]
        if not again:
            return list(unit.baseline)
        names = {c.name for c in again}
        found = [d for d in unit.baseline if d.tool not in names]
        for collector in again:
            found += await collector.collect(tree, [unit.path])
        return found


def _better(verdict: Verdict, best: Verdict | None) -> bool:
    """Whether an attempt improves on the best so far: landable, and fewer left."""
    if verdict.status not in LANDABLE:
        return False
    return best is None or len(verdict.remaining) < len(best.remaining)


def _feedback(verdict: Verdict) -> str:
    parts = (
        [f"Still reported: {describe(verdict.remaining, limit=20)}"] if verdict.remaining else []
    )
    if verdict.introduced:
        parts.append(f"New diagnostics: {describe(verdict.introduced, limit=20)}")
    if verdict.reason:
        parts.append(verdict.reason)
    return "\n".join(parts)


async def _restore(tree: Path, path: str, content: bytes, original: bytes) -> None:
    """Put the unit's file back to ``content`` and undo anything else the attempt did."""
    await git.reset_worktree(tree)
    if content != original:
        (tree / path).write_bytes(content)


def _loop_time(deadline: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def _failed(unit: Unit, reason: str, *, attempts: int) -> UnitResult:
    return UnitResult(
        unit.path,
        Status.FAILED,
        unit.diagnostics,
        remaining=unit.diagnostics,
        attempts=attempts,
        reason=reason,
    )


def _refuse(result: UnitResult, reason: str, *, status: Status = Status.FAILED) -> UnitResult:
    """The unit's patch will not land: what it fixed is not fixed on the target."""
    return replace(
        result,
        status=status,
        fixed=(),
        remaining=result.before,
        introduced=(),
        reason=reason,
    )
