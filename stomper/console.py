"""All output. Messages, progress and the run's summary go to stderr; what is data (the
``--json`` document, diffs, the table of ``stomper runs``) goes to stdout, where it can be
piped.

Every text passes the run's redaction (:mod:`stomper.redaction`) before it is rendered: Rich
may fold a long line, and a secret cut in two is no longer found.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.columns import Columns
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from stomper.events import OpsEvent, Phase, RequestEvent, UnitEvent
from stomper.findings import SEVERITIES
from stomper.redaction import active, redact
from stomper.report import RunReport
from stomper.unit import FIX_ENDINGS, Status

if TYPE_CHECKING:
    from stomper.config import Price

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

_STYLE = {
    Status.FIXED: "green",
    Status.PARTIAL: "yellow",
    Status.FAILED: "red",
    Status.SKIPPED: "magenta",
    Status.UNCHANGED: "dim",
    Status.REVIEWED: "cyan",
    Status.APPLIED: "green",
    Status.ROLLED_BACK: "yellow",
    Status.LANDED: "green",
    Status.BLOCKED: "red",
}
# Beyond this many units only failures get a line of their own; the bar says the rest.
_LINE_PER_UNIT_UP_TO = 300
_AT_WORK_SHOWN = 16
"""Units at work the live view names, those longest in their phase first; the rest it counts."""


def error(message: str) -> None:
    # Messages quote the user's input and name "[tool.stomper]": never markup.
    err.print(f"[bold red]error:[/] {escape(redact(message))}", soft_wrap=True)


def warning(message: str) -> None:
    """Something the user must know of, though the run goes on."""
    err.print(f"[bold yellow]warning:[/] {escape(message)}", soft_wrap=True)


def info(message: str, *, markup: bool = True) -> None:
    err.print(redact(message), soft_wrap=True, markup=markup)


class _Progress(Progress):
    """Rich's progress bar, with the counts of the units below it: on one line with the bar,
    they left no room for the bar or the time at 80 columns. The units in flight and those
    done are two groups, side by side where the console is wide enough."""

    counts: Callable[[], tuple[Text, ...]] = staticmethod(lambda: (Text(), Text()))
    details: Callable[[], tuple[Text, ...]] = staticmethod(lambda: ())
    """Lines below the counts, one each."""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        yield Columns(self.counts(), padding=(0, 3))
        yield from self.details()


class ProgressView:
    """The live view of a run: a bar with the units done and the time, and below it how
    many units are in each phase and how those done ended. Each unit is counted once: the
    phases do not overlap, and they add up to the total with the units done."""

    def __init__(
        self,
        total: int,
        *,
        title: str,
        enabled: bool = True,
        endings: Sequence[Status] = FIX_ENDINGS,
        building: bool = False,
        groups: Mapping[str, str] | None = None,
        group_noun: str = "groups",
        price: Price | None = None,
    ) -> None:
        self.total = total
        self.price = price
        """The model's price: the cost so far is shown with the tokens."""
        self.tokens_in = self.tokens_out = 0
        """The tokens of the model's answers so far, the units' still at work included."""
        self.requests = 0
        self.refused = 0
        """The model's requests answered so far, and those refused of them (429, 503, a
        timeout, no connection)."""
        self.calling = 0
        """Agent calls in flight, as the last event saw them."""
        self.entered: dict[str, float] = {}
        """When each unit in flight entered its phase (``time.time()``)."""
        self.endings = tuple(endings)
        self.building = building
        """Show how many units wait for their group's build, or are in it, and how the
        builds of the groups of ``groups`` (a unit's path to its group) ended."""
        self.group_noun = group_noun
        self._group_of = dict(groups or {})
        self._left_in: Counter[str] = Counter(self._group_of.values())
        """Each group's units not done yet."""
        self._built: set[str] = set()
        self._landed: set[str] = set()
        self._rolled_back: set[str] = set()
        self.groups_ended: Counter[str] = Counter()
        """The groups done: how many were built, landed (some edit of theirs), and rolled
        back (some edit of theirs)."""
        self.enabled = enabled
        self.phase_of: dict[str, Phase] = {}
        self._in: Counter[Phase] = Counter()
        """How many units are in each phase: counted as events come, not at each redraw."""
        self.ended = dict.fromkeys(Status, 0)
        self.found: Counter[str] = Counter()
        """The findings of the units reviewed so far, by severity."""
        self.done = 0
        self._progress = _Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            refresh_per_second=8,
            disable=not enabled,
        )
        self._task = self._progress.add_task(title, total=total)
        self._progress.counts = self._counts
        self._progress.details = self._details

    def __enter__(self) -> ProgressView:
        self._progress.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.__exit__(kind, exc, tb)

    def __rich__(self) -> RenderableType:
        return self._progress.get_renderable()

    def handle(self, event: UnitEvent) -> None:
        self.calling = event.running
        self.entered.pop(event.path, None)
        was = self.phase_of.pop(event.path, None)
        if was is not None:
            self._in[was] -= 1
        group = self._group_of.get(event.path)
        if event.phase is not Phase.DONE:
            self.phase_of[event.path] = event.phase
            self.entered[event.path] = event.at
            self._in[event.phase] += 1
            if event.phase is Phase.BUILDING and group is not None:
                self._built.add(group)
        else:
            self.done += 1
            status = Status(event.status) if event.status else Status.FAILED
            self.ended[status] += 1
            self.found.update(event.findings or {})
            if group is not None:
                self._group_done(group, status)
            if self.enabled and (self.total <= _LINE_PER_UNIT_UP_TO or status is Status.FAILED):
                self._progress.console.print(_unit_line(event), soft_wrap=True)
        self._progress.update(self._task, completed=self.done)

    def record(self, event: OpsEvent) -> None:
        """What the run did on the way: a model's answer adds to the tokens spent."""
        if isinstance(event, RequestEvent):
            self.requests += 1
            self.refused += event.status != "200"
            self.tokens_in += event.tokens_in
            self.tokens_out += event.tokens_out

    def _group_done(self, group: str, status: Status) -> None:
        if status is Status.APPLIED:
            self._landed.add(group)
        elif status is Status.ROLLED_BACK:
            self._rolled_back.add(group)
        self._left_in[group] -= 1
        if self._left_in[group] == 0:
            self.groups_ended["built"] += group in self._built
            self.groups_ended["landed"] += group in self._landed
            self.groups_ended["rolled back"] += group in self._rolled_back

    def _details(self) -> tuple[Text, ...]:
        return (*self._spent(), *self._longest())

    def _spent(self) -> tuple[Text, ...]:
        """The agent calls in flight, the model's requests and what they spent so far,
        once a model has been asked."""
        if not self.requests:
            return ()
        tokens = self.tokens_in + self.tokens_out
        line = f"agent calls in flight {self.calling} · requests {self.requests:,}"
        if self.refused:
            line += f" ({self.refused:,} refused)"
        line += f" · tokens {tokens:,}"
        if self.price is not None:
            line += f" · ${self.price.cost(self.tokens_in, self.tokens_out):.4f}"
        return (Text(line),)

    def _longest(self) -> tuple[Text, ...]:
        """Each unit at work (not queued, nor waiting for an agent's place) with its phase
        and the time it has been in it, the longest first; past ``_AT_WORK_SHOWN``, how many
        more."""
        now = time.time()
        at_work = sorted(
            (
                (since, path)
                for path, since in self.entered.items()
                if self.phase_of[path] not in (Phase.QUEUED, Phase.WAITING)
            ),
        )
        lines = [
            Text(f"{self.phase_of[path].value:>9} {now - since:5.0f}s  ") + Text(redact(path))
            for since, path in at_work[:_AT_WORK_SHOWN]
        ]
        if len(at_work) > _AT_WORK_SHOWN:
            lines.append(Text(f"          and {len(at_work) - _AT_WORK_SHOWN} more at work"))
        return tuple(lines)

    def _counts(self) -> tuple[Text, ...]:
        phases = self._in
        flight = {
            # Isolated and waiting for an agent is queued, as far as the user can tell.
            "queued": self.total - self.done - len(self.phase_of) + phases[Phase.WAITING],
            "working": phases[Phase.ISOLATING] + phases[Phase.AGENT],
            "verifying": phases[Phase.VERIFYING],
        }
        if self.building:
            flight["building"] = phases[Phase.BUILDING]
        flight["landing"] = phases[Phase.LANDING]
        ended = {status.value: self.ended[status] for status in self.endings}
        if Status.REVIEWED not in self.endings:
            return _counted(flight), _counted(ended)
        found: dict[str, int] = {name: self.found[name] for name in SEVERITIES}
        lines = (_counted(flight), _counted(ended), Text("findings: ") + _counted(found))
        if not self.building:
            return lines
        groups = {name: self.groups_ended[name] for name in ("built", "landed", "rolled back")}
        return (*lines, Text(f"{self.group_noun}: ") + _counted(groups))


