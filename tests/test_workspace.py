"""Isolation: scratch folders and pooled private trees isolate as well as fresh worktrees;
a pooled tree is a repository of its own, checked through stomper's git directory alone."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stomper.agents import AgentOutcome, AgentTask
from stomper.agents.autofix import AutofixAgent
from stomper.commands.fix import FixRequest, run_fix
from stomper.config import Settings
from stomper.diagnostics.ruff import ruff_binary
from stomper.testing.agents import Instant
from stomper.testing.repos import FIXABLE, RUFF_CONFIG, UNFIXABLE, make_repo, module
from stomper.unit import UnitResult
from stomper.workspace import MEMORY
from tests.conftest import memory_folders, run_json, sh

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
    # Staged and committed in the agent's own repository of the tree, the change is still
    # the change it is in the files.
    assert "outside the unit: b.py, untracked.txt" in (by_path["a.py"].reason or "")
    assert set(agent.seen) == {"b.py", "c.py"}
    for path, (status, staged, head, b_text) in agent.seen.items():
        assert status == "", path
        assert staged == "", path
        assert head == "HEAD", path  # detached at the base, not on the stray branch
        assert b_text == module(["F401"]), path
    assert by_path["b.py"].commit and by_path["c.py"].commit
    assert len(list((repo / ".git" / "stomper" / "worktrees").iterdir())) == 0


@dataclass
class Hook:
    """In a tree: runs ``action(task)``, then ruff's fixes unless it says it is done."""

    action: Callable[[AgentTask], bool | None]
    name: str = "hook"
    needs_tree: bool = True

    async def fix(self, task: AgentTask) -> AgentOutcome:
        if self.action(task):
            return AgentOutcome()
        return await AutofixAgent().fix(task)


def fix_with(repo: Path, agent: Hook) -> dict[str, UnitResult]:
    request = FixRequest(cwd=repo, progress=False)
    report = asyncio.run(run_fix(request, Settings(max_parallel_files=1), agent=agent))
    return {result.path: result for result in report.results}


def test_the_user_hooks_never_run_for_a_reset_of_a_pooled_tree(make) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["F541"])})
    marker = repo.parent / "post-checkout-ran"
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\necho ran >> {marker}\n")
    hook.chmod(0o755)
    results = fix_with(repo, Hook(lambda task: None))
    assert all(result.commit for result in results.values())
    assert not marker.exists()


def test_the_agent_gets_a_repository_of_its_own_at_the_base(make) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["F541"])})
    base = sh(repo, "rev-parse", "HEAD").strip()
    seen = []

    def look(task: AgentTask) -> None:
        tree = task.workspace
        seen.append(
            (
                sh(tree, "rev-parse", "--absolute-git-dir").strip(),
                sh(tree, "rev-parse", "HEAD").strip(),
                sh(tree, "status", "--porcelain", "--untracked-files=all"),
                sh(tree, "for-each-ref"),
            )
        )
        identity = ("-c", "user.name=a", "-c", "user.email=a@b")
        sh(tree, *identity, "commit", "-q", "--allow-empty", "-m", "the agent's")
        sh(tree, "branch", "mine")

    results = fix_with(repo, Hook(look))
    assert all(result.commit for result in results.values())
    for (git_dir, head, status, refs), result in zip(seen, results.values(), strict=True):
        assert git_dir.endswith("/tree/.git"), result.path
        assert (head, status, refs) == (base, "", ""), result.path
    assert sh(repo, "for-each-ref", "--format=%(refname)") == "refs/heads/main\n"


def test_a_change_to_stomper_own_repository_of_the_tree_fails_the_unit(make) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["F541"])})

    def tamper(task: AgentTask) -> None:
        if task.unit.path == "a.py":
            (task.workspace.parent / "git" / "HEAD").write_text("0" * 40 + "\n")

    results = fix_with(repo, Hook(tamper))
    assert results["a.py"].status == "failed"
    assert "stomper's own repository of its workspace (git/HEAD)" in (results["a.py"].reason or "")
    assert results["b.py"].commit  # in the same slot, made again
    assert sh(repo, "status", "--porcelain") == ""


def test_a_tree_swapped_for_a_link_to_the_checkout_never_leads_a_reset_there(make) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["F541"])})
    (repo / "notes.txt").write_text("the user's untracked notes\n")

    def swap(task: AgentTask) -> bool:
        if task.unit.path != "a.py":
            return False
        shutil.rmtree(task.workspace)
        task.workspace.symlink_to(repo)
        return True

    results = fix_with(repo, Hook(swap))
    assert results["a.py"].status == "failed"
    assert results["b.py"].commit
    assert (repo / "notes.txt").read_text() == "the user's untracked notes\n"
    assert sh(repo, "status", "--porcelain") == "?? notes.txt\n"


# Spaces in memory ---------------------------------------------------------------------


class Recorder:
    """Changes nothing; notes where each unit's workspace is, while it works there."""

    name = "recorder"
    seen: list[tuple[Path, bool]] = []

    def __init__(self, *, needs_tree: bool) -> None:
        self.needs_tree = needs_tree

    async def fix(self, task: AgentTask) -> AgentOutcome:
        Recorder.seen.append((task.workspace, task.file.is_file()))
        return AgentOutcome()


def in_a_tree(settings: object) -> Recorder:
    return Recorder(needs_tree=True)


def in_scratch(settings: object) -> Recorder:
    return Recorder(needs_tree=False)


@pytest.mark.skipif(not MEMORY.is_dir(), reason="no memory file system at /dev/shm")
@pytest.mark.parametrize("agent", ["in_a_tree", "in_scratch"])
def test_spaces_are_made_in_memory_and_removed_with_the_run(make, capsys, agent) -> None:
    Recorder.seen = []
    repo = make({f"m{n}.py": module(["F401"]) for n in range(3)})
    _, doc = run_json(repo, "--agent", f"tests.test_workspace:{agent}", capsys=capsys)
    assert {unit["status"] for unit in doc["units"]} == {"unchanged"}, doc["units"]
    assert len(Recorder.seen) == 3
    for workspace, held_the_file in Recorder.seen:
        assert held_the_file
        assert workspace.is_relative_to(MEMORY), workspace
        assert workspace.parent.name.startswith(f"stomper-{doc['run_id']}-") or (
            workspace.parent.parent.name.startswith(f"stomper-{doc['run_id']}-")
        ), workspace
        assert not workspace.exists()
    assert memory_folders(doc["run_id"]) == []
    assert list((repo / ".git" / "stomper" / "worktrees").iterdir()) == []
