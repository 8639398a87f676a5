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

from stomper.events import Phase, UnitEvent
from stomper.unit import Unit, UnitResult
from stomper.workflow.pipeline import Pipeline, Produced

WAVE = 256


@dataclass
class RunContext:
    """What the graph's nodes share for one run; made per run, never at module level."""

    units: Sequence[Unit]
    pipeline: Pipeline
    record: Callable[[UnitResult], None]
    wave: int = WAVE
    done: frozenset[str] = frozenset()
    """Paths of units finished before a resume: never worked again."""
    begun: dict[int, asyncio.Task[Produced]] = field(default_factory=dict)
    """Units produced ahead of the graph, by index: ``process_unit`` takes each over."""


def wave_size(parallel: int) -> int:
    """A whole number of rounds of ``parallel`` units, about WAVE Sends."""
    return parallel * max(1, WAVE // parallel)


async def produce(ctx: RunContext, index: int, emit: Callable[[UnitEvent], None]) -> Produced:
    """Produce unit ``index`` holding a place among the units worked: the part of a unit
    the run's limit counts (its agent calls take the agents' places within it)."""
    unit = ctx.units[index]
    limit = ctx.pipeline.limit

    def phase(name: Phase) -> None:
        emit(UnitEvent(unit.path, name, limit.calling))

    async with limit.unit():
        return await ctx.pipeline.produce(unit, phase)


@contextlib.asynccontextmanager
async def head_start(
    ctx: RunContext, count: int, emit: Callable[[UnitEvent], None]
) -> AsyncIterator[None]:
    """Begin producing the first ``count`` units not done, for the graph to take over.

    On the way out every unit begun here has finished: those the graph took over finished
    under it, the rest (the run stopped before it reached them) are cancelled and awaited,
    so none outlives the run.
    """
    indexes = [index for index, unit in enumerate(ctx.units) if unit.path not in ctx.done]
    begun = [asyncio.ensure_future(produce(ctx, index, emit)) for index in indexes[:count]]
    ctx.begun.update(zip(indexes, begun, strict=False))
    try:
        yield
    finally:
        ctx.begun.clear()
        for task in begun:
            task.cancel()
        await asyncio.gather(*begun, return_exceptions=True)
