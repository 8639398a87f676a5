"""The run as a LangGraph ``StateGraph``.

```
START -> fan_out --Send({"unit": i}) per unit of the wave--> process_unit -> aggregate
            ^                                                                   | (defer)
            +------------------------- next wave -------------------------------+--> END
```

Measured facts this shape follows (see DESIGN.md): the concurrency cap is a semaphore
taken inside ``process_unit``, not ``max_concurrency`` (which holds back checkpoint saves);
Send payloads carry a unit index only; no step holds more than one wave of Sends, because
a step's cost grows with the square of its Sends; and the state stays small because the
SQLite checkpointer stores all of it at every step. Results go to the run's journal. The
first units may have begun before this module loaded (:mod:`stomper.workflow.context`):
``process_unit`` takes them over.
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
from stomper.workflow.context import RunContext, produce


class RunState(TypedDict):
    planned: int
    start: int
    """The first unit of the wave in flight."""
    cursor: int
    """The first unit not yet sent."""
    finished: Annotated[int, operator.add]


class UnitInput(TypedDict):
    unit: int


def fan_out(state: RunState, *, runtime: Runtime[RunContext]) -> dict[str, Any]:
    start = state["cursor"]
    return {"start": start, "cursor": min(start + runtime.context.wave, state["planned"])}


def send_wave(state: RunState) -> list[Send] | str:
    if state["start"] >= state["cursor"]:
        return END
    return [
        Send("process_unit", {"unit": index}) for index in range(state["start"], state["cursor"])
    ]


async def process_unit(state: UnitInput, *, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    unit = ctx.units[state["unit"]]
    if unit.path in ctx.done:
        return {"finished": 1}
    write = runtime.stream_writer

    def emit(phase: Phase) -> None:
        write(UnitEvent(unit.path, phase, ctx.pipeline.limit.calling))

    # The limit counts units being worked on; a unit waiting for its turn to land needs no
    # workspace and no agent, so it gives its place to the next one. A unit begun while the
    # workflow loaded is taken over where it stands.
    begun = ctx.begun.pop(state["unit"], None)
    if begun is None:
        produced = await produce(ctx, state["unit"], write)
    else:
        produced = await begun
    try:
        result = await ctx.pipeline.land(produced, emit)
    except asyncio.CancelledError:
        # A landing under way finishes before the cancellation passes on: what it landed
        # is recorded, so that the journal and the summary count what is on the branch.
        landed = ctx.pipeline.landed(produced)
        if landed is not None:
            ctx.record(landed)
        raise
    ctx.record(result)
    write(
        UnitEvent(
            unit.path,
            Phase.DONE,
            ctx.pipeline.limit.calling,
            result.status.value,
            result.reason,
            result.commit,
        )
    )
    return {"finished": 1}


def aggregate(state: RunState) -> dict[str, Any]:
    return {}


def next_wave(state: RunState) -> str:
    return "fan_out" if state["cursor"] < state["planned"] else END


def build() -> StateGraph[RunState, RunContext, RunState, RunState]:
    graph = StateGraph(RunState, context_schema=RunContext)
    graph.add_node("fan_out", fan_out)
    graph.add_node("process_unit", process_unit, input_schema=UnitInput)
    graph.add_node("aggregate", aggregate, defer=True)
    graph.add_edge(START, "fan_out")
    graph.add_conditional_edges("fan_out", send_wave, ["process_unit", END])
    graph.add_edge("process_unit", "aggregate")
    graph.add_conditional_edges("aggregate", next_wave, ["fan_out", END])
    return graph


def compile_graph(
    checkpointer: Any = None,
) -> CompiledStateGraph[RunState, RunContext, RunState, RunState]:
    return build().compile(checkpointer=checkpointer)


def initial_state(units: int) -> RunState:
    return {"planned": units, "start": 0, "cursor": 0, "finished": 0}


def recursion_limit(units: int, wave: int) -> int:
    """Each wave takes three steps; LangGraph stops a graph that takes more than this."""
    return 3 * (units // max(wave, 1) + 2) + 10
