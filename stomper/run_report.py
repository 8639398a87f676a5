"""A run's report, from its journal alone: a self-contained HTML page (a timeline with one
row per place and a bar per unit, coloured by phase; the builds and the landings; the agent
calls and the model's requests in flight over time; tokens and cost over time; the table of
units, sortable) and a Markdown summary for a pull request. The page needs no network: its
charts are SVG written here, its sorting a few lines of script in the page.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stomper import redaction
from stomper.config import Price
from stomper.events import Phase
from stomper.journal import Journal
from stomper.timeline import SHOWN, Timeline, read_log, timeline_of
from stomper.unit import Status, UnitResult

COLOURS = {
    Phase.ISOLATING: "#9aa5b1",
    Phase.WAITING: "#d9dee3",
    Phase.AGENT: "#4e79a7",
    Phase.VERIFYING: "#f28e2b",
    Phase.BUILDING: "#76b7b2",
    Phase.LANDING: "#59a14f",
}
_PASSED = "#59a14f"
_FAILED = "#e15759"
_WIDTH = 960
_ROW = 18
_GAP = 4
_LEFT = 40
_CHART = 90
_TABLE_REASON = 160


@dataclass(frozen=True)
class RecordedRun:
    """What a run's journal holds: its record, its units' results and its timeline."""

    run_id: str
    meta: dict[str, Any]
    results: tuple[UnitResult, ...]
    timeline: Timeline
    price: Price | None

    @classmethod
    def read(cls, journal: Journal) -> RecordedRun:
        meta = journal.meta()
        results = tuple(sorted(journal.results().values(), key=lambda result: result.path))
        resumed = meta.get("resumed")
        restarts = [float(resumed)] if isinstance(resumed, int | float) else []
        log = read_log(journal.events_file)
        timeline = timeline_of(log.events, resumed=restarts, log=log)
        return cls(journal.dir.name, meta, results, timeline, _price(meta))

    @property
    def command(self) -> str:
        return str(self.meta.get("command", "fix"))

    @property
    def status(self) -> str:
        return str(self.meta.get("status", "unknown"))

    @property
    def tokens(self) -> tuple[int, int]:
        return (
            sum(result.tokens_in for result in self.results),
            sum(result.tokens_out for result in self.results),
        )

    @property
    def cost(self) -> float | None:
        return self.price.cost(*self.tokens) if self.price is not None else None

    def counts(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for result in self.results:
            counted[result.status.value] = counted.get(result.status.value, 0) + 1
        return counted

    @property
    def wall_s(self) -> float:
        return max(self.timeline.end - self.timeline.start, 0.0)

    def to_json(self) -> dict[str, Any]:
        """The run as its journal holds it: its record's facts and each unit's result."""
        return {
            "run_id": self.run_id,
            "command": self.command,
            "status": self.status,
            "base": self.meta.get("base"),
            "units": [result.to_json() for result in self.results],
            "counts": self.counts(),
            "tokens": {"input": self.tokens[0], "output": self.tokens[1]},
            "cost": round(self.cost, 6) if self.cost is not None else None,
        }


def _price(meta: dict[str, Any]) -> Price | None:
    """The price of the run's model, as its recorded settings give it (what a hand may
    have done to the journal is no price)."""
    settings = meta.get("settings")
    if not isinstance(settings, dict) or not isinstance(settings.get("prices"), dict):
        return None
    given = settings["prices"].get(settings.get("model"))
    return Price.model_validate(given) if isinstance(given, dict) else None


def markdown(run: RecordedRun) -> str:
    """The summary and the table of units, fit for a pull request's comment."""
    counts = ", ".join(f"{count} {status}" for status, count in sorted(run.counts().items()))
    tokens_in, tokens_out = run.tokens
    spent = f"{tokens_in:,} tokens in, {tokens_out:,} out"
    if run.cost is not None:
        spent += f", ${run.cost:.4f}"
    lines = [
        f"### stomper {run.command} · run `{run.run_id}`",
        "",
        f"**{run.status}** · {len(run.results)} units: {counts or 'none'} · "
        f"{run.wall_s:.1f}s · {spent}",
        "",
        "| unit | status | attempts | commit | reason |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for result in run.results:
        reason = " ".join((result.reason or "").split())[:_TABLE_REASON]
        lines.append(
            f"| `{_cell(result.path)}` | {result.status.value} | {result.attempts} | "
            f"{(result.commit or '')[:10]} | {_cell(reason)} |"
        )
    return redaction.redact("\n".join(lines) + "\n")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def page(run: RecordedRun) -> str:
    """The whole HTML page."""
    tokens_in, tokens_out = run.tokens
    cost = f" · ${run.cost:.4f}" if run.cost is not None else ""
    title = f"stomper {run.command} · run {run.run_id}"
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="summary"><b>{_e(run.status)}</b> · {len(run.results)} units: '
        + _e(", ".join(f"{n} {status}" for status, n in sorted(run.counts().items())) or "none")
        + f" · {run.wall_s:.1f}s · {tokens_in:,} tokens in, {tokens_out:,} out{_e(cost)}</p>",
        "<h2>Timeline</h2>",
        _legend(),
        _timeline_svg(run.timeline),
        "<h2>Builds and landings</h2>",
        _builds_svg(run.timeline),
        "<h2>Agents at work</h2>",
        _step_svg("working", _working(run.timeline), run.timeline, unit="at most"),
        *_requests_section(run.timeline),
        "<h2>Tokens" + (" and cost" if run.price is not None else "") + "</h2>",
        _step_svg("tokens", _tokens_over_time(run), run.timeline, unit="tokens", cost=run.cost),
        "<h2>Units</h2>",
        _table(run.results),
    ]
    return redaction.redact(
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{_SORT}</script>\n</body></html>\n"
    )


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _legend() -> str:
    items = "".join(
        f'<span class="key"><i style="background:{COLOURS[phase]}"></i>{phase.value}</span>'
        for phase in SHOWN
    )
    return f'<p class="legend">{items}</p>'


