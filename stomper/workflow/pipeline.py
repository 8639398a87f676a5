"""The path of one unit: isolate, run the agent, verify (retrying with feedback), land."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from stomper import git, redaction
from stomper.agents import (
    Agent,
    AgentOutcome,
    AgentTask,
    AttemptFailed,
    deterministic,
    fix_many,
    fixes_together,
)
from stomper.budget import NOT_BEGUN, Budget, Spent
from stomper.diagnostics import Collector, Diagnostic
from stomper.events import Phase
from stomper.gate import TestGate
from stomper.guardrails import file_violation, suppression_violation, suppression_violations
from stomper.landing import Landed, Lander, LandingRefused, commit_message
from stomper.offload import Offload
from stomper.tripwire import Breach, Tripwire
from stomper.unit import LANDABLE, Patch, Status, Unit, UnitResult
from stomper.verify import Verdict, counted, describe, judge, result_of
from stomper.workflow.job import Emit, EmitFor, Produced
from stomper.workflow.limit import Limit
from stomper.workspace import NotRegular, Space, Workspaces, read_regular


@dataclass(frozen=True)
class Policy:
    """How hard a unit is tried and what it must pass."""

    max_attempts: int = 3
    agent_timeout: float = 600.0
    """Seconds the agent may take on one unit, all attempts and their checks included."""
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
    tree: bool = True
    """Units work in pooled trees (True) or in scratch folders holding their one file."""
    tripwire: Tripwire | None = None
    """Watches the user's repository around each agent call, for an agent that runs
    without a sandbox."""
    limit: Limit = field(default_factory=lambda: Limit(1))
    """Each agent call takes one of its places (the units' own places are the caller's)."""
    offload: Offload | None = None
    """Worker processes for the checks of units worked together."""
    budget: Budget = field(default_factory=Budget)
    """What the run's agent calls may spend (:mod:`stomper.budget`)."""

    async def produce(self, unit: Unit, emit: Emit) -> Produced:
        """Work ``unit`` to a patch ready to land, or to its final result; a failure of the
        unit is a result, never a raise. The caller holds the unit's place among those
        worked; each agent call takes one of the agents' places, for the call alone."""
        started = time.monotonic()
        producing = self.lander.producing() if self.lander else contextlib.nullcontext()
        try:
            with producing:
                produced = await self._produce(unit, emit)
        except Exception as exc:  # one unit's failure must not cancel its siblings
            produced = Produced(failed_unit(unit, f"{type(exc).__name__}: {exc}", attempts=1))
        return replace(produced, started=started)

    @property
    def together(self) -> bool:
        """Whether units may be worked many at once (:meth:`produce_many`): by an agent that
        fixes many files in one call, checked by tools that judge a file by itself, with no
        tests to pass and nothing to watch around the agent's call."""
        return (
            fixes_together(self.agent)
            and self.gate is None
            and self.tripwire is None
            and all(collector.per_file for collector in self.collectors)
        )

    async def produce_many(self, units: Sequence[Unit], emit: EmitFor) -> list[Produced]:
        """:meth:`produce` for each of ``units`` (of one base), all in one tree of the pool
        with one agent call and one check per tool, when the pipeline works units
        :attr:`together`. A unit whose first attempt leaves it neither landable nor
        unchanged (its fix brought in something new, a guardrail refused it) is then worked
        alone, as :meth:`produce` works it. The caller holds one unit's place for them all."""
        if len(units) < 2 or not self.together or len({unit.base for unit in units}) > 1:
            return [await self.produce(unit, emit(unit.path)) for unit in units]
        started = time.monotonic()
        producing = self.lander.producing() if self.lander else contextlib.nullcontext()
        with producing:
            try:
                together = await self._produce_together(units, emit)
            except Exception:  # each unit, worked alone, meets what failed here on its own
                together = {}
            # Those left are worked alone, side by side: each takes an agent's place for its
            # calls, as any unit does, and the slowest (a file of 7,000 lines whose fixes
            # are held back rule by rule) holds up the others no longer than itself.
            alone = [unit for unit in units if unit.path not in together]
            worked = await asyncio.gather(*(self.produce(unit, emit(unit.path)) for unit in alone))
            together |= {one.result.path: one for one in worked}
        return [replace(together[unit.path], started=started) for unit in units]

    async def _produce_together(self, units: Sequence[Unit], emit: EmitFor) -> dict[str, Produced]:
        """What came of the units whose one attempt together settled them, by path."""
        for unit in units:
            emit(unit.path)(Phase.ISOLATING)
        async with self.workspaces.tree(units[0].base) as space:
            root = space.root
            originals = await asyncio.to_thread(_read_each, root, units)
            if None in originals:
                return {}  # each is told why alone
            if self.limit.waiting():
                for unit in units:
                    emit(unit.path)(Phase.WAITING)
            async with self.limit.call():
                for unit in units:
                    emit(unit.path)(Phase.AGENT)
                started = time.monotonic()
                tasks = [AgentTask(unit, root) for unit in units]
                async with asyncio.timeout(self.policy.agent_timeout):
                    outcomes = await fix_many(self.agent, tasks)
                agent_s = (time.monotonic() - started) / len(units)
            if space.tampered() is not None:
                return {}
            for unit in units:
                emit(unit.path)(Phase.VERIFYING)
            verdicts = await self._verify_together(units, space, originals)
            settled: dict[str, Produced] = {}
            for unit, outcome, (verdict, now) in zip(units, outcomes, verdicts, strict=True):
                if verdict.status is Status.UNCHANGED:
                    reason = outcome.note or verdict.reason or "the agent changed nothing"
                    result = replace(_unchanged(unit, reason), agent_s=agent_s)
                    settled[unit.path] = Produced(result)
                elif verdict.status in LANDABLE and now is not None:
                    why = verdict.reason or _left(verdict, outcome.note, None)
                    result = result_of(unit, verdict, reason=why, attempts=1, agent_s=agent_s)
                    blob, content = await space.blob(unit, now)
                    patch = Patch(unit.path, unit.mode, unit.base_blob, blob, content)
                    settled[unit.path] = Produced(result, (patch,))
        return settled

    async def _verify_together(
        self, units: Sequence[Unit], space: Space, originals: Sequence[bytes | None]
    ) -> list[tuple[Verdict, bytes | None]]:
        """:meth:`_verify` for each of ``units`` in one tree, each tool run once over the
        files that changed; a unit not settled here (refused, or no regular file) is given
        a verdict of FAILED, and is to be worked alone."""
        assert space.pooled is not None
        paths = {unit.path for unit in units}
        state = await git.private_state(space.pooled.repo)
        outside = sorted(path for path in state.changed if path not in paths)
        alone = Verdict(Status.FAILED, (), (), (), "to be worked alone")
        if outside:
            return [(alone, None)] * len(units)
        nows = await asyncio.to_thread(_read_each, space.root, units)
        verdicts: list[tuple[Verdict, bytes | None]] = []
        changed: list[tuple[Unit, bytes, bytes]] = []
        for unit, original, now in zip(units, originals, nows, strict=True):
            if now is None or file_violation(space.root / unit.path, unit.path, unit.mode):
                verdicts.append((alone, None))
            elif now == original:
                verdicts.append((judge(unit.diagnostics, unit.baseline, (), changed=False), now))
            elif original is None or redaction.active().written(original, now) is not None:
                verdicts.append((alone, None))
            else:
                verdicts.append((alone, now))
                changed.append((unit, original, now))
        if not self.policy.allow_suppressions:
            cheats = await self._suppression_violations(changed)
            changed = [change for change, cheat in zip(changed, cheats, strict=True) if not cheat]
        found: dict[str, list[Diagnostic]] = {unit.path: [] for unit, _, _ in changed}
        for collector in self.collectors:
            for diag in await space.collect_tree(collector, list(found)):
                found.setdefault(diag.path, []).append(diag)
        return [
            (judge(unit.diagnostics, unit.baseline, found[unit.path], changed=True), now)
            if unit.path in found and now is not None
            else (verdict, None)
            for unit, (verdict, now) in zip(units, verdicts, strict=True)
        ]

    async def _suppression_violations(
        self, changes: Sequence[tuple[Unit, bytes, bytes]]
    ) -> list[str | None]:
        """Why each change silences a tool instead of fixing the code, if it does: the
        parsing this takes is done by worker processes where the pipeline has them."""
        texts = [
            (original.decode(errors="replace"), now.decode(errors="replace"), unit.diagnostics)
            for unit, original, now in changes
        ]
        if self.offload is None:
            return suppression_violations(texts)
        return await self.offload.map(suppression_violations, texts)

    async def land(self, produced: Produced, emit: Emit) -> UnitResult:
        """Land what :meth:`produce` made (waiting for the landings before it): the unit's
        result. Landing is serial and needs no workspace, so it happens outside the limit."""
        try:
            result = await self._land(produced, emit)
        except Exception as exc:
            result = _refuse(produced.result, f"{type(exc).__name__}: {exc}")
        return replace(result, duration_s=time.monotonic() - produced.started)

    async def land_many(self, produced: Sequence[Produced], emit: EmitFor) -> list[UnitResult]:
        """:meth:`land` for each of ``produced``, their patches in one chain as far as
        nothing is in the way."""
        patches = sum(1 for one in produced if one.patch is not None)
        if self.lander is None or self.tripwire is not None or patches < 2:
            return [await self.land(one, emit(one.result.path)) for one in produced]
        try:
            results = await self._land_many(self.lander, produced, emit)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            results = [_refuse(one.result, reason) if one.patch else one.result for one in produced]
        now = time.monotonic()
        return [
            replace(result, duration_s=now - one.started)
            for result, one in zip(results, produced, strict=True)
        ]

    async def _land_many(
        self, lander: Lander, produced: Sequence[Produced], emit: EmitFor
    ) -> list[UnitResult]:
        patches = []
        for one in produced:
            if one.patch is not None:
                emit(one.result.path)(Phase.LANDING)
                patches.append((one.patch, self._message(one.result)))
        outcomes = iter(await lander.land_many(patches))
        return [
            _settled(one.result, next(outcomes)) if one.patch is not None else one.result
            for one in produced
        ]

    def _message(self, result: UnitResult) -> str:
        return commit_message(
            path=result.path,
            tools=sorted({diag.tool for diag in result.fixed}),
            codes=[diag.code for diag in result.fixed],
            run_id=self.run_id,
        )

    def landed(self, produced: Produced) -> UnitResult | None:
        """The unit's result if its patch is on the target now, for a landing whose caller
        was cancelled while it finished; None when it did not land."""
        patch = produced.patch
        if self.lander is None or patch is None:
            return None
        commit = self.lander.landed.get(patch.path)
        if commit is None:
            return None
        duration = time.monotonic() - produced.started
        return replace(produced.result, commit=commit, duration_s=duration)

    async def _produce(self, unit: Unit, emit: Emit) -> Produced:
        emit(Phase.ISOLATING)
        isolate = self.workspaces.tree(unit.base) if self.tree else self.workspaces.scratch(unit)
        async with isolate as space:
            original = await space.read(unit)
            before = await self._baseline(unit, space)
            result, source = await self._attempts(unit, space, original, before, emit)
            if result.status not in LANDABLE:
                return Produced(result)
            if self.gate is not None:
                emit(Phase.VERIFYING)
                await space.place(unit, source)
                blame = await self.gate.judge(space.root, unit.path)
                if blame is not None:
                    return Produced(_refuse(result, blame))
            # The bytes that were verified, as they were read: not the file read again.
            blob, content = await space.blob(unit, source)
            patch = Patch(unit.path, unit.mode, unit.base_blob, blob, content)
        return Produced(result, (patch,))

    async def _land(self, produced: Produced, emit: Emit) -> UnitResult:
        result, patch = produced.result, produced.patch
        if patch is None:
            return result
        if self.lander is None:
            root = self.workspaces.root
            if patch.content is not None:  # shown, not landed: stored for git to read
                await self.workspaces.blobs.write(patch.path, patch.content)
            # fix changes a file, never creates or deletes one: both blobs are there.
            assert patch.old_blob is not None and patch.new_blob is not None
            diff = await git.diff_blobs(root, patch.old_blob, patch.new_blob, patch.path)
            return replace(result, diff=diff)
        emit(Phase.LANDING)
        message = self._message(result)
        watched = self.tripwire.landing() if self.tripwire else contextlib.nullcontext()
        try:
            async with watched:
                landed = await self.lander.land(patch, message)
                if self.tripwire is not None:
                    self.tripwire.landed(landed.commit)
        except LandingRefused as refused:
            return _settled(result, refused)
        return _settled(result, landed)

    async def _attempts(
        self, unit: Unit, space: Space, original: bytes, before: list[Diagnostic], emit: Emit
    ) -> tuple[UnitResult, bytes]:
        """Let the agent try until the unit is fixed, stops improving, or runs out of tries;
        the result, and the bytes of the best state (what lands, if anything does).

        Each attempt starts from the best state so far and is told what the last one left
        (or broke). An attempt that does not lower the count of what is left ends the tries;
        an answer the agent could not even apply is fed back and tried again. An agent that
        changed what is not its workspace (the user's repository, stomper's own repository
        of the tree) fails the unit at once, whatever it fixed.
        """
        config_path = None if space.real_tree else space.config_path(unit)
        best_source = original
        best: Verdict | None = None
        reason: str | None = None
        refusal: str | None = None
        feedback: str | None = None
        introduced: tuple[Diagnostic, ...] = ()
        note: str | None = None
        repeats = deterministic(self.agent)
        touched = False
        spent = tokens_in = tokens_out = 0
        agent_s = 0.0
        ran_out: str | None = None
        deadline = time.monotonic() + self.policy.agent_timeout
        for attempt in range(1, self.policy.max_attempts + 1):
            try:
                call = self.budget.take(unit.path)
            except Spent as exhausted:
                ran_out = str(exhausted)
                break
            spent = attempt
            outcome: AgentOutcome | None = None
            timed_out = False
            if self.limit.waiting():
                emit(Phase.WAITING)
            waiting = time.monotonic()
            async with call, self.limit.call():
                started = time.monotonic()
                # The wait for an agent's place is no time of the agent's.
                deadline += started - waiting
                emit(Phase.AGENT)
                try:
                    task = AgentTask(unit, space.root, attempt, feedback, config_path, introduced)
                    outcome = await self._call_agent(task, deadline)
                except AttemptFailed as failed:
                    tokens_in += failed.tokens_in
                    tokens_out += failed.tokens_out
                    self.budget.spend(unit.path, failed.tokens_in, failed.tokens_out)
                    touched, feedback = True, failed.feedback
                    reason = f"attempt {attempt}: {failed.feedback}"
                except TimeoutError:
                    touched = timed_out = True
                    reason = f"the agent ran past {self.policy.agent_timeout:g}s on this unit"
                except Breach as breach:
                    refusal = breach.reason
                finally:
                    agent_s += time.monotonic() - started
            refusal = refusal or space.tampered()
            if refusal is not None:
                await space.restore(unit, original)
                break
            if outcome is None:
                await space.restore(unit, best_source)
                if timed_out:
                    break
                continue
            tokens_in += outcome.tokens_in
            tokens_out += outcome.tokens_out
            self.budget.spend(unit.path, outcome.tokens_in, outcome.tokens_out)
            emit(Phase.VERIFYING)
            try:
                # The unit's time holds for the checks of what the agent did, too.
                async with asyncio.timeout_at(_loop_time(deadline)):
                    verdict, now = await self._verify(unit, space, before, original)
            except TimeoutError:
                touched = True
                reason = (
                    f"the agent ran past {self.policy.agent_timeout:g}s on this unit "
                    f"(while its attempt {attempt} was checked)"
                )
                await space.restore(unit, best_source)
                break
            if verdict.status is Status.UNCHANGED:
                reason = outcome.note or verdict.reason
                break
            if verdict.status in LANDABLE and now == best_source:
                reason = f"attempt {attempt} changed nothing more"
                break
            touched = True
            if now is not None and _better(verdict, best):
                best, best_source, reason, note = verdict, now, None, outcome.note
                # Told what is left, an agent that always answers alike would only repeat.
                if verdict.status is Status.FIXED or repeats:
                    break
                feedback = _feedback(verdict)
                continue
            await space.restore(unit, best_source)
            if best is None and verdict.introduced and not introduced:
                # Told what its change broke, the agent may find a change that breaks nothing.
                feedback, introduced = _feedback(verdict), verdict.introduced
                reason = f"attempt {attempt}: {verdict.reason}"
                continue
            reason = (
                f"stopped after attempt {attempt}, which did not reduce what is left: "
                f"{verdict.reason or describe(verdict.remaining)}"
            )
            break
        if ran_out is not None and spent == 0:
            return UnitResult(
                unit.path,
                Status.SKIPPED,
                unit.diagnostics,
                remaining=unit.diagnostics,
                reason=f"{NOT_BEGUN}{ran_out}",
            ), original
        if ran_out is not None:
            reason = f"{reason}; then {ran_out}" if reason else f"stopped: {ran_out}"
        if best is None or refusal is not None:
            status = Status.FAILED if touched or refusal else Status.UNCHANGED
            return UnitResult(
                unit.path,
                status,
                unit.diagnostics,
                remaining=unit.diagnostics,
                attempts=spent,
                reason=refusal or reason or "the agent changed nothing",
                agent_s=agent_s,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
            ), original
        return result_of(
            unit,
            best,
            reason=best.reason or _left(best, note, reason),
            attempts=spent,
            agent_s=agent_s,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
        ), best_source

    async def _call_agent(self, task: AgentTask, deadline: float) -> AgentOutcome:
        """One call of the agent within the unit's deadline. Around an agent that runs
        without a sandbox the user's repository is checked, whatever the call did: a change
        raises :class:`Breach`."""
        tripwire = self.tripwire
        watch = await tripwire.arm() if tripwire is not None else None
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                outcome = await self.agent.fix(task)
        except (AttemptFailed, TimeoutError):
            if tripwire is not None and watch is not None:
                await tripwire.check(watch)
            raise
        except BaseException:
            if tripwire is not None and watch is not None:
                tripwire.disarm(watch)
            raise
        if tripwire is not None and watch is not None:
            await tripwire.check(watch)
        return outcome

    async def _verify(
        self, unit: Unit, space: Space, before: list[Diagnostic], original: bytes
    ) -> tuple[Verdict, bytes | None]:
        """Judge the space's state (guardrails first, then the diagnostics), and the file's
        bytes as they were read, once, for both: None when the guardrails refused it."""
        scope = await space.violation(unit)
        if scope is not None:
            return Verdict(Status.FAILED, (), unit.diagnostics, (), scope), None
        try:
            now = await space.read(unit)
        except (NotRegular, FileNotFoundError) as exc:
            refused = f"the change leaves no regular file at {unit.path}: {exc}"
            return Verdict(Status.FAILED, (), unit.diagnostics, (), refused), None
        if now == original:
            return judge(unit.diagnostics, before, before, changed=False), now
        # Before any tool reads it: a diagnostic may quote the secret, and feedback carries
        # diagnostics to the agent.
        leak = redaction.active().written(original, now)
        if leak is not None:
            return Verdict(Status.FAILED, (), unit.diagnostics, (), leak), now
        if not self.policy.allow_suppressions:
            cheat = suppression_violation(
                original.decode(errors="replace"), now.decode(errors="replace"), unit.diagnostics
            )
            if cheat is not None:
                return Verdict(Status.FAILED, (), unit.diagnostics, (), cheat), now
        after = await space.collect(self.collectors, unit, now)
        return judge(unit.diagnostics, before, after, changed=True), now

    async def _baseline(self, unit: Unit, space: Space) -> list[Diagnostic]:
        """The file's findings before the agent: those of the tools that check a tree are
        collected again, in the workspace's tree at the base (once for all the run's
        units), since the checkout's own may differ (files of the user's, untracked)."""
        again = [c for c in self.collectors if not c.per_file]
        if not again:
            return list(unit.baseline)
        names = {c.name for c in again}
        found = [d for d in unit.baseline if d.tool not in names]
        for collector in again:
            found += await self.workspaces.baseline(collector, unit, space)
        return found


