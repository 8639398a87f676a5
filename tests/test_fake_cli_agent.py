"""The fake CLI agent itself: what each mode does to a real repository."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from stomper import proc
from stomper.testing.fake_cli_agent import FAIL_CODE, LOG_ENV, NEW_FILE, read_log
from stomper.testing.repos import module
from tests.conftest import sh


def run_fake(repo: Path, *args: str, stdin: bytes | None = None) -> proc.Completed:
    argv = (sys.executable, "-m", "stomper.testing.fake_cli_agent", *args)
    return asyncio.run(proc.run(argv, cwd=repo, stdin=stdin, check=False))


def test_fix_applies_ruff_fixes_and_logs_the_prompt_size(make, tmp_path, monkeypatch) -> None:
    repo = make({"a.py": module(["F401", "E741"])})
    log = tmp_path / "log"
    monkeypatch.setenv(LOG_ENV, str(log))
    done = run_fake(repo, "a.py", stdin=b"x" * 1000)
    assert done.returncode == 0, done
    text = (repo / "a.py").read_text()
    assert "import os" not in text
    assert "l = 1" in text  # E741 has no fix
    (entry,) = read_log(log)
    assert (entry.file, entry.prompt_bytes, entry.mode) == ("a.py", 1000, "fix")
    assert entry.child_pid is None and entry.prompt_file is None


def test_prompt_file_is_read_instead_of_stdin(make, tmp_path, monkeypatch) -> None:
    repo = make({"a.py": module(["F401"])})
    prompt = tmp_path / "prompt.md"
    prompt.write_text("p" * 321)
    log = tmp_path / "log"
    monkeypatch.setenv(LOG_ENV, str(log))
    assert run_fake(repo, "--prompt-file", str(prompt), "a.py").returncode == 0
    (entry,) = read_log(log)
    assert entry.prompt_bytes == 321
    assert entry.prompt_file == str(prompt)


def test_noop_changes_nothing_and_delay_waits(make, tmp_path, monkeypatch) -> None:
    repo = make({"a.py": module(["F401"])})
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "log"))
    started = time.monotonic()
    assert run_fake(repo, "--mode", "noop", "--delay", "0.5", "a.py").returncode == 0
    assert time.monotonic() - started >= 0.5
    assert sh(repo, "status", "--porcelain") == ""
    assert [entry.mode for entry in read_log(tmp_path / "log")] == ["noop"]


@pytest.mark.parametrize(
    ("mode", "status"),
    [
        ("other-file", {" M a.py", " M b.py"}),
        ("new-file", {" M a.py", f"?? {NEW_FILE}"}),
        ("suppress", {" M a.py"}),
    ],
)
def test_overstepping_modes(make, mode, status) -> None:
    repo = make({"a.py": module(["F401", "F821"]), "b.py": "X = 1\n"})
    assert run_fake(repo, "--mode", mode, "a.py").returncode == 0
    assert set(sh(repo, "status", "--porcelain").splitlines()) == status
    if mode == "suppress":
        text = (repo / "a.py").read_text()
        assert "import os  # noqa\n" in text
        assert "return subtotal + 1  # noqa\n" in text


def test_fail_exits_3_with_a_message(make) -> None:
    repo = make({"a.py": module(["F401"])})
    done = run_fake(repo, "--mode", "fail", "a.py")
    assert done.returncode == FAIL_CODE
    assert b"failing on purpose" in done.stderr
    assert sh(repo, "status", "--porcelain") == ""


def test_read_log_of_no_calls(tmp_path) -> None:
    assert read_log(tmp_path / "missing") == []
