"""CLI coding agents as child processes, driven against the fake CLI agent in real repos."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import time
from pathlib import Path

import pytest

from stomper.agents import AgentTask, AttemptFailed, load_agent
from stomper.agents.command import PRESETS, CommandAgent, render, split_template
from stomper.agents.prompt import task_prompt
from stomper.cli import main
from stomper.config import Settings
from stomper.diagnostics.ruff import RuffCollector
from stomper.errors import AgentError
from stomper.testing.fake_cli_agent import LOG_ENV, NEW_FILE, read_log
from stomper.testing.repos import module
from stomper.unit import Unit
from tests.conftest import run_json, sh

FAKE = (sys.executable, "-m", "stomper.testing.fake_cli_agent")


def fake_cmd(*args: str) -> str:
    """An --agent-cmd for the fake agent, quoted as a user would type it."""
    return shlex.join([*FAKE, *args])


def fake_agent(*args: str, timeout: float = 30.0) -> CommandAgent:
    return CommandAgent((*FAKE, *args), timeout=timeout)


def unit_of(repo: Path, path: str) -> Unit:
    found = tuple(asyncio.run(RuffCollector().collect(repo, [path])))
    return Unit(
        index=0,
        path=path,
        base=sh(repo, "rev-parse", "HEAD").strip(),
        diagnostics=found,
        baseline=found,
        base_blob=sh(repo, "rev-parse", f"HEAD:{path}").strip(),
        mode="100644",
    )


def worktree(repo: Path, path: Path) -> Path:
    """A worktree of ``repo`` at HEAD, as each unit gets one."""
    sh(repo, "worktree", "add", "--quiet", "--detach", str(path), "HEAD")
    return path


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that can still run (a zombie cannot edit files)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def big_module(target_bytes: int = 200_000) -> str:
    """A module of about ``target_bytes`` whose thousands of findings make a prompt as big."""
    findings = [f'v{number:05d} = f"x"\n' for number in range(3600)]
    padding = "# " + "p" * 76 + "\n"
    body = "".join(findings)
    return body + padding * max(0, -(-(target_bytes - len(body)) // len(padding)))


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        (
            "claude",
            (
                "claude",
                "-p",
                "--permission-mode",
                "acceptEdits",
                "--output-format",
                "text",
                "--disallowedTools",
                "Bash(git:*)",
            ),
        ),
        (
            "codex",
            (
                "codex",
                "exec",
                "--sandbox",
                "workspace-write",
                "--skip-git-repo-check",
                "--color",
                "never",
                "-",
            ),
        ),
        (
            "aider",
            (
                "aider",
                "--message-file",
                "/scratch/prompt.md",
                "--yes-always",
                "--no-git",
                "--no-auto-commits",
                "--no-dirty-commits",
                "--chat-history-file",
                "/scratch/aider.chat.history.md",
                "--input-history-file",
                "/scratch/aider.input.history",
                "--no-check-update",
                "--no-show-release-notes",
                "--no-analytics",
                "--no-pretty",
                "--no-stream",
                "pkg/my mod.py",
            ),
        ),
        ("cursor", ("cursor-agent", "-p", "--force", "--output-format", "text")),
    ],
)
def test_presets_build_the_documented_argv(preset, expected) -> None:
    agent = CommandAgent.from_settings(preset, Settings(agent_timeout=42))
    argv = agent.argv("pkg/my mod.py", prompt_file="/scratch/prompt.md", scratch_dir="/scratch")
    assert argv == expected
    assert agent.name == preset
    assert agent.timeout == 42
    # Only aider takes the prompt from a file; the others read it from stdin.
    assert agent.prompt_on_stdin is (preset != "aider")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_pass_the_model_after_the_subcommand(preset) -> None:
    agent = CommandAgent.from_settings(preset, Settings(model="big-model"))
    argv = agent.argv("a.py", prompt_file="p", scratch_dir="s")
    head = PRESETS[preset].head
    assert argv[: len(head) + 2] == (*head, "--model", "big-model")


@pytest.mark.parametrize("preset", ["claude", "codex", "aider", "cursor", "command"])
def test_registry_builds_command_agents(preset) -> None:
    agent = load_agent(preset, Settings(agent_cmd="my-agent {file}"))
    assert isinstance(agent, CommandAgent)


def test_template_is_split_like_a_shell_and_filled_per_argument() -> None:
    template = split_template("'my agent' --prompt={prompt_file} --note \"a b\" -- {file}")
    assert template == ("my agent", "--prompt={prompt_file}", "--note", "a b", "--", "{file}")
    argv = render(template, file="dir/with space's.py", prompt_file="/t/p.md", scratch_dir="/t")
    assert argv == ("my agent", "--prompt=/t/p.md", "--note", "a b", "--", "dir/with space's.py")
    # A name that looks like an option is not taken for one.
    assert render(("agent", "{file}"), file="-dash.py", prompt_file="", scratch_dir="")[1] == (
        "./-dash.py"
    )


def test_command_without_agent_cmd_says_to_pass_it() -> None:
    with pytest.raises(AgentError, match="--agent-cmd"):
        CommandAgent.from_settings("command", Settings())
    with pytest.raises(AgentError, match="cannot parse"):
        CommandAgent.from_settings("command", Settings(agent_cmd="agent 'unclosed {file}"))


def test_prompt_goes_to_stdin_unless_the_command_names_a_prompt_file() -> None:
    assert fake_agent("{file}").prompt_on_stdin
    assert not fake_agent("--prompt-file", "{prompt_file}", "{file}").prompt_on_stdin


def test_missing_binary_is_an_agent_error_with_a_hint(make) -> None:
    repo = make({"a.py": module(["F401"])})
    agent = CommandAgent.from_settings("claude", Settings())
    agent.template = ("stomper-no-such-agent-binary", *agent.template[1:])
    task = AgentTask(unit_of(repo, "a.py"), repo)
    with pytest.raises(AgentError, match="not on PATH: install it with `npm install"):
        asyncio.run(agent.fix(task))
    ok, message = asyncio.run(agent.check())
    assert not ok
    assert "npm install -g @anthropic-ai/claude-code" in message
    mine = CommandAgent(("./stomper-missing", "{file}"))
    with pytest.raises(AgentError, match="check --agent-cmd"):
        asyncio.run(mine.fix(task))


def test_check_reports_the_version_of_a_found_binary() -> None:
    agent = CommandAgent((sys.executable, "{file}"), name="py", install="pip install python")
    ok, version = asyncio.run(agent.check())
    assert ok
    assert version.startswith("Python 3.")
    own = CommandAgent((sys.executable, "{file}"))
    ok, message = asyncio.run(own.check())
    assert ok
    assert "found at" in message


@pytest.mark.parametrize("through", ["stdin", "file"])
def test_fix_runs_in_the_worktree_with_the_whole_prompt(make, tmp_path, through, monkeypatch):
    repo = make({"pkg/with space.py": module(["F401", "F541"])})
    log = tmp_path / "agent.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    args = ("{file}",) if through == "stdin" else ("--prompt-file", "{prompt_file}", "{file}")
    agent = fake_agent(*args)
    unit = unit_of(repo, "pkg/with space.py")
    tree = worktree(repo, tmp_path / "tree")
    task = AgentTask(unit, tree, attempt=2, feedback="E999 came back on line 3")

    outcome = asyncio.run(agent.fix(task))

    assert outcome.note is not None and "fake agent: fix" in outcome.note
    assert sh(tree, "status", "--porcelain") == ' M "pkg/with space.py"\n'
    assert "import os" not in (tree / "pkg/with space.py").read_text()
    (entry,) = read_log(log)
    expected = task_prompt(unit.path, unit.diagnostics, feedback=task.feedback)
    assert entry.prompt_bytes == len(expected.encode())
    if through == "file":
        assert entry.prompt_file is not None
        prompt_file = Path(entry.prompt_file)
        assert not prompt_file.is_relative_to(tree)
        assert not prompt_file.is_relative_to(repo)
        assert not prompt_file.exists(), "the prompt's folder is removed afterwards"
    else:
        assert entry.prompt_file is None
    assert (repo / "pkg/with space.py").read_text() == module(["F401", "F541"])


@pytest.mark.parametrize("through", ["stdin", "file"])
def test_a_200kb_file_and_prompt_pass_whole_with_a_small_argv(make, tmp_path, through, monkeypatch):
    source = big_module()
    assert len(source) >= 200_000
    repo = make({"big.py": source})
    log = tmp_path / "agent.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    args = ("{file}",) if through == "stdin" else ("--prompt-file", "{prompt_file}", "{file}")
    unit = unit_of(repo, "big.py")
    prompt = task_prompt(unit.path, unit.diagnostics)
    # Larger than one argv string may be (128 KiB): as an argument it could not start at all.
    assert len(prompt.encode()) > 200_000

    outcome = asyncio.run(fake_agent(*args).fix(AgentTask(unit, repo)))

    assert outcome.note is not None
    (entry,) = read_log(log)
    assert entry.prompt_bytes == len(prompt.encode())
    assert entry.argv_bytes < 4096
    assert 'f"x"' not in (repo / "big.py").read_text()


def test_a_failing_agent_is_a_failed_attempt_with_its_output(make, tmp_path) -> None:
    repo = make({"a.py": module(["F401"])})
    task = AgentTask(unit_of(repo, "a.py"), repo)
    with pytest.raises(AttemptFailed) as failed:
        asyncio.run(fake_agent("--mode", "fail", "{file}").fix(task))
    assert "exited with code 3" in failed.value.feedback
    assert "failing on purpose on a.py" in failed.value.feedback


def test_a_hanging_agent_is_killed_with_its_children_and_edits_nothing(
    make, tmp_path, monkeypatch
) -> None:
    original = module(["F401"])
    repo = make({"a.py": original})
    log = tmp_path / "agent.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    rewrite_after = 2.5
    agent = fake_agent("--mode", "hang", "--rewrite-after", str(rewrite_after), "{file}", timeout=1)
    tree = worktree(repo, tmp_path / "tree")
    task = AgentTask(unit_of(repo, "a.py"), tree)

    started = time.monotonic()
    with pytest.raises(AttemptFailed, match="did not finish within 1s"):
        asyncio.run(agent.fix(task))
    assert time.monotonic() - started < rewrite_after
    (entry,) = read_log(log)
    assert entry.child_pid is not None
    # Past the moment the grandchild would have rewritten the file.
    time.sleep(rewrite_after + 1.0 - (time.monotonic() - started))
    assert not alive(entry.pid)
    assert not alive(entry.child_pid)
    assert group_members(entry.pid) == []
    assert (tree / "a.py").read_text() == original
    assert sh(tree, "status", "--porcelain") == ""


def test_fix_through_the_cli_lands_the_units(make, tmp_path, monkeypatch, capsys) -> None:
    files = {
        "a.py": module(["F401"]),
        "dir with space/b c.py": module(["F541", "E713"]),
        "-dash.py": module(["UP039"]),
    }
    repo = make(files)
    base = sh(repo, "rev-parse", "HEAD").strip()
    log = tmp_path / "agent.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    monkeypatch.setenv("STOMPER_SANDBOX", "off")  # the log is written where a sandbox hides it
    monkeypatch.setenv("STOMPER_AGENT_CMD", fake_cmd("--mode", "fix", "{file}"))
    code = main(["fix", "--repo", str(repo), "--agent", "command", "--json", "--no-progress"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, [(u["path"], u["status"], u["reason"], u["remaining"]) for u in doc["units"]]
    by_path = {unit["path"]: unit for unit in doc["units"]}
    assert set(by_path) == set(files)
    assert all(unit["status"] == "fixed" and unit["commit"] for unit in doc["units"]), doc
    assert len(sh(repo, "rev-list", f"{base}..HEAD").split()) == 3
    assert sorted(entry.file for entry in read_log(log)) == sorted(
        ["a.py", "dir with space/b c.py", "./-dash.py"]
    )
    assert sh(repo, "status", "--porcelain") == ""


def test_a_200kb_file_lands_through_the_cli_with_a_prompt_file(
    make, tmp_path, monkeypatch, capsys
) -> None:
    repo = make({"big.py": big_module()})
    log = tmp_path / "agent.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    monkeypatch.setenv("STOMPER_SANDBOX", "off")  # the log is written where a sandbox hides it
    monkeypatch.setenv("STOMPER_AGENT_CMD", fake_cmd("--prompt-file", "{prompt_file}", "{file}"))
    code, doc = run_json(repo, "--agent", "command", capsys=capsys)
    assert code == 0, doc
    (unit,) = doc["units"]
    assert unit["status"] == "fixed" and unit["commit"]
    (entry,) = read_log(log)
    assert entry.prompt_bytes > 200_000
    assert entry.argv_bytes < 4096


def test_a_hanging_agent_through_the_cli_fails_the_unit_and_lands_nothing(
    make, tmp_path, monkeypatch, capsys
) -> None:
    original = module(["F401"])
    repo = make({"a.py": original})
    base = sh(repo, "rev-parse", "HEAD").strip()
    log = tmp_path / "agent.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    monkeypatch.setenv("STOMPER_SANDBOX", "off")  # the log is written where a sandbox hides it
    monkeypatch.setenv("STOMPER_AGENT_TIMEOUT", "1")
    monkeypatch.setenv(
        "STOMPER_AGENT_CMD", fake_cmd("--mode", "hang", "--rewrite-after", "2", "{file}")
    )
    started = time.monotonic()
    code, doc = run_json(repo, "--agent", "command", capsys=capsys)
    assert code == 1
    (unit,) = doc["units"]
    assert unit["status"] == "failed"
    assert unit["commit"] is None
    assert "1s" in unit["reason"], unit
    (entry,) = read_log(log)
    assert entry.child_pid is not None
    time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
    assert not alive(entry.pid) and not alive(entry.child_pid)
    assert (repo / "a.py").read_text() == original
    assert sh(repo, "rev-parse", "HEAD").strip() == base
    assert sh(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize(
    ("mode", "named"), [("new-file", NEW_FILE), ("other-file", "b.py"), ("suppress", "noqa")]
)
def test_an_agent_that_oversteps_lands_nothing(make, monkeypatch, capsys, mode, named) -> None:
    repo = make({"a.py": module(["F401", "F821"]), "b.py": "X = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    monkeypatch.setenv("STOMPER_AGENT_CMD", fake_cmd("--mode", mode, "{file}"))
    monkeypatch.setenv("STOMPER_MAX_ATTEMPTS", "1")
    code, doc = run_json(repo, "--agent", "command", capsys=capsys)
    (unit,) = doc["units"]
    assert unit["status"] == "failed", unit
    assert unit["commit"] is None
    assert named in unit["reason"], unit
    assert code == 1
    assert sh(repo, "rev-parse", "HEAD").strip() == base
    assert not (repo / NEW_FILE).exists()
    assert sh(repo, "status", "--porcelain") == ""


def test_the_agent_cmd_must_be_given_for_the_command_agent(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    code = main(["fix", "--repo", str(repo), "--agent", "command", "--json", "--no-progress"])
    assert code == 2
    assert "--agent-cmd" in capsys.readouterr().err


def test_fake_agent_runs_without_a_log(make) -> None:
    repo = make({"a.py": module(["F401"])})
    asyncio.run(fake_agent("{file}").fix(AgentTask(unit_of(repo, "a.py"), repo)))
    assert "import os" not in (repo / "a.py").read_text()


def test_a_file_name_holding_a_placeholder_is_not_expanded_again() -> None:
    template = ("agent", "--prompt", "{prompt_file}", "--dir={scratch_dir}", "{file}")
    name = "{prompt_file}{scratch_dir}{file}.py"
    argv = render(template, file=name, prompt_file="/t/p.md", scratch_dir="/t")
    assert argv == ("agent", "--prompt", "/t/p.md", "--dir=/t", name)


def test_a_file_named_like_a_placeholder_lands_through_the_cli(make, monkeypatch, capsys):
    repo = make({"{prompt_file}.py": module(["F401"])})
    monkeypatch.setenv("STOMPER_AGENT_CMD", fake_cmd("--prompt-file", "{prompt_file}", "{file}"))
    code, doc = run_json(repo, "--agent", "command", capsys=capsys)
    (unit,) = doc["units"]
    assert code == 0, unit
    assert unit["status"] == "fixed" and unit["commit"]
    assert "import os" not in sh(repo, "show", "HEAD:{prompt_file}.py")
