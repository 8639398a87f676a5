"""What the workflow's nodes share for one run, and the head start of its first units.

LangGraph takes about a second to import, more than stomper's own start-up and the
collection of diagnostics together. A run does not wait for it before it begins to work:
while the workflow loads, its first units are produced (isolated, worked by the agent and
verified) under the run's limit, and the graph's ``process_unit`` takes over what each of
them produced, to land it and record it as it does for every other unit. Landing and the
journal stay the graph's alone. Nothing here imports LangGraph.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic

from stomper.events import Phase, UnitEvent
from stomper.unit import UnitResult
from stomper.workflow.job import EmitFor, Job, Produced, U

WAVE = 256


@dataclass
class RunContext(Generic[U]):
    """What the graph's nodes share for one run, of any mode; made per run, never at module
    level."""

    units: Sequence[U]
    job: Job[U]
    record: Callable[[UnitResult], None]
    wave: int = WAVE
    done: frozenset[str] = frozenset()
    """Paths of units finished before a resume: never worked again."""
    groups: Sequence[Sequence[int]] = ()
    """The indexes of the units worked at once (:meth:`Job.produce_many`), group by group,
    each unit in one; each unit alone when empty."""
    begun: dict[int, asyncio.Task[list[Produced]]] = field(default_factory=dict)
    """Units produced ahead of the graph, by the index of each group's first:
    ``process_units`` takes each group over."""

    def __post_init__(self) -> None:
        if not self.groups:
            self.groups = grouped(len(self.units), 1)


def grouped(count: int, together: int) -> list[list[int]]:
    """The indexes of ``count`` units in groups of ``together`` (the last may be smaller)."""
    step = max(together, 1)
    return [list(range(at, min(at + step, count))) for at in range(0, count, step)]


def wave_size(parallel: int) -> int:
    """Groups a wave sends: a whole number of rounds of ``parallel`` groups, about WAVE
    Sends."""
    return parallel * max(1, WAVE // parallel)


async def produce(
    ctx: RunContext[Any], indexes: Sequence[int], emit: Callable[[UnitEvent], None]
) -> list[Produced]:
    """Produce the units at ``indexes`` not done before, holding one place among the units
    worked: the part of a unit the run's limit counts (its agent calls take the agents'
    places within it)."""
    units = [ctx.units[index] for index in indexes if ctx.units[index].path not in ctx.done]
    if not units:
        return []
    async with ctx.job.limit.unit():
        return await ctx.job.produce_many(units, phases(ctx, emit))


def phases(ctx: RunContext[Any], emit: Callable[[UnitEvent], None]) -> EmitFor:
    """For the unit at each path, what says through ``emit`` which phase it is in."""

    def of(path: str) -> Callable[[Phase], None]:
        def phase(name: Phase) -> None:
            emit(UnitEvent(path, name, ctx.job.limit.calling))

        return phase

    return of


@contextlib.asynccontextmanager
async def head_start(
    ctx: RunContext[Any], count: int, emit: Callable[[UnitEvent], None]
) -> AsyncIterator[None]:
    """Begin producing the first ``count`` groups of units not all done, for the graph to
    take over.

    On the way out every unit begun here has finished: those the graph took over finished
    under it, the rest (the run stopped before it reached them) are cancelled and awaited,
    so none outlives the run.
    """
    groups = [
        list(group)
        for group in ctx.groups
        if any(ctx.units[index].path not in ctx.done for index in group)
    ][:count]
    begun = [asyncio.ensure_future(produce(ctx, group, emit)) for group in groups]
    ctx.begun.update(zip((group[0] for group in groups), begun, strict=True))
    try:
        yield
    finally:
        ctx.begun.clear()
        for task in begun:
            task.cancel()
        await asyncio.gather(*begun, return_exceptions=True)
