"""``-j auto``: the window of requests an endpoint is sent at once, and a run that finds
a server's capacity through its refusals (the fake server, refusing past K at once)."""

from __future__ import annotations

import asyncio

from stomper.agents.adaptive import FIRST_PATIENCE, PATIENCE, Adaptive, Sent
from stomper.testing.fake_openai import FakeOpenAI, FixedLatency
from stomper.testing.repos import module
from tests.conftest import run_json, sh


def test_the_window_doubles_until_a_refusal_then_sits_one_below_what_was_refused() -> None:
    window = Adaptive(start=4, highest=64)
    for _ in range(4):
        window.answered(Sent(0, 4))
    assert window.allowed == 16  # slow start: three more per answer
    window.overloaded(Sent(0, 25))
    assert (window.allowed, window.ceiling, window.patience) == (24, 25.0, FIRST_PATIENCE)
    window.overloaded(Sent(0, 26))  # sent before it shrank: no second decrease
    assert window.allowed == 24 and window.round == 1
    for _ in range(24):
        window.answered(Sent(1, 24))
    assert window.allowed == 24  # near the ceiling it grows patiently
    window.overloaded(Sent(1, 24))  # 24 were answered at once this round: a moment's noise
    assert window.allowed == 24 and window.round == 1
    window.overloaded(Sent(1, 25))  # the probe of the ceiling refused again
    assert (window.allowed, window.patience) == (24, 2 * FIRST_PATIENCE)
    window.overloaded(Sent(2, 10))  # once at a level it took: noise again, maybe
    assert window.allowed == 24
    window.overloaded(Sent(2, 10))  # twice: the server takes fewer now, a real decrease
    assert (window.allowed, window.ceiling, window.patience) == (8, 10.0, 1)


def test_an_answer_above_the_ceiling_raises_it_and_patience_is_bounded() -> None:
    window = Adaptive(start=2, highest=64)
    for round_ in range(8):
        window.overloaded(Sent(round_, 5))
    assert window.patience == PATIENCE and window.allowed == 4
    window.answered(Sent(8, 6))  # the server took six at once after all
    assert window.ceiling == 7.0 and window.patience == 1


def test_requests_past_the_window_wait_for_a_place() -> None:
    async def main() -> list[str]:
        window = Adaptive(start=2, highest=2)
        order: list[str] = []

        async def ask(name: str, seconds: float) -> None:
            async with window.request():
                order.append(f"{name} in")
                await asyncio.sleep(seconds)
            order.append(f"{name} out")

        await asyncio.gather(ask("a", 0.05), ask("b", 0.2), ask("c", 0.0))
        assert window.peak == 2
        return order

    order = asyncio.run(main())
    assert order.index("c in") > order.index("a out")


def test_a_run_with_auto_finds_the_servers_places_and_loses_nothing(make, capsys) -> None:
    repo = make({f"pkg/m{n:02d}.py": module(["F401", "E713"]) for n in range(12)})
    base = sh(repo, "rev-parse", "HEAD").strip()
    # Answers of half a second: the first units' requests are in flight together.
    with FakeOpenAI(capacity=3, retry_after=0.01, latency=FixedLatency(0.5)) as server:
        code, doc = run_json(
            repo,
            *("--agent", "openai", "--model", "fake", "--base-url", server.base_url),
            *("-j", "auto"),
            capsys=capsys,
        )
        stats = server.stats()
    assert code == 0, doc
    assert [unit["status"] for unit in doc["units"]] == ["fixed"] * 12
    assert stats.statuses.get(429, 0) >= 1  # it began at 4, past the server's 3
    assert stats.completions - stats.statuses[429] == 12  # one answer a unit
    assert len(sh(repo, "rev-list", f"{base}..HEAD").split()) == 12


def test_auto_with_an_agent_that_asks_no_server_is_one_line_and_exit_2(make, capsys) -> None:
    from stomper.cli import main

    repo = make({"a.py": module(["F401"])})
    assert main(["fix", "--repo", str(repo), "-j", "auto"]) == 2
    err = capsys.readouterr().err
    assert "-j auto learns from a model server's answers; the autofix agent" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["fix", "--repo", str(repo), "-j", "0"]) == 2
    assert "give a number from 1 to 1024, or auto" in capsys.readouterr().err
