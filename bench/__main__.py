"""``python -m bench [BENCHMARK] [OPTIONS]``: run stomper's benchmarks and print their figures.

With no benchmark named, all of them but ``real`` run with their defaults (about seven minutes
on two cores); ``--quick`` shrinks every size for a smoke run of the harness itself. Nothing
here asserts anything about time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import harness, landing, llm, overhead, real, review, scale, scaling, startup, tasks

BENCHMARKS = {
    "scaling": scaling,
    "overhead": overhead,
    "scale": scale,
    "landing": landing,
    "llm": llm,
    "review": review,
    "tasks": tasks,
    "real": real,
    "startup": startup,
}
# Run only when named: it downloads real projects the first time and takes minutes.
NAMED_ONLY = {"real"}

# Sizes for --quick: every code path, in well under a minute.
QUICK: dict[str, dict[str, object]] = {
    "scaling": {"units": 16, "latency": 0.2, "parallel": "1,4,16"},
    "overhead": {
        "units": 20,
        "sympy_files": 200,
        "sympy_mb": 3.0,
        "sympy_dirty": 20,
        "sympy_units": 8,
    },
    "scale": {"sizes": "20,60"},
    "landing": {"commits": 20, "files": "50,200"},
    "llm": {
        "units": 16,
        "seconds": 0.2,
        "parallel": "1,8,16",
        "capacities": "4",
        "rounds": 4,
        "budget_units": 16,
    },
    "review": {"dirs": 5, "files": 3, "seconds": 0.2, "build": 0.1, "builds": "1"},
    "tasks": {
        "tasks": 10,
        "files": 8,
        "shortest": 0.1,
        "longest": 0.3,
        "queue_tasks": 4,
        "verify_seconds": 0.2,
    },
    "real": {"parallel": "4"},
    "startup": {"files": 20, "runs": 1},
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    top.add_argument("--keep", action="store_true", help="keep the generated repositories")
    top.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    top.add_argument("--workdir", type=Path, help="where to generate (default: a temp dir)")
    sub = top.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for name, benchmark in BENCHMARKS.items():
        benchmark.add_arguments(
            sub.add_parser(name, help=(benchmark.__doc__ or "").split("\n", 1)[0])
        )
    sub.add_parser("all", help="every benchmark with its defaults (the default)")
    return top


def defaults(name: str, quick: bool) -> argparse.Namespace:
    """The options of benchmark ``name`` as its own parser defaults them."""
    own = argparse.ArgumentParser()
    BENCHMARKS[name].add_arguments(own)
    args = own.parse_args([])
    if quick:
        for key, value in QUICK[name].items():
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    chosen = args.benchmark or "all"
    if chosen == "all":
        runs = [(name, defaults(name, args.quick)) for name in BENCHMARKS if name not in NAMED_ONLY]
    else:
        own = args
        if args.quick:
            given = set(sys.argv[1:] if argv is None else argv)
            for key, value in QUICK[chosen].items():
                if f"--{key.replace('_', '-')}" not in given:
                    setattr(own, key, value)
        runs = [(chosen, own)]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stomper-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print("# stomper benchmarks\n")
    print(harness.table(["", ""], harness.machine().items()), flush=True)
    started = time.monotonic()
    try:
        for name, options in runs:
            begun = time.monotonic()
            BENCHMARKS[name].run(options, workdir.resolve())
            print(f"\n({name} took {time.monotonic() - begun:.0f}s)", flush=True)
    finally:
        if args.keep:
            print(f"\nthe generated repositories are in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nall done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
