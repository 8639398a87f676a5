"""Work moved to worker processes gives what it gives here, and here when no worker can."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Sequence

from stomper.offload import Offload


def squares(numbers: Sequence[int]) -> list[tuple[int, int]]:
    return [(number * number, os.getpid()) for number in numbers]


def dies_in_a_worker(numbers: Sequence[int]) -> list[int]:
    if multiprocessing.parent_process() is not None:
        os._exit(3)
    return [number + 1 for number in numbers]


def test_calls_are_made_by_workers_and_come_back_in_order() -> None:
    offload = Offload(workers=2)
    try:
        done = asyncio.run(offload.map(squares, list(range(40))))
    finally:
        offload.close()
    assert [square for square, _ in done] == [number * number for number in range(40)]
    pids = {pid for _, pid in done}
    assert pids and os.getpid() not in pids


def test_a_few_calls_are_made_here() -> None:
    offload = Offload(workers=2)
    done = asyncio.run(offload.map(squares, [1, 2, 3]))
    assert done == [(1, os.getpid()), (4, os.getpid()), (9, os.getpid())]
    offload.close()


def test_a_worker_that_dies_leaves_the_calls_to_this_process() -> None:
    offload = Offload(workers=2)
    try:
        assert asyncio.run(offload.map(dies_in_a_worker, list(range(20)))) == list(range(1, 21))
        # Broken once, the pool is not tried again.
        assert asyncio.run(offload.map(dies_in_a_worker, list(range(10)))) == list(range(1, 11))
    finally:
        offload.close()
