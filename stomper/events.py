"""Typed events: the workflow emits a unit's phases, which the progress view and the ops log
listen to; a model agent's requests go to the ops log alone (:func:`request`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from stomper import redaction


class Phase(StrEnum):
    QUEUED = "queued"
    ISOLATING = "isolating"
    WAITING = "waiting"
    """Isolated, waiting for one of the N agents' places."""
    AGENT = "agent"
    VERIFYING = "verifying"
    BUILDING = "building"
    """Reviewed, with the rest of its group: waiting for the group's build, or in it."""
    LANDING = "landing"
    DONE = "done"


@dataclass(frozen=True)
class UnitEvent:
    path: str
    phase: Phase
    running: int
    """Agent calls in flight at the moment of the event (at most ``-j N``)."""
    status: str | None = None
    reason: str | None = None
    commit: str | None = None
    findings: dict[str, int] | None = None
    """A reviewed unit's findings, by severity."""
    tokens_in: int | None = None
    tokens_out: int | None = None
    """A finished unit's tokens in and out, as its model counted them (none: no model)."""
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """The event as the ops log records it, with the run's secrets redacted."""
        record = {key: value for key, value in asdict(self).items() if value is not None}
        redacted: dict[str, Any] = redaction.active().value(record)
        return redacted


@dataclass(frozen=True)
class RequestEvent:
    """One HTTP request of a model agent, as the ops log records it: to which endpoint
    (shown with its password masked), how it ended (the HTTP status, or ``timeout``,
    ``connection error``), how long it took, and the tokens of its answer."""

    endpoint: str
    status: str
    seconds: float
    tokens_in: int = 0
    tokens_out: int = 0
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        record = {"kind": "request", **asdict(self), "seconds": round(self.seconds, 4)}
        redacted: dict[str, Any] = redaction.active().value(record)
        return redacted


_requests: ContextVar[Callable[[RequestEvent], None] | None] = ContextVar(
    "stomper_requests", default=None
)


def request(event: RequestEvent) -> None:
    """Log ``event`` where the run in progress logs its events (nowhere outside a run)."""
    log = _requests.get()
    if log is not None:
        log(event)


@contextlib.contextmanager
def logging_requests(log: Callable[[RequestEvent], None]) -> Iterator[None]:
    """Around a run: the requests its agents make are given to ``log``."""
    token = _requests.set(log)
    try:
        yield
    finally:
        _requests.reset(token)
