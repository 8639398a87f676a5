"""Several OpenAI-compatible endpoints as one: the least busy is asked, a failing one rests.

Real servers on loopback (the fake OpenAI-compatible server, twice), real requests.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from stomper.agents.endpoints import Endpoint, Endpoints
from stomper.cli import main
from stomper.testing.fake_openai import FakeOpenAI, Fault, FaultPolicy, FixedLatency


def files(count: int) -> dict[str, str]:
    """Modules for a repository of ``count`` files to review: ``make`` adds its
    pyproject.toml."""
    return {
        f"pkg/m{n:02d}.py": f"def check(value):\n    return value == {n}\n"
        for n in range(count - 1)
    }


def review(repo: Path, base_url: str, *args: str, capsys: pytest.CaptureFixture[str]) -> dict:
    code = main(
        ["review", "--repo", str(repo), "--model", "fake", "--base-url", base_url, "--json"]
        + ["--no-progress", "--no-cache", *args]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_requests_go_to_the_endpoint_with_the_fewest_in_flight(
    make: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make(files(16))
    with (
        FakeOpenAI(latency=FixedLatency(0.2)) as one,
        FakeOpenAI(latency=FixedLatency(0.2)) as two,
    ):
        doc = review(repo, f"{one.base_url},{two.base_url}", "-j", "8", capsys=capsys)
        served = (one.stats().completions, two.stats().completions)
    assert doc["totals"]["reviewed"] == 16
    assert sum(served) == 16
    # Eight at once, each to the less busy: four in flight at each, all along.
    assert min(served) >= 6, served


def test_an_endpoint_that_keeps_failing_rests_and_the_others_take_its_work(
    make: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make(files(12))
    failing = FaultPolicy(rates={Fault.SERVER_ERROR: 1.0})
    with FakeOpenAI(faults=failing) as broken, FakeOpenAI() as healthy:
        doc = review(repo, f"{broken.base_url},{healthy.base_url}", "-j", "4", capsys=capsys)
        asked = broken.stats().completions
        answered = healthy.stats().completions
    assert doc["totals"]["reviewed"] == 12
    assert doc["totals"]["failed"] == 0
    assert answered == 12
    # Three failures in a row send it to rest for longer than the run; at most the requests
    # already on their way when it failed the third time reached it.
    assert 3 <= asked <= 3 + 4, asked


def test_an_endpoint_that_does_not_answer_at_the_start_is_said_and_left_to_rest(
    make: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make(files(3))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with FakeOpenAI() as healthy:
        code = main(
            ["review", "--repo", str(repo), "--model", "fake", "--no-progress", "--json"]
            + ["--base-url", f"http://127.0.0.1:{port}/v1,{healthy.base_url}"]
        )
        captured = capsys.readouterr()
        assert healthy.stats().completions == 3
    assert code == 0, captured.err
    assert f"cannot reach http://127.0.0.1:{port}/v1" in captured.err
    assert json.loads(captured.out)["totals"]["reviewed"] == 3


def test_every_endpoint_is_checked_and_its_password_masked_in_the_journal(
    make: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make(files(1))
    with FakeOpenAI(basic_auth="me:first-secret") as one, FakeOpenAI() as two:
        first = one.base_url.replace("http://", "http://me:first-secret@")
        second = two.base_url.replace("http://", "http://you:second-secret@")
        doc = review(repo, f"{first}, {second}", capsys=capsys)
    run = json.loads((repo / ".git/stomper/runs" / doc["run_id"] / "run.json").read_text())
    recorded = run["settings"]["base_url"]
    assert "first-secret" not in recorded and "second-secret" not in recorded
    assert recorded.count("***") == 2


def test_a_list_with_one_bad_url_is_refused(
    make: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make(files(1))
    code = main(
        ["review", "--repo", str(repo), "--model", "fake"]
        + ["--base-url", "http://127.0.0.1:9/v1,ftp://elsewhere"]
    )
    assert code == 2
    assert "several separated by commas" in capsys.readouterr().err


def test_a_resting_endpoint_is_asked_again_once_its_rest_is_over() -> None:
    now = [0.0]
    made = [
        Endpoint(openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k"), name)
        for port, name in ((1, "a"), (2, "b"))
    ]
    pool = Endpoints(made, pause_after=2, cool_down=10.0, clock=lambda: now[0])
    a, b = made
    assert pool.choose() is a  # of equals, the first named
    with pool.asking(a):
        assert pool.choose() is b
    pool.failed(a)
    assert pool.choose() is a  # one failure is not yet a rest
    pool.failed(a)
    assert pool.choose() is b and not pool.others_awake(b)
    now[0] = 10.0
    assert pool.choose() is a
    # Every one resting: the one whose rest ends first.
    pool.failed(a, rest=True)
    now[0] = 11.0
    pool.failed(b, rest=True)
    assert pool.choose() is a
