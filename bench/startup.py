"""startup: how long ``stomper fix`` takes before its first unit starts, and to do nothing.

Two repositories of 100 files (``--files``): one where every file is clean, so the run has
nothing to do, and the sample project of ``stomper.testing.repos``, where most files carry
diagnostics (a fresh copy for each run, since a run lands its fixes). Each is run ``--runs``
times as a child (``stomper fix --no-progress --json``, the default agent), and the table
gives the median, the fastest and the slowest.

- **first unit**: from the child's start to its first unit's first event (``isolating``, as
  the run's ``events.jsonl`` stamps it), split into the time to the run's start (its
  ``run.json``: the interpreter, stomper's imports, the repository's checks, collecting and
  planning) and from there to the first unit (loading the workflow, opening the
  checkpointer, the graph's first step).
- **nothing to do**: the whole child, start to exit.

The goal for both is 1.0 s. The interpreter alone (``python -c pass``) and ``stomper fix
--help`` are timed too: what no change to stomper can take away, and the command line's own
share.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import harness
from stomper.testing.agents import DELAY_ENV
from stomper.testing.repos import CLEAN, RUFF_CONFIG, make_repo, sample_project

GOAL_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=100, help="files in each repository")
    parser.add_argument("--runs", type=int, default=5, help="runs of each, for the median")
    parser.add_argument("--agent", default="autofix", help="the agent (default autofix)")
    parser.add_argument("--parallel", type=int, default=4, help="N, units at once")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds each call of a test agent takes (--agent stomper.testing.agents:delayed)",
    )


def clean_files(count: int) -> dict[str, str]:
    files = {"pyproject.toml": RUFF_CONFIG, "shop/__init__.py": ""}
    files.update({f"shop/module_{number:02d}.py": CLEAN for number in range(count)})
    return files


def timed(argv: Sequence[str]) -> tuple[float, float]:
    """Wall and CPU seconds of the child ``argv``, its output discarded."""
    started = time.monotonic()
    child = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=harness.child_env()
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed")
    return wall, usage.ru_utime + usage.ru_stime


def first_unit(fix: harness.FixRun) -> tuple[float, float]:
    """Seconds from the child's start to the run's start, and to its first unit's start."""
    events = fix.events()
    if not events:
        raise RuntimeError(f"the run in {fix.repo} started no unit")
    began = float(fix.meta()["started"]) - fix.spawned
    return began, min(float(event["at"]) for event in events) - fix.spawned


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    return harness.median(values), min(values), max(values)


def run(args: argparse.Namespace, workdir: Path) -> None:
    latency = f" (latency {args.latency:g} s)" if args.latency else ""
    harness.heading(
        f"startup: {args.files} files, agent {args.agent}{latency}, N = {args.parallel}, "
        f"median of {args.runs} runs"
    )
    clean = make_repo(workdir / "startup-clean", clean_files(args.files))
    dirty = make_repo(workdir / "startup-dirty", sample_project(args.files))
    python, stomper = [sys.executable], [sys.executable, "-m", "stomper"]

    interpreter = [timed([*python, "-c", "pass"]) for _ in range(args.runs)]
    helps = [timed([*stomper, "fix", "--help"]) for _ in range(args.runs)]
    env = {DELAY_ENV: str(args.latency)}
    idle = []
    for _ in range(args.runs):
        fix = harness.run_fix(clean, agent=args.agent, parallel=args.parallel, env=env)
        if fix.units:
            raise RuntimeError(f"the clean repository has {fix.units} units")
        idle.append(fix)
    busy = []
    for number in range(args.runs):
        copy = workdir / f"startup-dirty-{number}"
        shutil.copytree(dirty, copy, symlinks=True)
        fix = harness.run_fix(copy, agent=args.agent, parallel=args.parallel, env=env)
        fix.note_failures()
        busy.append((fix, *first_unit(fix)))
        shutil.rmtree(copy, ignore_errors=True)

    rows = [
        ("interpreter alone (`python -c pass`)", *spread([w for w, _ in interpreter]), "-"),
        ("`stomper fix --help`", *spread([w for w, _ in helps]), "-"),
        ("nothing to do: start to exit", *spread([fix.process_s for fix in idle]), GOAL_S),
        ("units: start to the run's start", *spread([began for _, began, _ in busy]), "-"),
        ("units: start to the first unit", *spread([first for _, _, first in busy]), GOAL_S),
        ("units: start to exit", *spread([fix.process_s for fix, _, _ in busy]), "-"),
    ]
    cpu = {
        "interpreter alone (`python -c pass`)": [c for _, c in interpreter],
        "`stomper fix --help`": [c for _, c in helps],
        "nothing to do: start to exit": [fix.cpu_s for fix in idle],
        "units: start to exit": [fix.cpu_s for fix, _, _ in busy],
    }
    harness.note(
        harness.table(
            ["", "median s", "fastest s", "slowest s", "goal s", "median / goal", "CPU s"],
            [
                (
                    name,
                    middle,
                    low,
                    high,
                    goal,
                    middle / goal if isinstance(goal, float) else "-",
                    harness.median(cpu[name]) if name in cpu else "-",
                )
                for name, middle, low, high, goal in rows
            ],
        )
    )
    units = busy[0][0].units if busy else 0
    loads = [fix.load for fix in idle] + [fix.load for fix, _, _ in busy]
    harness.note(
        f"\n{units} units in the run with units; CPU s counts the child and every process it "
        f"waited for (git, ruff); load average during the runs {min(loads):.2f} to "
        f"{max(loads):.2f}"
    )
