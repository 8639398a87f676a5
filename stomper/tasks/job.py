"""``run`` as a job of the engine: each unit is a task, worked by its agent in a workspace
of its own, verified, and landed through a merge queue.

A task begins when the scheduler gives it its turn (:mod:`stomper.tasks.schedule`): its
dependencies landed, a place among the N, its paths locked. Each attempt starts from a
pooled tree at the target's tip (so it sees what its dependencies landed): the agent works
(a CLI agent in the tree; a chat model, :mod:`stomper.tasks.chat`, is shown the task's files
in its prompt and answers with edits, applied to the tree), and what it spent is counted
against the budget (:mod:`stomper.budget`). The change is read from the tree
(:mod:`stomper.tasks.change`; a change that breaks a rule is **blocked**, and not tried
again), its Python files must hold no ruff finding they did not hold before, and the task's
``verify`` runs on exactly those bytes, in a fresh tree, contained. A failure goes back to
the agent with the output, up to the task's ``max_attempts`` (the verdicts: PASS, FAIL,
BLOCKED).

Changes land one at a time (the merge queue). When the target moved since the change's
base, and changed one of the change's files meanwhile, the two are merged three ways
(``git merge-tree``); a conflict has the task worked once more on the new tip, with the
conflict described, and then fail naming the paths. A change that merges is verified again
on the target as it is now, with the change on top: two tasks that pass alone but not
together never both land. The change lands as one commit
(``task(<id>): <the prompt's first line>``, with stomper's trailers).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from stomper import git, proc
from stomper.agents import AgentOutcome, AttemptFailed
from stomper.budget import NOT_BEGUN, Budget, Spent, Use
from stomper.diagnostics.ruff import RuffCollector
from stomper.events import Phase
from stomper.gate import failed_tests
from stomper.landing import Landed, Lander, LandingRefused, TipMoved
from stomper.plan import PYTHON_SUFFIXES
from stomper.store import Blobs
from stomper.tasks.breaker import Breaker
from stomper.tasks.change import Blocked, Change, collect, describe
from stomper.tasks.locks import Held
from stomper.tasks.plan import Planned
from stomper.tasks.prompt import task_prompt
from stomper.tasks.schedule import DependencyFailed, Scheduler
from stomper.unit import Patch, Status, UnitResult, quote_path
from stomper.verify import match
from stomper.workflow.build import Builder, Built
from stomper.workflow.job import EmitFor, Produced
from stomper.workflow.limit import Limit
from stomper.workspace import Workspaces

_SUBJECT_MAX = 72
_MOVES = 3
"""Times a change is verified again because the branch moved before it could land."""
_TAIL = 40
VERIFY_TIMEOUT = 900.0
"""Seconds a task's ``verify`` may run when the task sets no ``timeout``."""
_REGULAR = frozenset({"100644", "100755"})
SHOWN_BYTES = 200_000
"""The most file text the prompt of an agent that sees no tree shows, all files together."""


class TaskAgent(Protocol):
    """What works a task: a CLI agent (:class:`~stomper.agents.command.CommandAgent`) or a
    chat model (:class:`~stomper.tasks.chat.ChatTaskAgent`)."""

    name: str
    sees_tree: bool
    """Whether it reads the files in its tree itself; if not, the prompt shows them."""
    reports_tokens: bool
    answer_format: str | None
    """How its answer is to be written, told in the prompt; None: it edits the tree."""

    async def work(self, workspace: Path, prompt: str, *, file: str) -> AgentOutcome: ...

    async def ready(self) -> None: ...


@dataclass(frozen=True)
class TaskUnit:
    """A task as the engine knows it: by its id."""

    index: int
    planned: Planned

    @property
    def path(self) -> str:
        return self.planned.id


