"""real: ``stomper fix`` against ``ruff check --fix`` on the source distributions of real projects.

Django 1.11.29 and sympy 1.5 as pip downloads them (``pip download --no-deps --no-binary
:all:``), each unpacked and committed as one git repository with no ruff configuration of its
own: ruff's defaults, what a new user meets first. The archives and the repositories made from
them are kept in a cache folder (``--cache``) and made only once. In one run, each on a fresh
clone of that repository: ``ruff check --fix --no-cache`` (the reference: what stomper's
autofix agent does, as one process over the whole tree), then ``stomper fix`` with the autofix
agent at each N of ``--parallel``. Per project it prints the wall times and their ratios (goals:
``-j4`` within 3x of ruff, and no slower than ``-j1``), the diagnostics one ``ruff check`` from
the root finds on each final tree (and, file by file, where stomper left more than ruff did),
the files whose bytes differ from ruff's own fix of them, the units stomper refused in whole
or in part with their reasons, the landing's commits per second, the peak memory of stomper's
own process, and whether the runs at every N ended on the same tree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import harness
from stomper import git
from stomper.diagnostics.ruff import ruff_binary
from stomper.testing.repos import IDENTITY, make_repo

# Each project's distribution and version, as pip is asked for them.
PROJECTS = {"django": ("django", "1.11.29"), "sympy": ("sympy", "1.5")}
ARCHIVES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
# The statuses of a unit stomper refused, in whole or in part.
REFUSED = ("failed", "partial")
# The order in which counts by a unit's status are shown.
STATUSES = ("failed", "partial", "fixed", "unchanged", "skipped", "no unit")
# Files named where the figures are printed, at most.
LISTED = 10

Findings = Counter[tuple[str, str]]
"""Diagnostics counted by (file, code)."""


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stomper-bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project",
        action="append",
        choices=sorted(PROJECTS),
        help="a project to run (repeatable; default: all of them)",
    )
    parser.add_argument(
        "--parallel", default="1,4", help="comma-separated N of the stomper runs (default 1,4)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=argparse.SUPPRESS,
        help="skip -j1: stomper at N = 4 only (unless --parallel is given)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=default_cache(),
        help="where the archives and the repositories made from them are kept "
        "(default: %(default)s)",
    )


def run(args: argparse.Namespace, workdir: Path) -> None:
    ruff = ruff_binary()
    if ruff is None:
        raise RuntimeError("ruff is not installed: pip install ruff")
    parallel = [int(part) for part in str(args.parallel).split(",") if part.strip()]
    if not parallel:
        raise SystemExit("--parallel names no N")
    cache = Path(args.cache).expanduser().resolve()
    rows = []
    for name in args.project or list(PROJECTS):
        distribution, version = PROJECTS[name]
        harness.heading(
            f"real: {distribution} {version}, `ruff check --fix` against `stomper fix` "
            f"at N = {', '.join(map(str, parallel))}"
        )
        base = committed(cache, distribution, version)
        rows.append(compare(name, base, ruff, parallel, workdir / f"real-{name}"))
    if len(rows) > 1:
        harness.heading("real: all projects")
        harness.note(harness.table(SUMMARY, rows))


# The projects ---------------------------------------------------------------------------


def canonical(name: str) -> str:
    """A distribution's name as pip compares them: ``Django`` and ``django`` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def sdist(folder: Path, distribution: str, version: str) -> Path | None:
    """The source archive of ``distribution`` ``version`` in ``folder`` (as pip names it:
    ``Django-1.11.29.tar.gz``, ``django-5.0.tar.gz``), or None."""
    if not folder.is_dir():
        return None
    wanted = (canonical(distribution), version)
    for entry in sorted(folder.iterdir()):
        for suffix in ARCHIVES:
            if entry.name.endswith(suffix):
                name, _, found = entry.name.removesuffix(suffix).rpartition("-")
                if (canonical(name), found) == wanted:
                    return entry
    return None


