"""The fake OpenAI-compatible server, spoken to over real loopback HTTP."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from stomper.agents import AttemptFailed
from stomper.agents.edits import ANSWER_FORMAT, SearchReplace, apply, parse
from stomper.agents.prompt import SYSTEM, task_prompt
from stomper.diagnostics import Diagnostic
from stomper.testing.fake_openai import (
    Behaviour,
    FakeOpenAI,
    Fault,
    FaultPolicy,
    FixedLatency,
    RandomLatency,
    ThroughputLatency,
    read_prompt,
)
from stomper.testing.repos import module

SOURCE = module(["F401", "E713"])
DIAGNOSTICS = (
    Diagnostic("ruff", "F401", "`os` imported but unused", "pkg/a.py", 1),
    Diagnostic("ruff", "E713", "Test for membership should be `not in`", "pkg/a.py", 5),
)


def prompt(source: str = SOURCE, *, path: str = "pkg/a.py", feedback: str | None = None) -> str:
    diagnostics = [Diagnostic(d.tool, d.code, d.message, path, d.line) for d in DIAGNOSTICS]
    return task_prompt(
        path, diagnostics, source=source, feedback=feedback, answer_format=ANSWER_FORMAT
    )


def call(
    server: FakeOpenAI,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    key: str | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        server.base_url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {key}"} if key else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read())


def chat(server: FakeOpenAI, text: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    return call(
        server, "POST", "/chat/completions", {"model": "fake", "messages": messages}, **kwargs
    )


def answer_of(reply: Any) -> str:
    content: str = reply["choices"][0]["message"]["content"]
    return content


def applied(answer: str, tmp_path: Path, source: str = SOURCE) -> str:
    (tmp_path / "pkg").mkdir(exist_ok=True)
    (tmp_path / "pkg" / "a.py").write_text(source)
    apply(parse(answer), tmp_path, "pkg/a.py")
    return (tmp_path / "pkg" / "a.py").read_text()


def test_models_are_listed_and_other_paths_are_404() -> None:
    with FakeOpenAI(models=("fake", "other")) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.base_url.endswith("/v1")
        status, _, body = call(server, "GET", "/models")
        assert status == 200
        assert [model["id"] for model in body["data"]] == ["fake", "other"]
        assert call(server, "GET", "/nothing")[0] == 404
        reply = call(server, "POST", "/chat/completions", {"model": "gpt-x", "messages": []})
        assert reply[0] == 404
        assert reply[2]["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    "source",
    [SOURCE, "import os\nx = 1", 'DOC = """\n```\nx\n```\n"""\n', "import os\n\n\n"],
    ids=["plain", "no-final-newline", "fences-inside", "blank-tail"],
)
@pytest.mark.parametrize("feedback", [None, "Still reported: F401 ```x```"])
def test_the_prompt_is_read_back_exactly(source: str, feedback: str | None) -> None:
    request = read_prompt(prompt(source, feedback=feedback))
    assert request is not None
    assert request.path == "pkg/a.py"
    assert request.diagnostics == ((1, "F401"), (5, "E713"))
    assert request.source == source


def test_a_large_file_is_read_as_numbered_parts() -> None:
    filler = "".join(f"def filler_{n}(x):\n    return x + {n}\n\n\n" for n in range(2000))
    source = "import os\n\n\n" + filler + "def missing(key, table):\n    return not key in table\n"
    line = source.count("\n")
    diagnostics = [
        Diagnostic("ruff", "F401", "`os` imported but unused", "big.py", 1),
        Diagnostic("ruff", "E713", "Test for membership should be `not in`", "big.py", line),
    ]
    request = read_prompt(task_prompt("big.py", diagnostics, source=source))
    assert request is not None
    assert request.source is None
    (first, head), (start, tail) = request.excerpts
    assert first == 1 and head[0] == "import os"
    assert start == line - 1 and tail == ("def missing(key, table):", "    return not key in table")


def test_the_default_answer_fixes_the_listed_codes(tmp_path: Path) -> None:
    with FakeOpenAI() as server:
        status, _, reply = chat(server, prompt())
        stats = server.stats()
    assert status == 200
    assert reply["usage"]["prompt_tokens"] > 0 and reply["usage"]["completion_tokens"] > 0
    fixed = applied(answer_of(reply), tmp_path)
    assert "import os" not in fixed and "key not in table" in fixed
    assert all(isinstance(edit, SearchReplace) for edit in parse(answer_of(reply)))
    assert stats.completions == 1 and stats.statuses == {200: 1}
    assert stats.calls_per_path == {"pkg/a.py": 1}
    assert stats.tokens_in == reply["usage"]["prompt_tokens"]
    assert stats.errors == ()


def test_the_whole_file_format(tmp_path: Path) -> None:
    with FakeOpenAI(edit_format="whole_file") as server:
        _, _, reply = chat(server, prompt())
    assert answer_of(reply).startswith("FILE: pkg/a.py\n```python\n")
    fixed = applied(answer_of(reply), tmp_path)
    assert "import os" not in fixed and "key not in table" in fixed


def test_scheduled_faults_answer_in_order(tmp_path: Path) -> None:
    schedule = [
        Fault.RATE_LIMIT,
        Fault.SERVER_ERROR,
        Fault.GARBAGE,
        Fault.SUPPRESS,
        Fault.OTHER_FILE,
        Fault.MISMATCH,
        None,
    ]
    with FakeOpenAI(faults=FaultPolicy(schedule=schedule), retry_after=0.25) as server:
        replies = [chat(server, prompt()) for _ in schedule]
        stats = server.stats()
    (limited, headers, _), (failed, _, _) = replies[0], replies[1]
    assert limited == 429 and headers["Retry-After"] == "0.25"
    assert failed == 500
    garbage, suppress, other, mismatch, good = (answer_of(reply) for _, _, reply in replies[2:])
    with pytest.raises(AttemptFailed, match="no SEARCH/REPLACE block"):
        parse(garbage)
    suppressed = applied(suppress, tmp_path)
    assert "import os  # noqa: F401\n" in suppressed
    assert "return not key in table  # noqa: E713\n" in suppressed
    assert applied(other, tmp_path).count("import os") == 0
    assert (tmp_path / "pkg" / "a_helpers.py").exists()
    with pytest.raises(AttemptFailed, match="does not match") as mismatched:
        applied(mismatch, tmp_path)
    assert "The closest lines of the file are:\n1 | import os" in str(mismatched.value)
    assert "import os" not in applied(good, tmp_path)
    assert stats.statuses == {429: 1, 500: 1, 200: 5}
    assert stats.faults == {fault.value: 1 for fault in schedule if fault is not None}


def test_faults_per_path_and_seeded_rates() -> None:
    policy = FaultPolicy(per_path={"pkg/a.py": [Fault.RATE_LIMIT, None, Fault.SERVER_ERROR]})
    with FakeOpenAI(faults=policy) as server:
        statuses = [chat(server, prompt())[0] for _ in range(4)]
        assert chat(server, prompt(path="b.py"))[0] == 200
    assert statuses == [429, 200, 500, 200]

    def draws(seed: int) -> list[int]:
        rates = {Fault.RATE_LIMIT: 0.3, Fault.SERVER_ERROR: 0.3}
        with FakeOpenAI(faults=FaultPolicy(rates=rates, seed=seed), retry_after=0) as server:
            return [chat(server, prompt())[0] for _ in range(12)]

    first = draws(3)
    assert first == draws(3)
    assert {429, 500, 200} <= set(first)


def test_one_diagnostic_per_attempt(tmp_path: Path) -> None:
    with FakeOpenAI(behaviour=Behaviour.ONE_PER_ATTEMPT) as server:
        once = applied(answer_of(chat(server, prompt())[2]), tmp_path)
        assert "import os" not in once and "not key in table" in once
        twice = applied(answer_of(chat(server, prompt(once))[2]), tmp_path, once)
        assert "key not in table" in twice
        # Nothing left to fix: a block that changes nothing.
        assert applied(answer_of(chat(server, prompt(twice))[2]), tmp_path, twice) == twice


def test_no_progress_changes_nothing_that_matters(tmp_path: Path) -> None:
    with FakeOpenAI(behaviour=Behaviour.NO_PROGRESS) as server:
        after = applied(answer_of(chat(server, prompt())[2]), tmp_path)
    assert after == "# Checked.\n" + SOURCE


def test_throughput_latency_queues_beyond_its_slots() -> None:
    latency = ThroughputLatency(slots=2, seconds=0.2)
    with FakeOpenAI(latency=latency) as server:
        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            statuses = [reply[0] for reply in pool.map(lambda _: chat(server, prompt()), range(6))]
        elapsed = time.monotonic() - started
        stats = server.stats()
    assert statuses == [200] * 6
    assert 0.55 <= elapsed < 3
    assert latency.peak_busy == 2
    assert stats.peak_in_service >= 3
    # Three rounds of two, from the first arrival to the last answer.
    assert latency.served == 6
    assert 0.55 <= latency.serving_s() <= elapsed


def test_fixed_and_random_latency() -> None:
    closing = threading.Event()
    started = time.monotonic()
    assert FixedLatency(0.05).serve(closing, lambda: "answer") == "answer"
    assert time.monotonic() - started >= 0.05
    one, two = RandomLatency(0, 0.02, seed=5), RandomLatency(0, 0.02, seed=5)
    draws = [one.draw() for _ in range(5)]
    assert draws == [two.draw() for _ in range(5)]
    assert all(0 <= seconds <= 0.02 for seconds in draws) and len(set(draws)) == 5
    started = time.monotonic()
    RandomLatency(0.03, 0.04).serve(closing, lambda: None)
    assert time.monotonic() - started >= 0.03


def test_an_answer_is_made_within_its_latency_not_after_it() -> None:
    """As a model's time holds the making of its answer, the fake's does: the answer is made
    as the request is served, and the latency's rest is waited out after it."""
    for latency in (FixedLatency(30), ThroughputLatency(slots=1, seconds=30)):
        closing, made = threading.Event(), threading.Event()
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(latency.serve, closing, lambda made=made: made.set() or "fix")
            assert made.wait(10), latency  # not 30 s from now
            closing.set()
            assert answer.result(timeout=10) == "fix"


