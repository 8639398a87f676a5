"""CLI agents are contained: each attack seen in the wild, as a real malicious agent script
(``tests/agents/``), run through ``stomper fix --agent command`` with the sandbox on and
off. git itself is the oracle of the user's repository."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stomper.agents import AgentOutcome, AgentTask
from stomper.agents.autofix import AutofixAgent
from stomper.diagnostics import Diagnostic
from stomper.diagnostics.ruff import RuffCollector
from stomper.plan import Scope, make_plan
from stomper.repository import open_repository
from stomper.testing.repos import module
from stomper.workflow.pipeline import Pipeline, Produced
from stomper.workspace import Workspaces
from tests.conftest import run_json, sh


def by_path(doc: dict) -> dict[str, dict]:
    return {unit["path"]: unit for unit in doc["units"]}


# The bytes that land ---------------------------------------------------------------------


class LateWriter(RuffCollector):
    """ruff, and, while it checks the unit's changed bytes, a writer that appends ``# noqa``
    to the file in the workspace: what a process an agent left behind could do then."""

    def __init__(self) -> None:
        super().__init__()
        self.workspace: Path | None = None
        self.wrote = False

    async def collect_source(self, root: Path, path: str, source: bytes) -> list[Diagnostic]:
        found = await super().collect_source(root, path, source)
        if self.workspace is not None and source != (root / path).read_bytes():
            with (self.workspace / path).open("a", encoding="utf-8") as handle:
                handle.write("import os  # noqa\n")
            self.wrote = True
        return found


class Recording:
    """autofix, telling :class:`LateWriter` where the unit's workspace is."""

    name = "recording"

    def __init__(self, writer: LateWriter, *, needs_tree: bool) -> None:
        self.writer = writer
        self.needs_tree = needs_tree
        self.inner = AutofixAgent()

    async def fix(self, task: AgentTask) -> AgentOutcome:
        self.writer.workspace = task.workspace
        return await self.inner.fix(task)


@pytest.mark.parametrize("tree", [True, False], ids=["tree", "scratch"])
def test_the_bytes_that_land_are_the_bytes_that_were_verified(make, tree) -> None:
    repo = make({"a.py": module(["F401", "F541"])})
    writer = LateWriter()

    async def produce() -> tuple[Produced, bytes]:
        plan = await make_plan(await open_repository(repo), [RuffCollector()], Scope())
        (unit,) = plan.units
        workspaces = Workspaces(repo, repo / ".git" / "stomper" / "worktrees" / "t")
        agent = Recording(writer, needs_tree=tree)
        pipeline = Pipeline("t", workspaces, agent, [writer], None, tree=tree)
        try:
            produced = await pipeline.produce(unit, lambda phase: None)
            assert produced.patch is not None, produced.result
            return produced, await workspaces.blobs.read(produced.patch.new_blob)
        finally:
            await workspaces.aclose()
            await writer.aclose()
            workspaces.close()

    produced, blob = asyncio.run(produce())
    assert writer.wrote, "the late write happened while the unit was verified"
    assert produced.result.status == "fixed"
    assert b"noqa" not in blob
    assert b"import os" not in blob and b'f"' not in blob


# Symlinks, submodules ---------------------------------------------------------------------


def test_a_tracked_symlink_is_never_a_unit_and_nothing_is_written_through_it(
    make, tmp_path, capsys
) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text(module(["F401"]))
    repo = make({"a.py": module(["F401"])})
    (repo / "evil.py").symlink_to("../outside.py")
    (repo / "twin.py").symlink_to("a.py")
    sh(repo, "add", "evil.py", "twin.py")
    sh(repo, "commit", "-qm", "links")
    code, doc = run_json(repo, capsys=capsys)
    units = by_path(doc)
    assert units["a.py"]["status"] == "fixed"
    for link in ("evil.py", "twin.py"):
        assert units[link]["status"] == "skipped", units[link]
        assert "symlink" in units[link]["reason"]
        assert units[link]["commit"] is None
    # a.py's diagnostics counted once, not once more through twin.py.
    assert doc["totals"]["diagnostics_before"] == units["a.py"]["diagnostics_before"]
    assert outside.read_text() == module(["F401"])
    assert sh(repo, "status", "--porcelain") == ""


def test_a_submodule_is_never_a_unit(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    head = sh(repo, "rev-parse", "HEAD").strip()
    sh(repo, "update-index", "--add", "--cacheinfo", f"160000,{head},vendored.py")
    sh(repo, "commit", "-qm", "a submodule")
    code, doc = run_json(repo, capsys=capsys)
    units = by_path(doc)
    assert units["vendored.py"]["status"] == "skipped"
    assert "submodule" in units["vendored.py"]["reason"]
    assert units["a.py"]["status"] == "fixed"
