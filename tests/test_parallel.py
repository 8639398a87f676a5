"""Parallel runs give the sequential result, and leave nothing behind however they end."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stomper.agents import AgentOutcome, AgentTask
from stomper.agents.autofix import AutofixAgent
from stomper.commands.fix import FixRequest, run_fix
from stomper.config import Settings
from stomper.testing.repos import FIXABLE, RUFF_CONFIG, UNFIXABLE, make_repo, module
from tests.conftest import sh, spaces

CODES = sorted(FIXABLE) + sorted(UNFIXABLE)

projects = st.dictionaries(
    keys=st.from_regex(r"[a-z]{1,6}(/[a-z]{1,6})?", fullmatch=True).map(lambda p: p + ".py"),
    values=st.lists(st.sampled_from(CODES), min_size=0, max_size=4, unique=True),
    min_size=1,
    max_size=7,
)


def fix_tree(root: Path, files: dict[str, list[str]], parallel: int) -> tuple[str, object]:
    contents = {
        path: module(sorted(codes)) if codes else "X = 1\n" for path, codes in files.items()
    }
    repo = make_repo(root, {"pyproject.toml": RUFF_CONFIG, **contents})
    request = FixRequest(cwd=repo, progress=False)
    report = asyncio.run(
        run_fix(request, Settings(max_parallel_files=parallel), agent=AutofixAgent())
    )
    assert report.status == "completed"
    assert report.metrics.peak_concurrency == min(parallel, len(report.results))
    outcome = sorted((r.path, r.status.value, r.reason) for r in report.results)
    return sh(repo, "rev-parse", "HEAD^{tree}").strip(), outcome


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files=projects)
def test_parallel_tree_equals_sequential_tree(tmp_path_factory, files) -> None:
    base = tmp_path_factory.mktemp("prop")
    sequential = fix_tree(base / "n1", files, 1)
    for parallel in (2, 4, 8):
        assert fix_tree(base / f"n{parallel}", files, parallel) == sequential


class Exploding:
    name = "exploding"

    async def fix(self, task: AgentTask) -> AgentOutcome:
        if task.unit.path == "b.py":
            raise RuntimeError("the agent fell over")
        return await AutofixAgent().fix(task)


# The project's tests, as a unit's check: at the base they pass; with a unit's change they
# pass once the marker exists (the run's third agent call has begun), and fail if it never
# comes.
WAIT_FOR_MARKER = """\
import pathlib
import sys
import time

base = pathlib.Path("base.txt").read_text()
if all(path.read_text() == base for path in pathlib.Path().glob("m*.py")):
    sys.exit(0)
marker = pathlib.Path(sys.argv[1])
for _ in range(400):
    if marker.exists():
        sys.exit(0)
    time.sleep(0.05)
sys.exit("the third agent call never began")
"""


class MarkingThirdCall:
    """autofix, writing ``marker`` when its third call begins."""

    name = "marking"

    def __init__(self, marker: Path) -> None:
        self.marker = marker
        self.calls = 0

    async def fix(self, task: AgentTask) -> AgentOutcome:
        self.calls += 1
        if self.calls == 3:
            self.marker.write_text("begun\n")
        return await AutofixAgent().fix(task)


def test_a_unit_gives_its_agents_place_up_while_it_is_checked(make, tmp_path) -> None:
    """With -j 2 the third unit's agent is called while the first two units are checked:
    their checks (the tests, a real child process) wait for that call to begin. A unit that
    kept its agent's place while checked would keep the third call waiting for good."""
    marker = tmp_path / "third-call"
    files = {f"m{i}.py": module(["F401"]) for i in range(3)}
    repo = make({**files, "base.txt": module(["F401"]), "check.py": WAIT_FOR_MARKER})
    request = FixRequest(cwd=repo, progress=False)
    settings = Settings(max_parallel_files=2, test_cmd=f"{sys.executable} check.py {marker}")
    report = asyncio.run(run_fix(request, settings, agent=MarkingThirdCall(marker)))

    assert sorted((r.path, r.status.value) for r in report.results) == [
        (path, "fixed") for path in sorted(files)
    ], [r.reason for r in report.results]
    assert report.metrics.peak_concurrency == 2


def assert_clean(repo: Path) -> None:
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    state = repo / ".git" / "stomper"
    assert not any((state / "worktrees").iterdir())
    assert not any((state / "locks").iterdir())
    assert sh(repo, "branch", "--list").split() == ["*", "main"]


def test_agent_exception_fails_only_its_unit(make) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["F401"]), "c.py": module(["F541"])})
    request = FixRequest(cwd=repo, progress=False)
    report = asyncio.run(run_fix(request, Settings(), agent=Exploding()))
    by_path = {result.path: result for result in report.results}
    assert by_path["b.py"].status == "failed"
    assert "the agent fell over" in (by_path["b.py"].reason or "")
    assert by_path["a.py"].commit and by_path["c.py"].commit
    assert_clean(repo)


def test_failure_and_success_leave_nothing(make) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["E722"])})
    request = FixRequest(cwd=repo, progress=False)
    asyncio.run(run_fix(request, Settings(), agent=AutofixAgent()))
    assert_clean(repo)


def test_sigterm_stops_the_run_cleanly_and_the_next_run_succeeds(make) -> None:
    repo = make({f"m{i:02d}.py": module(["F401"]) for i in range(12)})
    env = {**os.environ, "STOMPER_TEST_AGENT_DELAY": "30"}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stomper",
            "fix",
            "--repo",
            str(repo),
            "--no-progress",
            "--agent",
            "stomper.testing.agents:delayed",
            "-j",
            "4",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = spaces(repo)
        # Four at the agent, and as many isolated, waiting for one of the four places.
        if len(running) == 8:
            break
        time.sleep(0.1)
    else:
        child.kill()
        raise AssertionError("the run never had eight units in flight")
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err.decode()
    assert b"stomper resume" in err
    assert_clean(repo)
    assert sh(repo, "status", "--porcelain") == ""
    done = subprocess.run(
        [sys.executable, "-m", "stomper", "fix", "--repo", str(repo), "--no-progress"],
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert_clean(repo)