def test_a_hang_is_let_go_when_the_server_closes() -> None:
    server = FakeOpenAI(faults=FaultPolicy(schedule=[Fault.HANG]), hang_seconds=60)
    server.start()
    outcome: list[BaseException | int] = []

    def ask() -> None:
        try:
            outcome.append(chat(server, prompt(), timeout=30)[0])
        except Exception as exc:
            outcome.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    while server.stats().faults.get("hang", 0) == 0:
        time.sleep(0.01)
    started = time.monotonic()
    server.close()
    asker.join()
    assert time.monotonic() - started < 10  # far from the 60 s it would hang
    assert isinstance(outcome[0], Exception)


def test_an_api_key_is_required_when_set() -> None:
    with FakeOpenAI(api_key="right-key") as server:
        status, _, body = chat(server, prompt(), key="wrong-key")
        assert status == 401
        assert "wrong-key" in body["error"]["message"]
        assert chat(server, prompt(), key="right-key")[0] == 200
        assert call(server, "GET", "/models")[0] == 401


def test_basic_credentials_are_required_when_set() -> None:
    with FakeOpenAI(basic_auth="user:pw") as server:
        assert chat(server, prompt(), key="pw")[0] == 401
        request = urllib.request.Request(
            server.base_url + "/models",
            headers={"Authorization": f"Basic {base64.b64encode(b'user:pw').decode()}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


def test_hostile_faults_echo_the_key_where_a_client_reads(tmp_path: Path) -> None:
    schedule = [Fault.ECHO_USAGE, Fault.ECHO_EDIT]
    with FakeOpenAI(faults=FaultPolicy(schedule=schedule, models=Fault.ECHO_MODELS)) as server:
        _, _, usage = chat(server, prompt(), key="the-key")
        _, _, edit = chat(server, prompt(), key="the-key")
        _, _, listing = call(server, "GET", "/models", key="the-key")
        stats = server.stats()
    assert usage["usage"]["prompt_tokens"] == "Bearer the-key"
    assert isinstance(usage["usage"]["completion_tokens"], int)
    # Still the fix, as an answer that follows the contract; the edit also holds the key.
    assert "import os" not in applied(answer_of(usage), tmp_path)
    fixed = applied(answer_of(edit), tmp_path)
    assert "import os" not in fixed and "key not in table" in fixed
    assert fixed.endswith("# The key I was given: the-key\n")
    assert [model["id"] for model in listing["data"]] == ["fake", "Bearer the-key"]
    assert stats.faults == {"echo_usage": 1, "echo_edit": 1, "echo_models": 1}