def _better(verdict: Verdict, best: Verdict | None) -> bool:
    """Whether an attempt improves on the best so far: landable, and fewer left."""
    if verdict.status not in LANDABLE:
        return False
    return best is None or len(verdict.remaining) < len(best.remaining)


def _left(verdict: Verdict, note: str | None, why: str | None) -> str | None:
    """Why a landable unit stands as it does: what is left, and what the agent said of it."""
    if not verdict.remaining:
        return note
    said = "; ".join(part for part in (note, why) if part)
    return f"left: {counted(verdict.remaining)}" + (f" ({said})" if said else "")


def _feedback(verdict: Verdict) -> str:
    parts = (
        [f"Still reported: {describe(verdict.remaining, limit=20)}"] if verdict.remaining else []
    )
    if verdict.introduced:
        parts.append(f"New diagnostics: {describe(verdict.introduced, limit=20)}")
    if verdict.reason:
        parts.append(verdict.reason)
    return "\n".join(parts)


def _settled(result: UnitResult, outcome: Landed | Exception) -> UnitResult:
    """The unit's result once its patch landed, or did not."""
    if isinstance(outcome, Landed):
        return replace(result, commit=outcome.commit, landing_s=outcome.seconds)
    if isinstance(outcome, LandingRefused):
        status = Status.SKIPPED if outcome.skipped else Status.FAILED
        # A file committed to meanwhile is not the one counted: what it holds is unknown.
        remaining = () if outcome.superseded else None
        return _refuse(result, outcome.reason, status=status, remaining=remaining)
    return _refuse(result, f"{type(outcome).__name__}: {outcome}")


