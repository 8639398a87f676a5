"""overhead: where a unit's time goes when the agent costs nothing.

An instant agent (ruff's fixes, no wait) runs over two repositories: the synthetic one
(every file a small unit) and a sympy-sized one (about 2,000 files and 35 MB, a few hundred
of them with diagnostics), once per kind of workspace: a pooled worktree of the whole
repository (``tree``, what CLI agents get) and a scratch folder with the unit's one file
(``scratch``, what the autofix agent asks for). The run's ops log (``events.jsonl``)
splits each unit's time:

- isolate: ``isolating`` to ``agent`` (a worktree taken from the pool and reset to the
  base, or the scratch folder written; then the baseline);
- agent: ``agent`` to ``verifying`` (ruff's fixes; summed over attempts);
- verify: ``verifying`` to ``landing`` (the scope check, ruff on the file, the verdict,
  writing the blob, and giving the workspace back);
- land: the unit's share of the landing that took it (``landing_s`` of the report: a
  chain's time split among its units), not counting the wait for the landing lock;
- wait to land: the rest of ``landing`` to ``done``, the queue behind other landings. A
  unit waits outside the limit (its slot already went to the next unit), so the wait
  costs no slot;
- orchestration: the time the unit's slot stood idle before the unit began (see
  :func:`bench.harness.handoffs`).

The overhead per unit, the figure the goals name, is isolate + verify + land +
orchestration: everything but the agent and the wait in the landing queue.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from bench import harness
from bench.repos import sympy_sized_repo, synthetic_repo
from stomper import git

SEGMENTS = (
    ("isolate", "isolating"),
    ("agent", "agent"),
    ("verify", "verifying"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--units", type=int, default=200, help="units of the synthetic repo")
    parser.add_argument("--parallel", type=int, default=4, help="N, units at once")
    parser.add_argument("--sympy-files", type=int, default=2000, help="files of the big repo")
    parser.add_argument("--sympy-mb", type=float, default=35.0, help="its size in MB")
    parser.add_argument("--sympy-dirty", type=int, default=300, help="its files with diagnostics")
    parser.add_argument(
        "--sympy-units",
        type=int,
        default=0,
        help="units to run there (--max-files; 0 for all of the dirty files)",
    )
    parser.add_argument(
        "--only", choices=("synthetic", "sympy"), help="measure one of the two repositories"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="runs of each measurement; with more than one, a last table gives the median, "
        "lowest and highest of the runs' median overheads (a shared machine's speed "
        "varies from run to run)",
    )
    parser.add_argument(
        "--spaces",
        default="tree,scratch",
        help="comma-separated workspaces to measure: tree (a pooled worktree), scratch (a "
        "folder with the one file), agent (what autofix asks for)",
    )


def run(args: argparse.Namespace, workdir: Path) -> None:
    parallel = args.parallel
    spaces = [part.strip() for part in str(args.spaces).split(",") if part.strip()]
    harness.heading(f"overhead: instant agent, N = {parallel}, workspaces: {', '.join(spaces)}")
    repos: list[tuple[str, Path, list[str]]] = []
    if args.only in (None, "synthetic"):
        repo = synthetic_repo(workdir / f"overhead-synthetic-{args.units}", args.units)
        repos.append((f"synthetic ({args.units} files)", repo, []))
    if args.only in (None, "sympy"):
        repo = sympy_sized_repo(
            workdir / "overhead-sympy",
            args.sympy_files,
            megabytes=args.sympy_mb,
            dirty=args.sympy_dirty,
        )
        size = sum(path.stat().st_size for path in repo.rglob("*.py"))
        label = f"sympy-sized ({args.sympy_files} files, {harness.megabytes(size):.0f} MB)"
        extra = ["--max-files", str(args.sympy_units)] if args.sympy_units else []
        repos.append((label, repo, extra))
    runs = max(1, int(args.runs))
    summary = []
    for label, repo, extra in repos:
        base = git_head(repo)
        for space in spaces:
            overheads, cpu = [], []
            for number in range(runs):
                # Each measurement starts from the generated commit, with no earlier run's
                # commits or journal.
                reset(repo, base)
                fix = harness.run_fix(
                    repo,
                    agent=f"{harness.AGENTS}:instant",
                    parallel=parallel,
                    env=harness.space_env(space),
                    args=extra,
                )
                run_label = f" (run {number + 1} of {runs})" if runs > 1 else ""
                overheads.append(report(f"{label}, workspace: {space}{run_label}", fix))
                cpu.append(fix.cpu_s)
            summary.append(
                (
                    f"{label}, {space}",
                    runs,
                    1000 * harness.median(overheads),
                    1000 * min(overheads),
                    1000 * max(overheads),
                    harness.median(cpu),
                )
            )
    if runs > 1:
        harness.note(f"\n### median overhead over {runs} runs\n")
        headers = ["repository, workspace", "runs", "median ms", "lowest ms", "highest ms"]
        harness.note(harness.table([*headers, "median CPU s"], summary))


def git_head(repo: Path) -> str:
    return git.git_sync(repo, "rev-parse", "HEAD").stdout.decode().strip()


def reset(repo: Path, commit: str) -> None:
    git.git_sync(repo, "reset", "--hard", "--quiet", commit)
    shutil.rmtree(repo / ".git" / "stomper", ignore_errors=True)
    git.git_sync(repo, "worktree", "prune")


def report(label: str, fix: harness.FixRun) -> float:
    """Print the run's table; its median overhead per unit (s)."""
    fix.note_failures()
    meta = fix.meta()
    events = fix.events()
    units = harness.unit_times(events)
    gaps = harness.handoffs(units, fix.parallel, float(meta["started"]))
    wall = fix.wall_s
    began = float(meta.get("finished", meta["started"])) - wall
    # The unit's own share of its landing, as the journal records it.
    records = (fix.run_dir / "units.jsonl").read_text(encoding="utf-8").splitlines()
    own_landing = {
        record["path"]: float(record["landing_s"]) for record in map(json.loads, records)
    }
    segments: dict[str, list[float]] = {
        name: [unit.phases[phase] for unit in units] for name, phase in SEGMENTS
    }
    segments["land"] = [own_landing.get(unit.path, 0.0) for unit in units]
    segments["wait to land"] = [
        max(0.0, unit.phases["landing"] - own_landing.get(unit.path, 0.0)) for unit in units
    ]
    segments["orchestration"] = gaps
    segments["overhead: isolate + verify + land + orchestration"] = [
        isolate + verify + land + gap
        for isolate, verify, land, gap in zip(
            segments["isolate"], segments["verify"], segments["land"], gaps, strict=True
        )
    ]
    segments["unit, isolate to done"] = [unit.done - unit.started for unit in units]
    rows = [
        (name, harness.median(values), harness.p95(values), sum(values))
        for name, values in segments.items()
    ]
    harness.note(f"\n### {label}: {len(units)} units\n")
    harness.note(harness.table(["segment", "median s", "p95 s", "sum s"], rows))
    # What a slot is held for: everything before landing, and the hand-offs.
    totals = {name: sum(segments[name]) for name in ("isolate", "agent", "verify", "orchestration")}
    slots = wall * fix.parallel
    first = min((unit.started for unit in units), default=began)
    last = max((unit.done for unit in units), default=began)
    accounted = sum(totals.values())
    harness.note(
        f"\nwall {wall:.2f}s x N={fix.parallel} = {slots:.1f} slot-s; phases and hand-offs "
        f"in slots {accounted:.1f} slot-s ({accounted / slots:.0%}); "
        f"before the first unit {first - began:.2f}s (collect, plan, journal); "
        f"after the last unit {began + wall - last:.2f}s; "
        f"the lander busy {harness.landing_busy(events):.2f}s of {wall:.2f}s wall"
    )
    shares = ", ".join(f"{name} {value / accounted:.0%}" for name, value in totals.items())
    harness.note(f"share of the units' slot time: {shares}")
    journal = harness.megabytes(fix.journal_bytes())
    harness.note(
        f"CPU {fix.cpu_s:.1f}s ({fix.cpu_s / max(len(units), 1):.3f}s per unit; stomper, git "
        f"and ruff); peak RSS {fix.max_rss_kb / 1024:.0f} MB; journal {journal:.2f} MB; "
        f"load at end {fix.load:.1f}"
    )
    return harness.median(segments["overhead: isolate + verify + land + orchestration"])
