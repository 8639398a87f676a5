"""How many requests an endpoint is sent at once when ``-j auto`` leaves it to stomper: a
window that grows while answers come and shrinks when the server says it has too many.

As TCP's congestion control does, with what a model server's refusals teach:

- **Slow start**: until the first overload, every answer widens the window by one (it
  doubles with each round of answers), from ``start``.
- **The ceiling**: at the first overload (429, 503, a timeout) the window becomes one less
  than the requests that were in flight when the refused one was sent, once per round.
  That number of requests is the window's ceiling.
- **Additive increase**: every answer then widens it by ``1 / window`` (about one request a
  round), and by ``patience`` times less once it comes within one of the ceiling. Each
  overload at the same ceiling doubles the patience (up to ``PATIENCE``): a server whose
  capacity is fixed is probed ever more rarely, so few requests are wasted on refusals; an
  answer at or above the ceiling (the server took more than it did) raises the ceiling and
  ends the patience. A refusal below ``NEAR`` of the ceiling means the server takes fewer
  now: the window shrinks to ``decrease`` of what was in flight.

Only what was sent in the window's present round counts: the answers to requests sent
before it last shrank (a burst of slow start among them) say nothing of the window now.

The window stays within ``lowest`` and ``highest``. One window per endpoint sees every
request of every unit, the HTTP agent's own retries included.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

START = 4
DECREASE = 0.8
PATIENCE = 16
NEAR = 0.9
"""A refusal at this share of the ceiling or above is one of the ceiling."""


@dataclass(frozen=True)
class Sent:
    """One request through the window: the round it was sent in, and how many were in
    flight with it."""

    round: int
    in_flight: int


@dataclass
class Adaptive:
    start: int = START
    lowest: int = 1
    highest: int = 64
    decrease: float = DECREASE
    window: float = field(init=False)
    ceiling: float | None = None
    """Requests in flight when the server last refused one for overload; None: never."""
    patience: int = 1
    in_flight: int = 0
    round: int = 0
    """How many times the window shrank."""
    overloads: int = 0
    answers: int = 0
    peak: int = 0
    _changed: asyncio.Condition | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.window = float(min(max(self.start, self.lowest), self.highest))

    @property
    def allowed(self) -> int:
        """Requests that may be in flight now."""
        return max(self.lowest, math.floor(self.window + 1e-9))

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[Sent]:
        """Hold a place in the window for one request."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        changed = self._changed
        async with changed:
            await changed.wait_for(lambda: self.in_flight < self.allowed)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            sent = Sent(self.round, self.in_flight)
        try:
            yield sent
        finally:
            async with changed:
                self.in_flight -= 1
                changed.notify_all()  # a place is free, and the window may have widened

    def answered(self, sent: Sent) -> None:
        """A request was answered: the window widens."""
        self.answers += 1
        if sent.round != self.round:
            return  # sent before the window last shrank: it says nothing of the window now
        if self.ceiling is not None and sent.in_flight >= self.ceiling:
            self.ceiling, self.patience = sent.in_flight + 1.0, 1  # it takes more than that
        if self.ceiling is None:
            step = 1.0
        else:
            step = 1.0 / self.window
            if self.window + step >= self.ceiling - 1:
                step /= self.patience
        self.window = min(float(self.highest), self.window + step)

    def overloaded(self, sent: Sent) -> None:
        """The server refused a request for overload (or did not answer in time)."""
        self.overloads += 1
        if sent.round != self.round:
            return  # sent before the window last shrank: it shrank for this already
        self.round += 1
        level = float(sent.in_flight)
        if self.ceiling is None or level >= self.ceiling * NEAR:
            # The first refusal, or one near the ceiling (a probe of it, or the server's own
            # count a request or two off ours): it takes one less than it refused.
            again = self.ceiling is not None
            self.patience = min(PATIENCE, self.patience * 2) if again else 1
            self.window = max(float(self.lowest), level - 1)
        else:  # it takes fewer than it did (another client, a smaller batch): back off
            self.patience = 1
            self.window = max(float(self.lowest), level * self.decrease)
        self.ceiling = level
