"""How many requests an endpoint is sent at once when ``-j auto`` leaves it to stomper: a
window that grows while answers come and shrinks when the server says it has too many.

As TCP's congestion control does, with what a model server's refusals teach:

- **Slow start**: until the first overload, every answer widens the window by
  ``SLOW_START`` (it grows fourfold with each round of answers), from ``start``.
- **The ceiling**: at the first overload (429, 503, a timeout) the window becomes one less
  than the requests that were in flight when the refused one was sent, once per round.
  That number of requests is the window's ceiling.
- **Additive increase**: every answer then widens it by ``1 / window`` (about one request a
  round), and by ``patience`` times less once it comes within one of the ceiling. The
  patience begins at ``FIRST_PATIENCE``, and each overload at the same ceiling doubles it
  (up to ``PATIENCE``): a server whose
  capacity is fixed is probed ever more rarely, so few requests are wasted on refusals; an
  answer at or above the ceiling (the server took more than it did) raises the ceiling and
  ends the patience. A refusal below ``NEAR`` of the ceiling means the server takes fewer
  now: the window shrinks to ``decrease`` of what was in flight.

Only what was sent in the window's present round counts: the answers to requests sent
before it last shrank (a burst of slow start among them) say nothing of the window now. A
refusal at a number of requests the server answered at once this round is taken, once, for
a moment's difference between its count and ours (it frees a place a little after its
answer leaves). A request past that number waits a little after the last such one
(``PACE``, or less for a fast server), so a refusal of the first comes back before the next
is sent: a widening of the window costs one refusal, not a burst of them.

The window stays within ``lowest`` and ``highest``. One window per endpoint sees every
request of every unit, the HTTP agent's own retries included.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

START = 4
SLOW_START = 3
"""Requests more per answer until the first refusal: the window grows fourfold a round (the
requests past what was answered go one by one, so the first refusal ends it at once)."""
DECREASE = 0.8
FIRST_PATIENCE = 4
"""The patience after the first refusal: the server has just said what it takes."""
PATIENCE = 32
NEAR = 0.9
"""A refusal at this share of the ceiling or above is one of the ceiling."""
PACE = 0.05
"""The most seconds between two requests past what the server was seen to take."""


@dataclass(frozen=True)
class Sent:
    """One request through the window: the round it was sent in, and how many were in
    flight with it."""

    round: int
    in_flight: int
    at: float = 0.0
    """When it was sent (``time.monotonic()``)."""


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
    proven: int = 0
    """The most requests in flight at once that were all answered, this round."""
    latency: float | None = None
    """Seconds an answer takes, averaged (None: none yet)."""
    _probed: float = float("-inf")
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
            while True:
                await changed.wait_for(lambda: self.in_flight < self.allowed)
                wait = self._probe_wait(time.monotonic())
                if wait <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), wait)
            if self.in_flight >= self.proven:
                self._probed = time.monotonic()
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            sent = Sent(self.round, self.in_flight, time.monotonic())
        try:
            yield sent
        finally:
            async with changed:
                self.in_flight -= 1
                changed.notify_all()  # a place is free, and the window may have widened

    def _probe_wait(self, now: float) -> float:
        """How long a request past what was proven must wait after the last such one: a
        refusal of the first comes back before the next is sent (a server refuses at once),
        so a widening of the window is paid for with one refusal, not with many."""
        if self.in_flight < self.proven or self.latency is None:
            return 0.0
        pace = min(PACE, self.latency / (2 * max(self.window, 1.0)))
        return self._probed + pace - now

    def answered(self, sent: Sent) -> None:
        """A request was answered: the window widens."""
        self.answers += 1
        took = time.monotonic() - sent.at
        self.latency = took if self.latency is None else 0.8 * self.latency + 0.2 * took
        if sent.round != self.round:
            return  # sent before the window last shrank: it says nothing of the window now
        self.proven = max(self.proven, sent.in_flight)
        if self.ceiling is not None and sent.in_flight >= self.ceiling:
            self.ceiling, self.patience = sent.in_flight + 1.0, 1  # it takes more than that
        if self.ceiling is None:
            step = float(SLOW_START)
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
        # As many as are in flight now, the refused one among them: requests sent together
        # reach the server in any order, so the one refused may have been sent first.
        in_flight = max(sent.in_flight, self.in_flight)
        if in_flight <= self.proven:
            # As many were answered at once this round: the server's own count was a
            # request off ours for a moment. Once, not twice, at this level.
            self.proven = in_flight - 1
            return
        self.round += 1
        level = float(in_flight)
        self.proven = min(self.proven, in_flight - 1)
        if self.ceiling is None or level >= self.ceiling * NEAR:
            # The first refusal, or one near the ceiling (a probe of it, or the server's own
            # count a request or two off ours): it takes one less than it refused.
            again = self.ceiling is not None
            self.patience = min(PATIENCE, self.patience * 2) if again else FIRST_PATIENCE
            self.window = max(float(self.lowest), level - 1)
        else:  # it takes fewer than it did (another client, a smaller batch): back off
            self.patience = 1
            self.window = max(float(self.lowest), level * self.decrease)
        self.ceiling = level
