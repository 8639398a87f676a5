"""llm: an HTTP model server with a fixed capacity, driven at growing parallelism.

The fake OpenAI-compatible server answers K requests at once, S seconds each, and queues
the rest, as a GPU server with a fixed batch does. Its own limit on throughput is K / S
requests a second, so U units cannot take less than ``ideal = ceil(U / min(N, K)) * S``:

- efficiency = ideal / wall, against the server's capacity at that N;
- past N = K, more units at once only queue at the server: throughput stops improving.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from bench import harness
from bench.repos import synthetic_repo
from stomper.testing.fake_openai import FakeOpenAI, ThroughputLatency


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--units", type=int, default=200, help="units (files) in the repo")
    parser.add_argument("--slots", type=int, default=8, help="requests the server serves at once")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per request")
    parser.add_argument("--parallel", default="1,4,8,16,32", help="comma-separated values of N")


def run(args: argparse.Namespace, workdir: Path) -> None:
    units, slots, seconds = args.units, args.slots, args.seconds
    levels = [int(part) for part in str(args.parallel).split(",") if part.strip()]
    harness.heading(
        f"llm: {units} units against a server of {slots} slots x {seconds:g} s per request"
    )
    rows = []
    for parallel in levels:
        repo = synthetic_repo(workdir / f"llm-{units}-{parallel}", units)
        with FakeOpenAI(latency=ThroughputLatency(slots, seconds)) as server:
            fix = harness.run_fix(
                repo,
                agent="openai",
                parallel=parallel,
                env={"STOMPER_BASE_URL": server.base_url, "STOMPER_MODEL": "fake"},
            )
            stats = server.stats()
        fix.note_failures()
        done = fix.units
        wall = fix.wall_s
        ideal = math.ceil(done / min(parallel, slots)) * seconds
        tokens = fix.doc["metrics"]["tokens"]
        rows.append(
            (
                parallel,
                done,
                wall,
                ideal,
                ideal / wall if wall else math.nan,
                done / wall if wall else math.nan,
                stats.peak_in_service,
                tokens["input"],
                tokens["output"],
                fix.doc["totals"]["commits"],
                fix.doc["totals"]["failed"],
            )
        )
        harness.note(f"N={parallel}: wall {wall:.1f}s, ideal {ideal:.1f}s, load {fix.load:.1f}")
    harness.note("")
    harness.note(
        harness.table(
            [
                "N",
                "units",
                "wall s",
                "ideal s",
                "efficiency",
                "units/s",
                "peak at server",
                "tokens in",
                "tokens out",
                "commits",
                "failed",
            ],
            rows,
        )
    )
    harness.note(
        f"\nideal = ceil(units / min(N, {slots})) * {seconds:g} s: the server's own capacity "
        f"({slots / seconds:g} requests/s) bounds every N; efficiency = ideal / wall.\n"
    )
