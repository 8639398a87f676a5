"""``stomper doctor`` and the checks a run makes of its agent before it starts."""

from __future__ import annotations

import shutil
import socket

from stomper.cli import main
from stomper.testing.fake_openai import FakeOpenAI
from stomper.testing.repos import module
from stomper.workspace import memory_room
from tests.conftest import sh


def doctor(repo, capsys, *args: str) -> tuple[int, str]:
    code = main(["doctor", "--repo", str(repo), *args])
    return code, " ".join(capsys.readouterr().err.split())


def test_doctor_reports_git_tools_and_agent(make, capsys) -> None:
    repo = make({"a.py": "X = 1\n"})
    code, out = doctor(repo, capsys)
    assert code == 0, out
    for needle in ("git", "git worktrees", "repository", "ruff", "mypy", "agent autofix"):
        assert needle in out
    where = "in memory, /dev/shm" if memory_room() is not None else "on disk"
    (line,) = [line for line in out.splitlines() if "workspaces" in line]
    assert f"ok {where}" in line, line


def test_doctor_outside_a_repository(tmp_path, capsys) -> None:
    code, out = doctor(tmp_path, capsys)
    assert code == 1
    assert "run inside a git repository" in out


def test_doctor_checks_the_endpoint_and_model(make, capsys, monkeypatch) -> None:
    repo = make({"a.py": "X = 1\n"})
    with FakeOpenAI(models=("fake",)) as server:
        monkeypatch.setenv("STOMPER_AGENT", "openai")
        monkeypatch.setenv("STOMPER_BASE_URL", server.base_url)
        monkeypatch.setenv("STOMPER_MODEL", "fake")
        code, out = doctor(repo, capsys)
        assert code == 0, out
        assert "serves fake" in out
        monkeypatch.setenv("STOMPER_MODEL", "other")
        code, out = doctor(repo, capsys)
        assert code == 1
        assert "does not list" in out and "'other'" in out


def git_only(tmp_path) -> str:
    """A PATH with git on it and nothing else."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    git = shutil.which("git")
    assert git
    (folder / "git").symlink_to(git)
    return str(folder)


def test_doctor_names_a_missing_cli_agent(make, capsys, monkeypatch, tmp_path) -> None:
    repo = make({"a.py": "X = 1\n"})
    monkeypatch.setenv("PATH", git_only(tmp_path))
    monkeypatch.setenv("STOMPER_AGENT", "claude")
    code, out = doctor(repo, capsys)
    assert code == 1
    assert "claude" in out and "not on PATH" in out


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_fix_refuses_an_unreachable_endpoint_before_any_work(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    head = sh(repo, "rev-parse", "HEAD")
    url = f"http://127.0.0.1:{unused_port()}/v1"
    code = main(
        [
            "fix",
            "--repo",
            str(repo),
            "--no-progress",
            "--agent",
            "openai",
            "--model",
            "m",
            "--base-url",
            url,
        ]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "cannot reach" in err
    assert sh(repo, "rev-parse", "HEAD") == head
    assert not (repo / ".git" / "stomper" / "runs").exists()


def test_fix_refuses_a_missing_cli_agent_before_any_work(
    make, capsys, monkeypatch, tmp_path
) -> None:
    repo = make({"a.py": module(["F401"])})
    monkeypatch.setenv("PATH", git_only(tmp_path))
    code = main(["fix", "--repo", str(repo), "--no-progress", "--agent", "codex"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "codex" in err and "not on PATH" in err


def test_missing_git_is_a_clear_error(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code = main(["fix", "--repo", str(tmp_path), "--no-progress"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "git is not installed" in err
