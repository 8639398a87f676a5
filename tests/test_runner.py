"""A run's first units begin while LangGraph loads, a run stopped then leaves nothing, and
what the loading imports is never seen half made by the units' libraries.

Each test runs ``stomper fix`` in a fresh interpreter that holds LangGraph's import back
until an agent has been called (an import hook waits at the ``langgraph`` package): a run
that waited for LangGraph before its first unit would wait out the hook's timeout, and its
agent would then find LangGraph loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stomper.report import EXIT_INTERRUPTED
from stomper.testing.repos import module
from tests.conftest import sh

# Each script below ends so: ``stomper fix`` with its agent, and what the agent saw at each
# call (``seen``) written where the test reads it.
RUN_AND_RECORD = """
argv = ["fix", "--repo", sys.argv[1], "--no-progress", "--json", "--agent", "__main__:agent"]
code = main(argv)
with open(sys.argv[2], "w") as out:
    json.dump({"code": code, "seen": seen}, out)
"""

HELD = (
    """\
import asyncio, json, os, signal, sys, threading
from stomper.cli import main
from stomper.testing.agents import Instant

released = threading.Event()
seen = []


class HoldLangGraph:
    def find_spec(self, name, path=None, target=None):
        if name == "langgraph":
            released.wait(20)
        return None


class Probe(Instant):
    async def fix(self, task):
        seen.append("langgraph" in sys.modules and "langgraph.graph.state" in sys.modules)
        if sys.argv[3] == "interrupt":
            if len(seen) == 1:
                os.kill(os.getpid(), signal.SIGINT)
            try:
                await asyncio.sleep(20)
            finally:
                released.set()
        released.set()
        return await super().fix(task)


def agent(settings):
    return Probe()


assert "langgraph" not in sys.modules
sys.meta_path.insert(0, HoldLangGraph())
"""
    + RUN_AND_RECORD
)


def run_script(script: str, repo: Path, outcome: Path, *args: str) -> tuple[dict[str, object], str]:
    """Run one of the scripts above on ``repo``; what its agent saw, and its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", script, str(repo), str(outcome), *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert outcome.exists(), done.stderr
    return json.loads(outcome.read_text()), done.stdout


def held_run(repo: Path, outcome: Path, mode: str) -> tuple[dict[str, object], dict[str, object]]:
    """Run ``stomper fix --json`` under the hold; what the child saw, and the run's report."""
    seen, stdout = run_script(HELD, repo, outcome, mode)
    return seen, json.loads(stdout)


def test_the_first_units_are_worked_while_langgraph_loads(make, tmp_path) -> None:
    repo = make({f"m{number}.py": module(["F401"]) for number in range(6)})
    seen, report = held_run(repo, tmp_path / "seen.json", "fix")
    assert seen["code"] == 0
    calls = seen["seen"]  # whether LangGraph was loaded, at each call
    assert isinstance(calls, list) and len(calls) == 6
    # The first wave of four (the default limit) began before LangGraph was there.
    assert calls[:4] == [False] * 4
    totals = report["totals"]
    assert isinstance(totals, dict) and totals["fixed"] == 6 and totals["commits"] == 6


def test_a_run_stopped_while_langgraph_loads_leaves_no_unit_behind(make, tmp_path) -> None:
    repo = make({f"m{number}.py": module(["F401"]) for number in range(6)})
    head = sh(repo, "rev-parse", "HEAD")
    seen, report = held_run(repo, tmp_path / "seen.json", "interrupt")
    assert seen["code"] == EXIT_INTERRUPTED
    assert report["status"] == "interrupted"
    totals = report["totals"]
    assert isinstance(totals, dict) and totals["units"] == 0 and totals["commits"] == 0
    state = repo / ".git" / "stomper"
    (run_dir,) = (state / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert not (state / "worktrees" / run_dir.name).exists()
    assert sh(repo, "rev-parse", "HEAD") == head
    assert sh(repo, "status", "--porcelain") == ""


# LangGraph's import is held inside httpx's own (httpx is in sys.modules, still being made)
# until the first agent call has looked at it the way openai does on every request.
HALF_IMPORTED = (
    """\
import asyncio, json, sys, threading
from stomper.cli import main
from stomper.testing.agents import Instant

inside_httpx = threading.Event()
looked = threading.Event()
seen = []


class HoldInsideHttpx:
    def find_spec(self, name, path=None, target=None):
        if name == "httpx._models":
            inside_httpx.set()
            looked.wait(20)
        return None


def half_made(name):
    return getattr(getattr(sys.modules.get(name), "__spec__", None), "_initializing", False)


class LooksForHttpx(Instant):
    async def fix(self, task):
        for _ in range(400):  # until the loading is inside httpx, or done
            workflow = "stomper.workflow.graph"
            if inside_httpx.is_set() or (workflow in sys.modules and not half_made(workflow)):
                break
            await asyncio.sleep(0.05)
        seen.append("half" if half_made("httpx") else "whole")
        looked.set()
        return await super().fix(task)


def agent(settings):
    return LooksForHttpx()


assert "httpx" not in sys.modules
sys.meta_path.insert(0, HoldInsideHttpx())
"""
    + RUN_AND_RECORD
)


def test_a_unit_never_sees_a_module_the_workflow_is_still_importing(make, tmp_path) -> None:
    repo = make({f"m{number}.py": module(["F401"]) for number in range(3)})
    seen, _ = run_script(HALF_IMPORTED, repo, tmp_path / "seen.json")
    assert seen["code"] == 0
    assert seen["seen"] == ["whole"] * 3  # httpx, at each call
