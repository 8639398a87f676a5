"""The plan of a run of tasks: what each task may touch, the order they must keep, and the
waves of tasks that could run side by side.

A task writes the tracked files its ``files`` name and the new files it names without a
wildcard; it reads those its ``reads`` name. Two tasks **conflict** when one writes a file
the other writes or reads, or a file one creates is one the other's patterns name: they
never run at once. A task runs after every task it depends on has landed.

The waves show that order: each task in the first wave after its dependencies' where no
task conflicts with it. At run time a task starts as soon as it may, not when its wave does
(:mod:`stomper.tasks.locks`); the waves are the plan a user reads. Everything wrong with
the tasks together is found at once, each a line of :attr:`Plan.problems`: an id given
twice, a dependency on no task, a cycle (named), a pattern that names nothing (and no file
to create), two tasks that would create one file.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from stomper.tasks.paths import Pattern
from stomper.tasks.taskfile import Task


@dataclass(frozen=True)
class Planned:
    """A task with the paths it may write and read, as the repository has them now."""

    task: Task
    writes: frozenset[str]
    """The tracked files its ``files`` name, and the files it creates."""
    creates: frozenset[str]
    """Paths its ``files`` name without a wildcard that are not there yet."""
    reads: frozenset[str]

    @property
    def id(self) -> str:
        return self.task.id

    def conflicts(self, other: Planned) -> bool:
        """Whether the two may never run at once."""
        if self.writes & (other.writes | other.reads) or self.reads & other.writes:
            return True
        return _names_any(other.task.files, self.creates) or _names_any(
            self.task.files, other.creates
        )


@dataclass(frozen=True)
class Plan:
    tasks: tuple[Planned, ...]
    """In the task file's order."""
    waves: tuple[tuple[str, ...], ...] = ()
    """Ids, wave by wave; none when a problem leaves no order (a cycle, an unknown id)."""
    critical_path: tuple[str, ...] = ()
    """The longest chain of dependencies, first to last."""
    problems: tuple[str, ...] = field(default=())

    def urgency(self) -> dict[str, int]:
        """Each task's rank in the order free places are given (0 first): a task that more
        tasks wait for, directly or not, or whose files more tasks write, goes first, as
        the longest chains bound the run; ties keep the task file's order. How long each
        task takes is not known beforehand: tasks are counted, not timed."""
        waiting_for: dict[str, int] = {one.id: 0 for one in self.tasks}
        by_id = {one.id: one for one in self.tasks}
        for one in self.tasks:
            for needed in _ancestors(one.id, by_id):
                waiting_for[needed] += 1
        writers: dict[str, int] = {}
        for one in self.tasks:
            for path in one.writes:
                writers[path] = writers.get(path, 0) + 1
        contention = {
            one.id: max((writers[path] for path in one.writes), default=0) for one in self.tasks
        }
        ordered = sorted(
            enumerate(self.tasks),
            key=lambda item: (-(waiting_for[item[1].id] + contention[item[1].id]), item[0]),
        )
        return {one.id: rank for rank, (_at, one) in enumerate(ordered)}

    def wave_of(self, task_id: str) -> int | None:
        """The wave (from 1) the task is in."""
        return next((at for at, wave in enumerate(self.waves, 1) if task_id in wave), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "tasks": [
                {
                    "id": planned.id,
                    "title": planned.task.title,
                    "depends_on": list(planned.task.depends_on),
                    "files": sorted(planned.writes - planned.creates),
                    "creates": sorted(planned.creates),
                    "reads": sorted(planned.reads),
                    "wave": self.wave_of(planned.id),
                }
                for planned in self.tasks
            ],
            "waves": [list(wave) for wave in self.waves],
            "critical_path": list(self.critical_path),
            "problems": list(self.problems),
        }


def plan(tasks: Sequence[Task], tracked: Collection[str]) -> Plan:
    """The plan of ``tasks`` over a repository whose tracked files are ``tracked``."""
    problems: list[str] = []
    planned = tuple(_planned(task, tracked, problems) for task in tasks)
    by_id: dict[str, Planned] = {}
    for number, one in enumerate(planned, 1):
        if one.id in by_id:
            first = next(n for n, other in enumerate(planned, 1) if other.id == one.id)
            problems.append(f"task id {one.id!r} is given twice (tasks {first} and {number})")
        by_id.setdefault(one.id, one)
    ordered = True
    for one in planned:
        for needed in one.task.depends_on:
            if needed not in by_id:
                problems.append(f"task {one.id!r} depends on {needed!r}, which no task is")
                ordered = False
    cycles = _cycles(planned, by_id) if ordered else []
    problems += [f"dependency cycle: {' -> '.join(cycle)}" for cycle in cycles]
    if not ordered or cycles:
        return Plan(planned, problems=tuple(problems))
    order = _topological(planned, by_id)
    before = {one.id: _ancestors(one.id, by_id) for one in planned}
    problems += _created_twice(planned, before)
    return Plan(
        planned,
        waves=_waves(order, by_id),
        critical_path=_critical_path(order, by_id),
        problems=tuple(problems),
    )


