"""``--executor ray`` on a cluster of two worker nodes (``ray.cluster_utils.Cluster``, on
this machine), one of which is removed while units run on it: its units are sent again,
to the node left, and each lands once."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stomper.cli import main
from stomper.cluster_worker import FOLDER
from stomper.testing.agents import DELAY_ENV
from stomper.testing.repos import module
from tests.conftest import sh, workers_environment

ray = pytest.importorskip("ray") if not os.environ.get("STOMPER_REQUIRE_RAY") else __import__("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.timeout(300)

SECONDS = 4.0
"""What each call of the agent takes: units are on a node long enough to lose it (a worker
whose node's raylet is killed lives on for a moment, and a call that ends within it
returns its result)."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, list[Any]]]:
    """A head that works no unit and two nodes of one CPU each."""
    home = tmp_path_factory.mktemp("workers-home")
    with workers_environment(home, **{DELAY_ENV: str(SECONDS)}):
        made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        nodes = [made.add_node(num_cpus=1) for _ in range(2)]
        ray.init(address=made.address, log_to_driver=False)
        try:
            yield made, nodes
        finally:
            ray.shutdown()
            made.shutdown()


def test_a_node_lost_mid_run_costs_its_units_a_second_send_and_each_lands_once(
    make, capsys, monkeypatch, cluster
) -> None:
    made, nodes = cluster
    monkeypatch.setenv(DELAY_ENV, str(SECONDS))
    repo = make({f"pkg/m{n}.py": module(["F401"]) for n in range(4)})
    base = sh(repo, "rev-parse", "HEAD").strip()
    clones = Path(tempfile.gettempdir()) / FOLDER
    before = set(clones.glob("*/spaces-*"))
    removed: list[float] = []

    def remove_a_node_once_units_run() -> None:
        # A worker's trees are made at its first task, just before its first agent call.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(set(clones.glob("*/spaces-*")) - before) < 2:
            time.sleep(0.02)
        time.sleep(1.0)  # into the agent's call, on both nodes
        made.remove_node(nodes[1], allow_graceful=False)
        removed.append(time.time())

    remover = threading.Thread(target=remove_a_node_once_units_run)
    remover.start()
    argv = ["fix", "--repo", str(repo), "--no-progress", "--json", "-j", "2"]
    code = main([*argv, "--executor", "ray", "--agent", "stomper.testing.agents:delayed"])
    remover.join()
    doc = json.loads(capsys.readouterr().out)

    assert removed, "the node was not removed"
    said = [(unit["path"], unit["status"], unit["reason"]) for unit in doc["units"]]
    assert code == 0 and doc["status"] == "completed", said
    assert sorted(unit["status"] for unit in doc["units"]) == ["fixed"] * 4
    subjects = sh(repo, "log", "--format=%s", f"{base}..HEAD").splitlines()
    assert sorted(subjects) == [f"fix(ruff): resolve 1 diagnostic in pkg/m{n}.py" for n in range(4)]
    assert sh(repo, "status", "--porcelain") == ""
    sh(repo, "fsck", "--strict")
    # Units were at work on the node when it went: they were sent again, to the node left.
    assert doc["metrics"]["executor"]["resent"] >= 1, doc["metrics"]
