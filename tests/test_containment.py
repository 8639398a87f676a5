"""CLI agents are contained: each attack seen in the wild, as a real malicious agent script
(``tests/agents/``), run through ``stomper fix --agent command`` with the sandbox on and
off. git itself is the oracle of the user's repository."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stomper import git, proc
from stomper.agents import AgentOutcome, AgentTask
from stomper.agents.autofix import AutofixAgent
from stomper.cli import main
from stomper.diagnostics import Diagnostic
from stomper.diagnostics.ruff import RuffCollector
from stomper.plan import Scope, make_plan
from stomper.repository import open_repository
from stomper.sandbox import probe
from stomper.testing.repos import module
from stomper.workflow.pipeline import Pipeline, Produced
from stomper.workspace import Workspaces
from tests.conftest import run_json, sh

AGENTS = Path(__file__).parent / "agents"
BWRAP_WORKS = asyncio.run(probe())[0] is not None
needs_bwrap = pytest.mark.skipif(
    not BWRAP_WORKS and not os.environ.get("STOMPER_REQUIRE_BWRAP"),
    reason="bubblewrap is not installed or cannot make a sandbox here",
)
SANDBOXES = [pytest.param("bwrap", marks=needs_bwrap), "off"]


def attack(script: str, *args: str) -> str:
    """The --agent-cmd that runs the malicious agent ``script`` of tests/agents."""
    return shlex.join([sys.executable, str(AGENTS / f"{script}.py"), *args, "{file}"])


def fix(repo: Path, command: str, sandbox: str, capsys, *args: str) -> tuple[int, dict]:
    return run_json(
        repo,
        "--agent",
        "command",
        "--agent-cmd",
        command,
        "--sandbox",
        sandbox,
        "--max-attempts",
        "1",
        "-j",
        "1",
        *args,
        capsys=capsys,
    )


@pytest.fixture
def repo(make) -> Path:
    """A repository with two units (a.py, c.py), a clean file (b.py), and the user's own
    work in progress: a staged new file, an unstaged edit, an untracked file, a hook."""
    repo = make(
        {
            "a.py": module(["F401"]),
            "b.py": "X = 1\n",
            "c.py": module(["F541"]),
            "d.py": "Y = 1\n",
        }
    )
    (repo / "staged.py").write_text("STAGED = 1\n")
    sh(repo, "add", "staged.py")
    (repo / "d.py").write_text("Y = 2\n")
    (repo / "notes.txt").write_text("the user's notes\n")
    hook = repo / ".git" / "hooks" / "pre-push"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    sh(repo, "config", "user.note", "mine")
    return repo


def user_state(repo: Path) -> dict[str, object]:
    """What of the user's repository must never change but by stomper's own commits."""
    common = repo / ".git"
    return {
        "status": sh(repo, "status", "--porcelain=v1", "--untracked-files=all"),
        "head": git.git_sync(repo, "symbolic-ref", "-q", "HEAD", check=False).stdout,
        "refs": sh(repo, "for-each-ref", "--format=%(refname)"),
        "hooks": {path.name: path.read_bytes() for path in (common / "hooks").iterdir()},
        "config": (common / "config").read_bytes(),
        "info": {path.name: path.read_bytes() for path in (common / "info").iterdir()},
        "checkout": {
            path.name: path.read_bytes() for path in repo.iterdir() if path.name != ".git"
        },
    }


def assert_intact(repo: Path, before: dict[str, object], base: str, doc: dict) -> None:
    """The user's repository as it was, but for stomper's commits of the units that landed."""
    after = user_state(repo)
    landed = {unit["path"] for unit in doc["units"] if unit["commit"]}
    checkout_before = dict(before["checkout"])  # type: ignore[call-overload]
    checkout_after = dict(after["checkout"])  # type: ignore[call-overload]
    for path in landed:
        assert checkout_after.pop(path) != checkout_before.pop(path)
    assert checkout_after == checkout_before
    for key in ("status", "head", "refs", "hooks", "config", "info"):
        assert after[key] == before[key], key
    commits = sh(repo, "rev-list", "--reverse", f"{base}..HEAD").split()
    assert len(commits) == len(landed)
    for commit in commits:
        trailers = sh(repo, "log", "-1", "--format=%(trailers:key=Stomper-Unit,valueonly)", commit)
        files = sh(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", commit).split()
        assert files == [trailers.strip()], commit
        assert trailers.strip() in landed
    sh(repo, "fsck", "--strict", "--no-dangling")


def by_path(doc: dict) -> dict[str, dict]:
    return {unit["path"]: unit for unit in doc["units"]}


YOURS = "changed your repository outside its workspace"
OURS = "changed stomper's own repository of its workspace"


@pytest.mark.parametrize("sandbox", SANDBOXES)
@pytest.mark.parametrize(
    ("script", "refused"),
    [
        # Harmless either way: stomper never looks at the tree's .git, nor at its refs.
        ("gitfile", None),
        ("update_ref", YOURS),
        ("write_checkout", YOURS),
        ("plant_hook", YOURS),
        ("branch", YOURS),
        ("poison_config", OURS),
    ],
)
def test_an_attacking_agent_leaves_the_user_repository_as_it_was(
    repo, capsys, script, refused, sandbox
) -> None:
    before = user_state(repo)
    base = sh(repo, "rev-parse", "HEAD").strip()

    code, doc = fix(repo, attack(script), sandbox, capsys)

    units = by_path(doc)
    assert set(units) == {"a.py", "c.py"}
    if sandbox == "bwrap" or refused is None:
        # The attack could not happen (or could do nothing): the agent's own fix lands.
        assert code == 0, units
        assert all(unit["status"] == "fixed" and unit["commit"] for unit in units.values())
    else:
        # Seen, refused, and what it did put back.
        assert code == 1
        for unit in units.values():
            assert unit["status"] == "failed" and unit["commit"] is None, unit
            assert refused in unit["reason"], unit
            assert "NOT put back" not in unit["reason"], unit
    assert_intact(repo, before, base, doc)
    assert not list(repo.glob("pwned-*"))


def test_without_a_sandbox_what_the_agent_left_is_kept_not_lost(repo, capsys) -> None:
    command = ["--agent", "command", "--agent-cmd", attack("write_checkout"), "--sandbox", "off"]
    main(["fix", "--repo", str(repo), "--json", "--no-progress", *command, "a.py"])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    (unit,) = doc["units"]
    assert unit["status"] == "failed"
    assert "put back" in unit["reason"] and "planted.py" in unit["reason"]
    (case,) = (repo / ".git" / "stomper" / "runs" / doc["run_id"] / "quarantine").iterdir()
    assert (case / "checkout" / "planted.py").read_text() == "print('planted by the agent')\n"
    assert "written by the agent" in (case / "checkout" / "b.py").read_text()
    assert "changed your repository outside its workspace" in " ".join(err.split())


def test_without_a_sandbox_the_agent_moving_the_branch_is_undone_and_kept(repo, capsys) -> None:
    base = sh(repo, "rev-parse", "HEAD").strip()
    code, doc = fix(repo, attack("update_ref"), "off", capsys, "a.py")
    (unit,) = doc["units"]
    assert unit["status"] == "failed", unit
    assert "a commit stomper did not make" in unit["reason"]
    assert sh(repo, "rev-parse", "HEAD").strip() == base
    (case,) = (repo / ".git" / "stomper" / "runs" / doc["run_id"] / "quarantine").iterdir()
    ref, old, new = (case / "refs.txt").read_text().split()
    assert (ref, old) == ("refs/heads/main", base)
    assert "BACKDOOR" in sh(repo, "show", f"{new}:b.py")


def processes_with(token: str) -> list[int]:
    """The live processes whose command line holds ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if token.encode() in argv and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def token(tmp_path) -> Iterator[str]:
    """A word to find a malicious agent's leftover processes by; they are killed after."""
    word = f"stomper-test-{tmp_path.name}-{os.getpid()}"
    yield word
    for pid in processes_with(word):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def wait_for(condition, seconds: float = 20.0) -> bool:
    """Whether ``condition`` came true within ``seconds`` (a bound, not a measure)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_background_child_dies_with_the_agent_and_its_late_noqa_never_lands(
    repo, capsys, token, sandbox
) -> None:
    code, doc = fix(repo, attack("late_append", token), sandbox, capsys, "a.py")
    (unit,) = doc["units"]
    assert unit["status"] == "fixed", unit
    assert "noqa" not in sh(repo, "show", f"{unit['commit']}:a.py")
    assert processes_with(token) == []


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_setsid_grandchild_dies_with_the_agent_and_writes_nothing_later(
    repo, capsys, token, sandbox
) -> None:
    before = user_state(repo)
    base = sh(repo, "rev-parse", "HEAD").strip()
    code, doc = fix(repo, attack("setsid_late", token), sandbox, capsys, "a.py")
    (unit,) = doc["units"]
    assert unit["status"] == "fixed", unit
    # A grandchild that outlived the run would write b.py as soon as the workspace is gone.
    assert wait_for(lambda: processes_with(token) == [] or b"LATE" in (repo / "b.py").read_bytes())
    assert processes_with(token) == []
    assert_intact(repo, before, base, doc)


def test_the_group_is_killed_when_the_child_exits_not_only_on_timeout(tmp_path) -> None:
    marker = tmp_path / "late"
    script = f"(sleep 0.3; echo late > {marker}) & echo started"
    done = asyncio.run(proc.run(("sh", "-c", script), reap=True, timeout=30))
    assert done.stdout == b"started\n"
    time.sleep(0.6)
    assert not marker.exists()


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


# The sandbox's setting -------------------------------------------------------------------


def path_without_bwrap(tmp_path: Path, bwrap: str | None = None) -> str:
    """A PATH with git and, if given, a ``bwrap`` of this script's text; no real bwrap."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "git").symlink_to(shutil.which("git"))
    if bwrap is not None:
        (folder / "bwrap").write_text(bwrap)
        (folder / "bwrap").chmod(0o755)
    return str(folder)


