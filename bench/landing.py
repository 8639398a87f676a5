"""landing: commits per second through ``stomper.landing.Lander``, with no agent at all.

Landing is the one serial step of a run: whatever it costs per commit caps the whole run at
``1 / cost`` units per second, however many units run at once. Here N ready patches (each a
new blob for a distinct file, already in the object store) are landed onto the checked-out
branch (which also updates the user's index and working tree for the files) and onto another
branch (a ref only), in repositories of growing size, two ways: one after the other (each
landing waits for the one before: the cost of a lone landing), and all handed over at once
(they queue behind the landing under way and land as chains of commits with one ref update
each: the throughput when units finish faster than they land). The git calls a landing makes
are timed on the way, to show where a landing's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import harness
from bench.repos import synthetic_repo, unit_path
from stomper import git, objects, proc
from stomper.landing import Lander, commit_message
from stomper.unit import Patch

FEEDS = ("one by one", "all at once")
# Requests to the long-lived git processes a lander may keep (class, method): counted
# beside the processes it starts, since a request costs no process of its own.
LONG_LIVED = (
    ("ObjectReader", "read"),
    ("RefTransactions", "move"),
    ("RefReader", "commit_of"),
    ("PendingMove", "commit"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--commits", type=int, default=200, help="patches to land")
    parser.add_argument(
        "--files", default="200,2000", help="comma-separated repository sizes in files"
    )
    parser.add_argument(
        "--file-kb",
        type=float,
        default=0.0,
        help="KB of clean code added to each file (0: the bare units, about 0.2 KB; "
        "17 for the average file of the sympy-sized repository)",
    )


def run(args: argparse.Namespace, workdir: Path) -> None:
    sizes = [int(part) for part in str(args.files).split(",") if part.strip()]
    padding = float(args.file_kb)
    sized = f", files padded with {padding:g} KB" if padding else ""
    harness.heading(f"landing: {args.commits} ready patches through Lander{sized}")
    rows = []
    calls: dict[str, dict[str, list[float]]] = {}
    landed: dict[str, int] = {}
    for files in sizes:
        commits = min(args.commits, files)
        for checked_out in (True, False):
            target = "checked-out branch" if checked_out else "other branch"
            for feed in FEEDS:
                name = f"landing-{files}-{int(checked_out)}-{FEEDS.index(feed)}-{padding:g}"
                repo = synthetic_repo(workdir / name, files, padding_kb=padding)
                patches = _patches(repo, commits)
                together = feed == "all at once"
                with _timing() as timed:
                    seconds, each = asyncio.run(
                        _land_all(repo, patches, checked_out=checked_out, together=together)
                    )
                label = f"{files} files, {target}, {feed}"
                calls[label] = timed
                landed[label] = commits
                rows.append(
                    (
                        files,
                        target,
                        feed,
                        commits,
                        seconds,
                        commits / seconds,
                        1000 * seconds / commits,
                        1000 * harness.median(each) if not together else math.nan,
                        1000 * harness.p95(each) if not together else math.nan,
                    )
                )
                harness.note(f"{label}: {commits / seconds:.1f} commits/s")
    harness.note("")
    harness.note(
        harness.table(
            [
                "repo files",
                "target",
                "fed",
                "commits",
                "wall s",
                "commits/s",
                "ms/commit",
                "median landing ms",
                "p95 landing ms",
            ],
            rows,
        )
    )
    harness.note(
        "\nwhere a landing's time goes, per commit: git processes started, requests to the "
        "long-lived git processes a lander keeps open, and the dearest of them (count per "
        "commit, ms of wall per commit).\n"
    )
    breakdown = []
    for label, timed in calls.items():
        commits = landed[label]
        spawned = sum(len(v) for k, v in timed.items() if not k.endswith("(request)"))
        requests = sum(len(v) for k, v in timed.items() if k.endswith("(request)"))
        dearest = sorted(timed.items(), key=lambda item: -sum(item[1]))[:3]
        breakdown.append(
            (
                label,
                spawned / commits,
                requests / commits,
                "; ".join(
                    f"{command} {len(durations) / commits:.2f}x "
                    f"{1000 * sum(durations) / commits:.1f} ms"
                    for command, durations in dearest
                ),
            )
        )
    harness.note(
        harness.table(
            ["landings", "processes/commit", "requests/commit", "dearest (per commit)"],
            breakdown,
        )
    )


def _patches(repo: Path, count: int) -> list[Patch]:
    """``count`` patches, each a new version of a distinct file, its blob already written."""
    head = git.git_sync(repo, "rev-parse", "HEAD").stdout.decode().strip()
    paths = [unit_path(number) for number in range(count)]
    with tempfile.TemporaryDirectory() as scratch:
        sources = []
        for number, path in enumerate(paths):
            source = Path(scratch) / f"{number}.py"
            source.write_bytes((repo / path).read_bytes() + b"\nLANDED = 1\n")
            sources.append(str(source))
        blobs: list[str] = []
        for start in range(0, len(sources), 500):
            done = git.git_sync(repo, "hash-object", "-w", "--", *sources[start : start + 500])
            blobs += done.stdout.decode().split()
    entries = asyncio.run(git.tree_entries(repo, head, paths))
    return [
        Patch(path, entries[path].mode, entries[path].blob, blob)
        for path, blob in zip(paths, blobs, strict=True)
    ]


async def _land_all(
    repo: Path, patches: list[Patch], *, checked_out: bool, together: bool
) -> tuple[float, list[float]]:
    """Land every patch; the total wall time and each landing's own time."""
    if checked_out:
        target = "refs/heads/main"
    else:
        target = "refs/heads/bench-landing"
        head = git.git_sync(repo, "rev-parse", "HEAD").stdout.decode().strip()
        git.git_sync(repo, "update-ref", target, head)
    with tempfile.TemporaryDirectory() as scratch:
        lander = Lander(
            repo,
            target,
            run_id="bench-landing",
            index_file=Path(scratch) / "index",
            checked_out=checked_out,
        )
        # As a run does before its first landing (outside the time measured).
        await lander.prepare(await objects.verbatim_paths(repo, [p.path for p in patches]))

        async def land(patch: Patch) -> float:
            message = commit_message(
                path=patch.path, tools=["ruff"], codes=["F401"], run_id="bench-landing"
            )
            landed = await lander.land(patch, message)
            return landed.seconds

        started = time.monotonic()
        try:
            if together:
                each = list(await asyncio.gather(*(land(patch) for patch in patches)))
            else:
                each = [await land(patch) for patch in patches]
        finally:
            close = getattr(lander, "aclose", None)
            if close is not None:
                await close()
        total = time.monotonic() - started
    landed_count = git.git_sync(repo, "rev-list", "--count", f"{target}~{len(patches)}..{target}")
    if int(landed_count.stdout) != len(patches):
        raise RuntimeError(f"expected {len(patches)} commits on {target}")
    if checked_out and git.git_sync(repo, "status", "--porcelain").stdout.strip():
        raise RuntimeError("the checkout does not match the landed commits")
    return total, each


