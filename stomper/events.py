"""Typed events: the workflow emits a unit's phases, which the progress view and the ops log
listen to; what the run does on the way (a model agent's requests, the builds, the landings)
is given to :func:`record`, for the ops log and the view."""

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
        return _logged(record)


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
        return _logged(record)


@dataclass(frozen=True)
class BuildEvent:
    """One command run on edits before they land (:mod:`stomper.workflow.build`): what it
    was for (``build of src``, ``verify of retry-client``), the command, how many edited
    files it had, whether it passed, how long it ran and how long it waited before (for
    a tree and a place among the builds)."""

    what: str
    command: str
    files: int
    passed: bool
    seconds: float
    waited: float
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        record = {
            "kind": "build",
            **asdict(self),
            "seconds": round(self.seconds, 4),
            "waited": round(self.waited, 4),
        }
        return _logged(record)


@dataclass(frozen=True)
class LandingEvent:
    """One landing (:mod:`stomper.landing`): the commits it was asked for (each by its
    files), how many landed, the target's tip after it (None: nothing landed) and how long
    it took."""

    commits: tuple[tuple[str, ...], ...]
    landed: int
    tip: str | None
    seconds: float
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        record = {
            "kind": "landing",
            **asdict(self),
            "commits": [list(files) for files in self.commits],
            "seconds": round(self.seconds, 4),
        }
        return _logged(record)


OpsEvent = RequestEvent | BuildEvent | LandingEvent


def _logged(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as the ops log writes it: with the run's secrets redacted."""
    redacted: dict[str, Any] = redaction.active().value(record)
    return redacted


_recorder: ContextVar[Callable[[OpsEvent], None] | None] = ContextVar(
    "stomper_recorder", default=None
)


def record(event: OpsEvent) -> None:
    """Give ``event`` to the run in progress (nowhere outside a run)."""
    log = _recorder.get()
    if log is not None:
        log(event)


@contextlib.contextmanager
def recording(log: Callable[[OpsEvent], None]) -> Iterator[None]:
    """Around a run: what its agents, builds and landings :func:`record` is given to
    ``log``."""
    token = _recorder.set(log)
    try:
        yield
    finally:
        _recorder.reset(token)
