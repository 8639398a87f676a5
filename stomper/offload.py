"""Work of pure Python, moved off the event loop's process to the machine's other cores.

Threads do not help there: parsing Python (the guardrails' ``ast.parse``) holds the GIL.
An :class:`Offload` keeps a few worker processes, started fresh (``spawn``: nothing of this
process's threads or state comes along) the first time they are needed, and splits a list
of calls among them. Where no worker can start or one dies, the calls run here instead:
offloading changes where the work runs, never what it gives.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_WORKERS_UP_TO = 4
# Fewer calls than this are made here: a worker's round trip would cost more than they do.
_WORTH_IT_FROM = 8


class Offload:
    """Worker processes for pure functions; :meth:`close` ends them."""

    def __init__(self, workers: int | None = None) -> None:
        cores = os.cpu_count() or 1
        self.workers = workers or max(1, min(_WORKERS_UP_TO, cores - 1))
        self._pool: ProcessPoolExecutor | None = None
        self._broken = False

    async def map(self, function: Callable[[Sequence[T]], list[R]], items: Sequence[T]) -> list[R]:
        """``function(items)``, with ``items`` split among the workers (``function`` takes a
        list and gives one result for each item, in order; it must be importable by name)."""
        if len(items) < _WORTH_IT_FROM or self._broken:
            return function(items)
        pool = self._start()
        loop = asyncio.get_running_loop()
        size = -(-len(items) // self.workers)
        parts = [list(items[at : at + size]) for at in range(0, len(items), size)]
        try:
            done = await asyncio.gather(
                *(loop.run_in_executor(pool, function, part) for part in parts)
            )
        except (BrokenProcessPool, OSError):
            self._broken = True
            return function(items)
        return [result for part in done for result in part]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
        return self._pool
