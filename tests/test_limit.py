"""The run's places: given in the order asked, the urgent ones first; none lost to a cancel."""

from __future__ import annotations

import asyncio

from stomper.workflow.limit import Places


def test_an_urgent_ask_takes_a_free_place_before_those_asked_earlier() -> None:
    async def scenario() -> list[str]:
        slots = Places(1)
        order: list[str] = []
        held = asyncio.Event()

        async def build(name: str, *, first: bool) -> None:
            async with slots.taken(urgent=not first):
                order.append(name)
                await asyncio.sleep(0)

        async def holder() -> None:
            async with slots.taken():
                held.set()
                await asyncio.sleep(0.05)

        holding = asyncio.ensure_future(holder())
        await held.wait()
        waiting = [
            asyncio.ensure_future(build("other group's first", first=True)),
            asyncio.ensure_future(build("bisection", first=False)),
        ]
        cancelled = asyncio.ensure_future(build("cancelled", first=False))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.gather(holding, *waiting, cancelled, return_exceptions=True)
        assert slots.free == 1
        return order

    assert asyncio.run(scenario()) == ["bisection", "other group's first"]