@dataclass
class Attempt:
    """One attempt at a task, for the audit trail."""

    number: int
    verdict: str
    """``PASS``, ``FAIL`` or ``BLOCKED``."""
    feedback: str | None = None
    change: str | None = None
    """What the change did (``2 changed, 1 created``)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.number,
            "verdict": self.verdict,
            "feedback": self.feedback,
            "change": self.change,
        }


@dataclass
class TaskRecord:
    """What became of one task: the audit trail's record of it."""

    task: str
    prompt: str
    agent: str
    attempts: list[Attempt] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    """The paths its landed change holds."""
    started: float = 0.0
    queued: float = 0.0
    ended: float = 0.0
    """When its agent first began, when its change came to the merge queue (0: never),
    and when it landed or failed (``time.time()``)."""
    use: Use = field(default_factory=Use)
    """What its agent calls spent."""

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "prompt": self.prompt,
            "agent": self.agent,
            "attempts": [attempt.to_json() for attempt in self.attempts],
            "files": self.files,
            "started": self.started,
            "queued": self.queued,
            "ended": self.ended,
            "use": self.use.to_json(),
        }


@dataclass(frozen=True)
class _Foreseen:
    """A change as it would land once the changes ahead of it in the merge queue landed."""

    base: str
    """The commit it is merged onto: the target's tip, or a commit made of the tip and the
    changes ahead (no ref names it)."""
    tree: str
    """That commit's tree: where the target must be when its turn comes, for what was
    foreseen to hold."""
    change: Change | None
    """The change on ``base``; None where it does not merge there."""


@dataclass
class _InLine:
    """A change in the merge queue, and what is foreseen of it."""

    unit: TaskUnit
    change: Change
    ahead: _InLine | None
    """The change in line before it when it came (None: none was)."""
    foreseen: asyncio.Future[_Foreseen | None]
    verdict: asyncio.Task[str | None] | None = None
    """Its check on the foreseen target: why it fails there, or None."""


@dataclass(frozen=True)
class _Conflict:
    """The change does not merge with the target: these paths conflict, of those the
    target changed since the change's base."""

    paths: tuple[str, ...]
    moved: tuple[str, ...]


@dataclass(frozen=True)
class _Worked:
    """How a task's attempts ended: its change, or why there is none."""

    change: Change | None
    status: Status = Status.LANDED
    reason: str | None = None


