"""Units worked together: many files of one tree, one call of the agent and one check per tool."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from stomper.agents import AgentOutcome, AgentTask
from stomper.diagnostics.ruff import ruff_binary
from stomper.testing.repos import make_repo, module
from tests.conftest import memory_folders, run_json, sh

SELECT = '[tool.ruff.lint]\nselect = ["B", "F", "I"]\n'
# ruff's fix for B009 makes `getattr(x, "attr")` a useless expression (B018).
HELD_BACK = 'import os\n\n\ndef f(x):\n    getattr(x, "attr")\n'


def project(files: int) -> dict[str, str]:
    """Files ruff fixes whole (unsorted imports, one unused), one whose B009 fix it must
    hold back, and a package of the project's own for the sorting to know."""
    sorting = "import sys\nimport app\nimport os\n\nprint(sys, app)\n"
    return {
        "pyproject.toml": SELECT,
        "app/__init__.py": "",
        "held.py": HELD_BACK,
        **{f"pkg/m{n}.py": sorting for n in range(files)},
    }


def logging_ruff(folder: Path, log: Path) -> Path:
    """A folder whose ``ruff`` writes each of its command lines to ``log``, then is ruff."""
    folder.mkdir()
    shim = folder / "ruff"
    shim.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {ruff_binary()} "$@"\n')
    shim.chmod(0o755)
    return folder


def test_units_worked_together_share_a_ruff_run_and_land_as_ruff_fixes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    files = project(11)
    reference = make_repo(tmp_path / "reference", files)
    subprocess.run(
        [ruff_binary(), "check", "--fix", "--no-cache", "--quiet", "."], cwd=reference, check=False
    )
    log = tmp_path / "ruff.log"
    shims = logging_ruff(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    repo = make_repo(tmp_path / "repo", files)

    code, doc = run_json(repo, "-j", "1", capsys=capsys)

    units = {unit["path"]: unit for unit in doc["units"]}
    assert code == 1, units  # held.py is partial
    held = units.pop("held.py")
    assert held["status"] == "partial" and "B018" in held["reason"], held
    assert {unit["status"] for unit in units.values()} == {"fixed"}
    for name in units:
        assert (repo / name).read_bytes() == (reference / name).read_bytes(), name
    assert (repo / "held.py").read_text() == HELD_BACK.removeprefix("import os\n")
    # The files were fixed several at a time, each group in one call of ruff.
    together = [
        line.split(" -- ", 1)[1].split()
        for line in log.read_text().splitlines()
        if "--fix-only" in line and " -- " in line
    ]
    assert together and all(len(paths) > 1 for paths in together), together
    assert sorted(path for paths in together for path in paths) == sorted([*units, "held.py"])
    # One commit for each file, as ever, and nothing left behind.
    assert len(sh(repo, "log", "--format=%H", "HEAD~12..HEAD").split()) == 12
    assert sh(repo, "status", "--porcelain") == ""
    assert memory_folders(doc["run_id"]) == []


def test_units_are_worked_alone_when_the_checkouts_settings_are_not_the_commits(
    make, capsys
) -> None:
    # A tree holds the committed settings; the run's findings come from the checkout's.
    repo = make({f"m{n}.py": module(["F401", "F541"]) for n in range(8)})
    (repo / "ruff.toml").write_text('[lint]\nselect = ["F401"]\n')
    code, doc = run_json(repo, "-j", "1", capsys=capsys)
    assert code == 0
    assert {unit["status"] for unit in doc["units"]} == {"fixed"}
    assert all([diag["code"] for diag in unit["fixed"]] == ["F401"] for unit in doc["units"]), doc[
        "units"
    ]
    assert all('f"hello"' in (repo / f"m{n}.py").read_text() for n in range(8))


class Cheater:
    """Fixes F401 by deleting the import, as ruff does, but in ``cheat.py`` it silences the
    finding with a ``# noqa`` instead; alone or many files at once alike."""

    name = "cheater"
    needs_tree = False
    deterministic = True

    async def fix(self, task: AgentTask) -> AgentOutcome:
        source = task.file.read_text()
        if task.unit.path == "cheat.py":
            task.file.write_text(source.replace("import os\n", "import os  # noqa\n"))
        else:
            task.file.write_text(source.replace("import os\n", ""))
        return AgentOutcome()

    async def fix_many(self, tasks: list[AgentTask]) -> list[AgentOutcome]:
        return [await self.fix(task) for task in tasks]


def cheater(settings: object) -> Cheater:
    return Cheater()


def test_the_guardrails_refuse_a_unit_worked_together_as_they_refuse_it_alone(make, capsys) -> None:
    files = {f"m{n:02d}.py": module(["F401"]) for n in range(40)}
    repo = make({**files, "cheat.py": module(["F401"])})
    code, doc = run_json(repo, "-j", "1", "--agent", "tests.test_together:cheater", capsys=capsys)
    units = {unit["path"]: unit for unit in doc["units"]}
    assert code == 1
    cheat = units.pop("cheat.py")
    assert cheat["status"] == "failed" and "suppressions" in cheat["reason"], cheat
    assert {unit["status"] for unit in units.values()} == {"fixed"}
    assert "noqa" not in (repo / "cheat.py").read_text()
    assert sh(repo, "status", "--porcelain") == ""


class Meeting:
    """Its fixes together are refused (a ``# noqa``), so each unit is worked alone; alone,
    the units of ``a.py`` and ``b.py`` each wait for the other to be worked too."""

    name = "meeting"
    needs_tree = False
    deterministic = True
    waiting: dict[str, asyncio.Event] = {}

    async def fix_many(self, tasks: list[AgentTask]) -> list[AgentOutcome]:
        for task in tasks:
            task.file.write_text(
                task.file.read_text().replace("import os\n", "import os  # noqa\n")
            )
        return [AgentOutcome() for _ in tasks]

    async def fix(self, task: AgentTask) -> AgentOutcome:
        if task.unit.path in ("a.py", "b.py"):
            here = self.waiting.setdefault(task.unit.path, asyncio.Event())
            here.set()
            other = self.waiting.setdefault(
                "b.py" if task.unit.path == "a.py" else "a.py", asyncio.Event()
            )
            await asyncio.wait_for(other.wait(), 10)
        task.file.write_text(task.file.read_text().replace("import os\n", ""))
        return AgentOutcome()


def meeting(settings: object) -> Meeting:
    Meeting.waiting = {}
    return Meeting()


def test_the_units_of_a_group_left_to_be_worked_alone_are_worked_side_by_side(make, capsys) -> None:
    repo = make(
        {name: module(["F401"]) for name in ("a.py", "b.py", *(f"m{n}.py" for n in range(7)))}
    )
    code, doc = run_json(repo, "-j", "2", "--agent", "tests.test_together:meeting", capsys=capsys)
    assert code == 0, [(unit["path"], unit["reason"]) for unit in doc["units"]]
    assert {unit["status"] for unit in doc["units"]} == {"fixed"}
