"""The subprocess door: exit codes, group kills."""

from __future__ import annotations

import asyncio

import pytest

from stomper import proc


def test_children_exit_codes_arrive() -> None:
    async def rounds() -> list[int]:
        codes = []
        for _ in range(3):
            done = await asyncio.gather(
                *(proc.run(("sh", "-c", f"exit {n}"), check=False) for n in range(10))
            )
            codes += [d.returncode for d in done]
        return codes

    assert asyncio.run(rounds()) == list(range(10)) * 3


def test_a_killed_child_and_a_timeout_are_reported() -> None:
    async def timed_out() -> None:
        await proc.run(("sleep", "30"), timeout=0.2)

    with pytest.raises(proc.ProcessTimeout):
        asyncio.run(timed_out())

    async def killed() -> int:
        done = await proc.run(("sh", "-c", "kill -9 $$"), check=False)
        return done.returncode

    assert asyncio.run(killed()) == -9
