"""Durable runs: killed at any point, a run resumes and lands every unit exactly once.

The kill points are made exact by a shim in front of the real git, or by a hook git runs
when a ref moves: after the n-th call of a given git command has done its work, or the n-th
move of the branch, the shim or hook writes its pid to a marker file and sleeps, holding
stomper at that point until the test kills it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from stomper.testing.repos import RUFF_CONFIG, make_repo, module
from tests.conftest import sh

UNITS = 60
# A move of the branch lands a chain of up to 16 commits, so 60 units make at least four
# moves: the third is mid-way in every run.
MID_WAY = 3

# Counts its calls; at the STOMPER_TEST_HANG_AT-th it leaves its pid in the marker file and
# waits, holding stomper where it waits for it until the test kills it or lets it go (by
# making the release file).
HANG_AT_COUNT = """hang_at_count() {
  exec 9>>"$STOMPER_TEST_HANG_DIR/lock"
  flock 9
  n=$(( $(cat "$STOMPER_TEST_HANG_DIR/count" 2>/dev/null || echo 0) + 1 ))
  echo "$n" > "$STOMPER_TEST_HANG_DIR/count"
  flock -u 9
  if [ "$n" = "$STOMPER_TEST_HANG_AT" ]; then
    echo $$ > "$STOMPER_TEST_HANG_DIR/marker"
    for _ in $(seq 12000); do
      [ -e "$STOMPER_TEST_HANG_DIR/release" ] && break
      sleep 0.05
    done
  fi
}
"""

SHIM = (
    "#!/bin/bash\n"
    + HANG_AT_COUNT
    + """"$STOMPER_TEST_REAL_GIT" "$@"
rc=$?
case " $* " in
  *" $STOMPER_TEST_HANG_VERB "*) hang_at_count ;;
esac
exit $rc
"""
)

# git runs it once a ref transaction is committed: the branch has moved, and stomper has not
# yet heard so from its `git update-ref --stdin`.
MOVED_HOOK = (
    "#!/bin/bash\n"
    + HANG_AT_COUNT
    + """[ "$1" = committed ] || exit 0
