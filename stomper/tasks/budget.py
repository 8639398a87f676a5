"""What a run of tasks may spend, and the agents it gives a rest.

A **budget** counts agent calls: ``max_calls`` for the run (``--max-calls``) and for each
task (its ``max_calls``). A call is taken before an attempt begins; when the run's are spent,
running tasks end after the attempt they are in, nothing new begins, and what landed stays:
``stomper resume --max-calls N`` goes on later. CLI agents report no tokens and no cost, so
calls are what a run of tasks can count.

The **circuit breaker** rests an agent that failed ``FAILURES`` times in a row (its program
exited with an error or ran past its time), for ``REST_S`` seconds: its next attempt waits,
whichever task it is for, so a broken agent or an exhausted account is not called again and
again meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

FAILURES = 3
REST_S = 30.0


class Spent(Exception):
    """The run's (or the task's) budget of agent calls is spent; ``str()`` says which."""


@dataclass
class Budget:
    """The agent calls a run may make (None: no limit), and those it has made."""

    max_calls: int | None = None
    calls: int = 0

    def take(self, task: str, task_calls: int, task_max: int | None) -> None:
        """One call for ``task`` (which made ``task_calls`` so far), or :class:`Spent`."""
        if self.max_calls is not None and self.calls >= self.max_calls:
            raise Spent(f"the run's budget of {self.max_calls} agent calls is spent")
        if task_max is not None and task_calls >= task_max:
            raise Spent(f"the task's budget of {task_max} agent calls is spent")
        self.calls += 1

    @property
    def spent(self) -> bool:
        return self.max_calls is not None and self.calls >= self.max_calls


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
