"""tasks: ``stomper run`` over tasks with a seeded random dependency graph and file overlaps.

T tasks; each waits for 0-2 earlier tasks, writes 1-3 files of F (so tasks share files at
random), and its agent (the fake CLI agent) works S seconds, drawn from 0.5-2 s, then
appends a line to each of its files. Nothing is verified: the figures are the scheduler's
and the merge queue's. The tasks bound the run from below:

- ``bound = max(critical path, total work / N, the largest sum over the tasks of one
  file)``: tasks that share a file never run at once, and a task waits for the ones it
  depends on to land. Makespan (the run's wall time) against it; goal <= 1.15 for 60
  tasks, N = 8.
- locks never violated: no two tasks that share a file ran at once, by the agents' own
  start and end times (the fake agent logs them).
- landings per second through the merge queue: the tasks landed over the time the queue
  was busy with them.

Then the merge queue alone: Q tasks on files of their own, begun together, each with a
``verify`` of V seconds (a sleep: the stand-in for a project's checks, as the fake agent
is for an agent). Each change but the first lands on a branch that moved since its base,
so it is verified again there before it lands. Landings per second from the first change
in the queue to the last landing, with speculation (a change is verified on the branch the
changes ahead of it will leave, while those are verified) and without (one at a time).
The ideal span: without, the Q - 1 checks one after the other, (Q - 1) x V; with, the
checks N at once, (Q - 1) x V / N, but never before the last change came plus its own
check (the changes come to the queue as their agents and their own verify end, measured).
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import Any

from bench import harness
from stomper.testing.fake_cli_agent import LOG_ENV, read_log
from stomper.testing.repos import make_repo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", type=int, default=60, help="tasks")
    parser.add_argument("--files", type=int, default=40, help="files they share at random")
    parser.add_argument("--parallel", type=int, default=8, help="N, tasks at once")
    parser.add_argument("--shortest", type=float, default=0.5, help="least agent seconds")
    parser.add_argument("--longest", type=float, default=2.0, help="most agent seconds")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--queue-tasks", type=int, default=16, help="tasks of the queue run")
    parser.add_argument("--verify-seconds", type=float, default=1.0, help="V, each verify")


def tasks_of(
    count: int, files: int, shortest: float, longest: float, seed: int
) -> list[dict[str, Any]]:
    """The tasks, seeded: each with its files, the tasks it waits for, and its seconds."""
    rng = random.Random(seed)
    made = []
    for n in range(count):
        written = sorted(rng.sample(range(files), rng.randint(1, 3)))
        waits = sorted(rng.sample(range(n), min(n, rng.choice((0, 0, 1, 1, 2))))) if n else []
        seconds = round(rng.uniform(shortest, longest), 2)
        made.append(
            {
                "id": f"t{n:02d}",
                "files": [f"src/f{f:02d}.py" for f in written],
                "depends_on": [f"t{w:02d}" for w in waits],
                "seconds": seconds,
            }
        )
    return made


def bound(tasks: list[dict[str, Any]], parallel: int) -> tuple[float, float, float]:
    """The critical path, the work a place, and the busiest file: each bounds the run."""
    finish: dict[str, float] = {}
    for task in tasks:  # in an order where each comes after those it waits for
        finish[task["id"]] = task["seconds"] + max(
            (finish[needed] for needed in task["depends_on"]), default=0.0
        )
    by_file: dict[str, float] = {}
    for task in tasks:
        for path in task["files"]:
            by_file[path] = by_file.get(path, 0.0) + task["seconds"]
    work = sum(task["seconds"] for task in tasks)
    return max(finish.values()), work / parallel, max(by_file.values())


def task_file(
    folder: Path, tasks: list[dict[str, Any]], *, verify: str | None = None, name: str = "tasks"
) -> Path:
    lines = ["[defaults]", 'agent = "command"']
    if verify is not None:
        lines.append(f"verify = {json.dumps(verify)}")
    for task in tasks:
        prompt = [f"Task {task['id']}.", f"fake-agent: sleep {task['seconds']}"]
        prompt += [f"fake-agent: append {path}: {task['id'].upper()} = 1" for path in task["files"]]
        lines += [
            "",
            "[[task]]",
            f"id = {json.dumps(task['id'])}",
            f"prompt = {json.dumps(chr(10).join(prompt))}",
            f"files = {json.dumps(task['files'])}",
            f"depends_on = {json.dumps(task['depends_on'])}",
        ]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def stomper_run(
    repo: Path, tasks: Path, parallel: int, log: Path, *more: str
) -> tuple[dict[str, Any], float]:
    """``stomper run`` of ``tasks`` by the fake agent: its JSON document, and the process's
    own wall time."""
    agent = (
        f"{shlex.quote(sys.executable)} -m stomper.testing.fake_cli_agent --mode task "
        "--prompt-file {prompt_file} {file}"
    )
    argv = [
        sys.executable,
        "-m",
        "stomper",
        "run",
        str(tasks),
        "--repo",
        str(repo),
        "-j",
        str(parallel),
        "--agent-cmd",
        agent,
        "--json",
        "--no-progress",
        *more,
    ]
    # The agents log when they began and ended: outside the sandbox, which would keep the
    # log out of their reach.
    env = harness.child_env({"STOMPER_SANDBOX": "off", LOG_ENV: str(log)})
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, env=env, check=False)
    process_s = time.monotonic() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"stomper run exited {done.returncode}:\n{done.stderr.decode()}")
    return json.loads(done.stdout), process_s


def run(args: argparse.Namespace, workdir: Path) -> None:
    graph(args, workdir)
    queue(args, workdir)


def graph(args: argparse.Namespace, workdir: Path) -> None:
    harness.heading(
        f"tasks: {args.tasks} tasks over {args.files} files, agents of "
        f"{args.shortest:g}-{args.longest:g} s, N = {args.parallel}"
    )
    tasks = tasks_of(args.tasks, args.files, args.shortest, args.longest, args.seed)
    repo = make_repo(
        workdir / f"tasks-{args.tasks}",
        {f"src/f{f:02d}.py": f"F{f} = 0\n" for f in range(args.files)},
    )
    path = task_file(workdir, tasks)
    log = workdir / f"tasks-{args.tasks}-agent.log"
    doc, process_s = stomper_run(repo, path, args.parallel, log)
    critical, per_place, busiest = bound(tasks, args.parallel)
    lower = max(critical, per_place, busiest)
    wall = doc["metrics"]["wall_s"]
    calls = {entry.task: entry for entry in read_log(log)}
    writes = {task["id"]: set(task["files"]) for task in tasks}
    violations = 0
    for first, second in combinations(sorted(calls), 2):
        a, b = calls[first], calls[second]
        if a.started is None or a.ended is None or b.started is None or b.ended is None:
            continue
        if writes[first] & writes[second] and a.started < b.ended and b.started < a.ended:
            violations += 1
    landed = [task for task in doc["tasks"] if task["status"] == "landed"]
    queue_busy = sum(task["landing_s"] for task in landed)
    landing_rate = len(landed) / queue_busy if queue_busy else float("nan")
    rows = [
        (
            args.tasks,
            len(landed),
            doc["metrics"]["peak_concurrency"],
            round(critical, 2),
            round(per_place, 2),
            round(busiest, 2),
            round(lower, 2),
            wall,
            round(process_s, 2),
            round(wall / lower, 3),
            violations,
            round(landing_rate, 2),
        )
    ]
    harness.note(
        harness.table(
            [
                "tasks",
                "landed",
                "most at once",
                "critical path s",
                "work / N s",
                "busiest file s",
                "bound s",
                "makespan s",
                "process s",
                "makespan / bound",
                "lock violations",
                "landings / s",
            ],
            rows,
        )
    )
    harness.note(
        "\nbound = max(critical path, total work / N, the largest sum over the tasks of one "
        "file); goal: makespan / bound <= 1.15, and no lock violation (by the agents' own "
        "times). Landings / s: the landed tasks over the time the merge queue was busy with "
        "them.\n"
    )


def queue(args: argparse.Namespace, workdir: Path) -> None:
    count, seconds, parallel = args.queue_tasks, args.verify_seconds, args.parallel
    harness.heading(
        f"merge queue: {count} tasks on files of their own, begun together, a verify of "
        f"{seconds:g} s each, N = {parallel}"
    )
    tasks = [
        {
            "id": f"q{n:02d}",
            "files": [f"src/q{n:02d}.py"],
            "depends_on": [],
            "seconds": args.shortest,
        }
        for n in range(count)
    ]
    verify = f"{shlex.quote(sys.executable)} -c 'import time; time.sleep({seconds})'"
    rows = []
    for speculate in (True, False):
        flag = "--speculate" if speculate else "--no-speculate"
        repo = make_repo(
            workdir / f"queue-{count}{flag}",
            {f"src/q{n:02d}.py": f"Q{n} = 0\n" for n in range(count)},
        )
        path = task_file(workdir, tasks, verify=verify, name=f"queue{flag}")
        doc, _process_s = stomper_run(repo, path, parallel, workdir / f"queue{flag}.log", flag)
        landed = [task for task in doc["tasks"] if task["status"] == "landed"]
        first = min(task["queued"] for task in landed)
        came = max(task["queued"] for task in landed) - first
        last = max(task["ended"] for task in landed)
        rate = len(landed) / (last - first)
        serial = (len(landed) - 1) * seconds
        span = max(serial / parallel, came + seconds) if speculate else serial
        ideal = len(landed) / span
        used = doc["metrics"]["speculation"]
        rows.append(
            (
                "with" if speculate else "without",
                len(landed),
                round(last - first, 2),
                round(rate, 2),
                round(ideal, 2),
                round(rate / ideal, 3),
                used["used"],
                used["redone"],
                doc["metrics"]["wall_s"],
            )
        )
    harness.note(
        harness.table(
            [
                "speculation",
                "landed",
                "queue s",
                "landings / s",
                "ideal / s",
                "of ideal",
                "checks used",
                "checks redone",
                "makespan s",
            ],
            rows,
        )
    )
    harness.note(
        "\nqueue s: from the first change in the queue to the last landing; ideal: the "
        "landings over the ideal span (see bench/tasks.py). Speculation lands "
        f"{rows[0][3] / rows[1][3]:.2f}x as many changes a second.\n"
    )
