"""The run's limit: N agents at work at once, and the units around them.

``-j N`` is the number of agents working at once. A unit holds one of those N places only
while its agent works: while it is isolated, verified and gated it holds its place among
the units being worked (at most 2N, each with a workspace), not an agent's, and waiting to
land it holds neither. So when N answers of a model server arrive together, their checks
run while N more requests are already in flight, and a unit retried after a check takes a
place again like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator


class Places:
    """``count`` places, like a semaphore's, given in the order asked, except that an
    ``urgent`` ask goes before those that are not: the next step of work under way (a
    group's next build, the round back to the model after its build failed) before new
    work."""

    def __init__(self, count: int) -> None:
        self.free = count
        self._waiting: list[tuple[bool, int, asyncio.Future[None]]] = []
        self._asked = itertools.count()

    @contextlib.asynccontextmanager
    async def taken(self, *, urgent: bool = False) -> AsyncIterator[None]:
        """Hold a place for the block."""
        if self.free > 0 and not self._waiting:
            self.free -= 1
        else:
            place = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (not urgent, next(self._asked), place))
            try:
                await place
            except asyncio.CancelledError:
                if place.done() and not place.cancelled():
                    self._give()  # handed a place just as it was cancelled
                else:
                    self._waiting = [one for one in self._waiting if one[2] is not place]
                    heapq.heapify(self._waiting)
                raise
        try:
            yield
        finally:
            self._give()

    def locked(self) -> bool:
        """Whether an ask now would wait."""
        return self.free == 0 or bool(self._waiting)

    def _give(self) -> None:
        """The place of one who is done, to the next waiting, else free."""
        while self._waiting:
            _later, _asked, place = heapq.heappop(self._waiting)
            if not place.done():
                place.set_result(None)
                return
        self.free += 1


class Limit:
    """At most ``agents`` agent calls at once, and at most ``units`` (``2 * agents``) units
    worked at once; made per run, inside its event loop, never at module level."""

    def __init__(self, agents: int, *, units: int | None = None) -> None:
        if agents < 1:
            raise ValueError(f"a run needs at least one agent at a time, not {agents}")
        self.agents = agents
        self.units = units if units is not None else 2 * agents
        """Units worked at once: ``2 * agents`` unless told (tasks waiting for the ones they
        depend on are being worked, and hold no agent's place)."""
        self.calling = 0
        """Agent calls in flight now."""
        self.peak = 0
        """The most agent calls that were ever in flight at once."""
        self._calls = Places(agents)
        self._units = asyncio.Semaphore(self.units)

    @contextlib.asynccontextmanager
    async def unit(self) -> AsyncIterator[None]:
        """Hold a place among the units worked (and so a workspace) for the block."""
        async with self._units:
            yield

    @contextlib.asynccontextmanager
    async def call(self, *, urgent: bool = False) -> AsyncIterator[None]:
        """Hold one of the N agents' places for one call of the agent (an ``urgent`` one
        before the calls of units not begun)."""
        async with self._calls.taken(urgent=urgent):
            self.calling += 1
            self.peak = max(self.peak, self.calling)
            try:
                yield
            finally:
                self.calling -= 1

    def waiting(self) -> bool:
        """Whether a call now would wait for a place."""
        return self._calls.locked()
