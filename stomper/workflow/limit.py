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
from collections.abc import AsyncIterator


class Limit:
    """At most ``agents`` agent calls at once, and at most ``2 * agents`` units worked at
    once; made per run, inside its event loop, never at module level."""

    def __init__(self, agents: int) -> None:
        if agents < 1:
            raise ValueError(f"a run needs at least one agent at a time, not {agents}")
        self.agents = agents
        self.units = 2 * agents
        self.calling = 0
        """Agent calls in flight now."""
        self.peak = 0
        """The most agent calls that were ever in flight at once."""
        self._calls = asyncio.Semaphore(agents)
        self._units = asyncio.Semaphore(self.units)

    @contextlib.asynccontextmanager
    async def unit(self) -> AsyncIterator[None]:
        """Hold a place among the units worked (and so a workspace) for the block."""
        async with self._units:
            yield

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        """Hold one of the N agents' places for one call of the agent."""
        async with self._calls:
            self.calling += 1
            self.peak = max(self.peak, self.calling)
            try:
                yield
            finally:
                self.calling -= 1

    def waiting(self) -> bool:
        """Whether a call now would wait for a place."""
        return self._calls.locked()
