"""What a user reads on the console, on real runs."""

from __future__ import annotations

import io
import time

from rich.console import Console

from stomper.cli import main
from stomper.config import Price
from stomper.console import ProgressView
from stomper.events import Phase, RequestEvent, UnitEvent
from stomper.testing.repos import module
from stomper.unit import REVIEW_ENDINGS

DEEP = "src/project/subsystem/component/a_rather_long_module_name.py"
LONG_NAME = "pkg/" + "x" * 40 + "_mod.py"


def units_table_files(err: str) -> list[str]:
    """The file column of the summary's table of units, line by line."""
    lines = err.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("━")) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("stomper fix ·"))
    cells = [line.split("│")[0].strip() for line in lines[start:end]]
    return [cell for cell in cells if cell]


def test_the_units_table_breaks_paths_only_between_names(make, capsys, monkeypatch) -> None:
    repo = make({DEEP: module(["F401"]), LONG_NAME: module(["F401"]), "a.py": module(["F401"])})
    monkeypatch.setenv("COLUMNS", "60")

    assert main(["fix", "--repo", str(repo), "--no-progress", "--dry-run"]) == 0

    pieces = units_table_files(capsys.readouterr().err)
    assert all(piece.endswith(("/", ".py")) for piece in pieces), pieces
    names = [name for piece in pieces for name in piece.split("/") if name]
    expected = [name for path in sorted(["a.py", DEEP, LONG_NAME]) for name in path.split("/")]
    assert len(names) == len(expected), pieces
    for name, whole in zip(names, expected, strict=True):
        # A name longer than the column keeps its end, after an ellipsis.
        assert name == whole or (name[0] == "\u2026" and whole.endswith(name[1:])), pieces
    assert any(name[0] == "\u2026" for name in names), "a 47-character name fits in 60 columns?"


def test_the_progress_view_at_80_columns_counts_each_unit_once() -> None:
    view = ProgressView(12, title="fixing 12 files", enabled=False, price=Price(input=2, output=8))
    began = time.time() - 70
    # The workflow's own count of running units includes those verifying.
    for n, (path, phase) in enumerate(
        [
            ("a.py", Phase.ISOLATING),
            ("b.py", Phase.AGENT),
            ("c.py", Phase.VERIFYING),
            ("d.py", Phase.VERIFYING),
            ("e.py", Phase.LANDING),
            ("i.py", Phase.AGENT),
            ("j.py", Phase.WAITING),
        ]
    ):
        view.handle(UnitEvent(path, phase, running=4, at=began + 10 * n))
    for path, status in [("f.py", "fixed"), ("g.py", "partial"), ("h.py", "unchanged")]:
        view.handle(UnitEvent(path, Phase.AGENT, running=5))
        view.record(RequestEvent("http://127.0.0.1/v1", "429", 0.1))
        view.record(RequestEvent("http://127.0.0.1/v1", "200", 1.0, 1000, 100))
        view.handle(
            UnitEvent(path, Phase.DONE, running=4, status=status, tokens_in=1000, tokens_out=100)
        )
    # A unit at work has spent tokens too: the view counts each answer as it comes.
    view.record(RequestEvent("http://127.0.0.1/v1", "200", 1.0, 500, 50))
    screen = io.StringIO()
    Console(file=screen, width=80, color_system=None).print(view)

    bar, *counts = screen.getvalue().splitlines()
    assert "━" in bar and "3/12" in bar and "0:00:0" in bar, bar
    assert [line.strip() for line in counts] == [
        "queued 3 · working 3 · verifying 2 · landing 1",
        "fixed 1 · partial 1 · unchanged 1 · failed 0 · skipped 0",
        # What the model's answers spent so far, at the model's price.
        "agent calls in flight 4 · requests 7 (3 refused) · tokens 3,850 · $0.0098",
        # Each unit at work, the longest in its phase first, with how long (j.py, waiting
        # for an agent's place, is counted as queued).
        "isolating    70s  a.py",
        "agent    60s  b.py",
        "verifying    50s  c.py",
        "verifying    40s  d.py",
        "landing    30s  e.py",
        "agent    20s  i.py",
    ]


def test_the_summary_says_the_agent_time_is_summed_over_units(make, capsys, monkeypatch) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["F401"])})
    monkeypatch.setenv("COLUMNS", "200")

    assert main(["fix", "--repo", str(repo), "--no-progress", "-j", "2"]) == 0

    time_row = next(
        line for line in capsys.readouterr().err.splitlines() if line.startswith(" time")
    )
    assert "s wall, " in time_row and "s agent time summed over units, " in time_row


def test_the_review_view_counts_builds_the_ends_of_edits_and_the_findings() -> None:
    paths = ["pkg/a.py", "pkg/b.py", "lib/c.py", "lib/d.py", "lib/e.py", "doc/f.md"]
    view = ProgressView(
        6,
        title="reviewing 6 files",
        enabled=False,
        endings=REVIEW_ENDINGS,
        building=True,
        groups={path: path.split("/")[0] for path in paths},
        group_noun="directories",
    )
    view.handle(UnitEvent("pkg/a.py", Phase.BUILDING, running=0))
    view.handle(UnitEvent("pkg/b.py", Phase.AGENT, running=1))
    for path in ("lib/c.py", "lib/d.py"):
        view.handle(UnitEvent(path, Phase.BUILDING, running=0))
    for path, status, found in [
        ("lib/c.py", "applied", {"error": 1, "warning": 0, "note": 2}),
        ("lib/d.py", "rolled_back", {"error": 0, "warning": 1, "note": 0}),
        ("lib/e.py", "reviewed", {"error": 0, "warning": 0, "note": 0}),
        ("doc/f.md", "reviewed", {"error": 0, "warning": 0, "note": 0}),
    ]:
        view.handle(UnitEvent(path, Phase.DONE, running=0, status=status, findings=found))
    screen = io.StringIO()
    Console(file=screen, width=80, color_system=None).print(view)

    _bar, *counts = screen.getvalue().splitlines()
    # lib was built, landed in part and rolled back in part; doc had nothing to build; pkg
    # is not done.
    assert [line.strip() for line in counts] == [
        "queued 0 · working 1 · verifying 0 · building 1 · landing 0",
        "reviewed 2 · applied 1 · rolled_back 1 · failed 0 · skipped 0",
        "findings: error 1 · warning 1 · note 2",
        "directories: built 1 · landed 1 · rolled back 1",
        "building     0s  pkg/a.py",
        "agent     0s  pkg/b.py",
    ]


def test_every_status_has_a_style_of_its_own_line() -> None:
    from stomper.console import _STYLE
    from stomper.unit import Status

    assert set(_STYLE) == set(Status)


def test_the_view_names_sixteen_units_at_work_and_counts_the_rest() -> None:
    view = ProgressView(40, title="fixing 40 files", enabled=False)
    began = time.time() - 100
    for n in range(20):
        view.handle(UnitEvent(f"u{n:02}.py", Phase.AGENT, running=20, at=began + n))
    for n in range(20, 30):
        view.handle(UnitEvent(f"u{n:02}.py", Phase.QUEUED, running=20, at=began + n))
    screen = io.StringIO()
    Console(file=screen, width=80, color_system=None).print(view)
    named = [line.split()[-1] for line in screen.getvalue().splitlines() if "s  u" in line]
    assert named == [f"u{n:02}.py" for n in range(16)]  # the longest at work first
    assert screen.getvalue().splitlines()[-1].strip() == "and 4 more at work"