def _counted(counts: dict[str, int]) -> Text:
    return Text(" · ".join(f"{name} {count}" for name, count in counts.items()))


def _unit_line(event: UnitEvent) -> Text:
    status = Status(event.status) if event.status else Status.FAILED
    line = Text()
    line.append(f"{status.value:>11} ", style=_STYLE[status])
    line.append(redact(event.path))
    if event.commit:
        line.append(f"  {event.commit[:10]}", style="dim")
    if event.reason and status in (
        Status.FAILED,
        Status.SKIPPED,
        Status.ROLLED_BACK,
        Status.BLOCKED,
    ):
        # Its first line: the rest (a build's or a test's output) is in the JSON and journal.
        line.append(f"  {redact(event.reason.splitlines()[0])}", style="dim")
    return line


def print_summary(report: RunReport, *, per_unit_up_to: int = 40) -> None:
    totals = report.totals()
    if report.results and len(report.results) <= per_unit_up_to:
        rows = [
            (
                redact(result.path),
                Text(result.status.value, style=_STYLE[result.status]),
                f"{len(result.fixed)}/{len(result.before)}",
                str(len(result.remaining) + len(result.introduced)),
                (result.commit or "")[:10],
                redact(result.reason or ""),
            )
            for result in report.results
        ]
        width = _path_width(rows, err.width)
        table = Table(title="Units", title_justify="left", show_edge=False)
        table.add_column("file", no_wrap=True, width=width)
        for column in ("status", "fixed", "left", "commit", "reason"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(_path_lines(row[0], width), *row[1:])
        err.print(table)
    summary = Table(
        title=f"stomper {report.command} · run {report.run_id}",
        title_justify="left",
        show_header=False,
        show_edge=False,
    )
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row(
        "status", report.status + (" (dry run: nothing landed)" if report.dry_run else "")
    )
    summary.add_row("target", redact(f"{report.target} (base {report.base[:10]})"))
    summary.add_row(
        "units",
        f"{totals['units']}: {totals['fixed']} fixed, {totals['partial']} partial, "
        f"{totals['failed']} failed, {totals['skipped']} skipped, {totals['unchanged']} unchanged",
    )
    summary.add_row(
        "diagnostics",
        f"{totals['diagnostics_before']} targeted, {totals['diagnostics_fixed']} fixed, "
        f"{totals['diagnostics_remaining']} remaining",
    )
    if report.left_out is not None:
        left = report.left_out
        summary.add_row(
            "left out",
            f"{left.diagnostics} diagnostics ({left.files} files with nothing else): {left.reason}",
        )
    summary.add_row("commits", str(totals["commits"]))
    metrics = report.metrics
    summary.add_row(
        "time",
        f"{metrics.wall_s:.1f}s wall, {metrics.agent_s:.1f}s agent time summed over units, "
        f"{metrics.landing_s:.1f}s landing; up to {metrics.peak_concurrency} "
        f"of {report.max_parallel_files} at once",
    )
    if metrics.tokens_in or metrics.tokens_out:
        cost = f", ${metrics.cost:.4f}" if metrics.cost is not None else ""
        summary.add_row(
            "spent", f"{metrics.tokens_in:,} tokens in, {metrics.tokens_out:,} out{cost}"
        )
    err.print(summary)


def print_table(table: Table) -> None:
    """A table of data, on stdout: ``stomper runs | grep ...`` finds its rows."""
    out.print(table)


# The least a path gets of a narrow console, and the least the reason keeps beside it.
_PATH_MIN = 16
_REASON_MIN = 24


def _path_width(rows: Sequence[tuple[str, Text, str, str, str, str]], console_width: int) -> int:
    """How wide the file column of the units' table is: its longest path, or what the
    console leaves it beside the other columns (each 2 of padding and 1 of rule)."""
    longest = max(len(row[0]) for row in rows)
    others = [
        max(len(header), *(len(str(row[i])) for row in rows))
        for i, header in enumerate(("status", "fixed", "left", "commit"), start=1)
    ]
    reason = min(_REASON_MIN, max(len("reason"), *(len(row[5]) for row in rows)))
    spent = sum(others) + reason + 6 * 2 + 5
    return max(min(longest, console_width - spent), min(longest, _PATH_MIN))


def _path_lines(path: str, width: int) -> str:
    """``path`` in lines of at most ``width``, broken only after a ``/``, never inside a
    name; a name longer than a line keeps its end, after an ellipsis."""
    lines: list[str] = []
    line = ""
    parts = path.split("/")
    for index, part in enumerate(parts):
        piece = part if index == len(parts) - 1 else part + "/"
        if len(piece) > width:
            piece = "\u2026" + piece[len(piece) - width + 1 :]
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    lines.append(line)
    return "\n".join(lines)


def print_diffs(diffs: Sequence[str]) -> None:
    for diff in diffs:
        sys.stdout.write(redact(diff if diff.endswith("\n") else diff + "\n"))
    sys.stdout.flush()


def print_text(text: str) -> None:
    """A text the command prints as its output (a report), alone on stdout."""
    sys.stdout.write(redact(text if text.endswith("\n") else text + "\n"))
    sys.stdout.flush()


def print_document(document: Any) -> None:
    """The ``--json`` document, alone on stdout."""
    sys.stdout.write(json.dumps(active().value(document), indent=2) + "\n")
    sys.stdout.flush()