def _x(at: float, timeline: Timeline) -> float:
    span = max(timeline.end - timeline.start, 1e-9)
    return _LEFT + (at - timeline.start) / span * (_WIDTH - _LEFT - 10)


def _timeline_svg(timeline: Timeline) -> str:
    height = max(timeline.rows, 1) * (_ROW + _GAP) + 24
    parts = [
        _svg("timeline", height),
    ]
    for row in range(timeline.rows):
        y = row * (_ROW + _GAP) + _ROW / 2 + 4
        parts.append(f'<text class="row" x="4" y="{y:.1f}">{row + 1}</text>')
    for bar in timeline.bars:
        y = bar.row * (_ROW + _GAP)
        for span in bar.spans:
            x, end = _x(span.start, timeline), _x(span.end, timeline)
            tip = f"{bar.path}: {span.phase.value} {span.end - span.start:.2f}s"
            parts.append(
                f'<rect class="bar {span.phase.value}" data-unit="{_e(bar.path)}" '
                f'x="{x:.1f}" y="{y}" width="{max(end - x, 1.0):.1f}" height="{_ROW}" '
                f'fill="{COLOURS[span.phase]}"><title>{_e(tip)}</title></rect>'
            )
    parts.append(_axis(timeline, height - 16))
    parts.append("</svg>")
    return "".join(parts)


def _svg(name: str, height: float) -> str:
    """The opening tag of a chart of class ``name``, the page's width wide."""
    return (
        f'<svg class="{name}" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" xmlns="http://www.w3.org/2000/svg">'
    )