def test_bwrap_asked_for_but_missing_is_one_line_and_exit_2(make, tmp_path, monkeypatch, capsys):
    repo = make({"a.py": module(["F401"])})
    monkeypatch.setenv("PATH", path_without_bwrap(tmp_path))
    code = main(
        ["fix", "--repo", str(repo), "--agent", "command", "--agent-cmd", attack("gitfile")]
        + ["--sandbox", "bwrap", "--no-progress"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "bwrap is not installed" in err and "apt-get install bubblewrap" in err
    assert sh(repo, "log", "--format=%s").count("\n") == 1


def test_bwrap_that_cannot_sandbox_is_refused_when_asked_for(make, tmp_path, monkeypatch, capsys):
    repo = make({"a.py": module(["F401"])})
    broken = "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n"
    monkeypatch.setenv("PATH", path_without_bwrap(tmp_path, broken))
    code = main(
        ["fix", "--repo", str(repo), "--agent", "command", "--agent-cmd", attack("gitfile")]
        + ["--sandbox", "bwrap", "--no-progress"]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "cannot make a sandbox here: bwrap: No permissions" in err


def test_auto_without_bwrap_warns_in_one_line_and_runs_uncontained(
    make, tmp_path, monkeypatch, capsys
) -> None:
    repo = make({"a.py": module(["F401"])})
    monkeypatch.setenv("PATH", path_without_bwrap(tmp_path))
    code, doc = run_json(
        repo, "--agent", "command", "--agent-cmd", attack("write_checkout"), capsys=capsys
    )
    (unit,) = doc["units"]
    assert unit["status"] == "failed" and "outside its workspace" in unit["reason"]
    assert sh(repo, "status", "--porcelain") == ""


def test_auto_without_bwrap_warning_names_what_is_not_contained(
    make, tmp_path, monkeypatch, capsys
) -> None:
    repo = make({"a.py": module(["F401"])})
    monkeypatch.setenv("PATH", path_without_bwrap(tmp_path))
    code = main(
        ["fix", "--repo", str(repo), "--agent", "command", "--agent-cmd", attack("gitfile")]
        + ["--no-progress"]
    )
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "no sandbox" in line]
    assert "bwrap is not installed" in line
    assert "write anywhere you can" in line and "files git ignores" in line
    assert code == 0


def test_an_unknown_sandbox_value_is_one_line_and_exit_2(make, capsys, monkeypatch) -> None:
    repo = make({"a.py": module(["F401"])})
    monkeypatch.setenv("STOMPER_SANDBOX", "docker")
    code = main(["fix", "--repo", str(repo), "--no-progress"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "sandbox" in err and "'auto', 'bwrap' or 'off'" in err and "STOMPER_SANDBOX" in err


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_doctor_shows_the_sandbox(make, capsys, monkeypatch, sandbox) -> None:
    repo = make({"a.py": module(["F401"])})
    monkeypatch.setenv("STOMPER_SANDBOX", sandbox)
    main(["doctor", "--repo", str(repo)])
    shown = " ".join(capsys.readouterr().err.split())
    expected = "bwrap (bubblewrap" if sandbox == "bwrap" else "off: CLI agents run uncontained"
    assert f"sandbox │ ok {expected}" in shown
