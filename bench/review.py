"""review: ``stomper review --apply`` over directories of files, each directory built once.

D directories of F files each; the fake OpenAI-compatible server answers K requests at
once, S seconds each; each file gets an edit, and in every fifth directory one file's edit
breaks the build. The build is a script that takes B seconds and fails when a file of its
directory holds the breaking edit. The requests and the builds bound the run from below:

- ``ideal = max(ceil(requests / min(N, K)) * S, builds * B / parallel builds)``, with the
  requests and builds the run made (a failed build's round back to the model and the
  bisection's builds included): wall time against it, in the run (``metrics.wall_s``) and for
  the whole process (start-up included). Goal >= 0.90 for 20 x 8 files, S = 1 s, K = N = 16,
  B = 0.5 s.
- the builds of each directory whose edits all pass (goal: exactly 1), and the builds
  bisection spent per edit it rolled back.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import harness
from stomper.testing.fake_openai import FakeOpenAI, ThroughputLatency
from stomper.testing.repos import make_repo

# A build of B seconds and little more: a shell's start-up, not an interpreter's.
BUILD = """\
sleep "$2"
if broken=$(grep -l '= "BROKEN"' "$1"/*.py); then
    echo "FAILED $broken: it says BROKEN"
    exit 1
fi
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dirs", type=int, default=20, help="directories")
    parser.add_argument("--files", type=int, default=8, help="files in each directory")
    parser.add_argument("--slots", type=int, default=16, help="requests the server serves at once")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per request")
    parser.add_argument("--build", type=float, default=0.5, help="seconds per build")
    parser.add_argument("--parallel", type=int, default=16, help="N, requests at once")
    parser.add_argument("--builds", default="1,2", help="comma-separated max_parallel_builds")


def project(dirs: int, files: int) -> dict[str, str]:
    """Every file with an edit to make; one file of every fifth directory with an edit that
    breaks its build."""
    found = {}
    for d in range(dirs):
        for f in range(files):
            text = f"def check_{f}(value):\n    return value == None\n"
            if d % 5 == 0 and f == files // 2:
                text += 'FLAG = "ok"  # fake-review: ok => BROKEN\n'
            found[f"pkg{d:02d}/m{f}.py"] = text
    return found


def run(args: argparse.Namespace, workdir: Path) -> None:
    dirs, files, slots, seconds = args.dirs, args.files, args.slots, args.seconds
    levels = [int(part) for part in str(args.builds).split(",") if part.strip()]
    harness.heading(
        f"review: {dirs} directories x {files} files, a server of {slots} slots x "
        f"{seconds:g} s, N = {args.parallel}, builds of {args.build:g} s"
    )
    script = workdir / "review-build.sh"
    script.write_text(BUILD)
    build_cmd = f"sh {shlex.quote(str(script))} {{dir}} {args.build}"
    rows = []
    for parallel_builds in levels:
        repo = make_repo(workdir / f"review-{dirs}x{files}-{parallel_builds}", project(dirs, files))
        latency = ThroughputLatency(slots, seconds)
        with FakeOpenAI(latency=latency) as server:
            doc, process_s = _review(
                repo, server.base_url, args.parallel, build_cmd, parallel_builds
            )
        groups = doc["groups"]
        builds = sum(group["builds"] for group in groups)
        passing = [g["builds"] for g in groups if g["build"] == "passed"]
        bisected = [g for g in groups if g["build"] in ("bisected", "failed")]
        culprits = sum(len(g["rolled_back"]) for g in bisected)
        # A bisected group built once with every edit and once at the base before bisecting.
        bisecting = sum(g["builds"] - 2 for g in bisected)
        requests = latency.served
        ideal = max(
            math.ceil(requests / min(args.parallel, slots)) * seconds,
            builds * args.build / parallel_builds,
        )
        wall = doc["metrics"]["wall_s"]
        building = sum(group["build_s"] for group in groups)
        # The same bound with the builds as long as they took (a sandbox and an interpreter
        # started around each B).
        measured = max(
            math.ceil(requests / min(args.parallel, slots)) * seconds, building / parallel_builds
        )
        rows.append(
            (
                parallel_builds,
                doc["totals"]["files"],
                requests,
                builds,
                building,
                f"{min(passing, default=0)}-{max(passing, default=0)}",
                culprits,
                bisecting / culprits if culprits else math.nan,
                doc["totals"]["applied"],
                wall,
                process_s,
                ideal,
                ideal / wall,
                ideal / process_s,
                measured / wall,
            )
        )
        harness.note(
            f"builds at once {parallel_builds}: in-run {wall:.1f}s, process {process_s:.1f}s, "
            f"ideal {ideal:.1f}s"
        )
    harness.note("")
    harness.note(
        harness.table(
            [
                "builds at once",
                "files",
                "requests",
                "builds",
                "build s",
                "builds of a passing dir",
                "rolled back",
                "bisection builds / culprit",
                "applied",
                "in-run s",
                "process s",
                "ideal s",
                "in-run ratio",
                "process ratio",
                "in-run ratio, builds as run",
            ],
            rows,
        )
    )
    harness.note(
        f"\nideal = max(ceil(requests / min(N, {slots})) * {seconds:g} s, builds * "
        f"{args.build:g} s / builds at once): the server's capacity and the builds bound the "
        "run; ratio = ideal / wall; build s = the time the build processes took, which the "
        "last ratio's ideal counts instead of builds * B. Goal: >= 0.90, and one build for a "
        "directory whose edits all pass.\n"
    )


def _review(
    repo: Path, base_url: str, parallel: int, build_cmd: str, parallel_builds: int
) -> tuple[dict[str, Any], float]:
    """``stomper review --apply --json`` in a child process: its document and wall time."""
    argv = [
        sys.executable,
        "-m",
        "stomper",
        "review",
        "--repo",
        str(repo),
        "--model",
        "fake",
        "--base-url",
        base_url,
        "-j",
        str(parallel),
        "--apply",
        "--build-cmd",
        build_cmd,
        "--max-parallel-builds",
        str(parallel_builds),
        "--no-cache",
        "--json",
        "--no-progress",
    ]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, env=harness.child_env(), check=False)
    process_s = time.monotonic() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"stomper review exited {done.returncode}:\n{done.stderr.decode()}")
    return json.loads(done.stdout), process_s
