"""Several OpenAI-compatible endpoints serving as one.

``base_url`` may name several endpoints, separated by commas (``http://gpu1:8000/v1,
http://gpu2:8000/v1``). Each request goes to the endpoint with the fewest requests in flight
among those not resting (the first named, of equals). One that failed ``pause_after`` times
in a row (an overload, a server error, a lost connection, a timeout) rests for ``cool_down``
seconds, and its work goes to the others; when every one rests, the one whose rest ends
first is asked.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import openai

from stomper.agents.adaptive import Adaptive
from stomper.redaction import endpoint_urls, mask_url

PAUSE_AFTER = 3
COOL_DOWN = 30.0


@dataclass(eq=False)
class Endpoint:
    """One server, as its requests see it."""

    client: openai.AsyncOpenAI
    shown: str
    """Its URL as it may be shown: its password masked."""
    in_flight: int = 0
    failures: int = 0
    """Failures in a row, since its last answer or its last rest."""
    resting_until: float = 0.0
    requests: int = 0
    rests: int = 0
    window: Adaptive | None = None
    """With ``-j auto``: how many requests it is sent at once (:mod:`stomper.agents.adaptive`)."""


@dataclass
class Endpoints:
    """The endpoints of one agent; made per agent, closed with it."""

    endpoints: list[Endpoint]
    pause_after: int = PAUSE_AFTER
    cool_down: float = COOL_DOWN
    clock: Callable[[], float] = field(default=time.monotonic)

    @classmethod
    def of(
        cls,
        base_url: str | None,
        make: Callable[[str | None], openai.AsyncOpenAI],
        *,
        window: Callable[[], Adaptive] | None = None,
    ) -> Endpoints:
        """The endpoints ``base_url`` names (the client's default when it names none), each
        with the client ``make`` gives for its URL (and a ``window`` of its own)."""
        urls: list[str | None] = list(endpoint_urls(base_url)) if base_url else [None]
        made = []
        for url in urls:
            client = make(url)
            shown = mask_url(str(client.base_url).rstrip("/"))
            made.append(Endpoint(client, shown, window=window() if window else None))
        return cls(made)

    @property
    def shown(self) -> str:
        return ", ".join(endpoint.shown for endpoint in self.endpoints)

    def choose(self) -> Endpoint:
        """The endpoint for the next request."""
        now = self.clock()
        awake = [endpoint for endpoint in self.endpoints if endpoint.resting_until <= now]
        if not awake:
            return min(self.endpoints, key=lambda endpoint: endpoint.resting_until)
        return min(awake, key=lambda endpoint: endpoint.in_flight)

    def others_awake(self, endpoint: Endpoint) -> bool:
        """Whether another endpoint than ``endpoint`` may be asked now."""
        now = self.clock()
        return any(other is not endpoint and other.resting_until <= now for other in self.endpoints)

    @contextlib.contextmanager
    def asking(self, endpoint: Endpoint) -> Iterator[None]:
        """Around one request to ``endpoint``."""
        endpoint.in_flight += 1
        endpoint.requests += 1
        try:
            yield
        finally:
            endpoint.in_flight -= 1

    def answered(self, endpoint: Endpoint) -> None:
        endpoint.failures = 0

    def failed(self, endpoint: Endpoint, *, rest: bool = False) -> None:
        """Count a failure of ``endpoint``; the one that makes ``pause_after`` in a row (or
        any, with ``rest``) sends it to rest, when there is another to ask meanwhile."""
        endpoint.failures += 1
        tired = rest or endpoint.failures >= self.pause_after
        if tired and len(self.endpoints) > 1:
            endpoint.failures = 0
            endpoint.rests += 1
            endpoint.resting_until = self.clock() + self.cool_down

    async def aclose(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.client.close()
