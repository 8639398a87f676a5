"""``--executor ray``: units produced as Ray tasks, landed here; a local Ray (2 CPUs)
shared by the module's tests, and a two-node cluster that loses a node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stomper.cli import main
from stomper.cluster_worker import FOLDER
from stomper.report import EXIT_INTERRUPTED
from stomper.testing.agents import DELAY_ENV, DIE_ONCE_ENV
from stomper.testing.repos import module
from tests.conftest import sh, workers_environment

ray = pytest.importorskip("ray") if not os.environ.get("STOMPER_REQUIRE_RAY") else __import__("ray")

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local Ray for the module; the folder the dying agent marks units in (what the
    workers are to see of the environment is set before they start)."""
    marks = tmp_path_factory.mktemp("marks")
    home = tmp_path_factory.mktemp("workers-home")
    with workers_environment(home, **{DIE_ONCE_ENV: str(marks)}):
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield marks
        finally:
            ray.shutdown()


def fix_json(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = main(["fix", "--repo", str(repo), "--no-progress", "--json", *args])
    captured = capsys.readouterr()
    assert captured.out, captured.err
    return code, json.loads(captured.out)


FILES = {f"pkg/m{n}.py": module(["F401", "E713"]) for n in range(6)}


def test_units_worked_on_ray_land_here_as_the_local_executor_lands_them(
    make, capsys, local_ray
) -> None:
    here, there = make(FILES), make(FILES)

    code, local = fix_json(here, capsys, "-j", "2")
    assert code == 0, local
    code, remote = fix_json(there, capsys, "-j", "2", "--executor", "ray")

    assert code == 0 and remote["status"] == "completed", remote
    assert remote["totals"]["commits"] == local["totals"]["commits"] == 6
    # The same fixes, to the byte: the trees of the two branches are one tree.
    assert sh(there, "rev-parse", "HEAD^{tree}") == sh(here, "rev-parse", "HEAD^{tree}")
    assert sh(there, "status", "--porcelain") == ""
    sh(there, "fsck", "--strict")
    # The workers' phases reached the ops log: each unit was with its agent, then landed.
    (log,) = (there / ".git" / "stomper" / "runs").glob("*/events.jsonl")
    phases: dict[str, list[str]] = {}
    for record in map(json.loads, log.read_text().splitlines()):
        if "phase" in record:
            phases.setdefault(record["path"], []).append(record["phase"])
    assert sorted(phases) == sorted(FILES)
    assert all(
        "agent" in seen and "verifying" in seen and seen[-1] == "done" for seen in phases.values()
    )
    # The nodes' clones of the base are gone with the run.
    assert not any((Path(tempfile.gettempdir()) / FOLDER).glob(f"{remote['run_id']}-*"))


def test_a_unit_whose_worker_dies_is_sent_again_and_lands_once(
    make, capsys, monkeypatch, local_ray
) -> None:
    monkeypatch.setenv(DIE_ONCE_ENV, str(local_ray))
    repo = make({f"die/m{n}.py": module(["F401"]) for n in range(3)})
    base = sh(repo, "rev-parse", "HEAD").strip()

    code, doc = fix_json(
        repo, capsys, "-j", "2", "--executor", "ray", "--agent", "stomper.testing.agents:dying_once"
    )

    assert code == 0, doc
    assert sorted(unit["status"] for unit in doc["units"]) == ["fixed"] * 3
    # Each unit's first worker died; the one it was sent to next fixed it: one commit each.
    assert sorted(path.name for path in local_ray.iterdir()) == [f"die%m{n}.py" for n in range(3)]
    assert doc["metrics"]["executor"] == {"name": "ray", "resent": 3}
    subjects = sh(repo, "log", "--format=%s", f"{base}..HEAD").splitlines()
    assert sorted(subjects) == [f"fix(ruff): resolve 1 diagnostic in die/m{n}.py" for n in range(3)]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["--max-calls", "3", "--agent", "openai", "--model", "m"],
            "a budget is counted on this machine",
        ),
        (["-j", "auto", "--agent", "openai", "--model", "m"], "-j auto learns from the answers"),
        (
            ["--agent", "command", "--agent-cmd", "true {file}", "--sandbox", "off"],
            "runs without a sandbox",
        ),
    ],
)
def test_what_ray_cannot_do_yet_is_one_line_and_exit_2(make, capsys, server, args, said) -> None:
    repo = make({"pkg/a.py": module(["F401"])})
    base = sh(repo, "rev-parse", "HEAD").strip()
    code = main(
        ["fix", "--repo", str(repo), "--executor", "ray", "--base-url", server.base_url, *args]
    )
    err = capsys.readouterr().err
    assert code == 2 and said in err and len(err.strip().splitlines()) == 1, err
    assert sh(repo, "rev-parse", "HEAD").strip() == base


def test_doctor_checks_every_node_of_the_cluster(make, capsys, monkeypatch, local_ray) -> None:
    repo = make({"pkg/a.py": "A = 1\n"})
    monkeypatch.setenv("COLUMNS", "200")
    code = main(["doctor", "--repo", str(repo), "--executor", "ray"])
    err = capsys.readouterr().err
    assert code == 0, err
    (node,) = [line for line in err.splitlines() if line.lstrip().startswith("node ")]
    assert "ok" in node and "stomper 0.1.0" in node and "ruff" in node and "git version" in node
    assert "1 nodes alive" in err


def test_ctrl_c_interrupts_a_run_on_ray_and_resume_goes_on_there(
    make, capsys, monkeypatch, local_ray
) -> None:
    """The run in a child of its own, on a local Ray of its own: interrupted while its units
    are with the agent, then resumed here."""
    repo = make({f"stop/m{n}.py": module(["F401"]) for n in range(4)})
    base = sh(repo, "rev-parse", "HEAD").strip()
    clones = Path(tempfile.gettempdir()) / FOLDER
    before = set(clones.glob("*/spaces-*"))
    env = {**os.environ, DELAY_ENV: "60", "RAY_AUTH_MODE": "disabled"}
    argv = [sys.executable, "-m", "stomper", "fix", "--repo", str(repo), "--no-progress"]
    argv += ["-j", "2", "--executor", "ray", "--agent", "stomper.testing.agents:delayed"]
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not set(clones.glob("*/spaces-*")) - before:
        time.sleep(0.05)
    time.sleep(1.0)  # the workers' first agent calls are under way, 60 s each
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)

    assert child.returncode == EXIT_INTERRUPTED, err.decode()
    assert sh(repo, "rev-parse", "HEAD").strip() == base
    monkeypatch.setenv(DELAY_ENV, "0")
    code = main(["resume", "--repo", str(repo), "--no-progress", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["metrics"]["executor"]["name"] == "ray", doc
    assert sorted(unit["status"] for unit in doc["units"]) == ["fixed"] * 4
    assert len(sh(repo, "rev-list", f"{base}..HEAD").split()) == 4
    assert sh(repo, "status", "--porcelain") == ""
