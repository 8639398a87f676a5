"""The run as a LangGraph ``StateGraph``.

```
START -> fan_out --Send({"units": [i, ...]}) per group--> process_units -> aggregate
            ^                                                                   | (defer)
            +------------------------- next wave -------------------------------+--> END
```

Measured facts this shape follows (see DESIGN.md): the concurrency cap is a semaphore
taken inside ``process_units``, not ``max_concurrency`` (which holds back checkpoint saves);
Send payloads carry unit indexes only; no step holds more than one wave of Sends, because
a step's cost grows with the square of its Sends; and the state stays small because the
SQLite checkpointer stores all of it at every step. Results go to the run's journal. The
first units may have begun before this module loaded (:mod:`stomper.workflow.context`):
``process_units`` takes them over. A Send carries a group of units worked at once
(:attr:`RunContext.groups`): one unit, or the files an agent fixes in one call, or a
directory under ``review --apply``, whose files are reviewed side by side and then built
together before its landing. That barrier is the group's own, inside ``process_units``, not
a deferred node: a deferred node waits for every task of the run's step, so a directory's
build would wait for the slowest directory of the wave, where here it begins as soon as its
own files are done. Each unit is recorded as its own.
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from stomper.events import Phase, UnitEvent
from stomper.workflow.context import RunContext, phases, produce


class RunState(TypedDict):
    planned: int
    """Groups of units (:attr:`RunContext.groups`) to work."""
    start: int
    """The first group of the wave in flight."""
    cursor: int
    """The first group not yet sent."""
    finished: Annotated[int, operator.add]


class UnitsInput(TypedDict):
    units: list[int]


def fan_out(state: RunState, *, runtime: Runtime[RunContext[Any]]) -> dict[str, Any]:
    start = state["cursor"]
    ctx = runtime.context
    cursor = min(start + ctx.wave, state["planned"])
    return {"start": start, "cursor": cursor}


def send_wave(state: RunState, *, runtime: Runtime[RunContext[Any]]) -> list[Send] | str:
    if state["start"] >= state["cursor"]:
        return END
    groups = runtime.context.groups[state["start"] : state["cursor"]]
    return [Send("process_units", {"units": list(group)}) for group in groups]


async def process_units(state: UnitsInput, *, runtime: Runtime[RunContext[Any]]) -> dict[str, Any]:
    ctx = runtime.context
    indexes = state["units"]
    write = runtime.stream_writer
    emit = phases(ctx, write)
    # The limit counts units being worked on; a unit waiting for its turn to land needs no
    # workspace and no agent, so it gives its place to the next one. Units begun while the
    # workflow loaded are taken over where they stand.
    begun = ctx.begun.pop(indexes[0], None)
    produced = await (produce(ctx, indexes, write) if begun is None else begun)
    try:
        results = await ctx.job.land_many(produced, emit)
    except asyncio.CancelledError:
        # A landing under way finishes before the cancellation passes on: what it landed
        # is recorded, so that the journal and the summary count what is on the branch.
        for one in produced:
            landed = ctx.job.landed(one)
            if landed is not None:
                ctx.record(landed)
        raise
    for result in results:
        ctx.record(result)
        write(
            UnitEvent(
                result.path,
                Phase.DONE,
                ctx.job.limit.calling,
                result.status.value,
                result.reason,
                result.commit,
                result.review.severities() if result.review is not None else None,
                tokens_in=result.tokens_in or None,
                tokens_out=result.tokens_out or None,
            )
        )
    return {"finished": len(indexes)}


def aggregate(state: RunState) -> dict[str, Any]:
    return {}


def next_wave(state: RunState) -> str:
    return "fan_out" if state["cursor"] < state["planned"] else END


def build() -> StateGraph[RunState, RunContext[Any], RunState, RunState]:
    graph = StateGraph(RunState, context_schema=RunContext)
    graph.add_node("fan_out", fan_out)
    graph.add_node("process_units", process_units, input_schema=UnitsInput)
    graph.add_node("aggregate", aggregate, defer=True)
    graph.add_edge(START, "fan_out")
    graph.add_conditional_edges("fan_out", send_wave, ["process_units", END])
    graph.add_edge("process_units", "aggregate")
    graph.add_conditional_edges("aggregate", next_wave, ["fan_out", END])
    return graph


def compile_graph(
    checkpointer: Any = None,
) -> CompiledStateGraph[RunState, RunContext[Any], RunState, RunState]:
    return build().compile(checkpointer=checkpointer)


def initial_state(groups: int) -> RunState:
    return {"planned": groups, "start": 0, "cursor": 0, "finished": 0}


def recursion_limit(groups: int, wave: int) -> int:
    """Each wave takes three steps; LangGraph stops a graph that takes more than this."""
    return 3 * (groups // max(wave, 1) + 2) + 10
