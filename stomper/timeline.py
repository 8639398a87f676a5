"""What ran when, read back from a run's ops log (``events.jsonl``): each unit's phases as
spans of time, and the row (a place among the N) each unit had; the model's requests, the
builds and the landings. Any mode's run, crashed and resumed ones too: a unit the log saw
begin but not end is cut at the log's last event, and a unit worked again after a resume is
a second bar.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
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
    running: int = 0
    """Agent calls in flight then."""


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
class Request:
    """One request of a model agent, from ``start`` to ``end``."""

    start: float
    end: float
    status: str
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True)
class Build:
    """One build (a directory's build, a task's verification, the tests) while it ran; its
    ``row`` the lowest free when it began."""

    what: str
    start: float
    end: float
    passed: bool
    waited: float
    row: int = 0


@dataclass(frozen=True)
class Landing:
    """One landing, ended ``at``: ``landed`` of its ``commits`` landed, the branch then at
    ``tip``."""

    at: float
    commits: int
    landed: int
    seconds: float
    tip: str | None


@dataclass(frozen=True)
class OpsLog:
    """The lines of a run's ops log, each kind in the order it ended."""

    events: tuple[Event, ...] = ()
    requests: tuple[Request, ...] = ()
    builds: tuple[Build, ...] = ()
    landings: tuple[Landing, ...] = ()


@dataclass(frozen=True)
class Timeline:
    bars: tuple[Bar, ...]
    start: float
    end: float
    requests: tuple[Request, ...] = ()
    builds: tuple[Build, ...] = ()
    landings: tuple[Landing, ...] = ()

    @property
    def rows(self) -> int:
        return max((bar.row for bar in self.bars), default=-1) + 1

    @property
    def build_rows(self) -> int:
        return max((build.row for build in self.builds), default=-1) + 1


def read_log(path: Path) -> OpsLog:
    """The log at ``path``; a line cut short by a crash, or of a kind unknown here, is left
    out."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return OpsLog()
    except OSError as exc:
        raise RepositoryError(f"the run's events {path} are unreadable: {exc}") from exc
    events: list[Event] = []
    requests: list[Request] = []
    builds: list[Build] = []
    landings: list[Landing] = []
    for line in lines:
        try:
            record = json.loads(line)
            kind = record.get("kind")
            at = float(record["at"])
            if kind is None:
                running = record.get("running")
                calls = running if isinstance(running, int) and not isinstance(running, bool) else 0
                events.append(Event(str(record["path"]), Phase(record["phase"]), at, calls))
            elif kind == "request":
                start = at - float(record["seconds"])
                tokens = int(record["tokens_in"]), int(record["tokens_out"])
                requests.append(Request(start, at, str(record["status"]), *tokens))
            elif kind == "build":
                start = at - float(record["seconds"])
                passed, waited = bool(record["passed"]), float(record["waited"])
                builds.append(Build(str(record["what"]), start, at, passed, waited))
            elif kind == "landing":
                tip = record["tip"]
                landings.append(
                    Landing(
                        at,
                        len(record["commits"]),
                        int(record["landed"]),
                        float(record["seconds"]),
                        str(tip) if tip is not None else None,
                    )
                )
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return OpsLog(
        tuple(sorted(events, key=lambda event: event.at)),
        tuple(sorted(requests, key=lambda request: request.end)),
        tuple(sorted(builds, key=lambda build: build.end)),
        tuple(sorted(landings, key=lambda landing: landing.at)),
    )


def timeline_of(
    events: Sequence[Event], *, resumed: Sequence[float] = (), log: OpsLog | None = None
) -> Timeline:
    """The bars the events make, each in the lowest row free when it begins; ``resumed``
    holds when the run was resumed: what was under way then was cut short at the log's last
    event before it, and what is worked again is a bar of its own. The requests, builds
    and landings of ``log`` come along, each build in the lowest of its rows free."""
    log = log or OpsLog()
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
    bars = _rows(finished)
    builds = _build_rows(log.builds)
    starts = [events[0].at, *(r.start for r in log.requests), *(b.start for b in builds)]
    ends = [events[-1].at, *(r.end for r in log.requests), *(b.end for b in builds)]
    ends += [landing.at for landing in log.landings]
    return Timeline(tuple(bars), min(starts), max(ends), log.requests, tuple(builds), log.landings)


def _rows(units: Iterable[tuple[str, list[Span]]]) -> list[Bar]:
    """Each unit's bar in the lowest row that is free when it begins (as a free place is
    taken), in the order they began."""
    ordered = sorted(units, key=lambda unit: unit[1][0].start)
    rows = _lowest_free([(spans[0].start, spans[-1].end) for _path, spans in ordered])
    return [Bar(path, row, tuple(spans)) for (path, spans), row in zip(ordered, rows, strict=True)]


def _build_rows(builds: Iterable[Build]) -> list[Build]:
    ordered = sorted(builds, key=lambda build: build.start)
    rows = _lowest_free([(build.start, build.end) for build in ordered])
    return [replace(build, row=row) for build, row in zip(ordered, rows, strict=True)]


def _lowest_free(spans: Sequence[tuple[float, float]]) -> list[int]:
    """For each span (from, to), in order of their starts, the lowest row free when it
    begins."""
    free_at: list[float] = []
    rows = []
    for start, end in spans:
        row = next((n for n, until in enumerate(free_at) if until <= start), len(free_at))
        if row == len(free_at):
            free_at.append(0.0)
        free_at[row] = end
        rows.append(row)
    return rows
