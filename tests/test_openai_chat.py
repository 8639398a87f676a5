"""The HTTP LLM agent against the fake OpenAI-compatible server, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stomper.agents import AgentOutcome, AgentTask, AttemptFailed, load_agent
from stomper.agents.openai_chat import OpenAIChatAgent
from stomper.agents.prompt import WHOLE_FILE_UP_TO
from stomper.cli import main
from stomper.config import load_settings
from stomper.diagnostics import Diagnostic
from stomper.diagnostics.ruff import RuffCollector
from stomper.errors import AgentError
from stomper.testing.fake_openai import Behaviour, FakeOpenAI, Fault, FaultPolicy
from stomper.testing.repos import module
from tests.conftest import run_json, sh

SECRET = "sk-stomper-test-7f3e9a1c5b2d4e6f8a0b"


@pytest.fixture(autouse=True)
def no_openai_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client reads these when not told otherwise; no test may depend on the machine's."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)


def diagnostics_of(repo: Path, path: str) -> list[Diagnostic]:
    return asyncio.run(RuffCollector().collect(repo, [path]))


def task_for(repo: Path, path: str, *, feedback: str | None = None) -> AgentTask:
    from stomper.unit import Unit

    found = tuple(diagnostics_of(repo, path))
    unit = Unit(
        index=0,
        path=path,
        base=sh(repo, "rev-parse", "HEAD").strip(),
        diagnostics=found,
        baseline=found,
        base_blob=sh(repo, "rev-parse", f"HEAD:{path}").strip(),
        mode="100644",
    )
    return AgentTask(unit=unit, workspace=repo, feedback=feedback)


def attempt(
    server: FakeOpenAI, task: AgentTask, **options: Any
) -> tuple[AgentOutcome | AttemptFailed | AgentError, OpenAIChatAgent]:
    """One call of fix(); its outcome (or the failure it raised) and the agent."""

    async def go() -> tuple[AgentOutcome | AttemptFailed | AgentError, OpenAIChatAgent]:
        options.setdefault("backoff", 0.01)
        async with OpenAIChatAgent(model="fake", base_url=server.base_url, **options) as agent:
            try:
                return await agent.fix(task), agent
            except (AttemptFailed, AgentError) as failed:
                return failed, agent

    return asyncio.run(go())


def test_a_model_is_required() -> None:
    settings = load_settings(None, {"agent": "openai"})
    with pytest.raises(AgentError, match="--model"):
        load_agent("openai", settings)


def test_settings_name_the_variable_that_holds_the_key(monkeypatch) -> None:
    monkeypatch.setenv("STOMPER_TEST_KEY", SECRET)
    with FakeOpenAI(api_key=SECRET) as server:
        settings = load_settings(
            None,
            {"model": "fake", "base_url": server.base_url, "api_key_env": "STOMPER_TEST_KEY"},
        )
        agent = load_agent("openai", settings)
        assert isinstance(agent, OpenAIChatAgent)
        assert SECRET not in repr(agent) and SECRET not in repr(settings)

        async def check() -> tuple[bool, str]:
            async with agent:
                return await agent.check()

        ok, message = asyncio.run(check())
    assert ok, message
    assert "serves fake" in message


def test_the_agent_fixes_a_file(make) -> None:
    repo = make({"pkg/a.py": module(["F401", "E713", "F541"])})
    with FakeOpenAI() as server:
        outcome, agent = attempt(server, task_for(repo, "pkg/a.py"))
        stats = server.stats()
    assert isinstance(outcome, AgentOutcome)
    assert diagnostics_of(repo, "pkg/a.py") == []
    assert outcome.tokens_in == stats.tokens_in > 0
    assert outcome.tokens_out == stats.tokens_out > 0
    assert (agent.requests, agent.retries) == (1, 0)
    # Only the edited lines changed; the rest of the file, final newline included, is intact.
    assert (repo / "pkg/a.py").read_text().endswith("    return a + b\n")


def test_overload_and_server_errors_are_waited_out_inside_one_attempt(make) -> None:
    repo = make({"a.py": module(["F401"])})
    policy = FaultPolicy(per_path={"a.py": [Fault.RATE_LIMIT, Fault.SERVER_ERROR]})
    with FakeOpenAI(faults=policy, retry_after=0.3) as server:
        started = time.monotonic()
        outcome, agent = attempt(server, task_for(repo, "a.py"))
        elapsed = time.monotonic() - started
        stats = server.stats()
    assert isinstance(outcome, AgentOutcome)
    assert diagnostics_of(repo, "a.py") == []
    assert stats.statuses == {429: 1, 500: 1, 200: 1}
    assert (agent.requests, agent.retries) == (3, 2)
    assert elapsed >= 0.3  # the Retry-After of the 429 was honoured


def test_an_endpoint_that_keeps_failing_is_given_up_within_the_agent_timeout(make) -> None:
    repo = make({"a.py": module(["F401"])})
    with FakeOpenAI(faults=FaultPolicy(rates={Fault.SERVER_ERROR: 1.0})) as server:
        started = time.monotonic()
        outcome, _ = attempt(server, task_for(repo, "a.py"), agent_timeout=0.5, backoff=0.05)
        elapsed = time.monotonic() - started
    assert isinstance(outcome, AgentError)
    assert "kept failing (500 x" in str(outcome)
    assert elapsed < 5


def test_lost_connections_are_retried_then_given_up(make) -> None:
    task = task_for(make({"a.py": module(["F401"])}), "a.py")

    async def go() -> tuple[AgentError, int]:
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        base_url = f"http://127.0.0.1:{port}/v1"
        options: dict[str, Any] = {"agent_timeout": 0.3, "backoff": 0.02}
        async with OpenAIChatAgent(model="fake", base_url=base_url, **options) as agent:
            with pytest.raises(AgentError) as failed:
                await agent.fix(task)
            return failed.value, agent.retries

    error, retries = asyncio.run(go())
    assert "kept failing (connection error x" in str(error)
    assert retries >= 2


def test_the_whole_file_format_end_to_end(make) -> None:
    from stomper.agents.edits import WHOLE_FILE_FORMAT

    repo = make({"a.py": module(["F401", "E713"]).rstrip("\n")})
    with FakeOpenAI(edit_format="whole_file") as server:
        outcome, _ = attempt(server, task_for(repo, "a.py"), answer_format=WHOLE_FILE_FORMAT)
    assert isinstance(outcome, AgentOutcome)
    assert diagnostics_of(repo, "a.py") == []
    assert (repo / "a.py").read_text().endswith("return a + b")


def test_a_hang_hits_the_request_timeout(make) -> None:
    repo = make({"a.py": module(["F401"])})
    before = (repo / "a.py").read_bytes()
    with FakeOpenAI(faults=FaultPolicy(schedule=[Fault.HANG])) as server:
        started = time.monotonic()
        outcome, agent = attempt(server, task_for(repo, "a.py"), request_timeout=0.3)
        elapsed = time.monotonic() - started
    assert isinstance(outcome, AttemptFailed)
    assert "did not answer within 0.3s" in outcome.feedback
    assert 0.3 <= elapsed < 10  # far from the 30 s the server would hang
    assert agent.retries == 0
    assert (repo / "a.py").read_bytes() == before


def test_garbage_is_a_failed_attempt_that_still_counts_its_tokens(make) -> None:
    repo = make({"a.py": module(["F401"])})
    with FakeOpenAI(faults=FaultPolicy(schedule=[Fault.GARBAGE])) as server:
        outcome, agent = attempt(server, task_for(repo, "a.py"))
        stats = server.stats()
    assert isinstance(outcome, AttemptFailed)
    assert "no SEARCH/REPLACE block" in outcome.feedback
    assert outcome.tokens_in == stats.tokens_in > 0
    assert outcome.tokens_out == stats.tokens_out > 0
    assert (agent.tokens_in, agent.tokens_out) == (outcome.tokens_in, outcome.tokens_out)


def test_a_mismatching_block_fails_with_the_closest_lines_and_changes_nothing(make) -> None:
    repo = make({"a.py": module(["F401", "E713"])})
    before = (repo / "a.py").read_bytes()
    with FakeOpenAI(faults=FaultPolicy(schedule=[Fault.MISMATCH])) as server:
        outcome, _ = attempt(server, task_for(repo, "a.py"))
    assert isinstance(outcome, AttemptFailed)
    assert "Block 1 (`import os  # as I remember it`)" in outcome.feedback
    assert "1 | import os" in outcome.feedback
    assert (repo / "a.py").read_bytes() == before


def test_feedback_reaches_the_prompt(make) -> None:
    repo = make({"a.py": module(["F401"])})
    with FakeOpenAI() as server:
        task = task_for(repo, "a.py", feedback="Still reported: F401 `os` imported but unused")
        outcome, _ = attempt(server, task)
    assert isinstance(outcome, AgentOutcome)
    assert diagnostics_of(repo, "a.py") == []


def test_a_refused_key_is_not_repeated_in_the_error(make) -> None:
    repo = make({"a.py": module(["F401"])})
    with FakeOpenAI(api_key="the-right-key") as server:
        outcome, _ = attempt(server, task_for(repo, "a.py"), api_key=SECRET)
    assert isinstance(outcome, AgentError)
    assert "refused the API key (401)" in str(outcome)
    assert SECRET not in str(outcome)


def test_a_usage_that_is_no_count_counts_nothing(make) -> None:
    """A server that echoes the key as ``usage.prompt_tokens``: the fix still applies."""
    repo = make({"a.py": module(["F401"])})
    echo = FaultPolicy(rates={Fault.ECHO_USAGE: 1.0})
    with FakeOpenAI(api_key=SECRET, faults=echo) as server:
        outcome, agent = attempt(server, task_for(repo, "a.py"), api_key=SECRET)
    assert isinstance(outcome, AgentOutcome), outcome
    assert outcome.tokens_in == agent.tokens_in == 0 < outcome.tokens_out
    assert diagnostics_of(repo, "a.py") == []


def test_the_endpoint_is_shown_with_its_password_masked() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    agent = OpenAIChatAgent(model="fake", base_url=f"http://me:pass-{SECRET}@127.0.0.1:{port}/v1")

    async def check() -> tuple[bool, str]:
        async with agent:
            return await agent.check()

    ok, message = asyncio.run(check())
    assert not ok and message.startswith(f"cannot reach http://me:***@127.0.0.1:{port}/v1")
    assert agent.endpoint == f"http://me:***@127.0.0.1:{port}/v1"
    assert SECRET not in repr(agent) and SECRET not in message


def test_check_lists_no_model_id_holding_the_key() -> None:
    async def check(base_url: str) -> tuple[bool, str]:
        async with OpenAIChatAgent(model="absent", base_url=base_url, api_key=SECRET) as agent:
            return await agent.check()

    echo = FaultPolicy(models=Fault.ECHO_MODELS)
    with FakeOpenAI(api_key=SECRET, faults=echo) as server:
        ok, message = asyncio.run(check(server.base_url))
    assert not ok and "(it lists: Bearer ***, fake)" in message
    assert SECRET not in message


def test_retry_after_is_read_in_its_three_forms() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from stomper.agents.openai_chat import _retry_after

    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert _retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert _retry_after({"retry-after": "1.5"}) == 1.5
    assert 25 < (_retry_after({"retry-after": later}) or 0) <= 30
    assert _retry_after({"retry-after": "soon"}) is None
    assert _retry_after({}) is None


def test_check_reports_the_model_and_the_endpoint() -> None:
    async def check(base_url: str, model: str) -> tuple[bool, str]:
        async with OpenAIChatAgent(model=model, base_url=base_url, request_timeout=2) as agent:
            return await agent.check()

    with FakeOpenAI(models=("fake", "big")) as server:
        assert asyncio.run(check(server.base_url, "big"))[0]
        ok, message = asyncio.run(check(server.base_url, "missing"))
        assert not ok and "does not list model 'missing' (it lists: big, fake)" in message
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    ok, message = asyncio.run(check(f"http://127.0.0.1:{port}/v1", "fake"))
    assert not ok and message.startswith("cannot reach http://127.0.0.1:")


def big_module() -> str:
    """A module of about 200 KB with diagnostics at the top, the middle and the end."""
    functions = [
        f"def compute_{n}(values):\n    total = 0\n    for value in values:\n"
        f"        total += value * {n}\n    return total\n"
        for n in range(1800)
    ]
    functions.insert(900, "def missing(key, table):\n    return not key in table\n")
    functions.append('def greeting():\n    return f"hello"\n')
    return "import os\nimport sys\n\n\n" + "\n\n".join(functions) + "\n\nARGS = sys.argv\n"


def cli_fix(repo: Path, *args: str, capsys) -> tuple[int, dict[str, Any]]:
    return run_json(repo, "--agent", "openai", "--model", "fake", *args, capsys=capsys)


def test_a_200_kb_file_is_fixed_through_its_parts(make, capsys, monkeypatch) -> None:
    source = big_module()
    assert len(source) >= 200_000 > WHOLE_FILE_UP_TO
    repo = make({"big.py": source})
    with FakeOpenAI() as server:
        monkeypatch.setenv("STOMPER_BASE_URL", server.base_url)
        code, doc = cli_fix(repo, capsys=capsys)
        assert server.stats().errors == ()
    (unit,) = doc["units"]
    assert unit["status"] == "fixed", unit["reason"]
    assert sorted(d["code"] for d in unit["fixed"]) == ["E713", "F401", "F541"]
    assert code == 0
    after = (repo / "big.py").read_text()
    assert len(after) > 200_000 and after.endswith("ARGS = sys.argv\n")
    assert "key not in table" in after and "import os\n" not in after


def test_fifty_files_at_eight_at_once_ride_out_429_and_500(make, capsys, monkeypatch) -> None:
    repo = make({f"pkg/m{n:02d}.py": module(["F401", "E713"]) for n in range(50)})
    base = sh(repo, "rev-parse", "HEAD").strip()
    faults = FaultPolicy(rates={Fault.RATE_LIMIT: 0.1, Fault.SERVER_ERROR: 0.1}, seed=11)
    with FakeOpenAI(faults=faults, retry_after=0.05) as server:
        monkeypatch.setenv("STOMPER_BASE_URL", server.base_url)
        code, doc = cli_fix(repo, "-j", "8", capsys=capsys)
        stats = server.stats()
    assert [unit for unit in doc["units"] if unit["status"] != "fixed"] == []
    assert code == 0
    assert [unit["attempts"] for unit in doc["units"]] == [1] * 50
    assert doc["totals"]["commits"] == 50
    assert len(sh(repo, "rev-list", f"{base}..HEAD").split()) == 50
    assert stats.statuses.get(429, 0) > 0 and stats.statuses.get(500, 0) > 0
    # One answer a unit (no attempt was spent on a 429 or 500), and the GET /models with
    # which the run checked the endpoint before it started.
    assert stats.statuses[200] == 50 + 1
    assert set(stats.calls_per_path) == {f"pkg/m{n:02d}.py" for n in range(50)}
    assert stats.peak_in_service <= 8
    assert stats.errors == ()


def every_file_under(folder: Path) -> Callable[[bytes], list[Path]]:
    def holding(needle: bytes) -> list[Path]:
        return [
            path for path in folder.rglob("*") if path.is_file() and needle in path.read_bytes()
        ]

    return holding


def test_the_api_key_never_leaves_the_client(make, capsys, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    repo = make({f"m{n}.py": module(["F401", "E713"]) for n in range(6)})
    schedule = [Fault.RATE_LIMIT, Fault.GARBAGE, Fault.MISMATCH, Fault.SERVER_ERROR, None]
    args = ["fix", "--agent", "openai", "--model", "fake", "--json"]
    outputs = []
    with FakeOpenAI(api_key=SECRET, faults=FaultPolicy(schedule=schedule)) as server:
        monkeypatch.setenv("STOMPER_BASE_URL", server.base_url)
        main([*args, "--repo", str(repo), "-j", "3"])
        captured = capsys.readouterr()
        outputs += [captured.out, captured.err]
        stats = server.stats()
    assert stats.statuses[200] >= 6 and 401 not in stats.statuses  # the key went, accepted
    units = json.loads(outputs[0])["units"]
    assert {unit["status"] for unit in units} == {"fixed"}, units
    # A server that refuses the key quotes it back; stomper must not pass that on.
    with FakeOpenAI(api_key="another-key") as server:
        monkeypatch.setenv("STOMPER_BASE_URL", server.base_url)
        repo2 = make({"a.py": module(["F401"])})
        # The run checks the endpoint before it begins, and stops there: exit 2, no run.
        assert main([*args, "--repo", str(repo2)]) == 2
        captured = capsys.readouterr()
        outputs += [captured.out, captured.err]
        assert server.stats().statuses[401] >= 1
    assert "refused the API key" in " ".join(outputs[-1].split())
    for text in outputs:
        assert SECRET not in text
    assert every_file_under(repo / ".git" / "stomper")(SECRET.encode()) == []
    # No journal, no lock, no workspace. The tools look at the files while the endpoint is
    # asked whether it is ready, so ruff's cache may be there.
    assert not (repo2 / ".git" / "stomper" / "runs").exists()
    assert not (repo2 / ".git" / "stomper" / "worktrees").exists()


# Through the whole pipeline: attempts with feedback, and the guardrails.


def test_a_garbage_answer_is_retried_with_feedback(make, capsys, monkeypatch) -> None:
    repo = make({"a.py": module(["F401"])})
    with FakeOpenAI(faults=FaultPolicy(schedule=[Fault.GARBAGE])) as server:
        monkeypatch.setenv("STOMPER_BASE_URL", server.base_url)
        code, doc = cli_fix(repo, capsys=capsys)
    (unit,) = doc["units"]
    assert (unit["status"], unit["attempts"]) == ("fixed", 2)
    assert unit["tokens"]["input"] > 0
    assert code == 0


def test_one_diagnostic_per_attempt_takes_an_attempt_per_code(make, capsys, monkeypatch) -> None:
    repo = make({"a.py": module(["F401", "E713", "F541"])})
    with FakeOpenAI(behaviour=Behaviour.ONE_PER_ATTEMPT) as server:
        monkeypatch.setenv("STOMPER_BASE_URL", server.base_url)
        code, doc = cli_fix(repo, "--max-attempts", "3", capsys=capsys)
        calls = server.stats().calls_per_path
    (unit,) = doc["units"]
    assert (unit["status"], unit["attempts"]) == ("fixed", 3)
    assert calls == {"a.py": 3}
    assert code == 0


@pytest.mark.parametrize(
    ("fault", "reason"),
    [(Fault.OTHER_FILE, "outside the unit: a_helpers.py"), (Fault.SUPPRESS, "suppressions")],
)
def test_guardrails_refuse_what_the_model_should_not_do(
    make, capsys, monkeypatch, fault, reason
) -> None:
    repo = make({"a.py": module(["F401"])})
    head = sh(repo, "rev-parse", "HEAD").strip()
    with FakeOpenAI(faults=FaultPolicy(rates={fault: 1.0})) as server:
        monkeypatch.setenv("STOMPER_BASE_URL", server.base_url)
        code, doc = cli_fix(repo, "--max-attempts", "2", capsys=capsys)
    (unit,) = doc["units"]
    assert unit["status"] == "failed" and unit["commit"] is None
    assert reason in unit["reason"]
    assert sh(repo, "rev-parse", "HEAD").strip() == head
    assert not (repo / "a_helpers.py").exists()
    assert code == 1


def test_no_progress_ends_the_attempts(make, capsys, monkeypatch) -> None:
    repo = make({"a.py": module(["F401"])})
    with FakeOpenAI(behaviour=Behaviour.NO_PROGRESS) as server:
        monkeypatch.setenv("STOMPER_BASE_URL", server.base_url)
        code, doc = cli_fix(repo, "--max-attempts", "3", capsys=capsys)
        calls = server.stats().calls_per_path["a.py"]
    (unit,) = doc["units"]
    assert unit["status"] == "failed" and unit["commit"] is None
    assert unit["attempts"] == calls < 3
    assert code == 1
