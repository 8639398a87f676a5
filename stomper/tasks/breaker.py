"""The circuit breaker of a run of tasks: it rests an agent that failed ``FAILURES`` times
in a row (its program exited with an error or ran past its time, or its answer held nothing
that applies), for ``REST_S`` seconds. Its next attempt waits, whichever task it is for, so a
broken agent or an exhausted account is not called again and again meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

FAILURES = 3
REST_S = 30.0


@dataclass
class Breaker:
    """Failures in a row of each agent, and until when it rests."""

    failures: int = FAILURES
    rest_s: float = REST_S
    _in_a_row: dict[str, int] = field(default_factory=dict)
    _until: dict[str, float] = field(default_factory=dict)

    async def ready(self, agent: str) -> None:
        """Wait out the agent's rest, if it is resting."""
        wait = self._until.get(agent, 0.0) - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def record(self, agent: str, *, failed: bool) -> None:
        if not failed:
            self._in_a_row[agent] = 0
            return
        self._in_a_row[agent] = self._in_a_row.get(agent, 0) + 1
        if self._in_a_row[agent] >= self.failures:
            self._in_a_row[agent] = 0
            self._until[agent] = time.monotonic() + self.rest_s

    def resting(self, agent: str) -> bool:
        return self._until.get(agent, 0.0) > time.monotonic()
