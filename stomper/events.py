"""Typed progress events: the workflow emits them, the progress view and the ops log listen."""

from __future__ import annotations

import time
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
