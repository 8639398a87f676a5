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
- land: ``landing`` to ``done`` (the wait for the landing lock and the landing itself);
- orchestration: the time the unit's slot stood idle before the unit began (see
  :func:`bench.harness.handoffs`).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from bench import harness
from bench.repos import sympy_sized_repo, synthetic_repo
from stomper import git

SEGMENTS = (
    ("isolate", "isolating"),
    ("agent", "agent"),
    ("verify", "verifying"),
    ("land", "landing"),
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
    for label, repo, extra in repos:
        base = git_head(repo)
        for space in spaces:
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
            report(f"{label}, workspace: {space}", fix)


def git_head(repo: Path) -> str:
    return git.git_sync(repo, "rev-parse", "HEAD").stdout.decode().strip()


def reset(repo: Path, commit: str) -> None:
    git.git_sync(repo, "reset", "--hard", "--quiet", commit)
    shutil.rmtree(repo / ".git" / "stomper", ignore_errors=True)
    git.git_sync(repo, "worktree", "prune")


def report(label: str, fix: harness.FixRun) -> None:
    fix.note_failures()
    meta = fix.meta()
    events = fix.events()
    units = harness.unit_times(events)
    gaps = harness.handoffs(units, fix.parallel, float(meta["started"]))
    wall = fix.wall_s
    began = float(meta.get("finished", meta["started"])) - wall
    rows = []
    totals: dict[str, float] = {}
    for name, phase in SEGMENTS:
        values = [unit.phases[phase] for unit in units]
        totals[name] = sum(values)
        rows.append((name, harness.median(values), harness.p95(values), sum(values)))
    rows.append(("orchestration", harness.median(gaps), harness.p95(gaps), sum(gaps)))
    totals["orchestration"] = sum(gaps)
    per_unit = [unit.done - unit.started for unit in units]
    rows.append(
        ("unit, isolate to done", harness.median(per_unit), harness.p95(per_unit), sum(per_unit))
    )
    harness.note(f"\n### {label}: {len(units)} units\n")
    harness.note(harness.table(["segment", "median s", "p95 s", "sum s"], rows))
    slots = wall * fix.parallel
    first = min((unit.started for unit in units), default=began)
    last = max((unit.done for unit in units), default=began)
    accounted = sum(totals.values())
    harness.note(
        f"\nwall {wall:.2f}s x N={fix.parallel} = {slots:.1f} slot-s; phases and hand-offs "
        f"{accounted:.1f} slot-s ({accounted / slots:.0%}); "
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
