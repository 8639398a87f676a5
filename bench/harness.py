"""What every benchmark shares: running ``stomper fix`` as a child, reading its journal,
summary statistics and the tables the benchmarks print.

A run is a child process (``python -m stomper fix ... --json``) so that each run starts
from a fresh interpreter, its peak memory can be read from ``wait4`` and nothing of one run
(caches, event loop, imports) helps the next.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AGENTS = "stomper.testing.agents"
# Where the test agents work: a worktree of the whole repository (what CLI agents get), a
# scratch folder with the unit's one file (what the autofix agent asks for), or whatever
# the wrapped agent asks for.
SPACES = {"tree": "1", "scratch": "0", "agent": ""}


def space_env(space: str) -> dict[str, str]:
    """The environment that gives the test agents the workspace ``space``."""
    return {"STOMPER_TEST_AGENT_TREE": SPACES[space]}


PHASES = ("isolating", "agent", "verifying", "landing")


@dataclass(frozen=True)
class FixRun:
    """One finished ``stomper fix`` child."""

    repo: Path
    parallel: int | str
    doc: dict[str, Any]
    """The run's ``--json`` document."""
    exit_code: int
    process_s: float
    """The child's wall time, interpreter start and imports included."""
    max_rss_kb: int
    """Peak resident memory of the child or of any process it waited for (git, ruff)."""
    own_rss_kb: int
    """Peak resident memory of stomper's own process alone."""
    cpu_s: float
    """CPU time (user and system) of the child and every process it waited for: unlike
    wall time, hardly changed by other work sharing the machine."""
    load: float
    """The one-minute load average when the run ended: other work shows here."""
    spawned: float
    """When the child was started, by the wall clock (``time.time()``) that stamps the
    events of the run's ops log."""

    @property
    def run_dir(self) -> Path:
        return self.repo / ".git" / "stomper" / "runs" / str(self.doc["run_id"])

    @property
    def wall_s(self) -> float:
        """The run's own wall time, from the start of ``run_fix`` to its report."""
        return float(self.doc["metrics"]["wall_s"])

    @property
    def units(self) -> int:
        return int(self.doc["totals"]["units"])

    def meta(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.run_dir / "run.json").read_text())
        return loaded

    def events(self) -> list[dict[str, Any]]:
        path = self.run_dir / "events.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [record for record in records if "phase" in record]  # units' phases, not requests

    def journal_bytes(self) -> int:
        return folder_bytes(self.run_dir)

    def failures(self) -> list[tuple[str, str]]:
        """(path, reason) of each failed unit."""
        return [
            (unit["path"], unit.get("reason") or "")
            for unit in self.doc["units"]
            if unit["status"] == "failed"
        ]

    def note_failures(self, limit: int = 3) -> None:
        """Print why units failed: in a benchmark every unit is meant to land."""
        failed = self.failures()
        for path, reason in failed[:limit]:
            lines = [line.strip() for line in reason.strip().splitlines()] or [""]
            shown = lines[0][:90] + (f" ... {lines[-1]}" if len(lines) > 1 else "")
            note(f"  failed unit {path}: {shown}")
        if len(failed) > limit:
            note(f"  ... and {len(failed) - limit} more failed units")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without the user's own ``STOMPER_*`` settings, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("STOMPER_")}
    env.update(extra or {})
    return env


# ``python -m stomper``, which also leaves, as it exits, the peak resident memory of its own
# process (not of the git and ruff processes it waited for, as ``wait4`` reports) in the file
# named by its first argument.
_STOMPER_OWN_RSS = """\
import atexit, resource, runpy, sys
from pathlib import Path

out = Path(sys.argv.pop(1))
atexit.register(
    lambda: out.write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
)
runpy.run_module("stomper", run_name="__main__", alter_sys=True)
"""