def _unchanged(unit: Unit, reason: str) -> UnitResult:
    return UnitResult(
        unit.path,
        Status.UNCHANGED,
        unit.diagnostics,
        remaining=unit.diagnostics,
        attempts=1,
        reason=reason,
    )


def _read_each(root: Path, units: Sequence[Unit]) -> list[bytes | None]:
    """The bytes of each unit's file in the tree at ``root`` (never through a symlink); None
    for one that is no regular file."""
    found: list[bytes | None] = []
    for unit in units:
        try:
            found.append(read_regular(root, unit.path))
        except (NotRegular, FileNotFoundError):
            found.append(None)
    return found


def _loop_time(deadline: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def failed_unit(unit: Unit, reason: str, *, attempts: int) -> UnitResult:
    """``unit`` failed for ``reason``: what it targeted is all left."""
    return UnitResult(
        unit.path,
        Status.FAILED,
        unit.diagnostics,
        remaining=unit.diagnostics,
        attempts=attempts,
        reason=reason,
    )


def _refuse(
    result: UnitResult,
    reason: str,
    *,
    status: Status = Status.FAILED,
    remaining: tuple[Diagnostic, ...] | None = None,
) -> UnitResult:
    """The unit's patch will not land: what it fixed is not fixed on the target, and what
    it targeted remains (unless told what remains)."""
    return replace(
        result,
        status=status,
        fixed=(),
        remaining=result.before if remaining is None else remaining,
        introduced=(),
        reason=reason,
    )
