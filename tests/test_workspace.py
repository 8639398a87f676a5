"""Isolation: scratch folders and pooled worktrees isolate as well as fresh worktrees."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stomper.agents import AgentOutcome, AgentTask
from stomper.agents.autofix import AutofixAgent
from stomper.commands.fix import FixRequest, run_fix
from stomper.config import Settings
from stomper.diagnostics.ruff import ruff_binary
from stomper.testing.agents import Instant
from stomper.testing.repos import FIXABLE, RUFF_CONFIG, UNFIXABLE, make_repo, module
from tests.conftest import sh

CODES = sorted(FIXABLE) + sorted(UNFIXABLE)

projects = st.dictionaries(
    keys=st.from_regex(r"[a-z]{1,5}(/[a-z]{1,5})?", fullmatch=True).map(lambda p: p + ".py"),
    values=st.lists(st.sampled_from(CODES), min_size=1, max_size=3, unique=True),
    min_size=1,
    max_size=6,
)


def contents(files: dict[str, list[str]]) -> dict[str, str]:
    return {"pyproject.toml": RUFF_CONFIG} | {p: module(sorted(c)) for p, c in files.items()}


def fixed_tree(root: Path, files: dict[str, list[str]], *, tree: bool, parallel: int) -> str:
    repo = make_repo(root, contents(files))
    agent = Instant(AutofixAgent(), needs_tree=tree)
    request = FixRequest(cwd=repo, progress=False)
    report = asyncio.run(run_fix(request, Settings(max_parallel_files=parallel), agent=agent))
    assert report.status == "completed"
    return sh(repo, "rev-parse", "HEAD^{tree}").strip()


def fresh_tree(root: Path, files: dict[str, list[str]]) -> str:
    """What fixing each file alone in a fresh checkout gives, committed together."""
    repo = make_repo(root, contents(files))
    for path in files:
        fresh = root.parent / f"{root.name}-fresh"
        sh(repo, "worktree", "add", "--detach", "--quiet", str(fresh), "HEAD")
        subprocess.run(
            [ruff_binary(), "check", "--fix-only", "--no-cache", "--quiet", "--exit-zero", path],
            cwd=fresh,
            check=True,
        )
        (repo / path).write_bytes((fresh / path).read_bytes())
        sh(repo, "worktree", "remove", "--force", str(fresh))
    sh(repo, "add", "--all")
    return sh(repo, "write-tree").strip()


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files=projects)
def test_scratch_and_pooled_equal_fresh_worktrees(tmp_path_factory, files) -> None:
    base = tmp_path_factory.mktemp("iso")
    expected = fresh_tree(base / "fresh", files)
    for tree in (False, True):
        for parallel in (1, 8):
            name = f"{'pool' if tree else 'scratch'}-{parallel}"
            assert fixed_tree(base / name, files, tree=tree, parallel=parallel) == expected, name


@dataclass
class Litterer:
    """In a worktree: litters it on the first unit, looks for the litter on the others."""

    name: str = "litterer"
    needs_tree: bool = True
    seen: dict[str, list[str]] = field(default_factory=dict)

    async def fix(self, task: AgentTask) -> AgentOutcome:
        tree = task.workspace
        if task.unit.path == "a.py":
            (tree / "untracked.txt").write_text("left behind\n")
            (tree / "build").mkdir()
            (tree / "build" / "ignored.o").write_text("ignored\n")
            (tree / "b.py").write_text("STAGED = 1\n")
            sh(tree, "add", "b.py")
            sh(tree, "switch", "--quiet", "-c", "stray")
            return AgentOutcome()
        self.seen[task.unit.path] = [
            sh(tree, "status", "--porcelain", "--ignored", "--untracked-files=all"),
            sh(tree, "diff", "--cached", "--name-only"),
            sh(tree, "rev-parse", "--abbrev-ref", "HEAD").strip(),
            (tree / "b.py").read_text(),
        ]
        return await AutofixAgent().fix(task)


def test_a_reused_worktree_shows_nothing_of_the_unit_before(make) -> None:
    repo = make(
        {
            ".gitignore": "build/\n",
            "a.py": module(["F401"]),
            "b.py": module(["F401"]),
            "c.py": module(["F541"]),
        }
    )
    agent = Litterer()
    request = FixRequest(cwd=repo, progress=False)
    report = asyncio.run(run_fix(request, Settings(max_parallel_files=1), agent=agent))
    by_path = {result.path: result for result in report.results}
    assert by_path["a.py"].status == "failed"
    assert "committed or switched branches" in (by_path["a.py"].reason or "")
    assert set(agent.seen) == {"b.py", "c.py"}
    for path, (status, staged, head, b_text) in agent.seen.items():
        assert status == "", path
        assert staged == "", path
        assert head == "HEAD", path  # detached at the base, not on the stray branch
        assert b_text == module(["F401"]), path
    assert by_path["b.py"].commit and by_path["c.py"].commit
    assert len(list((repo / ".git" / "stomper" / "worktrees").iterdir())) == 0