def _planned(task: Task, tracked: Collection[str], problems: list[str]) -> Planned:
    writes: set[str] = set()
    creates: set[str] = set()
    for pattern in task.files:
        found = pattern.matches(tracked)
        if found:
            writes.update(found)
        elif pattern.wild:
            problems.append(
                f"task {task.id!r}: files: {pattern.text!r} names no tracked file (a path "
                "without wildcards is a file to create)"
            )
        else:
            creates.add(pattern.text)
    reads: set[str] = set()
    for pattern in task.reads:
        found = pattern.matches(tracked)
        if not found:
            problems.append(f"task {task.id!r}: reads: {pattern.text!r} names no tracked file")
        reads.update(found)
    return Planned(task, frozenset(writes | creates), frozenset(creates), frozenset(reads))


def _names_any(patterns: Sequence[Pattern], paths: Collection[str]) -> bool:
    return any(pattern.covers(path) for pattern in patterns for path in paths)


def _cycles(planned: Sequence[Planned], by_id: dict[str, Planned]) -> list[list[str]]:
    """Each cycle of dependencies once, as the ids along it back to the first."""
    state: dict[str, str] = {}  # "open" while on the path walked, "done" after
    path: list[str] = []
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(task_id: str) -> None:
        state[task_id] = "open"
        path.append(task_id)
        for needed in by_id[task_id].task.depends_on:
            if state.get(needed) == "open":
                cycle = path[path.index(needed) :]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    found.append([*cycle, needed])
            elif needed not in state:
                walk(needed)
        path.pop()
        state[task_id] = "done"

    for one in planned:
        if one.id not in state:
            walk(one.id)
    return found


def _topological(planned: Sequence[Planned], by_id: dict[str, Planned]) -> list[str]:
    """The ids, each after its dependencies, otherwise in the task file's order."""
    order: list[str] = []
    placed: set[str] = set()

    def place(task_id: str) -> None:
        if task_id in placed:
            return
        for needed in by_id[task_id].task.depends_on:
            place(needed)
        placed.add(task_id)
        order.append(task_id)

    for one in planned:
        place(one.id)
    return order


def _ancestors(task_id: str, by_id: dict[str, Planned]) -> set[str]:
    """Every task ``task_id`` waits for, directly or not."""
    found: set[str] = set()
    todo = list(by_id[task_id].task.depends_on)
    while todo:
        needed = todo.pop()
        if needed not in found:
            found.add(needed)
            todo += by_id[needed].task.depends_on
    return found


def _created_twice(planned: Sequence[Planned], before: dict[str, set[str]]) -> list[str]:
    """Two tasks, neither after the other, that would both create one file."""
    problems = []
    for at, one in enumerate(planned):
        for other in planned[at + 1 :]:
            if one.id == other.id or one.id in before[other.id] or other.id in before[one.id]:
                continue
            for path in sorted(one.creates & other.creates):
                problems.append(
                    f"tasks {one.id!r} and {other.id!r} would both create {path} (make one "
                    "depend on the other)"
                )
    return problems


def _waves(order: Sequence[str], by_id: dict[str, Planned]) -> tuple[tuple[str, ...], ...]:
    waves: list[list[str]] = []
    wave_of: dict[str, int] = {}
    for task_id in order:
        one = by_id[task_id]
        at = max((wave_of[needed] + 1 for needed in one.task.depends_on), default=0)
        while at < len(waves) and any(one.conflicts(by_id[other]) for other in waves[at]):
            at += 1
        if at == len(waves):
            waves.append([])
        waves[at].append(task_id)
        wave_of[task_id] = at
    return tuple(tuple(wave) for wave in waves)


def _critical_path(order: Sequence[str], by_id: dict[str, Planned]) -> tuple[str, ...]:
    """The longest chain of dependencies (the first found, in the file's order)."""
    longest: dict[str, tuple[str, ...]] = {}
    for task_id in order:
        chains = [longest[needed] for needed in by_id[task_id].task.depends_on]
        longest[task_id] = (*max(chains, key=len, default=()), task_id)
    return max(longest.values(), key=len, default=())