def download(folder: Path, distribution: str, version: str) -> Path:
    """The project's source archive in ``folder``, downloaded by pip unless already there."""
    found = sdist(folder, distribution, version)
    if found is not None:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    requirement = f"{distribution}=={version}"
    harness.note(f"downloading {requirement} into {folder}")
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary"]
    subprocess.run([*pip, ":all:", requirement, "-d", str(folder)], check=True)
    found = sdist(folder, distribution, version)
    if found is None:
        raise RuntimeError(f"pip left no source archive of {requirement} in {folder}")
    return found


def committed(cache: Path, distribution: str, version: str) -> Path:
    """A repository whose one commit holds the project's unpacked source archive: made once,
    under ``cache``, and taken from there afterwards."""
    repo = cache / "repos" / f"{canonical(distribution)}-{version}"
    if (repo / ".git").is_dir():
        return repo
    archive = download(cache / "sdists", distribution, version)
    # Made aside and renamed into place once committed: a half-made one is never taken.
    partial = repo.with_name(f".{repo.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    harness.note(f"unpacking {archive.name} and committing it")
    with tarfile.open(archive) as tar:
        # The "data" filter keeps no owner of the archive's (tar's --no-same-owner), and
        # refuses paths outside the folder, links out of it and device files.
        tar.extractall(partial, filter="data")
    top = list(partial.iterdir())
    root = top[0] if len(top) == 1 and top[0].is_dir() else partial
    make_repo(root, {}, message=f"{archive.name}, as released")
    root.rename(repo)
    shutil.rmtree(partial, ignore_errors=True)
    return repo


def ruff_configurations(repo: Path) -> list[str]:
    """The files of ``repo`` that would configure ruff: none, for ruff's defaults."""
    found = []
    for path in git.git_sync(repo, "ls-files", "-z").stdout.decode().split("\0"):
        name = path.rsplit("/", 1)[-1]
        if name in ("ruff.toml", ".ruff.toml") or (
            name == "pyproject.toml" and "[tool.ruff" in (repo / path).read_text(errors="replace")
        ):
            found.append(path)
    return found


def clone(repo: Path, dest: Path) -> Path:
    """A fresh clone of ``repo`` at ``dest``, with an identity to commit under."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    git.git_sync(dest.parent, "clone", "--quiet", str(repo), str(dest))
    for key, value in IDENTITY.items():
        git.git_sync(dest, "config", key, value)
    return dest


# What ruff and git say of a tree ----------------------------------------------------------


def ruff_fix(ruff: str, repo: Path) -> float:
    """Seconds of one ``ruff check --fix --no-cache`` from the root of ``repo``; its result
    is committed."""
    started = time.monotonic()
    done = subprocess.run(
        [ruff, "check", "--fix", "--no-cache", "."],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    seconds = time.monotonic() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"ruff check --fix exited {done.returncode}:\n{done.stderr.decode()}")
    git.git_sync(repo, "commit", "--quiet", "--all", "-m", "ruff check --fix")
    return seconds


def findings(ruff: str, repo: Path) -> Findings:
    """What one ``ruff check`` from the root of ``repo`` finds, by (file, code)."""
    done = subprocess.run(
        [ruff, "check", "--no-cache", "--exit-zero", "--output-format=json", "."],
        cwd=repo,
        capture_output=True,
        check=True,
    )
    root = repo.resolve()
    return Counter(
        (Path(item["filename"]).relative_to(root).as_posix(), item["code"] or "syntax")
        for item in json.loads(done.stdout)
    )


def by_file(found: Findings) -> Counter[str]:
    files: Counter[str] = Counter()
    for (path, _), count in found.items():
        files[path] += count
    return files


def beyond(found: Findings, reference: Findings) -> Counter[str]:
    """Per file, how many more diagnostics ``found`` holds than ``reference``."""
    mine, theirs = by_file(found), by_file(reference)
    return Counter({path: mine[path] - theirs[path] for path in mine if mine[path] > theirs[path]})


def tree(repo: Path) -> str:
    return git.git_sync(repo, "rev-parse", "HEAD^{tree}").stdout.decode().strip()


def differing(repo: Path, other: Path) -> list[str]:
    """The files whose bytes differ between the commits checked out in two repositories."""
    git.git_sync(repo, "fetch", "--quiet", "--no-tags", str(other), "HEAD")
    done = git.git_sync(
        repo, "diff-tree", "-r", "-z", "--name-only", "--no-renames", "HEAD", "FETCH_HEAD"
    )
    return [path for path in done.stdout.decode().split("\0") if path]


def dirty(repo: Path) -> int:
    """Tracked files of the checkout that differ from its commit: 0 once a landing is done."""
    done = git.git_sync(repo, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    return len([entry for entry in done.stdout.split(b"\0") if entry])


# What stomper's report says ---------------------------------------------------------------


def reason_kind(reason: str | None) -> str:
    """A refusal's reason without what is particular to one file, so that refusals of one
    kind count together: its first line with numbers and quoted names masked and, from the
    first rule code on, only the distinct codes it names."""
    if not reason:
        return "(no reason given)"
    first = reason.strip().splitlines()[0]
    if first.startswith("left: "):
        # A partial unit names what is left, then, in brackets, why, if more than that the
        # agent has no fix for it.
        said = first.partition(" (")[2].removesuffix(")")
        return reason_kind(said) if said else "left: what the agent has no fix for"
    code = _CODE.search(first)
    if code is not None:
        first = first[: code.start()] + ", ".join(sorted(set(_CODE.findall(first))))
    first = re.sub(r"`[^`]*`", "`...`", first)
    first = re.sub(r"\b\d+\b", "N", first)
    return first if len(first) <= 150 else first[:147] + "..."


_CODE = re.compile(r"\b[A-Z]{1,4}[0-9]{3,4}\b")


def refusals(units: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """The units stomper refused in whole or in part, by kind of reason: how many units, and
    how many of their targeted diagnostics stomper left on the target."""
    grouped: dict[str, tuple[int, int]] = {}
    for unit in units:
        if unit["status"] in REFUSED:
            kind = f"{unit['status']}: {reason_kind(unit.get('reason'))}"
            count, left = grouped.get(kind, (0, 0))
            grouped[kind] = (count + 1, left + len(unit["remaining"]))
    return grouped


# One project ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Where one way of fixing a clone of the project ended."""

    seconds: float
    left: Findings
    """What one ``ruff check`` from the root finds on the final tree."""
    tree: str


@dataclass(frozen=True)
class StomperRun:
    fix: harness.FixRun
    outcome: Outcome
    differing: tuple[str, ...]
    """The files whose bytes differ from ruff's own fix of them."""
    dirty: int

    @property
    def label(self) -> str:
        return f"`stomper fix -j{self.fix.parallel}`"

    @property
    def statuses(self) -> dict[str, str]:
        """Each unit's file and how the unit ended."""
        return {unit["path"]: unit["status"] for unit in self.fix.doc["units"]}

    def beyond(self, ruffed: Outcome) -> str:
        """How many more diagnostics than ruff stomper left, file by file, by unit status."""
        return by_status(beyond(self.outcome.left, ruffed.left), self.statuses)

    def differing_by_status(self) -> str:
        return by_status(Counter(self.differing), self.statuses)

    def commits_per_second(self) -> float:
        landing = float(self.fix.doc["metrics"]["landing_s"])
        return self.fix.doc["totals"]["commits"] / landing if landing else float("nan")


def compare(
    name: str, base: Path, ruff: str, parallel: Sequence[int], workdir: Path
) -> list[object]:
    """Run ruff and stomper on clones of ``base`` and print what each did; the summary row."""
    files = git.git_sync(base, "ls-files", "-z").stdout.decode().split("\0")
    python_files = len([path for path in files if path.endswith(".py")])
    commit = git.git_sync(base, "rev-parse", "--short", "HEAD").stdout.decode().strip()
    configured = ", ".join(ruff_configurations(base)) or "none"
    harness.note(
        f"{base} at {commit}: {python_files} .py files; ruff configuration of its own: {configured}"
    )
    reference = clone(base, workdir / "ruff")
    release = findings(ruff, reference)
    seconds = ruff_fix(ruff, reference)
    ruffed = Outcome(seconds, findings(ruff, reference), tree(reference))
    harness.note(f"ruff check --fix: {seconds:.1f}s")
    runs = [run_stomper(ruff, base, reference, n, workdir) for n in parallel]
    harness.note("")
    harness.note(time_table(ruffed, runs))
    harness.note("")
    harness.note(result_table(release, ruffed, runs))
    for line in goals(runs):
        harness.note(line)
    harness.note("")
    harness.note(refusal_table(runs))
    for run in runs:
        unexplained = unexplained_files(run)
        if unexplained:
            harness.note(
                f"\nfiles whose bytes after {run.label} differ from ruff's, but for those of "
                f"units that failed ({len(unexplained)}; the unit's status in brackets):"
            )
            for path, status in unexplained[:LISTED]:
                harness.note(f"  {path} [{status}]")
            if len(unexplained) > LISTED:
                harness.note(f"  ... and {len(unexplained) - LISTED} more")
    widest = max(runs, key=lambda run: run.fix.parallel)
    return [
        name,
        python_files,
        widest.fix.units,
        seconds,
        widest.outcome.seconds,
        widest.outcome.seconds / seconds,
        narrow_ratio(runs),
        sum(release.values()),
        sum(ruffed.left.values()),
        sum(widest.outcome.left.values()),
        widest.beyond(ruffed),
        widest.differing_by_status(),
        widest.commits_per_second(),
        widest.fix.own_rss_kb / 1024,
        same_tree(runs),
    ]


SUMMARY = [
    "project",
    ".py files",
    "units",
    "ruff s",
    "stomper s (widest N)",
    "x ruff (goal <= 3)",
    "widest / narrowest N (goal <= 1)",
    "left: release",
    "left: ruff",
    "left: stomper",
    "more than ruff's (by unit status)",
    "files != ruff's (by unit status)",
    "commits/s",
    "peak RSS MB",
    "same tree at every N",
]


def run_stomper(ruff: str, base: Path, reference: Path, parallel: int, workdir: Path) -> StomperRun:
    """``stomper fix`` with the autofix agent at N = ``parallel`` on a fresh clone."""
    repo = clone(base, workdir / f"stomper-j{parallel}")
    fix = harness.run_fix(repo, agent="autofix", parallel=parallel)
    outcome = Outcome(fix.process_s, findings(ruff, repo), tree(repo))
    done = StomperRun(fix, outcome, tuple(differing(repo, reference)), dirty(repo))
    totals = fix.doc["totals"]
    harness.note(
        f"stomper fix -j{parallel}: {fix.process_s:.1f}s, {totals['commits']} commits, "
        f"{totals['failed']} failed, {totals['partial']} partial"
    )
    if done.dirty:
        harness.note(f"  the checkout differs from its commit in {done.dirty} files")
    return done


def narrow_ratio(runs: Sequence[StomperRun]) -> float | str:
    """The wall time at the widest N over that at the narrowest."""
    if len(runs) < 2:
        return "-"
    ordered = sorted(runs, key=lambda run: run.fix.parallel)
    return ordered[-1].outcome.seconds / ordered[0].outcome.seconds


def same_tree(runs: Sequence[StomperRun]) -> str:
    if len(runs) < 2:
        return "-"
    return "yes" if len({run.outcome.tree for run in runs}) == 1 else "no"


def goals(runs: Sequence[StomperRun]) -> list[str]:
    """The lines on the runs at different N, after a blank one: none for a single N."""
    if len(runs) < 2:
        return []
    ordered = sorted(runs, key=lambda run: run.fix.parallel)
    return [
        "",
        f"-j{ordered[-1].fix.parallel} / -j{ordered[0].fix.parallel}: "
        f"{narrow_ratio(runs):.2f} (goal <= 1)",
        f"every N ended on the same tree: {same_tree(runs)}",
    ]


def time_table(ruffed: Outcome, runs: Sequence[StomperRun]) -> str:
    rows: list[list[object]] = [
        ["`ruff check --fix`", ruffed.seconds, 1.0, "-", "-", "-", "-", "-", "-", "-"]
    ]
    for run in runs:
        fix = run.fix
        rows.append(
            [
                run.label,
                run.outcome.seconds,
                run.outcome.seconds / ruffed.seconds,
                fix.wall_s,
                float(fix.doc["metrics"]["landing_s"]),
                fix.doc["totals"]["commits"],
                run.commits_per_second(),
                fix.own_rss_kb / 1024,
                fix.cpu_s,
                fix.load,
            ]
        )
    headers = ["run", "wall s", "x ruff", "in-run wall s", "landing s", "commits"]
    headers += ["commits/s", "stomper peak RSS MB", "CPU s", "load at end"]
    return harness.table(headers, rows)


def result_table(release: Findings, ruffed: Outcome, runs: Sequence[StomperRun]) -> str:
    rows: list[list[object]] = [
        ["the release", sum(release.values()), "-", "-", "-", "-", "-", "-"],
        ["`ruff check --fix`", sum(ruffed.left.values()), "-", "-", "-", "-", "-", ruffed.tree],
    ]
    for run in runs:
        totals = run.fix.doc["totals"]
        statuses = ("fixed", "partial", "failed", "unchanged", "skipped")
        rows.append(
            [
                run.label,
                sum(run.outcome.left.values()),
                run.beyond(ruffed),
                sum(beyond(ruffed.left, run.outcome.left).values()),
                run.differing_by_status(),
                totals["units"],
                " / ".join(str(totals[status]) for status in statuses),
                run.outcome.tree,
            ]
        )
    headers = ["run", "diagnostics left", "more than ruff's (by unit status)"]
    headers += ["fewer than ruff's", "files != ruff's (by unit status)", "units"]
    headers += ["fixed / partial / failed / unchanged / skipped", "tree"]
    return harness.table(headers, rows)


def refusal_table(runs: Sequence[StomperRun]) -> str:
    grouped = {run.label: refusals(run.fix.doc["units"]) for run in runs}
    kinds = sorted({kind for found in grouped.values() for kind in found})
    rows = [
        [kind, *(" / ".join(map(str, found.get(kind, (0, 0)))) for found in grouped.values())]
        for kind in kinds
    ]
    headers = [
        "failed or partial units (status: reason)",
        *(f"{label}: units / targeted diagnostics left" for label in grouped),
    ]
    return harness.table(headers, rows or [["(none)", *["-"] * len(grouped)]])


def unexplained_files(run: StomperRun) -> list[tuple[str, str]]:
    """The files that differ from ruff's fix of them, with their unit's status, but for the
    units stomper refused whole."""
    statuses = run.statuses
    found = [(path, statuses.get(path, "no unit")) for path in run.differing]
    return [(path, status) for path, status in found if status != "failed"]


def by_status(counts: Mapping[str, int], statuses: Mapping[str, str]) -> str:
    """The sum of ``counts`` (by file), then its parts by the status of each file's unit:
    ``"13066 (failed 13060, partial 6)"``."""
    parts: Counter[str] = Counter()
    for path, count in counts.items():
        parts[statuses.get(path, "no unit")] += count
    shown = ", ".join(f"{status} {parts[status]}" for status in STATUSES if parts[status])
    return f"{sum(parts.values())} ({shown})" if shown else "0"