def run_fix(
    repo: Path,
    *,
    agent: str,
    parallel: int | str,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> FixRun:
    """Run ``stomper fix --json`` on ``repo`` in a child process and wait for it."""
    options = ["--agent", agent, "--max-parallel-files", str(parallel), *args]
    return run_stomper(repo, "fix", *options, parallel=parallel, env=env)


def run_resume(
    repo: Path, *args: str, parallel: int | str, env: Mapping[str, str] | None = None
) -> FixRun:
    """Run ``stomper resume --json`` on ``repo``'s newest unfinished run in a child."""
    return run_stomper(repo, "resume", *args, parallel=parallel, env=env)


def run_stomper(
    repo: Path,
    command: str,
    *args: str,
    parallel: int | str,
    env: Mapping[str, str] | None = None,
) -> FixRun:
    """Run ``stomper COMMAND --json`` on ``repo`` in a child process and wait for it."""
    with (
        tempfile.TemporaryDirectory(prefix="stomper-bench-run-") as scratch,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        own_rss = Path(scratch) / "own-rss-kb"
        argv = [
            sys.executable,
            "-c",
            _STOMPER_OWN_RSS,
            str(own_rss),
            command,
            "--repo",
            str(repo),
            "--json",
            "--no-progress",
            *args,
        ]
        spawned = time.time()
        started = time.monotonic()
        child = subprocess.Popen(argv, stdout=out, stderr=err, env=child_env(env))
        _, status, usage = os.wait4(child.pid, 0)
        process_s = time.monotonic() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        # 0 when the process ended without its exit handlers (a second Ctrl-C).
        own_rss_kb = int(own_rss.read_text()) if own_rss.exists() else 0
    if child.returncode not in (0, 1):
        raise RuntimeError(
            f"stomper {command} exited {child.returncode}:\n{stderr.decode(errors='replace')}"
        )
    return FixRun(
        repo,
        parallel,
        json.loads(stdout),
        child.returncode,
        process_s,
        usage.ru_maxrss,
        own_rss_kb,
        usage.ru_utime + usage.ru_stime,
        os.getloadavg()[0],
        spawned,
    )


def folder_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


# Statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile by linear interpolation between the closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 0.5)


def p95(values: Sequence[float]) -> float:
    return percentile(values, 0.95)


# The ops log ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitTimes:
    path: str
    started: float
    """The unit's first event (it had a slot: the limit is taken before it)."""
    done: float
    released: float
    """When the unit gave its slot back: its ``landing`` event (it waits to land outside
    the limit), else its ``done``."""
    phases: dict[str, float]
    """Seconds in each phase: from an event to the unit's next event, summed over retries."""


def unit_times(events: Iterable[Mapping[str, Any]]) -> list[UnitTimes]:
    """Each finished unit's phase split, from the run's ``events.jsonl``.

    A phase lasts from its event to the unit's next event, so ``verifying`` also holds what
    happens between verification and the landing event (writing the blob, giving the
    workspace back), and ``landing`` holds the wait for the landing lock.
    """
    by_path: defaultdict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for event in events:
        by_path[event["path"]].append(event)
    out = []
    for path, seen in by_path.items():
        seen = sorted(seen, key=lambda event: event["at"])
        if seen[-1]["phase"] != "done":
            continue
        phases = dict.fromkeys(PHASES, 0.0)
        for event, following in zip(seen, seen[1:], strict=False):
            if event["phase"] in phases:
                phases[event["phase"]] += following["at"] - event["at"]
        landing = [event["at"] for event in seen if event["phase"] == "landing"]
        done = seen[-1]["at"]
        out.append(UnitTimes(path, seen[0]["at"], done, landing[-1] if landing else done, phases))
    return sorted(out, key=lambda unit: unit.started)


def landing_busy(events: Iterable[Mapping[str, Any]]) -> float:
    """Seconds in which some unit was landing or waiting to land: the lander's busy time.

    Taken from the ops log (the union of each unit's ``landing`` to ``done`` span) rather
    than from the units' own landing times, which count a batch of landings once per unit
    in it. A unit only waits for the lock while another holds it, so the union is the time
    the lock was held, to within the hand-over between two landings.
    """
    spans = []
    opened: dict[str, float] = {}
    for event in sorted(events, key=lambda event: event["at"]):
        if event["phase"] == "landing":
            opened[event["path"]] = event["at"]
        elif event["phase"] == "done" and event["path"] in opened:
            spans.append((opened.pop(event["path"]), event["at"]))
    busy = 0.0
    end = -math.inf
    for start, stop in sorted(spans):
        if stop <= end:
            continue
        busy += stop - max(start, end)
        end = stop
    return busy


def handoffs(units: Sequence[UnitTimes], parallel: int, run_started: float) -> list[float]:
    """Per unit, the time its slot stood idle before it: orchestration.

    With at most N units at once, the k-th unit to start (k >= N) starts after the
    (k-N)-th unit to give its slot back; the gap between the two is what the orchestrator
    took to hand the freed slot on (the limit, LangGraph's scheduling, checkpoint writes,
    journal writes). The first N units are measured from the run's start (the journal's creation),
    which holds the graph's compilation and the opening of the checkpointer.
    """
    starts = sorted(unit.started for unit in units)
    released = sorted(unit.released for unit in units)
    gaps = []
    for k, start in enumerate(starts):
        freed = released[k - parallel] if k >= parallel else run_started
        gaps.append(max(0.0, start - freed))
    return gaps


# Output -----------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: readable in a terminal, and pasted as is into RESULTS.md."""
    cells = [[str(header) for header in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
            + " |"
        )

    rule = "|" + "|".join("-" * (width + 1) + ":" for width in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def heading(text: str) -> None:
    print(f"\n## {text}\n", flush=True)


def note(text: str) -> None:
    print(text, flush=True)


def cores() -> int:
    """The CPUs this process may run on (what ``nproc`` prints)."""
    return len(os.sched_getaffinity(0))


def megabytes(size: float) -> float:
    return size / 1e6


def machine() -> dict[str, str]:
    """Where and on what the figures were taken."""
    root = Path(__file__).resolve().parent.parent

    def out(*argv: str) -> str:
        done = subprocess.run(argv, cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip() or "?"

    memory = "?"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for entry in meminfo.read_text().splitlines():
            if entry.startswith("MemTotal:"):
                memory = f"{int(entry.split()[1]) / 1024 / 1024:.1f} GiB"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    dirty = out("git", "status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": out("git", "rev-parse", "--short", "HEAD")
        + (" (with uncommitted changes)" if dirty not in ("", "?") else ""),
        "cpus (nproc)": str(cores()),
        "memory": memory,
        "python": platform.python_version(),
        "git": out("git", "--version").removeprefix("git version "),
        "ruff": out(str(Path(sys.executable).parent / "ruff"), "--version"),
        "platform": platform.platform(),
        "load average (1, 5, 15 min)": load,
    }