grep -q " refs/heads/main$" || exit 0
hang_at_count
"""
)


def project() -> dict[str, str]:
    return {"pyproject.toml": RUFF_CONFIG} | {
        f"m{i:02d}.py": module(["F401"]) for i in range(UNITS)
    }


def stomper(repo: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stomper", *args, "--repo", str(repo), "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def agent_env(tmp_path: Path, delay: str = "0.05") -> dict[str, str]:
    return {
        **os.environ,
        "STOMPER_AGENT": "stomper.testing.agents:counting",
        "STOMPER_TEST_AGENT_DELAY": delay,
        "STOMPER_TEST_AGENT_LOG": str(tmp_path / "calls.log"),
        "STOMPER_MAX_PARALLEL_FILES": "4",
    }


def shim_env(tmp_path: Path, env: dict[str, str], verb: str, at: int) -> dict[str, str]:
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir(exist_ok=True)
    shim = shim_dir / "git"
    shim.write_text(SHIM)
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    hang = tmp_path / "hang"
    hang.mkdir(exist_ok=True)
    real = shutil.which("git")
    assert real
    return {
        **env,
        "PATH": f"{shim_dir}{os.pathsep}{env['PATH']}",
        "STOMPER_TEST_REAL_GIT": real,
        "STOMPER_TEST_HANG_VERB": verb,
        "STOMPER_TEST_HANG_AT": str(at),
        "STOMPER_TEST_HANG_DIR": str(hang),
    }


def moved_hook_env(tmp_path: Path, repo: Path, env: dict[str, str], at: int) -> dict[str, str]:
    """Hold stomper once the branch made its ``at``-th move (a reference-transaction hook)."""
    hook = repo / ".git" / "hooks" / "reference-transaction"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(MOVED_HOOK)
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    hang = tmp_path / "hang"
    hang.mkdir(exist_ok=True)
    return {**env, "STOMPER_TEST_HANG_AT": str(at), "STOMPER_TEST_HANG_DIR": str(hang)}


def wait_for(condition, what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().split() if log.exists() else []


def landed_units(repo: Path) -> list[str]:
    out = sh(repo, "log", "--format=%(trailers:key=Stomper-Unit,valueonly)", "HEAD")
    return [line for line in out.splitlines() if line]


def assert_nothing_left(repo: Path) -> None:
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    state = repo / ".git" / "stomper"
    assert not any((state / "worktrees").glob("*/*"))
    assert not any((state / "locks").iterdir())
    assert sh(repo, "branch", "--list").split() == ["*", "main"]
    assert sh(repo, "status", "--porcelain") == ""


@pytest.fixture(scope="module")
def reference_tree(tmp_path_factory) -> str:
    """The tree an uninterrupted run ends with."""
    tmp = tmp_path_factory.mktemp("reference")
    repo = make_repo(tmp / "repo", project())
    done = stomper(repo, "fix", env=agent_env(tmp, delay="0"))
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err.decode()
    return sh(repo, "rev-parse", "HEAD^{tree}").strip()


def kill_and_resume(tmp_path: Path, repo: Path, child: subprocess.Popen[bytes], how: int) -> None:
    """Stop ``child`` with ``how``; then resume, and check the run ended whole."""
    landed_before = set(landed_units(repo))
    calls_before = len(calls(tmp_path))
    child.send_signal(how)
    child.communicate(timeout=120)
    marker = tmp_path / "hang" / "marker"
    if marker.exists():
        os.kill(int(marker.read_text()), signal.SIGKILL)
    if how == signal.SIGKILL:
        assert child.returncode == -signal.SIGKILL
    else:
        assert child.returncode == 130
    resumed = stomper(repo, "resume", env=agent_env(tmp_path))
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()

    counts = Counter(landed_units(repo))
    assert set(counts) == {f"m{i:02d}.py" for i in range(UNITS)}
    assert max(counts.values()) == 1, "a unit landed twice"
    again = set(calls(tmp_path)[calls_before:])
    assert not again & landed_before, "a unit that had landed was worked again"
    assert_nothing_left(repo)


# A landing takes git's index lock, moves the branch through a long-lived `git update-ref
# --stdin`, then brings the checkout along with one `git read-tree -m -u` into a copy of the
# index that then replaces it: held after the branch moved, or after that read-tree, a landing
# has not yet recorded its units, and the lock is still taken. Units
# that queue up land together as one landing, so only with one unit at a time is the 60th
# landing the last.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("verb", "at", "parallel", "point"),
    [
        ("agent", 1, 4, "before any landing"),
        ("moved", MID_WAY, 4, "mid-way, the branch moved, the checkout not yet"),
        ("moved", UNITS, 1, "inside the last landing"),
        ("read-tree", MID_WAY, 4, "mid-way, git brought the checkout along, the index not yet"),
        ("prune", 1, 4, "after the last landing, before the report"),
    ],
)
def test_sigkill_at_each_point_then_resume(
    tmp_path, reference_tree, verb, at, parallel, point
) -> None:
    repo = make_repo(tmp_path / "repo", project())
    if verb == "agent":
        # The first agent call: with the agent taking seconds, nothing can have landed.
        child = stomper(repo, "fix", env=agent_env(tmp_path, delay="3"))
        wait_for(lambda: len(calls(tmp_path)) >= at, point)
    else:
        if verb == "moved":
            # One unit at a time lands alone only while landing is quicker than a unit.
            delay = "0.3" if parallel == 1 else "0.05"
            env = moved_hook_env(tmp_path, repo, agent_env(tmp_path, delay), at)
        else:
            env = shim_env(tmp_path, agent_env(tmp_path), verb, at)
        env["STOMPER_MAX_PARALLEL_FILES"] = str(parallel)
        child = stomper(repo, "fix", env=env)
        wait_for((tmp_path / "hang" / "marker").exists, point)
    kill_and_resume(tmp_path, repo, child, signal.SIGKILL)
    assert sh(repo, "rev-parse", "HEAD^{tree}").strip() == reference_tree


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_then_resume(tmp_path, reference_tree, how) -> None:
    repo = make_repo(tmp_path / "repo", project())
    child = stomper(repo, "fix", env=agent_env(tmp_path, delay="0.2"))
    wait_for(lambda: len(landed_units(repo)) >= 10, "ten landings")
    kill_and_resume(tmp_path, repo, child, how)
    assert sh(repo, "rev-parse", "HEAD^{tree}").strip() == reference_tree


def runs_json(repo: Path) -> tuple[list[dict], str]:
    """``stomper runs --json``: the runs, and what it said on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "stomper", "runs", "--json", "--repo", str(repo)],
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout), done.stderr.decode()


