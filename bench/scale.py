"""scale: how time, memory and the journal grow with the number of units.

An instant agent over synthetic repositories of growing size, every file one unit that is
fixed and lands. For each size: the run's wall time, the cost per unit, the child's peak
RSS (``wait4``: stomper itself or any git or ruff it ran, whichever was largest), and the
size of the run's journal folder (``.git/stomper/runs/<run id>``). The last table divides
the largest size's figures by the smallest's: with a cost per unit that does not depend on
the repository, time and journal grow like the units and memory stays flat.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench import harness
from bench.repos import synthetic_repo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        default="100,1000",
        help="comma-separated unit counts (default 100,1000; the goal is 1000,10000)",
    )
    parser.add_argument("--parallel", type=int, default=4, help="N, units at once")
    parser.add_argument(
        "--space",
        choices=sorted(harness.SPACES),
        default="tree",
        help="the unit's workspace: tree (a pooled worktree, the default), scratch, agent",
    )


def run(args: argparse.Namespace, workdir: Path) -> None:
    sizes = [int(part) for part in str(args.sizes).split(",") if part.strip()]
    parallel = args.parallel
    harness.heading(
        f"scale: instant agent, N = {parallel}, workspace: {args.space}, "
        f"sizes {', '.join(map(str, sizes))}"
    )
    rows = []
    figures: dict[int, dict[str, float]] = {}
    for size in sizes:
        made = time.monotonic()
        repo = synthetic_repo(workdir / f"scale-{size}", size)
        made_s = time.monotonic() - made
        fix = harness.run_fix(
            repo,
            agent=f"{harness.AGENTS}:instant",
            parallel=parallel,
            env=harness.space_env(args.space),
        )
        fix.note_failures()
        journal = fix.run_dir
        checkpoints = sum(
            path.stat().st_size for path in journal.glob("checkpoints.sqlite*") if path.is_file()
        )
        units = fix.units
        figures[size] = {
            "wall": fix.wall_s,
            "per_unit": fix.wall_s / units if units else 0.0,
            "rss": fix.max_rss_kb / 1024,
            "cpu": fix.cpu_s / units if units else 0.0,
            "journal": harness.megabytes(fix.journal_bytes()),
        }
        rows.append(
            (
                size,
                units,
                fix.doc["totals"]["commits"],
                fix.doc["totals"]["failed"],
                fix.wall_s,
                fix.process_s,
                1000 * figures[size]["per_unit"],
                fix.wall_s * parallel / units if units else 0.0,
                figures[size]["cpu"],
                figures[size]["rss"],
                figures[size]["journal"],
                harness.megabytes(checkpoints),
                made_s,
                fix.load,
            )
        )
        harness.note(
            f"{size} units: wall {fix.wall_s:.1f}s, peak RSS {figures[size]['rss']:.0f} MB, "
            f"journal {figures[size]['journal']:.2f} MB, failed {fix.doc['totals']['failed']}"
        )
    harness.note("")
    harness.note(
        harness.table(
            [
                "units",
                "planned",
                "commits",
                "failed",
                "wall s",
                "process s",
                "wall/unit ms",
                "slot-s/unit",
                "CPU s/unit",
                "peak RSS MB",
                "journal MB",
                "checkpoints MB",
                "repo made in s",
                "load at end",
            ],
            rows,
        )
    )
    if len(sizes) >= 2:
        small, large = min(sizes), max(sizes)
        harness.note(f"\nratios, {large} units / {small} units (units x{large / small:g}):\n")
        harness.note(
            harness.table(
                ["figure", "ratio"],
                [
                    (name, figures[large][key] / figures[small][key])
                    for name, key in (
                        ("total time", "wall"),
                        ("cost per unit", "per_unit"),
                        ("CPU per unit", "cpu"),
                        ("peak RSS", "rss"),
                        ("journal size", "journal"),
                    )
                    if figures[small][key]
                ],
            )
        )
