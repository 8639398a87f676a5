"""When each task may begin: its dependencies landed, a place among the N, its paths locked.

A place is given as soon as one is free, to the most urgent task that may begin (the
plan's :meth:`~stomper.tasks.plan.Plan.urgency`: those more tasks wait for, or whose files
more tasks write), one whose dependencies have all landed and whose locks
(:mod:`stomper.tasks.locks`) can all be taken now. A task holds its place while its agent
works and its change is verified, and its locks until its change has landed or it has
failed: no task begins on a file another has not landed yet. Locks another process holds
free without a word to this one, so while a task waits for locks, the look is made again
every few hundredths of a second. A task whose dependency failed does not begin: it fails,
saying which.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from stomper.tasks.locks import Held, PathLocks
from stomper.tasks.plan import Planned

_POLL = 0.05


class DependencyFailed(Exception):
    """A task this one depends on did not land; ``str()`` says which and why."""


@dataclass
class _Waiting:
    planned: Planned
    turn: asyncio.Future[Held]
    locks: Held | None = None
    """Held already: a task that comes back for a place keeps its locks."""


@dataclass
class Scheduler:
    """Gives the tasks of one run their turns; made per run, inside its event loop."""

    locks: PathLocks
    places: int
    urgency: dict[str, int] = field(default_factory=dict)
    """Each task's rank when places are given (:meth:`Plan.urgency`); the plan's order by
    default."""
    landed: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    running: int = 0
    peak: int = 0
    _waiting: list[_Waiting] = field(default_factory=list)
    _poll: asyncio.TimerHandle | None = None

    async def turn(self, planned: Planned) -> Held:
        """Wait until the task may begin: its place, and its locks (released by the caller
        once the task has landed or failed); :class:`DependencyFailed` when it never may."""
        waiting = _Waiting(planned, asyncio.get_running_loop().create_future())
        return await self._wait(waiting)

    @contextlib.asynccontextmanager
    async def place(self, planned: Planned, held: Held) -> AsyncIterator[None]:
        """A place again for a task that holds its locks (to work on it once more)."""
        waiting = _Waiting(planned, asyncio.get_running_loop().create_future(), held)
        await self._wait(waiting)
        try:
            yield
        finally:
            self.leave()

    def leave(self) -> None:
        """A task gives its place back."""
        self.running -= 1
        self._dispatch()

    def settle(self, task_id: str, why_not: str | None) -> None:
        """The task landed (``why_not`` None) or failed, for the tasks that wait for it."""
        if why_not is None:
            self.landed.add(task_id)
        else:
            self.failed[task_id] = why_not
        self._dispatch()

    async def _wait(self, waiting: _Waiting) -> Held:
        self._waiting.append(waiting)
        self._dispatch()
        try:
            return await waiting.turn
        except asyncio.CancelledError:
            if waiting in self._waiting:
                self._waiting.remove(waiting)
            elif waiting.turn.done() and not waiting.turn.cancelled():
                if waiting.locks is None and waiting.turn.exception() is None:
                    waiting.turn.result().release()
                self.leave()
            raise

    def _dispatch(self) -> None:
        """Give free places to the tasks that may begin, in the plan's order."""
        blocked_by_locks = False
        last = len(self.urgency)
        ranked = sorted(self._waiting, key=lambda one: self.urgency.get(one.planned.id, last))
        for waiting in ranked:
            task = waiting.planned.task
            failed = [needed for needed in task.depends_on if needed in self.failed]
            if failed:
                self._waiting.remove(waiting)
                waiting.turn.set_exception(
                    DependencyFailed(
                        f"not begun: it depends on {failed[0]}, which did not land "
                        f"({self.failed[failed[0]]})"
                    )
                )
                continue
            if self.running >= self.places:
                continue
            if any(needed not in self.landed for needed in task.depends_on):
                continue
            held = waiting.locks
            if held is None:
                planned = waiting.planned
                held = self.locks.try_take(task.id, planned.writes, planned.reads)
                if held is None:
                    blocked_by_locks = True
                    continue
            self._waiting.remove(waiting)
            self.running += 1
            self.peak = max(self.peak, self.running)
            waiting.turn.set_result(held)
        if blocked_by_locks and self._poll is None:
            self._poll = asyncio.get_running_loop().call_later(_POLL, self._again)

    def _again(self) -> None:
        self._poll = None
        self._dispatch()
