from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from stomper import git
from stomper.cli import main
from stomper.testing.fake_openai import FakeOpenAI
from stomper.testing.repos import RUFF_CONFIG, make_repo
from stomper.workspace import MEMORY


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No user-level git or ruff configuration leaks into a test, and none of stomper's."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in list(__import__("os").environ):
        if name.startswith("STOMPER_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session", autouse=True)
def no_spaces_left_in_memory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs the tests kill leave their spaces in memory, named by run folders below the
    tests' own folder: removed when the tests end, as the folder itself is later."""
    yield
    base = tmp_path_factory.getbasetemp().resolve()
    for folder in MEMORY.glob("stomper-*"):
        owner = folder / "run"
        if owner.is_file() and Path(owner.read_text(encoding="utf-8")).is_relative_to(base):
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    """The fake OpenAI-compatible server on loopback, answering as its defaults have it."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def make(tmp_path: Path) -> Callable[..., Path]:
    """Make a repository under the test's folder: ``make({"a.py": "..."})``.

    It gets the sample ruff configuration unless it brings its own: ruff's default rule set
    changes between releases, and the tests must not.
    """
    count = 0

    def factory(files: Mapping[str, str | bytes], name: str | None = None) -> Path:
        nonlocal count
        count += 1
        return make_repo(
            tmp_path / (name or f"repo{count}"), {"pyproject.toml": RUFF_CONFIG, **files}
        )

    return factory


def run_json(
    repo: Path, *args: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    """Run ``stomper fix --json`` on ``repo``; its exit code and JSON document."""
    code = main(["fix", "--repo", str(repo), "--json", "--no-progress", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def sh(repo: Path, *args: str) -> str:
    return git.git_sync(repo, *args).stdout.decode()


def spaces(repo: Path) -> list[Path]:
    """The units' spaces (scratch folders and trees) the runs of ``repo`` have made and not
    removed: in a run's folder, or in memory where its folder names a folder there."""
    found: list[Path] = []
    for run in (repo / ".git" / "stomper" / "worktrees").glob("*"):
        pointer = run / "spaces"
        folder = Path(pointer.read_text(encoding="utf-8")) if pointer.is_file() else run
        found += [space for space in folder.glob("*") if space.is_dir()]
    return found


def memory_folders(run_id: str) -> list[Path]:
    """The folders of spaces in memory of the run ``run_id`` that are still there."""
    return list(MEMORY.glob(f"stomper-{run_id}-*"))


def ops_log(repo: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The lines of the newest run's ops log (``events.jsonl``) of ``kind`` (None: the units'
    phases)."""
    runs = sorted((repo / ".git" / "stomper" / "runs").glob("*/events.jsonl"))
    newest = max(runs, key=lambda log: log.stat().st_mtime)
    records = [json.loads(line) for line in newest.read_text().splitlines()]
    return [record for record in records if record.get("kind") == kind]


@contextlib.contextmanager
def workers_environment(home: Path, **given: str) -> Iterator[None]:
    """The environment Ray's workers start with (set before their nodes start, restored
    after): no usage report nor auth token, no user-level git or ruff configuration (as
    :func:`isolated_home` keeps from the tests), and ``given``."""
    given = {
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "GIT_CONFIG_NOSYSTEM": "1",
        **given,
    }
    saved = {name: os.environ.get(name) for name in given}
    os.environ.update(given)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
