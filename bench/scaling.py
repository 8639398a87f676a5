"""scaling: how close N units at once come to N times faster, with an agent of known latency.

Each unit's agent waits L seconds (``DelayedAutofix``) then applies ruff's fixes. With a
perfect orchestrator U units at N at once take ``ideal = ceil(U / N) * L``; the rest of the
wall time is stomper's own: isolating, verifying, landing, and handing slots on.

- efficiency = ideal / wall
- overhead per unit = (wall - ideal) * N / U: the slot-seconds each unit costs beyond the
  agent's wait (at N = 1, simply the mean time a unit takes besides L).

``wall`` is the run's own ``metrics.wall_s`` (collection and planning included, interpreter
start excluded).

``--executor ray`` measures the same on Ray instead: a cluster on this machine
(``ray.cluster_utils.Cluster``: a head that works no unit, and 1 then 2 worker nodes of
``--node-cpus`` each, by ``--nodes``), N = the nodes' CPUs, against the ideal, and against
the local executor at the same N in the same run: the per-unit cost Ray adds is
``(wall on Ray - wall here) * N / U``.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from bench import harness
from bench.repos import synthetic_repo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--units", type=int, default=200, help="units (files) in the repo")
    parser.add_argument(
        "--latency", type=float, default=1.0, help="seconds each agent call waits (L)"
    )
    parser.add_argument(
        "--parallel", default="1,4,16", help="comma-separated values of N (default 1,4,16)"
    )
    parser.add_argument(
        "--space",
        choices=sorted(harness.SPACES),
        default="tree",
        help="the unit's workspace: a pooled worktree (tree, the default: what CLI agents "
        "get), a scratch folder with the one file (scratch), or what autofix asks (agent)",
    )
    parser.add_argument(
        "--executor", choices=("local", "ray"), default="local", help="where units are worked"
    )
    parser.add_argument("--nodes", default="1,2", help="worker nodes of the Ray cluster")
    parser.add_argument("--node-cpus", type=int, default=4, help="CPUs each worker node offers")


def run(args: argparse.Namespace, workdir: Path) -> None:
    if args.executor == "ray":
        on_ray(args, workdir)
    else:
        here(args, workdir)


def on_ray(args: argparse.Namespace, workdir: Path) -> None:
    from ray.cluster_utils import Cluster

    units, latency = args.units, args.latency
    harness.heading(
        f"scaling on Ray: {units} units, agent latency L = {latency:g} s, worker nodes of "
        f"{args.node_cpus} CPUs on this machine, against the local executor at the same N"
    )
    # What the workers are to see is set before their nodes start.
    os.environ.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"})
    os.environ["STOMPER_TEST_AGENT_DELAY"] = str(latency)
    env = {"STOMPER_TEST_AGENT_DELAY": str(latency), "RAY_AUTH_MODE": "disabled"}
    rows = []
    for nodes in [int(part) for part in str(args.nodes).split(",") if part.strip()]:
        parallel = nodes * args.node_cpus
        ideal = math.ceil(units / parallel) * latency
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        try:
            for _ in range(nodes):
                cluster.add_node(num_cpus=args.node_cpus)
            cluster.wait_for_nodes()
            walls = {}
            for executor in ("local", "ray"):
                repo = synthetic_repo(workdir / f"ray-{units}-{nodes}-{executor}", units)
                extra = ["--executor", executor, "--ray-address", cluster.address]
                fix = harness.run_fix(
                    repo,
                    agent=f"{harness.AGENTS}:delayed",
                    parallel=parallel,
                    env=env,
                    args=extra if executor == "ray" else (),
                )
                fix.note_failures()
                walls[executor] = fix.wall_s
                rows.append(
                    (
                        executor,
                        nodes if executor == "ray" else "",
                        parallel,
                        fix.units,
                        fix.wall_s,
                        ideal,
                        ideal / fix.wall_s if fix.wall_s else math.nan,
                        (fix.wall_s - ideal) * parallel / fix.units if fix.units else math.nan,
                        fix.doc["metrics"]["peak_concurrency"],
                        fix.doc["totals"]["commits"],
                    )
                )
            added = (walls["ray"] - walls["local"]) * parallel / units
            harness.note(
                f"{nodes} node(s), N={parallel}: here {walls['local']:.1f}s, on Ray "
                f"{walls['ray']:.1f}s: Ray adds {added:.3f} slot-s a unit"
            )
        finally:
            cluster.shutdown()
    harness.note("")
    harness.note(
        harness.table(
            [
                "executor",
                "nodes",
                "N",
                "units",
                "wall s",
                "ideal s",
                "efficiency",
                "overhead/unit s",
                "peak concurrency",
                "commits",
            ],
            rows,
        )
    )
    harness.note(
        "\nOn Ray the wall holds connecting to the cluster, the base's bundle and each node's "
        "clone of it; the nodes share this machine's cores.\n"
    )


def here(args: argparse.Namespace, workdir: Path) -> None:
    units, latency = args.units, args.latency
    levels = [int(part) for part in str(args.parallel).split(",") if part.strip()]
    harness.heading(
        f"scaling: {units} units, agent latency L = {latency:g} s, workspace: {args.space}"
    )
    rows = []
    costs = []
    cores = harness.cores()
    for parallel in levels:
        repo = synthetic_repo(workdir / f"scaling-{units}-{parallel}", units)
        fix = harness.run_fix(
            repo,
            agent=f"{harness.AGENTS}:delayed",
            parallel=parallel,
            env={"STOMPER_TEST_AGENT_DELAY": str(latency), **harness.space_env(args.space)},
        )
        fix.note_failures()
        done = fix.units
        wall = fix.wall_s
        ideal = math.ceil(done / parallel) * latency
        meta = fix.meta()
        events = fix.events()
        first = min((event["at"] for event in events), default=meta["started"])
        # The run's start on the wall clock: its end less its (monotonic) duration.
        began = float(meta.get("finished", first)) - wall
        landing = harness.landing_busy(events)
        peak = fix.doc["metrics"]["peak_concurrency"]
        rows.append(
            (
                parallel,
                done,
                wall,
                ideal,
                ideal / wall if wall else math.nan,
                (wall - ideal) * parallel / done if done else math.nan,
                peak,
                fix.doc["totals"]["commits"],
                fix.doc["totals"]["failed"],
            )
        )
        costs.append(
            (
                parallel,
                fix.cpu_s,
                fix.cpu_s / done if done else math.nan,
                max(ideal, fix.cpu_s / cores),
                first - began,
                landing / wall if wall else math.nan,
                fix.load,
            )
        )
        harness.note(
            f"N={parallel}: wall {wall:.1f}s, ideal {ideal:.1f}s, peak concurrency {peak}, "
            f"CPU {fix.cpu_s:.1f}s, load {fix.load:.1f}"
        )
    harness.note("")
    harness.note(
        harness.table(
            [
                "N",
                "units",
                "wall s",
                "ideal s",
                "efficiency",
                "overhead/unit s",
                "peak concurrency",
                "commits",
                "failed",
            ],
            rows,
        )
    )
    harness.note(
        "\nefficiency = ideal / wall, ideal = ceil(units / N) * L; "
        "overhead/unit = (wall - ideal) * N / units: the slot-seconds a unit costs beyond L.\n"
    )
    harness.note(
        harness.table(
            [
                "N",
                "CPU s",
                "CPU s/unit",
                f"floor s on {cores} cores",
                "before 1st unit s",
                "lander busy",
                "load at end",
            ],
            costs,
        )
    )
    harness.note(
        "\nCPU: user + system time of stomper and every git and ruff it ran. floor: the "
        "shortest wall this machine allows, max(ideal, CPU / cores). before 1st unit: "
        "collection, planning, the journal. lander busy: the time some unit was landing or "
        "waiting to land (from the ops log) / wall; landings are serial, so near 1.0 the "
        "lander is the bottleneck. load: the "
        "one-minute load average, above the core count when other work shares the machine."
    )