class TaskJob:
    """Works the tasks of one run; made per run."""

    def __init__(
        self,
        *,
        agents: dict[str, TaskAgent],
        default_agent: str,
        scheduler: Scheduler,
        workspaces: Workspaces,
        builder: Builder,
        lander: Lander,
        blobs: Blobs,
        limit: Limit,
        audit: Path,
        ruff: RuffCollector | None = None,
        budget: Budget | None = None,
        breaker: Breaker | None = None,
        tests: tuple[str, ...] | None = None,
        merge_index: Path | None = None,
        speculate: bool = True,
    ) -> None:
        self.agents = agents
        self.default_agent = default_agent
        self.scheduler = scheduler
        self.workspaces = workspaces
        self.builder = builder
        self.lander = lander
        self.blobs = blobs
        self.audit = audit
        """The journal's file of task records, one JSON line each."""
        self.ruff = ruff
        """What checks the change's Python files for findings not there before."""
        self.merge_index = merge_index or audit.with_name("merge-index")
        """A private index, where the trees of changes to merge are built."""
        self.tests = tests
        """``test_cmd``'s argv: run on each change, against its base's own failures."""
        self._baselines: dict[str, asyncio.Task[Built]] = {}
        self.budget = budget or Budget()
        self.breaker = breaker or Breaker()
        self.records: dict[str, TaskRecord] = {}
        self._limit = limit
        self._queue = asyncio.Lock()
        """The merge queue: one change verified on the target and landed at a time."""
        self._held: dict[str, Held] = {}
        self._units: dict[str, TaskUnit] = {}
        self._changes: dict[str, Change] = {}
        """Changes verified, waiting for their turn to land."""
        self.speculate = speculate
        """Whether a change in the merge queue is checked on the target as the changes
        ahead of it will leave it, while those are checked and land."""
        self.foreseen = {"used": 0, "redone": 0}
        """Changes whose check ahead of their turn held at it, and those checked again."""
        self._line: list[_InLine] = []
        self._indexing = asyncio.Lock()
        """The private index is one: one tree is built in it at a time."""

    @property
    def limit(self) -> Limit:
        return self._limit

    async def produce_many(self, units: Sequence[TaskUnit], emit: EmitFor) -> list[Produced]:
        return [await self._produce(unit, emit) for unit in units]

    async def _produce(self, unit: TaskUnit, emit: EmitFor) -> Produced:
        task = unit.planned.task
        started = time.monotonic()
        record = self.records.setdefault(
            task.id, TaskRecord(task.id, task.prompt, task.agent or self.default_agent)
        )
        try:
            held = await self.scheduler.turn(unit.planned)
        except DependencyFailed as failed:
            result = UnitResult(task.id, Status.SKIPPED, (), reason=str(failed))
            self._settled(task.id, result)
            return Produced(result, started=started)
        reached = self.budget.exhausted()
        if reached is not None:
            self.scheduler.leave()
            self._held[task.id] = held
            why = f"{NOT_BEGUN}the run's {reached} is spent"
            result = UnitResult(task.id, Status.SKIPPED, (), reason=why)
            self._settled(task.id, result)
            return Produced(result, started=started)
        self._held[task.id] = held
        self._units[task.id] = unit
        record.started = record.started or time.time()
        try:
            async with asyncio.timeout(task.timeout):
                worked = await self._work(unit, emit, record, feedback=None)
        except TimeoutError:
            why = f"it ran past its timeout of {task.timeout:g}s and was stopped"
            worked = _Worked(None, Status.FAILED, why)
        except Spent as spent:
            # Stopped from outside the task: `stomper resume` works it again.
            worked = _Worked(None, Status.SKIPPED, f"stopped: {spent}")
        except Exception as exc:  # one task's failure must not cancel the others
            worked = _Worked(None, Status.FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            self.scheduler.leave()
        attempts = len(record.attempts)
        if worked.change is None:
            result = UnitResult(task.id, worked.status, (), attempts=attempts, reason=worked.reason)
            self._settled(task.id, result)
            return Produced(result, started=started)
        result = UnitResult(task.id, Status.LANDED, (), attempts=attempts)
        self._changes[task.id] = worked.change
        return Produced(result, worked.change.patches, started=started)

    async def _work(
        self, unit: TaskUnit, emit: EmitFor, record: TaskRecord, *, feedback: str | None
    ) -> _Worked:
        """The task's attempts until one passes, is blocked, or none are left."""
        task = unit.planned.task
        agent = self.agents[task.agent or self.default_agent]
        phase = emit(task.id)
        name = task.agent or self.default_agent
        for _ in range(task.max_attempts):
            number = len(record.attempts) + 1
            await self.breaker.ready(name)
            tip = await self._tip()
            call = self.budget.take(task.id, task.limits)
            record.use = self.budget.of(task.id)
            phase(Phase.AGENT)
            async with call, self.workspaces.tree(tip) as space, self._limit.call():
                prompt, file = await self._prompt(agent, unit, space.root, tip, feedback)
                try:
                    outcome = await agent.work(space.root, prompt, file=file)
                except AttemptFailed as failed:
                    self.budget.spend(task.id, failed.tokens_in, failed.tokens_out)
                    self.breaker.record(name, failed=True)
                    record.attempts.append(Attempt(number, "FAIL", failed.feedback))
                    feedback = failed.feedback
                    continue
                self.budget.spend(task.id, outcome.tokens_in, outcome.tokens_out)
                self.breaker.record(name, failed=False)
                phase(Phase.VERIFYING)
                try:
                    change = await collect(space, tip, task, self.blobs)
                except Blocked as blocked:
                    record.attempts.append(Attempt(number, "BLOCKED", str(blocked)))
                    return _Worked(None, Status.BLOCKED, f"blocked: {blocked}")
            if not change.patches:
                feedback = "You changed nothing: make the change the task asks for."
                record.attempts.append(Attempt(number, "FAIL", feedback))
                continue
            brought = await self._brought_in(change)
            if brought:
                feedback = f"ruff finds what was not there before:\n{brought}"
                record.attempts.append(Attempt(number, "FAIL", feedback, describe(change.patches)))
                continue
            why_not = await self._checked(unit, change, tip)
            if why_not is not None:
                record.attempts.append(Attempt(number, "FAIL", why_not, describe(change.patches)))
                feedback = why_not
                continue
            record.attempts.append(Attempt(number, "PASS", None, describe(change.patches)))
            return _Worked(change)
        last = record.attempts[-1].feedback if record.attempts else None
        why = f"no attempt of {task.max_attempts} passed"
        return _Worked(None, Status.FAILED, f"{why}; the last: {last}" if last else why)

    async def _prompt(
        self, agent: TaskAgent, unit: TaskUnit, tree: Path, tip: str, feedback: str | None
    ) -> tuple[str, str]:
        """The prompt of one attempt, and the file a block or ``{file}`` that names none
        stands for; an agent that does not see the tree is shown the task's files as
        ``tip`` has them (the tree at ``tree``), up to :data:`SHOWN_BYTES`."""
        task = unit.planned.task
        first = task.files[0]
        if agent.sees_tree:
            return task_prompt(task, feedback=feedback), first.text
        tracked = await git.tree_entries(self.lander.root, tip)
        paths = {
            path for pattern in (*task.files, *task.reads) for path in pattern.matches(tracked)
        }
        missing = [one.text for one in task.files if not one.wild and not one.matches(tracked)]
        shown: dict[str, str | None] = dict.fromkeys(missing)
        too_large: list[str] = []  # or not text, or not a file
        room = SHOWN_BYTES
        for path in sorted(paths):
            if tracked[path].mode not in _REGULAR:  # a link is not followed out of the tree
                too_large.append(path)
                continue
            data = (tree / path).read_bytes()
            text = _text(data) if len(data) <= room else None
            if text is None:
                too_large.append(path)
                continue
            room -= len(data)
            shown[path] = text
        file = first.text if not first.wild else min(first.matches(shown) or [first.text])
        prompt = task_prompt(
            task,
            feedback=feedback,
            shown=shown,
            too_large=too_large,
            answer_format=agent.answer_format,
        )
        return prompt, file

    async def _brought_in(self, change: Change) -> str:
        """ruff's findings in the change's Python files that the files did not have before
        (as the project's settings have ruff see them), one line each; none: empty."""
        if self.ruff is None:
            return ""
        lines = []
        for patch, content in zip(change.patches, change.contents, strict=True):
            if content is None or not patch.path.endswith(PYTHON_SUFFIXES):
                continue
            old = await self.blobs.read(patch.old_blob) if patch.old_blob is not None else b""
            root = self.lander.root
            before = await self.ruff.collect_source(root, patch.path, old) if old else []
            after = await self.ruff.collect_source(root, patch.path, content)
            _gone, _kept, new = match(before, after)
            lines += [f"{patch.path}:{d.line}: {d.code} {d.message}" for d in new]
        return "\n".join(lines)

    async def _checked(self, unit: TaskUnit, change: Change, tip: str) -> str | None:
        """Why ``change`` on ``tip`` fails the task's ``verify`` or the tests, if it does."""
        task = unit.planned.task
        built = await self._verify(unit, change, tip)
        if built is not None and not built.passed:
            return f"`{task.verify}` failed:\n{built.tail(_TAIL)}"
        return await self._tested(unit, change, tip)

    async def _tested(self, unit: TaskUnit, change: Change, tip: str) -> str | None:
        """Why the tests (``test_cmd``) fail with ``change`` on ``tip`` beyond how they fail
        on ``tip`` alone, if they do: tests failing there already are not blamed."""
        if self.tests is None:
            return None
        task = unit.planned.task
        after = await self.builder.run(tip, self.tests, change.edits(), what=f"tests of {task.id}")
        if after.passed:
            return None
        if tip not in self._baselines:
            alone = self.builder.run(tip, self.tests, (), what=f"tests at {tip[:12]}")
            self._baselines[tip] = asyncio.ensure_future(alone)
        base = await asyncio.shield(self._baselines[tip])
        if base.passed:
            return f"the tests fail with this change:\n{after.tail(_TAIL)}"
        new = failed_tests(after.output) - failed_tests(base.output)
        if new:
            return f"the change makes tests fail: {', '.join(sorted(new))}\n{after.tail(_TAIL)}"
        return None

    async def _verify(self, unit: TaskUnit, change: Change, tip: str) -> Built | None:
        """The task's ``verify`` on ``tip`` with ``change`` written in; None when it has none."""
        task = unit.planned.task
        if not task.verify:
            return None
        argv = proc.split_command(task.verify, setting="verify", example="pytest -q")
        within = task.timeout or VERIFY_TIMEOUT
        what = f"verify of {task.id}"
        return await self.builder.run(tip, argv, change.edits(), what=what, within=within)

    async def land_many(self, produced: Sequence[Produced], emit: EmitFor) -> list[UnitResult]:
        return [await self._land(one, emit) for one in produced]

    async def _land(self, produced: Produced, emit: EmitFor) -> UnitResult:
        result = produced.result
        change = self._changes.pop(result.path, None)
        if change is None:
            return result
        unit = self._units[result.path]
        queued = 0.0
        self.records[result.path].queued = time.time()
        reworked = False
        try:
            while True:
                entry = self._enqueue(unit, change)
                try:
                    async with self._queue:
                        emit(result.path)(Phase.LANDING)
                        began = time.monotonic()
                        try:
                            merged = await self._merge(entry, reworked=reworked)
                        finally:
                            queued += time.monotonic() - began
                finally:
                    self._dequeue(entry)
                if not isinstance(merged, _Conflict):
                    landed = merged
                    break
                # Worked again out of the queue, which goes on meanwhile; then in line anew.
                worked = await self._rework(unit, emit, merged)
                if worked.change is None:
                    reason = f"conflict with {', '.join(merged.moved)}; worked again: "
                    landed = _failed(result.path, reason + f"{worked.reason}", worked.status)
                    break
                change, reworked = worked.change, True
        except Spent as spent:  # worked again after a conflict, with nothing left to spend
            landed = replace(result, status=Status.SKIPPED, reason=f"stopped: {spent}")
        except Exception as exc:
            landed = replace(result, status=Status.FAILED, reason=f"{type(exc).__name__}: {exc}")
        landed = replace(
            landed,
            attempts=len(self.records[result.path].attempts),
            duration_s=time.monotonic() - produced.started,
            landing_s=queued,
        )
        self._settled(result.path, landed)
        return landed

    def _enqueue(self, unit: TaskUnit, change: Change) -> _InLine:
        """``change`` in line for the merge queue; with speculation, its check on the
        target as the changes ahead will leave it begins now."""
        ahead = self._line[-1] if self._line else None
        entry = _InLine(unit, change, ahead, asyncio.get_running_loop().create_future())
        self._line.append(entry)
        if self.speculate:
            entry.verdict = asyncio.ensure_future(self._foresee(entry))
        else:
            entry.foreseen.set_result(None)
        return entry

    def _dequeue(self, entry: _InLine) -> None:
        self._line.remove(entry)
        if entry.verdict is not None and not entry.verdict.done():
            entry.verdict.cancel()
        if not entry.foreseen.done():
            entry.foreseen.set_result(None)

    async def _foresee(self, entry: _InLine) -> str | None:
        """Check ``entry``'s change on the target as it will be once the changes ahead of
        it landed (speculation, as Zuul does): merged onto what those make, verified there
        while they are verified and land. Why it fails there, or None."""
        try:
            seen = await self._foreseen_onto(entry)
        except Exception:  # nothing foreseen: the change is checked at its turn
            seen = None
        if not entry.foreseen.done():
            entry.foreseen.set_result(seen)
        if seen is None or seen.change is None or seen.base == entry.change.base:
            return None  # on its own base, the change was checked as the task was worked
        return await self._checked(entry.unit, seen.change, seen.base)

    async def _foreseen_onto(self, entry: _InLine) -> _Foreseen:
        base = await self._after(entry.ahead)
        change = entry.change
        onto = change if base == change.base else await self._onto(change, base)
        return _Foreseen(base, await self.blobs.tree_id(base), onto)

    async def _after(self, ahead: _InLine | None) -> str:
        """The commit the target is foreseen at once ``ahead`` and those before it landed."""
        seen = await asyncio.shield(ahead.foreseen) if ahead is not None else None
        if seen is None:
            return await self._tip()
        if seen.change is None:
            return seen.base  # it does not merge as foreseen: it does not land before
        root = self.lander.root
        entries = await self._entries(seen.change)
        async with self._indexing:
            tree = await git.tree_of(root, seen.base, entries, index_file=self.merge_index)
        return await git.commit_tree(root, tree, seen.base, "the target as foreseen")

    async def _onto(self, change: Change, base: str) -> Change | None:
        """``change`` as it lands on ``base``; None where it does not merge there or brings
        nothing new."""
        if not await _moved(self.blobs, change, base):
            return replace(change, base=base)
        merged, _conflicts = await self._merged(change, base)
        return merged if merged is not None and merged.patches else None

    async def _foreseen_at(self, entry: _InLine, tip: str) -> tuple[Change, str | None] | None:
        """``entry``'s change on ``tip`` and why it fails there, as its check ahead of its
        turn found them, if that check was made on a target of ``tip``'s very tree."""
        if entry.verdict is None:
            return None
        seen = await asyncio.shield(entry.foreseen)
        if seen is None or seen.change is None or seen.tree != await self.blobs.tree_id(tip):
            entry.verdict.cancel()
            self.foreseen["redone"] += 1
            return None
        try:
            why_not = await entry.verdict
        except Exception:  # the check itself broke: made again, at its turn
            self.foreseen["redone"] += 1
            return None
        self.foreseen["used"] += 1
        return replace(seen.change, base=tip), why_not

    async def _rework(self, unit: TaskUnit, emit: EmitFor, conflict: _Conflict) -> _Worked:
        """The task worked once more on the target as it is now, told of ``conflict``, in
        its place among the N, within its timeout."""
        task = unit.planned.task
        feedback = (
            f"While you worked, the branch changed {', '.join(conflict.paths)} where your "
            "change does: it does not merge. Make your change again on the files as they "
            "are now."
        )
        try:
            async with (
                self.scheduler.place(unit.planned, self._held[task.id]),
                asyncio.timeout(task.timeout),
            ):
                return await self._work(unit, emit, self.records[task.id], feedback=feedback)
        except TimeoutError:
            why = f"worked again after a conflict, it ran past {task.timeout:g}s"
            return _Worked(None, Status.FAILED, why)

    async def _merge(self, entry: _InLine, *, reworked: bool) -> UnitResult | _Conflict:
        """Land the entry's change on the target as it is now, verified there (or where
        its speculative check found the target as it is now); the conflict, when the target
        changed one of its files in a way that does not merge (and the change is not a
        reworking of one already)."""
        unit, change = entry.unit, entry.change
        task = unit.planned.task
        record = self.records[task.id]
        moves = 0  # tips that moved between the check and the landing
        while True:
            tip = await self._tip()
            first = moves == 0
            known = await self._foreseen_at(entry, tip) if first and tip != change.base else None
            if tip != change.base and known is not None:
                change, why_not = known
                if why_not is not None:
                    return _failed(
                        task.id, f"passed alone but not on the branch as it is now: {why_not}"
                    )
            elif tip != change.base:
                moved = await _moved(self.blobs, change, tip)
                merged, conflicts = await self._merged(change, tip) if moved else (None, [])
                if merged is not None and not merged.patches:
                    return _failed(task.id, "not landed: the branch holds this change already")
                if merged is not None:
                    change = merged
                elif moved:
                    if reworked:
                        return _failed(
                            task.id,
                            f"conflict: {', '.join(conflicts)} changed on the branch in a way "
                            "that does not merge with the task's change, twice",
                        )
                    return _Conflict(tuple(conflicts), tuple(moved))
                why_not = await self._checked(unit, change, tip)
                if why_not is not None:
                    return _failed(
                        task.id, f"passed alone but not on the branch as it is now: {why_not}"
                    )
            # Only on the tip it was verified on: a commit that came meanwhile (the user's)
            # has the change verified again on the branch as it is then.
            landed = await self.lander.land_commits([(change.patches, self._message(unit))], on=tip)
            outcome = landed[0]
            if isinstance(outcome, Landed):
                record.files = change.paths
                return UnitResult(task.id, Status.LANDED, (), commit=outcome.commit)
            moved_under = isinstance(outcome, TipMoved) or (
                isinstance(outcome, LandingRefused) and outcome.superseded
            )
            if moved_under and moves < _MOVES:
                moves += 1
                continue  # checked again (merged again, if it must) on the branch as it is
            return _failed(task.id, f"not landed: {outcome}")

    async def _entries(self, change: Change) -> dict[str, git.TreeEntry | None]:
        """The change as tree entries (None: removed), its blobs stored."""
        entries: dict[str, git.TreeEntry | None] = {}
        for patch, content in zip(change.patches, change.contents, strict=True):
            if patch.new_blob is None or content is None:
                entries[patch.path] = None
                continue
            if patch.content is not None:  # not stored yet
                await self.blobs.write(patch.path, content)
            entries[patch.path] = git.TreeEntry(patch.mode, patch.new_blob)
        return entries

    async def _merged(self, change: Change, tip: str) -> tuple[Change | None, list[str]]:
        """``change`` merged three ways onto ``tip`` (``git merge-tree``), as the change it
        makes there; else None and the paths in conflict."""
        root = self.lander.root
        entries = await self._entries(change)
        async with self._indexing:
            tree = await git.tree_of(root, change.base, entries, index_file=self.merge_index)
        mine = await git.commit_tree(root, tree, change.base, "the change of a task")
        merged = await git.merge_commits(root, tip, mine)
        if merged is None or merged.conflicts:
            return None, list(merged.conflicts) if merged is not None else change.paths
        after = await self.blobs.entries(merged.tree, change.paths)
        now = await self.blobs.entries(tip, change.paths)
        patches: list[Patch] = []
        contents: list[bytes | None] = []
        for path in change.paths:
            new, old = after.get(path), now.get(path)
            if new == old:
                continue
            mode = new.mode if new is not None else old.mode if old is not None else "100644"
            patches.append(
                Patch(
                    path,
                    mode,
                    old.blob if old is not None else None,
                    new.blob if new is not None else None,
                )
            )
            contents.append(await self.blobs.read(new.blob) if new is not None else None)
        return Change(tip, tuple(patches), tuple(contents)), []

    def _message(self, unit: TaskUnit) -> str:
        task = unit.planned.task
        action = f"task({task.id}): "
        title = " ".join(task.title.split())
        room = _SUBJECT_MAX - len(action)
        subject = action + (title if len(title) <= room else title[: room - 3].rstrip() + "...")
        return (
            f"{subject}\n\n{task.prompt.strip()}\n\nStomper-Run: {self.lander.run_id}\n"
            f"Stomper-Unit: {quote_path(task.id)}\n"
        )

    def landed(self, produced: Produced) -> UnitResult | None:
        return None  # each task is recorded by its own landing, which finishes

    def _settled(self, task_id: str, result: UnitResult) -> None:
        held = self._held.pop(task_id, None)
        if held is not None:
            held.release()
        record = self.records.get(task_id)
        if record is not None:
            record.ended = time.time()
            line = {
                **record.to_json(),
                "status": result.status.value,
                "commit": result.commit,
                "reason": result.reason,
            }
            with self.audit.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")
        landed = result.status is Status.LANDED
        self.scheduler.settle(task_id, None if landed else result.reason or result.status.value)

    async def _tip(self) -> str:
        tip = await self.lander.tip()
        if tip is None:
            raise LookupError(f"the target {self.lander.target_ref} no longer exists")
        return tip


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _failed(task_id: str, reason: str, status: Status = Status.FAILED) -> UnitResult:
    return UnitResult(task_id, status, (), reason=reason)


async def _moved(blobs: Blobs, change: Change, tip: str) -> list[str]:
    """The files of ``change`` the target changed since the change's base."""
    now = await blobs.entries(tip, change.paths)
    moved = []
    for patch in change.patches:
        entry = now.get(patch.path)
        if (entry.blob if entry is not None else None) != patch.old_blob:
            moved.append(patch.path)
    return moved