def _axis(timeline: Timeline, y: float) -> str:
    span = timeline.end - timeline.start
    step = _tick(span)
    ticks = []
    at = 0.0
    while at <= span + 1e-9 and step > 0:
        x = _x(timeline.start + at, timeline)
        ticks.append(f'<text class="tick" x="{x:.1f}" y="{y + 12:.1f}">{at:g}s</text>')
        at += step
    return f'<line x1="{_LEFT}" y1="{y}" x2="{_WIDTH - 10}" y2="{y}" stroke="#888"/>' + "".join(
        ticks
    )


def _tick(span: float) -> float:
    """A round step that puts 5 to 10 ticks on ``span`` seconds."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600):
        if span / step <= 10:
            return float(step)
    return span / 10


def _working(timeline: Timeline) -> list[tuple[float, float]]:
    """How many units were in their agent's phase, over time: as the timeline's bars show."""
    spans = [
        (span.start, span.end)
        for bar in timeline.bars
        for span in bar.spans
        if span.phase is Phase.AGENT
    ]
    return _in_flight(spans, timeline.start)


def _builds_svg(timeline: Timeline) -> str:
    """A row per build running at once, a bar per build (green passed, red failed), and
    under them a row of the landings, a mark each."""
    rows = timeline.build_rows
    height = (rows + 1) * (_ROW + _GAP) + 24
    parts = [
        _svg("builds", height),
    ]
    for build in timeline.builds:
        y = build.row * (_ROW + _GAP)
        x, end = _x(build.start, timeline), _x(build.end, timeline)
        verdict = "passed" if build.passed else "failed"
        tip = f"{build.what}: {verdict} in {build.end - build.start:.2f}s"
        if build.waited >= 0.01:
            tip += f", after {build.waited:.2f}s waiting"
        parts.append(
            f'<rect class="build {verdict}" x="{x:.1f}" y="{y}" '
            f'width="{max(end - x, 1.0):.1f}" height="{_ROW}" '
            f'fill="{_PASSED if build.passed else _FAILED}"><title>{_e(tip)}</title></rect>'
        )
    y = rows * (_ROW + _GAP)
    parts.append(f'<text class="row" x="4" y="{y + _ROW / 2 + 4:.1f}">land</text>')
    for landing in timeline.landings:
        x = _x(landing.at, timeline)
        tip = f"{landing.landed} of {landing.commits} commits landed in {landing.seconds:.2f}s"
        if landing.tip is not None:
            tip += f", the branch at {landing.tip[:12]}"
        colour = COLOURS[Phase.LANDING] if landing.landed else _FAILED
        parts.append(
            f'<rect class="landing" x="{x - 1:.1f}" y="{y}" width="3" height="{_ROW}" '
            f'fill="{colour}"><title>{_e(tip)}</title></rect>'
        )
    if not timeline.builds and not timeline.landings:
        parts.append(f'<text class="tick" x="{_LEFT + 40}" y="{y + 13}">none recorded</text>')
    parts.append(_axis(timeline, height - 16))
    parts.append("</svg>")
    return "".join(parts)


def _in_flight(spans: Sequence[tuple[float, float]], start: float) -> list[tuple[float, float]]:
    """How many of ``spans`` (from, to) were under way, over time."""
    changes = sorted((at, step) for began, ended in spans for at, step in ((began, 1), (ended, -1)))
    points, now = [(start, 0.0)], 0
    for at, step in changes:
        now += step
        points.append((at, float(now)))
    return points


def _requests_section(timeline: Timeline) -> list[str]:
    """The model's requests in flight over time, when a model was asked."""
    requests = timeline.requests
    if not requests:
        return []
    spans = [(request.start, request.end) for request in requests]
    refused = sum(request.status != "200" for request in requests)
    said = f"{len(requests):,} requests, {refused:,} refused (429, 503, timeouts, no connection)"
    return [
        "<h2>Requests in flight</h2>",
        f'<p class="summary">{_e(said)}</p>',
        _step_svg("requests", _in_flight(spans, timeline.start), timeline, unit="at most"),
    ]


