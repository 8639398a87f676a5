"""What ran when, read back from a run's ops log (``events.jsonl``): each unit's phases as
spans of time, and the row (a place among the N) each unit had. Any mode's run, crashed
and resumed ones too: a unit the log saw begin but not end is cut at the log's last event,
and a unit worked again after a resume is a second bar.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stomper.errors import RepositoryError
from stomper.events import Phase

SHOWN = (
    Phase.ISOLATING,
    Phase.WAITING,
    Phase.AGENT,
    Phase.VERIFYING,
    Phase.BUILDING,
    Phase.LANDING,
)
"""The phases a bar is made of; a unit queued or done holds no place."""


@dataclass(frozen=True)
class Event:
    path: str
    phase: Phase
    at: float


@dataclass(frozen=True)
class Span:
    """One phase of one unit, from ``start`` to ``end`` (``time.time()``)."""

    path: str
    phase: Phase
    start: float
    end: float


@dataclass(frozen=True)
class Bar:
    """A unit's time in a place, from its first phase to its end: one row of the
    timeline holds one bar at a time."""

    path: str
    row: int
    spans: tuple[Span, ...]

    @property
    def start(self) -> float:
        return self.spans[0].start

    @property
    def end(self) -> float:
        return self.spans[-1].end


@dataclass(frozen=True)
class Timeline:
    bars: tuple[Bar, ...]
    start: float
    end: float

    @property
    def rows(self) -> int:
        return max((bar.row for bar in self.bars), default=-1) + 1


def read_events(path: Path) -> list[Event]:
    """The events of the log at ``path`` in order; a line cut short by a crash is left out."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RepositoryError(f"the run's events {path} are unreadable: {exc}") from exc
    events = []
    for line in lines:
        try:
            record = json.loads(line)
            event = Event(
                str(record["path"]),
                Phase(record["phase"]),
                float(record["at"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        events.append(event)
    return sorted(events, key=lambda event: event.at)


def timeline_of(events: Sequence[Event], *, resumed: Sequence[float] = ()) -> Timeline:
    """The bars the events make, each in the lowest row free when it begins; ``resumed``
    holds when the run was resumed: what was under way then was cut short at the log's last
    event before it, and what is worked again is a bar of its own."""
    if not events:
        return Timeline((), 0.0, 0.0)
    open_: dict[str, list[Span]] = {}
    since: dict[str, tuple[Phase, float]] = {}
    finished: list[tuple[str, list[Span]]] = []

    def cut(at: float) -> None:
        for path, (phase, began) in since.items():
            spans = open_.pop(path, [])
            if phase in SHOWN:
                spans.append(Span(path, phase, began, max(at, began)))
            if spans:
                finished.append((path, spans))
        since.clear()

    restarts = sorted(resumed)
    previous = events[0].at
    for event in events:
        while restarts and restarts[0] <= event.at:
            if restarts.pop(0) > previous:
                cut(previous)
        previous = event.at
        before = since.pop(event.path, None)
        if before is not None and before[0] in SHOWN:
            open_.setdefault(event.path, []).append(
                Span(event.path, before[0], before[1], event.at)
            )
        if event.phase in (Phase.DONE, Phase.QUEUED):
            spans = open_.pop(event.path, None)
            if spans:
                finished.append((event.path, spans))
            continue
        since[event.path] = (event.phase, event.at)
    cut(events[-1].at)  # cut short: to the log's end
    return Timeline(tuple(_rows(finished)), events[0].at, events[-1].at)


def _rows(units: Iterable[tuple[str, list[Span]]]) -> list[Bar]:
    """Each unit's bar in the lowest row that is free when it begins (as a free place is
    taken), in the order they began."""
    free_at: list[float] = []
    bars = []
    for path, spans in sorted(units, key=lambda unit: unit[1][0].start):
        start = spans[0].start
        row = next((n for n, until in enumerate(free_at) if until <= start), len(free_at))
        if row == len(free_at):
            free_at.append(0.0)
        free_at[row] = spans[-1].end
        bars.append(Bar(path, row, tuple(spans)))
    return bars