def run_ids(repo: Path) -> list[str]:
    return [path.name for path in (repo / ".git" / "stomper" / "runs").iterdir()]


def landed_commits_of(repo: Path, run_id: str) -> int:
    out = sh(repo, "log", "--format=%(trailers:key=Stomper-Run,valueonly)", "HEAD")
    return sum(1 for line in out.splitlines() if line.strip() == run_id)


def test_the_next_command_after_a_kill_mid_landing_puts_the_checkout_right(
    tmp_path, reference_tree
) -> None:
    """Killed while git brings the checkout along, a run leaves git's index lock, the
    branch moved (git makes the move it was told once stomper's end of its input is gone)
    and staged reverts behind: the next command, whichever, releases the lock and brings
    the landed files along, says so, and a new run then skips nothing."""
    repo = make_repo(tmp_path / "repo", project())
    env = shim_env(tmp_path, agent_env(tmp_path), "read-tree", MID_WAY)
    child = stomper(repo, "fix", env=env)
    wait_for((tmp_path / "hang" / "marker").exists, "a checkout update mid-way")
    child.kill()
    child.communicate(timeout=60)
    os.kill(int((tmp_path / "hang" / "marker").read_text()), signal.SIGKILL)
    # Staged reverts of what landed, once git has made the move it was told; the files
    # written already.
    wait_for(lambda: sh(repo, "status", "--porcelain").startswith("MM "), "the move git was told")
    lock = repo / ".git" / "index.lock"
    assert lock.exists()

    (summary,), said = runs_json(repo)
    (run_id,) = run_ids(repo)
    assert f"removed the index lock that run {run_id} left" in said
    assert "into the index and working tree" in said
    assert not lock.exists()
    assert sh(repo, "status", "--porcelain") == ""
    assert summary["status"] == "crashed"
    assert summary["commits"] == landed_commits_of(repo, run_id) >= MID_WAY

    again = stomper(repo, "fix", "--json", env=agent_env(tmp_path))
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["totals"]["skipped"] == 0
    assert sh(repo, "rev-parse", "HEAD^{tree}").strip() == reference_tree
    assert sh(repo, "status", "--porcelain") == ""


def test_ctrl_c_during_a_landing_counts_what_it_landed(tmp_path) -> None:
    """The landing under way when Ctrl-C comes finishes; its units are recorded, so the
    summary, the journal and `stomper runs` count what the branch holds."""
    repo = make_repo(tmp_path / "repo", project())
    env = moved_hook_env(tmp_path, repo, agent_env(tmp_path), MID_WAY)
    child = stomper(repo, "fix", "--json", env=env)
    wait_for((tmp_path / "hang" / "marker").exists, "a move of the branch mid-way")
    child.send_signal(signal.SIGINT)
    time.sleep(0.5)  # the run is cancelled while the landing waits for git
    (tmp_path / "hang" / "release").touch()
    out, err = child.communicate(timeout=120)
    assert child.returncode == 130, err.decode()
    (run_id,) = run_ids(repo)
    on_branch = landed_commits_of(repo, run_id)
    report = json.loads(out)
    assert report["status"] == "interrupted"
    assert report["totals"]["commits"] == on_branch
    journal = repo / ".git" / "stomper" / "runs" / run_id / "units.jsonl"
    recorded = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sum(1 for unit in recorded if unit["commit"]) == on_branch
    (summary,), _ = runs_json(repo)
    assert summary["commits"] == on_branch
    assert sh(repo, "status", "--porcelain") == ""
