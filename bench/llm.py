"""llm: an HTTP model server with a fixed capacity, driven at growing parallelism.

The fake OpenAI-compatible server answers K requests at once, S seconds each, and queues
the rest, as a GPU server with a fixed batch does. Its own limit on throughput is K / S
requests a second, so R requests cannot take less than ``ideal = ceil(R / min(N, K)) * S``
(R counts the retries a unit needed: a second attempt is work the server must do):

- at the server: ideal / (last answer - first request), how full stomper kept it while it
  was serving (goal >= 0.95 at N = 16, S = 1 s);
- end to end: ideal / the wall time of the whole ``stomper fix`` process, start-up and the
  last landing included (goal >= 0.90 for 96 files);
- past N = K, more units at once only queue at the server: throughput stops improving.

Then ``-j auto`` against a server of K places that queues none (a request past K gets a
429 at once, with a short ``Retry-After``), for each K of ``--capacities``: fixed N around K
and auto, each over ``rounds x K`` units, S seconds a request. Goal: auto's units a second
>= 0.90 of the best fixed N's, measured in the same run, and <= 5% of its requests refused.

Last, a budget (``--budget-units`` units, N = K): a run without one gives the tokens the
work costs; a run with ``--max-tokens`` of ``--budget-share`` of those, then ``stomper
resume`` without a limit, must do the same work: what the server billed the two against the
run without a budget (goal <= 1.05: what was paid for is kept, not bought twice), how far
the budgeted run went past its limit (the attempts running when it ran out), and the share
of its tokens spent on units that landed.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from bench import harness
from bench.harness import FixRun
from bench.repos import synthetic_repo
from stomper.budget import NOT_BEGUN
from stomper.testing.fake_openai import FakeOpenAI, FixedLatency, Stats, ThroughputLatency


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--units", type=int, default=200, help="units (files) in the repo")
    parser.add_argument("--slots", type=int, default=8, help="requests the server serves at once")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per request")
    parser.add_argument("--parallel", default="1,4,8,16,32", help="comma-separated values of N")
    parser.add_argument("--capacities", default="4,24", help="K of the -j auto runs")
    parser.add_argument("--rounds", type=int, default=20, help="units per place, -j auto runs")
    parser.add_argument("--budget-units", type=int, default=64, help="units of the budget runs")
    parser.add_argument(
        "--budget-share", type=float, default=0.5, help="--max-tokens, as a share of the work's"
    )


def run(args: argparse.Namespace, workdir: Path) -> None:
    fixed(args, workdir)
    auto(args, workdir)
    budget(args, workdir)


def budget(args: argparse.Namespace, workdir: Path) -> None:
    units, slots, seconds = args.budget_units, args.slots, args.seconds
    if units <= 0:
        return
    harness.heading(
        f"llm budget: {units} units, N = {slots}, a server of {slots} slots x {seconds:g} s; "
        f"--max-tokens at {args.budget_share:g} of what the work costs, then resume"
    )

    def server() -> FakeOpenAI:
        return FakeOpenAI(latency=ThroughputLatency(slots, seconds))

    whole, whole_stats = _fix_against(
        server(), synthetic_repo(workdir / "budget-none", units), slots
    )
    work = whole_stats.tokens_in + whole_stats.tokens_out
    limit = max(1, int(work * args.budget_share))
    repo = synthetic_repo(workdir / "budget-limited", units)
    # The resume asks the server the run recorded: the one server serves both.
    with server() as both:
        env = {"STOMPER_BASE_URL": both.base_url, "STOMPER_MODEL": "fake"}
        args = ("--agent", "openai", "--max-parallel-files", str(slots), "--max-tokens", str(limit))
        cut = harness.run_stomper(repo, "fix", *args, parallel=slots, env=env)
        cut_stats = both.stats()
        resumed = harness.run_resume(repo, parallel=slots, env=env)
        resumed_stats = both.stats()
    cut.note_failures()
    resumed.note_failures()
    billed = cut_stats.tokens_in + cut_stats.tokens_out
    billed_again = resumed_stats.tokens_in + resumed_stats.tokens_out - billed
    landed = [unit for unit in cut.doc["units"] if unit["commit"]]
    kept = sum(unit["tokens"]["input"] + unit["tokens"]["output"] for unit in landed)
    unbegun = sum((unit["reason"] or "").startswith(NOT_BEGUN) for unit in cut.doc["units"])
    rows = [
        ("no budget", whole.doc["status"], work, "", whole.doc["totals"]["commits"], "", ""),
        (
            f"--max-tokens {limit:,}",
            cut.doc["status"],
            billed,
            round(billed / limit, 3),
            len(landed),
            unbegun,
            round(kept / billed, 3) if billed else math.nan,
        ),
        # The resume's document is the whole run's: its commits, those before it too.
        ("its resume", resumed.doc["status"], billed_again, "", "", "", ""),
    ]
    harness.note(
        harness.table(
            [
                "run",
                "status",
                "tokens billed",
                "of the limit",
                "commits",
                "unbegun",
                "landed's share",
            ],
            rows,
        )
    )
    commits = resumed.doc["totals"]["commits"]
    harness.note(
        f"\nbudgeted run and its resume: {(billed + billed_again) / work:.3f} of the tokens the "
        f"run without a budget was billed (goal <= 1.05), {commits} commits in all against "
        f"{whole.doc['totals']['commits']}.\n"
    )


def auto(args: argparse.Namespace, workdir: Path) -> None:
    seconds = args.seconds
    for capacity in [int(part) for part in str(args.capacities).split(",") if part.strip()]:
        units = args.rounds * capacity
        harness.heading(
            f"llm -j auto: {units} units against a server of {capacity} places x {seconds:g} s "
            "that refuses the rest (429)"
        )
        rows = []
        rates: dict[str, float] = {}
        for parallel in [*sorted({max(1, capacity // 2), capacity, 2 * capacity}), "auto"]:
            repo = synthetic_repo(workdir / f"auto-{capacity}-{parallel}", units)
            server = FakeOpenAI(latency=FixedLatency(seconds), capacity=capacity, retry_after=0.05)
            fix, stats = _fix_against(server, repo, parallel)
            refused = stats.statuses.get(429, 0)
            rate = fix.units / fix.wall_s if fix.wall_s else math.nan
            if not fix.doc["totals"]["failed"]:  # a run that gave up on units is no rival
                rates[str(parallel)] = rate
            rows.append(
                (
                    parallel,
                    fix.units,
                    stats.completions,
                    refused,
                    round(refused / stats.completions, 4) if stats.completions else math.nan,
                    fix.wall_s,
                    round(rate, 2),
                    stats.peak_in_service,
                    fix.doc["totals"]["commits"],
                )
            )
        best = max(rate for name, rate in rates.items() if name != "auto")
        harness.note(
            harness.table(
                [
                    "N",
                    "units",
                    "requests",
                    "refused (429)",
                    "refused share",
                    "wall s",
                    "units / s",
                    "peak at server",
                    "commits",
                ],
                rows,
            )
        )
        if "auto" not in rates or len(rates) < 2:
            harness.note("\n-j auto, or every fixed N, failed units: no ratio.\n")
            continue
        harness.note(
            f"\n-j auto: {rates['auto'] / best:.3f} of the best fixed N's units / s "
            f"({best:.2f}, of the fixed N that failed no unit); goal >= 0.90, with <= 5% of "
            "its requests refused.\n"
        )


def fixed(args: argparse.Namespace, workdir: Path) -> None:
    units, slots, seconds = args.units, args.slots, args.seconds
    levels = [int(part) for part in str(args.parallel).split(",") if part.strip()]
    if not levels:
        return
    harness.heading(
        f"llm: {units} units against a server of {slots} slots x {seconds:g} s per request"
    )
    rows = []
    for parallel in levels:
        repo = synthetic_repo(workdir / f"llm-{units}-{parallel}", units)
        latency = ThroughputLatency(slots, seconds)
        fix, stats = _fix_against(FakeOpenAI(latency=latency), repo, parallel)
        wall, serving = fix.wall_s, latency.serving_s()
        ideal = math.ceil(latency.served / min(parallel, slots)) * seconds
        tokens = fix.doc["metrics"]["tokens"]
        rows.append(
            (
                parallel,
                fix.units,
                latency.served,
                wall,
                serving,
                ideal,
                ideal / serving if serving else math.nan,
                ideal / wall if wall else math.nan,
                stats.peak_in_service,
                tokens["input"],
                tokens["output"],
                fix.doc["totals"]["commits"],
                fix.doc["totals"]["failed"],
            )
        )
        harness.note(
            f"N={parallel}: wall {wall:.1f}s, serving {serving:.1f}s, ideal {ideal:.1f}s, "
            f"load {fix.load:.1f}"
        )
    harness.note("")
    harness.note(
        harness.table(
            [
                "N",
                "units",
                "requests",
                "wall s",
                "serving s",
                "ideal s",
                "at the server",
                "end to end",
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
        f"\nideal = ceil(requests / min(N, {slots})) * {seconds:g} s: the server's own "
        f"capacity ({slots / seconds:g} requests/s) bounds every N. at the server = ideal / "
        "serving (its first request to its last answer); end to end = ideal / wall.\n"
    )


def _fix_against(
    server: FakeOpenAI, repo: Path, parallel: int | str, *args: str
) -> tuple[FixRun, Stats]:
    """``stomper fix`` by the openai agent against ``server`` (started and stopped here):
    the run, with its failures said, and what the server saw."""
    with server:
        fix = harness.run_fix(
            repo,
            agent="openai",
            parallel=parallel,
            env={"STOMPER_BASE_URL": server.base_url, "STOMPER_MODEL": "fake"},
            args=args,
        )
        stats = server.stats()
    fix.note_failures()
    return fix, stats
