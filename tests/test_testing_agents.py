"""The agents shipped for tests and benchmarks, alone and through ``stomper fix``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from stomper.agents import AgentOutcome, AgentTask, load_agent
from stomper.cli import main
from stomper.config import Settings
from stomper.diagnostics import Diagnostic
from stomper.errors import AgentError
from stomper.testing import agents
from stomper.testing.repos import module
from stomper.unit import Unit
from tests.conftest import run_json, sh

AGENTS = "stomper.testing.agents"


def task(path: str = "a.py", workspace: Path = Path("/nonexistent")) -> AgentTask:
    diag = Diagnostic("ruff", "F401", "`os` imported but unused", path, 1)
    unit = Unit(
        index=0,
        path=path,
        base="0" * 40,
        diagnostics=(diag,),
        baseline=(diag,),
        base_blob="0" * 40,
        mode="100644",
    )
    return AgentTask(unit=unit, workspace=workspace)


class Recorder:
    """An inner agent that notes when each call reached it."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    async def fix(self, task: AgentTask) -> AgentOutcome:
        self.calls.append((task.unit.path, time.monotonic()))
        return AgentOutcome(note="recorded")


def worktrees_left(repo: Path) -> list[str]:
    folder = repo / ".git" / "stomper" / "worktrees"
    left = [str(path) for path in folder.rglob("*")] if folder.exists() else []
    listed = sh(repo, "worktree", "list", "--porcelain").count("worktree ")
    return left + ["(registered)"] * (listed - 1)


def test_delayed_answers_after_its_latency_with_its_work_inside_it() -> None:
    inner = Recorder()
    agent = agents.DelayedAutofix(1.0, inner=inner)
    started = time.monotonic()
    outcome = asyncio.run(agent.fix(task()))
    assert outcome.note == "recorded"
    assert time.monotonic() - started >= 1.0
    # The work is done at once, and the latency is waited out after it, not added to it.
    assert [path for path, _ in inner.calls] == ["a.py"]
    assert inner.calls[0][1] - started < 0.9


def test_delayed_calls_overlap_instead_of_blocking_the_loop() -> None:
    inner = Recorder()
    agent = agents.DelayedAutofix(0.3, inner=inner)

    async def many() -> float:
        started = time.monotonic()
        await asyncio.gather(*(agent.fix(task(f"m{n}.py")) for n in range(8)))
        return time.monotonic() - started

    # Eight waits in a row would take 2.4 s; overlapping ones take about 0.3 s.
    assert asyncio.run(many()) < 1.2
    assert len(inner.calls) == 8


def test_delayed_rejects_a_negative_delay() -> None:
    with pytest.raises(ValueError, match="negative"):
        agents.DelayedAutofix(-1)


def test_counting_appends_one_line_per_call_before_the_inner_agent(tmp_path) -> None:
    log = tmp_path / "calls.log"
    inner = Recorder()
    agent = agents.Counting(inner, log)

    async def calls() -> None:
        await asyncio.gather(*(agent.fix(task(f"pkg/m{n}.py")) for n in range(20)))
        await agent.fix(task("pkg/m0.py"))

    asyncio.run(calls())
    lines = agents.read_count_log(log)
    assert sorted(lines) == sorted([f"pkg/m{n}.py" for n in range(20)] + ["pkg/m0.py"])
    assert len(inner.calls) == 21
    assert agent.name == "counting(recorder)"


def test_raising_fails_only_the_named_paths() -> None:
    inner = Recorder()
    agent = agents.Raising(paths={"bad.py"}, otherwise=inner)
    with pytest.raises(agents.AgentFailure, match=r"the agent broke on bad\.py"):
        asyncio.run(agent.fix(task("bad.py")))
    assert asyncio.run(agent.fix(task("good.py"))).note == "recorded"
    with pytest.raises(agents.AgentFailure):
        asyncio.run(agents.Raising().fix(task("any.py")))


def test_instant_applies_ruffs_fixes(make) -> None:
    repo = make({"a.py": module(["F401", "F541"])})
    outcome = asyncio.run(agents.Instant().fix(task("a.py", repo)))
    assert outcome.note is None
    text = (repo / "a.py").read_text()
    assert "import os" not in text
    assert 'f"hello"' not in text


def test_factories_load_by_name_and_follow_the_settings(monkeypatch, tmp_path) -> None:
    settings = Settings(select=["F401"], unsafe_fixes=True)
    instant = load_agent(f"{AGENTS}:instant", settings)
    assert isinstance(instant, agents.Instant)
    assert isinstance(instant.inner, agents.AutofixAgent)
    assert instant.inner.select == ("F401",)
    assert instant.inner.unsafe_fixes

    delayed = load_agent(f"{AGENTS}:delayed", settings)
    assert isinstance(delayed, agents.DelayedAutofix)
    assert delayed.delay == 0
    monkeypatch.setenv(agents.DELAY_ENV, "0.25")
    delayed = load_agent(f"{AGENTS}:delayed", settings)
    assert isinstance(delayed, agents.DelayedAutofix)
    assert delayed.delay == 0.25

    monkeypatch.setenv(agents.LOG_ENV, str(tmp_path / "log"))
    counting = load_agent(f"{AGENTS}:counting", settings)
    assert isinstance(counting, agents.Counting)
    assert isinstance(counting.inner, agents.DelayedAutofix)
    assert counting.log == tmp_path / "log"

    monkeypatch.setenv(agents.RAISE_ON_ENV, "a.py, b.py")
    raising = load_agent(f"{AGENTS}:raising", settings)
    assert isinstance(raising, agents.Raising)
    assert raising.paths == {"a.py", "b.py"}


