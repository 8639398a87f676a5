"""``stomper report``: a run's timeline and table from its journal alone, for a run of each
mode, and the HTML page opened in a real headless browser (Debian's chromium, driven by
Playwright)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from stomper.cli import main
from stomper.events import Phase
from stomper.testing.fake_openai import FakeOpenAI
from stomper.testing.repos import module
from stomper.timeline import Event, timeline_of
from tests.conftest import ops_log
from tests.test_review import CORE
from tests.test_run import AGENT, FOUR_FILES, a_task_a_file, tasks_file

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# As root, without a screen, and with no network but loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_bars_take_the_lowest_free_row_and_a_unit_cut_short_ends_with_the_log() -> None:
    events = [
        Event("a", Phase.QUEUED, 0.0),
        Event("a", Phase.AGENT, 1.0),
        Event("b", Phase.ISOLATING, 1.5),
        Event("b", Phase.AGENT, 2.0),
        Event("a", Phase.VERIFYING, 3.0),
        Event("a", Phase.DONE, 4.0),
        Event("c", Phase.AGENT, 4.0),  # a's place is free again: c takes its row
        Event("c", Phase.LANDING, 5.0),
        Event("b", Phase.DONE, 6.0),
        Event("d", Phase.AGENT, 6.5),  # never ends: the run was killed
        Event("c", Phase.DONE, 7.0),
    ]
    timeline = timeline_of(events)
    bars = {bar.path: bar for bar in timeline.bars}
    assert {path: bar.row for path, bar in bars.items()} == {"a": 0, "b": 1, "c": 0, "d": 1}
    assert [(s.phase, s.start, s.end) for s in bars["a"].spans] == [
        (Phase.AGENT, 1.0, 3.0),
        (Phase.VERIFYING, 3.0, 4.0),
    ]
    assert [(s.phase, s.start, s.end) for s in bars["d"].spans] == [(Phase.AGENT, 6.5, 7.0)]
    assert timeline.rows == 2 and (timeline.start, timeline.end) == (0.0, 7.0)


def test_a_unit_under_way_when_the_run_died_ends_there_and_its_second_try_is_a_bar() -> None:
    events = [
        Event("a", Phase.AGENT, 1.0),
        Event("b", Phase.AGENT, 1.5),
        Event("b", Phase.DONE, 2.0),  # the run was killed after this
        Event("a", Phase.QUEUED, 50.0),  # resumed at 49
        Event("a", Phase.AGENT, 50.5),
        Event("a", Phase.DONE, 52.0),
    ]
    timeline = timeline_of(events, resumed=[49.0])
    spans = [[(s.phase, s.start, s.end) for s in bar.spans] for bar in timeline.bars]
    assert spans == [
        [(Phase.AGENT, 1.0, 2.0)],
        [(Phase.AGENT, 1.5, 2.0)],
        [(Phase.AGENT, 50.5, 52.0)],
    ]


def _fix_run(make, tmp_path: Path) -> Path:
    repo = make({f"pkg/m{n}.py": module(["F401", "E713"]) for n in range(6)})
    assert main(["fix", "--repo", str(repo), "--no-progress", "-j", "2"]) == 0
    return repo


def _review_run(make, tmp_path: Path) -> Path:
    repo = make({f"pkg/m{n}.py": f"{CORE}# {n}\n" for n in range(3)})
    with FakeOpenAI() as server:
        argv = ["review", "--repo", str(repo), "--no-progress", "--model", "fake"]
        assert main([*argv, "--base-url", server.base_url]) == 0
    return repo


def _tasks_run(make, tmp_path: Path) -> Path:
    repo = make(FOUR_FILES)
    tasks = tasks_file(tmp_path, a_task_a_file())
    argv = ["run", str(tasks), "--agent-cmd", AGENT, "--no-progress", "--repo", str(repo)]
    assert main(argv) == 0
    return repo


RUNS = {"fix": (_fix_run, 6), "review": (_review_run, 4), "run": (_tasks_run, 4)}


@pytest.mark.parametrize("mode", sorted(RUNS))
def test_the_report_of_a_run_holds_its_units_and_their_phases(make, tmp_path, capsys, mode) -> None:
    made, units = RUNS[mode]
    repo = made(make, tmp_path)
    capsys.readouterr()

    assert main(["report", "--repo", str(repo)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"### stomper {mode} · run `")
    assert text.count("\n| `") == units

    page, notes = tmp_path / "report.html", tmp_path / "report.md"
    assert main(["report", "--repo", str(repo), "--html", str(page), "--markdown", str(notes)]) == 0
    html = page.read_text()
    assert notes.read_text() == text
    worked = set(re.findall(r'<rect class="bar agent" data-unit="([^"]+)"', html))
    assert len(worked) == units  # each unit's agent phase is a bar
    # Fix and run land a commit a unit (a review without --apply lands nothing); only the
    # review asked a model.
    landings = len(ops_log(repo, "landing"))
    assert html.count('<rect class="landing"') == landings
    assert (landings > 0) == (mode != "review")
    assert ('<svg class="chart requests"' in html) == (mode == "review")
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_a_report_of_no_run_is_one_line_and_exit_2(make, capsys) -> None:
    repo = make({"a.py": "A = 1\n"})
    assert main(["report", "--repo", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "no runs in this repository yet" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("STOMPER_REQUIRE_CHROMIUM"),
    reason="chromium is not installed",
)
@pytest.mark.parametrize("mode", sorted(RUNS))
def test_the_report_opens_in_a_browser_with_a_bar_for_each_unit(make, tmp_path, mode) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None, "STOMPER_REQUIRE_CHROMIUM is set: install chromium"
    made, units = RUNS[mode]
    repo = made(make, tmp_path)
    page_file = tmp_path / "report.html"
    assert main(["report", "--repo", str(repo), "--html", str(page_file)]) == 0
    shot = tmp_path / "report.png"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.route("**/*", _only_the_file)  # the page may ask the network for nothing
            page.goto(page_file.as_uri())
            page.screenshot(path=str(shot), full_page=True)
            bars = page.locator("svg.timeline rect.bar")
            boxes = [bars.nth(n).bounding_box() for n in range(bars.count())]
            marks = page.locator("svg.builds rect.landing")
            landed = [marks.nth(n).bounding_box() for n in range(marks.count())]
            rows = page.locator("table.units tbody tr")
            first = rows.nth(0).locator("td").nth(0).inner_text()
            page.locator("table.units th").nth(0).click()  # sorted by unit, then reversed
            page.locator("table.units th").nth(0).click()
            last = rows.nth(0).locator("td").nth(0).inner_text()
            count = rows.count()
        finally:
            browser.close()

    painted = {(box["y"], box["height"]) for box in boxes if box and box["width"] > 0}
    assert len(boxes) >= units and len(painted) >= 1, boxes
    assert all(box is not None and box["width"] > 0 and box["height"] > 0 for box in boxes)
    assert count == units and first != last
    assert len(landed) == len(ops_log(repo, "landing")) and all(box for box in landed)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000


def _only_the_file(route, request) -> None:
    if request.url.startswith("file://"):
        route.continue_()
    else:  # pragma: no cover - a request would fail the test below
        print(f"the report asked for {request.url}", file=sys.stderr)
        route.abort()


@pytest.mark.parametrize("mode", ["review", "run"])
def test_show_gives_a_review_or_a_run_of_tasks_as_its_report_does(
    make, tmp_path, capsys, mode
) -> None:
    made, units = RUNS[mode]
    repo = made(make, tmp_path)
    capsys.readouterr()
    assert main(["show", "--json", "--repo", str(repo)]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["command"] == mode and len(document["units"]) == units
    assert f"### stomper {mode} · run `{document['run_id']}`" in captured.err


def test_the_ops_log_holds_each_request_of_a_model_and_how_it_ended(make, capsys) -> None:
    from stomper.testing.fake_openai import Fault, FaultPolicy

    repo = make({f"pkg/m{n}.py": module(["F401"]) for n in range(6)})
    faults = FaultPolicy(rates={Fault.RATE_LIMIT: 0.3}, seed=3)
    with FakeOpenAI(faults=faults, retry_after=0.01) as server:
        argv = ["fix", "--repo", str(repo), "--no-progress", "--agent", "openai"]
        base_url = server.base_url
        assert main([*argv, "--model", "fake", "--base-url", base_url]) == 0
        stats = server.stats()
    (log,) = (repo / ".git" / "stomper" / "runs").glob("*/events.jsonl")
    requests = [
        record
        for record in map(json.loads, log.read_text().splitlines())
        if record.get("kind") == "request"
    ]
    statuses = [request["status"] for request in requests]
    assert statuses.count("200") == 6 and statuses.count("429") == stats.statuses.get(429, 0)
    assert sum(landing["landed"] for landing in ops_log(repo, "landing")) == 6
    assert statuses.count("429") >= 1  # the seeded faults refuse one of the first six
    assert len(requests) == stats.completions
    assert sum(request["tokens_in"] for request in requests) == stats.tokens_in
    assert {request["endpoint"] for request in requests} == {base_url}
    assert all(request["seconds"] >= 0 for request in requests)