@contextlib.contextmanager
def _timing() -> Iterator[dict[str, list[float]]]:
    """Count and time, while the block runs, the child processes started (by git command;
    each goes through :func:`stomper.proc.run`, stomper's one door to subprocesses) and the
    requests made to long-lived git processes (by class and method)."""
    timed: defaultdict[str, list[float]] = defaultdict(list)

    def wrap(key: Callable[..., str], call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        async def timed_call(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return await call(*args, **kwargs)
            finally:
                timed[key(*args)].append(time.monotonic() - started)

        return timed_call

    patched: list[tuple[Any, str, Any]] = [(proc, "run", proc.run)]
    proc.run = wrap(_command, proc.run)
    for class_name, method in LONG_LIVED:
        owner = getattr(git, class_name, None)
        if owner is not None and hasattr(owner, method):
            original = getattr(owner, method)
            patched.append((owner, method, original))
            label = f"{class_name}.{method} (request)"
            setattr(owner, method, wrap(lambda *_, label=label: label, original))
    try:
        yield timed
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)


def _command(argv: Sequence[str], *_: Any) -> str:
    """``git <subcommand>`` for a git call (options and ``-c`` settings skipped)."""
    program = Path(argv[0]).name
    if program != "git":
        return program
    rest = iter(argv[1:])
    for word in rest:
        if word == "-c":
            next(rest, None)
        elif not word.startswith("-"):
            return f"git {word}"
    return "git"
