"""The subprocess door: exit codes, group kills, and the child watcher it installs."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from stomper import proc

pytestmark = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="the watcher is installed on Python 3.11 only"
)


@pytest.fixture
def reused_threads():
    """The watcher stomper's command line installs, for one test."""
    before = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    proc.install_child_watcher()
    yield
    asyncio.set_event_loop_policy(before)


def waiters() -> int:
    return sum(t.name.startswith("stomper-waitpid-") for t in threading.enumerate())


def test_children_exit_codes_arrive_and_threads_are_reused(reused_threads) -> None:
    async def rounds() -> list[int]:
        codes = []
        for _ in range(3):
            done = await asyncio.gather(
                *(proc.run(("sh", "-c", f"exit {n}"), check=False) for n in range(10))
            )
            codes += [d.returncode for d in done]
        return codes

    before = waiters()
    assert asyncio.run(rounds()) == list(range(10)) * 3
    # A new thread a child, as Python 3.11's own watcher does, would be 30 more by now.
    assert waiters() - before <= 20


def test_a_killed_child_and_a_timeout_are_reported(reused_threads) -> None:
    async def timed_out() -> None:
        await proc.run(("sleep", "30"), timeout=0.2)

    with pytest.raises(proc.ProcessTimeout):
        asyncio.run(timed_out())

    async def killed() -> int:
        done = await proc.run(("sh", "-c", "kill -9 $$"), check=False)
        return done.returncode

    assert asyncio.run(killed()) == -9