def _tokens_over_time(run: RecordedRun) -> list[tuple[float, float]]:
    """The tokens spent so far: at each request's end, where the log holds the requests,
    else at each unit's end (a unit's tokens are known when it ends)."""
    ends = {bar.path: bar.end for bar in run.timeline.bars}
    if run.timeline.requests:
        points = [
            (request.end, float(request.tokens_in + request.tokens_out))
            for request in run.timeline.requests
        ]
    else:
        points = sorted(
            (ends[result.path], float(result.tokens_in + result.tokens_out))
            for result in run.results
            if result.path in ends and result.tokens_in + result.tokens_out
        )
    total, cumulative = 0.0, [(run.timeline.start, 0.0)]
    for at, tokens in points:
        total += tokens
        cumulative.append((at, total))
    return cumulative


def _step_svg(
    name: str,
    points: Sequence[tuple[float, float]],
    timeline: Timeline,
    *,
    unit: str,
    cost: float | None = None,
) -> str:
    height = _CHART + 24
    top = max((value for _at, value in points), default=0.0)
    parts = [
        _svg(f"chart {name}", height),
    ]
    if points and top > 0:
        path = []
        last_y = None
        for at, value in points:
            x = _x(at, timeline)
            y = _CHART - value / top * (_CHART - 4)
            if last_y is not None:
                path.append(f"L{x:.1f},{last_y:.1f}")
            path.append(f"{'M' if last_y is None else 'L'}{x:.1f},{y:.1f}")
            last_y = y
        path.append(f"L{_x(timeline.end, timeline):.1f},{last_y:.1f}")
        parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="#4e79a7"/>')
        label = f"{top:,.0f} {unit}"
        if cost is not None:
            label += f" · ${cost:.4f}"
        parts.append(f'<text class="tick" x="{_LEFT}" y="12">{_e(label)}</text>')
    else:
        parts.append(f'<text class="tick" x="{_LEFT}" y="40">no {unit} recorded</text>')
    parts.append(_axis(timeline, _CHART + 4))
    parts.append("</svg>")
    return "".join(parts)


def _table(results: Sequence[UnitResult]) -> str:
    head = "".join(
        f'<th data-kind="{kind}">{name}</th>'
        for name, kind in (
            ("unit", "text"),
            ("status", "text"),
            ("attempts", "number"),
            ("seconds", "number"),
            ("tokens", "number"),
            ("commit", "text"),
            ("reason", "text"),
        )
    )
    rows = []
    for result in results:
        style = "ok" if result.status in (Status.FIXED, Status.LANDED, Status.APPLIED) else ""
        rows.append(
            f'<tr class="{style}"><td>{_e(result.path)}</td><td>{result.status.value}</td>'
            f"<td>{result.attempts}</td><td>{result.duration_s:.2f}</td>"
            f"<td>{result.tokens_in + result.tokens_out}</td>"
            f"<td><code>{_e((result.commit or '')[:10])}</code></td>"
            f"<td>{_e(result.reason or '')}</td></tr>"
        )
    return (
        f'<table class="units"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
svg text { font: 11px system-ui, sans-serif; fill: #555; }
.legend .key { margin-right: 14px; } .legend i { display: inline-block; width: 12px;
  height: 12px; margin-right: 4px; vertical-align: -1px; }
table.units { border-collapse: collapse; } table.units td, table.units th {
  border-bottom: 1px solid #e3e3e3; padding: 3px 8px; text-align: left; vertical-align: top; }
table.units th { cursor: pointer; background: #f4f4f4; } tr.ok td:nth-child(2) { color: #2a7a2a; }
"""

_SORT = """
document.querySelectorAll("table.units th").forEach(function (th, column) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var number = th.dataset.kind === "number";
    var down = th.dataset.order !== "up";
    rows.sort(function (a, b) {
      var x = a.cells[column].textContent, y = b.cells[column].textContent;
      var order = number ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return down ? order : -order;
    });
    th.dataset.order = down ? "up" : "down";
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""