def test_wrappers_ask_for_the_workspace_their_inner_agent_asks_for(monkeypatch) -> None:
    class TreeAgent(Recorder):
        needs_tree = True

    scratch_inner = agents.AutofixAgent()
    scratch = getattr(scratch_inner, "needs_tree", True)
    assert agents.Instant().needs_tree == scratch
    assert agents.DelayedAutofix(0).needs_tree == scratch
    assert agents.Counting(agents.Instant(), Path("log")).needs_tree == scratch
    assert agents.Raising().needs_tree == scratch
    assert agents.Instant(TreeAgent()).needs_tree is True
    assert agents.Counting(TreeAgent(), Path("log")).needs_tree is True
    # An agent that does not say is given a tree.
    assert agents.DelayedAutofix(0, inner=Recorder()).needs_tree is True
    assert agents.DelayedAutofix(0, inner=TreeAgent(), needs_tree=False).needs_tree is False

    monkeypatch.setenv(agents.TREE_ENV, "1")
    assert getattr(agents.delayed(Settings()), "needs_tree", None) is True
    assert getattr(agents.instant(Settings()), "needs_tree", None) is True
    monkeypatch.setenv(agents.TREE_ENV, "0")
    assert getattr(agents.raising(Settings()), "needs_tree", None) is False
    monkeypatch.setenv(agents.TREE_ENV, "maybe")
    with pytest.raises(AgentError, match=agents.TREE_ENV):
        agents.instant(Settings())


@pytest.mark.parametrize("value", ["soon", "-1"])
def test_a_bad_delay_is_an_agent_error(monkeypatch, value) -> None:
    monkeypatch.setenv(agents.DELAY_ENV, value)
    with pytest.raises(AgentError, match=agents.DELAY_ENV):
        agents.delayed(Settings())


def test_counting_without_a_log_is_an_agent_error() -> None:
    with pytest.raises(AgentError, match=agents.LOG_ENV):
        agents.counting(Settings())


def test_delayed_through_the_cli_fixes_and_lands_every_unit(make, monkeypatch, capsys) -> None:
    repo = make({f"m{n}.py": module(["F401", "F541"]) for n in range(4)})
    monkeypatch.setenv(agents.DELAY_ENV, "0.2")
    code, doc = run_json(repo, "--agent", f"{AGENTS}:delayed", "-j", "2", capsys=capsys)
    assert code == 0, doc
    assert doc["totals"]["fixed"] == doc["totals"]["commits"] == 4
    assert all(unit["duration_s"] >= 0.2 for unit in doc["units"])
    assert doc["metrics"]["peak_concurrency"] == 2
    assert sh(repo, "status", "--porcelain") == ""


def test_counting_through_the_cli_logs_each_unit_once(make, monkeypatch, tmp_path, capsys) -> None:
    repo = make({f"m{n}.py": module(["F401"]) for n in range(5)})
    log = tmp_path / "calls.log"
    monkeypatch.setenv(agents.LOG_ENV, str(log))
    code, doc = run_json(repo, "--agent", f"{AGENTS}:counting", "-j", "2", capsys=capsys)
    assert code == 0, doc
    assert sorted(agents.read_count_log(log)) == [f"m{n}.py" for n in range(5)]


def test_a_bad_delay_through_the_cli_exits_2(make, monkeypatch, capsys) -> None:
    repo = make({"m.py": module(["F401"])})
    monkeypatch.setenv(agents.DELAY_ENV, "soon")
    code = main(["fix", "--repo", str(repo), "--agent", f"{AGENTS}:delayed", "--no-progress"])
    assert code == 2
    assert agents.DELAY_ENV in capsys.readouterr().err
    assert sh(repo, "rev-list", "--count", "HEAD").strip() == "1"


@pytest.mark.parametrize("tree", ["1", "0"], ids=["worktree", "scratch"])
def test_a_raising_agent_fails_its_unit_and_its_siblings_land(
    make, monkeypatch, capsys, tree
) -> None:
    repo = make({name: module(["F401", "F541"]) for name in ("a.py", "b.py", "c.py")})
    base = sh(repo, "rev-parse", "HEAD").strip()
    monkeypatch.setenv(agents.RAISE_ON_ENV, "b.py")
    monkeypatch.setenv(agents.TREE_ENV, tree)
    code, doc = run_json(repo, "--agent", f"{AGENTS}:raising", "-j", "2", capsys=capsys)
    assert code == 1
    assert doc["status"] == "completed"
    by_path = {unit["path"]: unit for unit in doc["units"]}
    assert by_path["b.py"]["status"] == "failed"
    assert by_path["b.py"]["commit"] is None
    assert "AgentFailure" in by_path["b.py"]["reason"]
    assert "the agent broke on b.py" in by_path["b.py"]["reason"]
    for sibling in ("a.py", "c.py"):
        assert by_path[sibling]["status"] == "fixed", by_path[sibling]
        assert by_path[sibling]["commit"]
    landed = sh(repo, "log", "--format=%(trailers:key=Stomper-Unit,valueonly)", f"{base}..HEAD")
    assert sorted(line for line in landed.splitlines() if line) == ["a.py", "c.py"]
    assert (repo / "b.py").read_text() == module(["F401", "F541"])
    assert worktrees_left(repo) == []
    assert sh(repo, "status", "--porcelain") == ""
