"""``stomper run``: tasks worked by a real CLI agent (the fake one, a child process),
verified, and landed through the merge queue, with the user's git working beside it."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from stomper.cli import main
from stomper.testing.fake_cli_agent import LOG_ENV, read_log
from stomper.testing.repos import commit_all
from tests.conftest import ops_log, sh

AGENT = (
    f"{shlex.quote(sys.executable)} -m stomper.testing.fake_cli_agent --mode task "
    "--prompt-file {prompt_file} {file}"
)
IMPORTS = "python -c 'import src.a, src.b'"


@pytest.fixture
def uncontained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No sandbox, so that the fake agent can write its log beside the test: the log its
    calls write, with when each began and ended."""
    monkeypatch.setenv("STOMPER_SANDBOX", "off")
    log = tmp_path / "agent.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    return log


FOUR_FILES = {f"src/f{n}.py": f"F{n} = 0\n" for n in range(4)}


def a_task_a_file() -> list[dict[str, Any]]:
    """Tasks t0..t3, each setting one file of :data:`FOUR_FILES` to 1."""
    return [
        {
            "id": f"t{n}",
            "prompt": [f"Task {n}.", f"fake-agent: replace src/f{n}.py: = 0 => = 1"],
            "files": [f"src/f{n}.py"],
        }
        for n in range(4)
    ]


def tasks_file(
    folder: Path, tasks: list[dict[str, Any]], *, agent: str = "command", **defaults: Any
) -> Path:
    """A task file of ``tasks``, worked by ``agent``; every prompt is a list of lines."""
    lines = ["[defaults]", f"agent = {json.dumps(agent)}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in defaults.items()]
    for task in tasks:
        lines.append("\n[[task]]")
        for key, value in task.items():
            text = "\n".join(value) if key == "prompt" else value
            lines.append(f"{key} = {json.dumps(text)}")
    path = folder / "tasks.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(repo: Path, tasks: Path, *more: str) -> list[str]:
    return ["run", str(tasks), "--agent-cmd", AGENT, "--no-progress", "--repo", str(repo), *more]


def run_json(repo: Path, tasks: Path, capsys: pytest.CaptureFixture[str], *more: str) -> Any:
    code = main(run(repo, tasks, "--json", *more))
    document = json.loads(capsys.readouterr().out)
    document["exit_code"] = code
    return document


def by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {task["id"]: task for task in document["tasks"]}


def subjects(repo: Path, since: str) -> list[str]:
    return sh(repo, "log", "--reverse", "--format=%s", f"{since}..HEAD").splitlines()


def test_tasks_land_a_commit_each_creating_and_deleting_files(make, tmp_path, capsys) -> None:
    repo = make({"src/a.py": "A = 1\n", "src/b.py": "B = 1\n", "src/c.py": "C = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    tasks = tasks_file(
        tmp_path,
        [
            {
                "id": "one",
                "prompt": ["Change A.", "fake-agent: replace src/a.py: A = 1 => A = 2"],
                "files": ["src/a.py"],
            },
            {
                "id": "two",
                "prompt": [
                    "Change B and add a module.",
                    "fake-agent: replace src/b.py: B = 1 => B = 2",
                    "fake-agent: write src/new/mod.py: NEW = True",
                ],
                "files": ["src/b.py", "src/new/mod.py"],
            },
            {
                "id": "three",
                "prompt": [
                    "After one: change A again and delete C.",
                    "fake-agent: replace src/a.py: A = 2 => A = 3",
                    "fake-agent: delete src/c.py",
                ],
                "files": ["src/a.py", "src/c.py"],
                "depends_on": ["one"],
            },
        ],
        verify=IMPORTS,
    )

    document = run_json(repo, tasks, capsys)

    assert document["exit_code"] == 0, document
    tasks_by_id = by_id(document)
    assert {key: task["status"] for key, task in tasks_by_id.items()} == dict.fromkeys(
        ("one", "two", "three"), "landed"
    )
    assert tasks_by_id["two"]["files"] == ["src/b.py", "src/new/mod.py"]
    assert tasks_by_id["three"]["verdicts"] == ["PASS"]
    made = subjects(repo, base)
    assert sorted(made) == [
        "task(one): Change A.",
        "task(three): After one: change A again and delete C.",
        "task(two): Change B and add a module.",
    ]
    assert made.index("task(one): Change A.") < made.index(
        "task(three): After one: change A again and delete C."
    )
    assert (repo / "src/a.py").read_text() == "A = 3\n"
    assert (repo / "src/new/mod.py").read_text() == "NEW = True\n"
    assert not (repo / "src/c.py").exists()
    assert sh(repo, "status", "--porcelain") == ""
    trailers = sh(repo, "log", "-1", "--format=%(trailers:key=Stomper-Unit,valueonly)", "HEAD")
    assert trailers.strip() in ("one", "two", "three")
    # The ops log holds each task's verify and each landing.
    builds = ops_log(repo, "build")
    assert {build["what"] for build in builds} == {
        "verify of one",
        "verify of two",
        "verify of three",
    }
    assert all(build["passed"] and build["command"].startswith("python") for build in builds)
    landings = ops_log(repo, "landing")
    assert sum(landing["landed"] for landing in landings) == 3
    assert landings[-1]["tip"] == sh(repo, "rev-parse", "HEAD").strip()
    assert ["src/b.py", "src/new/mod.py"] in [c for landing in landings for c in landing["commits"]]


def test_tasks_that_share_a_file_never_run_at_once(make, tmp_path, capsys, uncontained) -> None:
    files = {f"src/f{n}.py": f"F{n} = 0\n" for n in range(4)}
    repo = make(files)
    # Each task writes two files; its neighbours share one of them.
    tasks = [
        {
            "id": f"t{n}",
            "prompt": [
                f"Task {n}.",
                "fake-agent: sleep 0.3",
                f"fake-agent: append src/f{n % 4}.py: T{n} = 1",
                f"fake-agent: append src/f{(n + 1) % 4}.py: T{n} = 2",
            ],
            "files": [f"src/f{n % 4}.py", f"src/f{(n + 1) % 4}.py"],
        }
        for n in range(8)
    ]

    document = run_json(repo, tasks_file(tmp_path, tasks), capsys, "-j", "4")

    assert document["totals"]["landed"] == 8, document
    calls = {entry.task: entry for entry in read_log(uncontained)}
    assert sorted(calls) == [f"t{n}" for n in range(8)]
    writes = {task["id"]: set(task["files"]) for task in tasks}
    overlapped = 0
    for first, second in combinations(sorted(calls), 2):
        a, b = calls[first], calls[second]
        assert a.started is not None and a.ended is not None
        assert b.started is not None and b.ended is not None
        at_once = a.started < b.ended and b.started < a.ended
        if writes[first] & writes[second]:
            assert not at_once, (first, second)
        overlapped += at_once
    assert overlapped > 0  # tasks on other files did run side by side
    # Nothing lost: each file holds the line of each of the four tasks that wrote it.
    for n in range(4):
        lines = (repo / f"src/f{n}.py").read_text().splitlines()[1:]
        assert sorted(lines) == sorted(
            [f"T{n} = 1", f"T{n + 4} = 1", f"T{(n - 1) % 8} = 2", f"T{(n + 3) % 8} = 2"]
        )


def test_a_change_outside_the_tasks_files_is_blocked_and_lands_nothing(
    make, tmp_path, capsys
) -> None:
    repo = make({"src/a.py": "A = 1\n", "src/b.py": "B = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    tasks = tasks_file(
        tmp_path,
        [
            {
                "id": "sneaky",
                "prompt": [
                    "Change A.",
                    "fake-agent: replace src/a.py: A = 1 => A = 2",
                    "fake-agent: replace src/b.py: B = 1 => B = 'not yours'",
                ],
                "files": ["src/a.py"],
            },
            {
                "id": "after",
                "prompt": ["fake-agent: write src/later.py: L = 1"],
                "files": ["src/later.py"],
                "depends_on": ["sneaky"],
            },
        ],
        max_attempts=3,
    )

    document = run_json(repo, tasks, capsys)

    assert document["exit_code"] == 1
    sneaky, after = by_id(document)["sneaky"], by_id(document)["after"]
    assert sneaky["status"] == "blocked" and sneaky["verdicts"] == ["BLOCKED"]
    assert "outside the task's: src/b.py" in sneaky["reason"]
    assert after["status"] == "skipped" and "depends on sneaky" in after["reason"]
    assert sh(repo, "rev-parse", "HEAD").strip() == base
    assert sh(repo, "status", "--porcelain") == ""


def test_a_failed_verification_goes_back_to_the_agent_with_its_output(
    make, tmp_path, capsys, uncontained
) -> None:
    repo = make({"src/a.py": "A = 1\n", "src/b.py": "B = 1\n"})
    tasks = tasks_file(
        tmp_path,
        [
            {
                "id": "fix-a",
                "prompt": [
                    "Make A two.",
                    "fake-agent: once write src/a.py: A = (",
                    "fake-agent: retry write src/a.py: A = 2",
                ],
                "files": ["src/a.py"],
            }
        ],
        verify=IMPORTS,
    )

    document = run_json(repo, tasks, capsys)

    (task,) = document["tasks"]
    assert task["status"] == "landed" and task["verdicts"] == ["FAIL", "PASS"], task
    assert (repo / "src/a.py").read_text() == "A = 2\n"
    first, second = read_log(uncontained)
    assert second.prompt_bytes > first.prompt_bytes  # the second prompt says what failed


@pytest.mark.parametrize("speculate", ["--speculate", "--no-speculate"])
def test_two_tasks_that_pass_alone_but_not_together_never_both_land(
    make, tmp_path, capsys, speculate
) -> None:
    repo = make({"src/a.py": "A = 1\n", "src/b.py": "B = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    together = "python -c 'import src.a as a, src.b as b; assert not (a.A == 2 and b.B == 2)'"
    tasks = tasks_file(
        tmp_path,
        [
            {
                "id": "a",
                "prompt": ["fake-agent: replace src/a.py: A = 1 => A = 2"],
                "files": ["src/a.py"],
            },
            {
                "id": "b",
                "prompt": ["fake-agent: replace src/b.py: B = 1 => B = 2"],
                "files": ["src/b.py"],
            },
        ],
        verify=together,
    )

    document = run_json(repo, tasks, capsys, speculate)

    statuses = sorted(task["status"] for task in document["tasks"])
    assert statuses == ["failed", "landed"], document
    (failed,) = [task for task in document["tasks"] if task["status"] == "failed"]
    assert "passed alone but not on the branch as it is now" in failed["reason"]
    assert len(subjects(repo, base)) == 1
    assert sh(repo, "status", "--porcelain") == ""


# A verify that is also a user at work: its first run commits a note of the user's, its
# second (the change checked on that commit, in the merge queue) commits the user's rename
# of B, which the task's change does not survive. argv: the repository, a counter file.
USER_AT_WORK = """
import subprocess, sys
from pathlib import Path

repo, counter = Path(sys.argv[1]), Path(sys.argv[2])
runs = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(runs))


def commit(path, text, message):
    (repo / path).write_text(text)
    subprocess.run(["git", "-C", str(repo), "add", path], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", message], check=True)


if runs == 1:
    commit("notes.txt", "a note\\n", "user: a note")
elif runs == 2:
    commit("src/b.py", "B2 = 1\\n", "user: rename B")
sys.path.insert(0, ".")
import src.a, src.b
"""


@pytest.mark.parametrize("speculate", ["--speculate", "--no-speculate"])
def test_a_user_commit_after_the_check_has_the_change_checked_again_before_it_lands(
    make, tmp_path, capsys, uncontained, speculate
) -> None:
    repo = make({"src/a.py": "A = 1\n", "src/b.py": "B = 1\n", "notes.txt": ""})
    script = tmp_path / "user_at_work.py"
    script.write_text(USER_AT_WORK)
    counter = tmp_path / "runs"
    tasks = tasks_file(
        tmp_path,
        [
            {
                "id": "a",
                "prompt": ["fake-agent: write src/a.py: from src.b import B\\n\\nA = B"],
                "files": ["src/a.py"],
            }
        ],
        verify=f"{shlex.quote(sys.executable)} {script} {repo} {counter}",
    )

    document = run_json(repo, tasks, capsys, speculate)

    assert subjects(repo, sh(repo, "rev-list", "--max-parents=0", "HEAD").strip()) == [
        "user: a note",
        "user: rename B",
    ]
    (task,) = document["tasks"]
    assert task["status"] == "failed", document
    assert "passed alone but not on the branch as it is now" in task["reason"]
    assert int(counter.read_text()) == 3  # checked on the base, on the note, on the rename
    subprocess.run([sys.executable, "-c", "import src.a, src.b"], cwd=repo, check=True)
    assert sh(repo, "status", "--porcelain") == ""


# The verify of the speculation tests: logs which tasks' changes the tree it checks holds;
# one that holds two or more (a check in the merge queue) waits until a second such check
# has begun, which only a check ahead of its turn can be. argv: the log, then the pair of
# tasks whose changes break the check together (or none).
CHECK = """
import json, sys, time
from pathlib import Path

log, breaking = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else ""
changed = "".join(name for name in "abc" if "= 2" in Path(f"src/{name}.py").read_text())


def say(event):
    with log.open("a") as out:
        out.write(json.dumps({"changed": changed, "event": event, "at": time.time()}) + "\\n")


def queue_checks():
    said = [json.loads(line) for line in log.read_text().splitlines()]
    return sum(1 for one in said if one["event"] == "start" and len(one["changed"]) > 1)


say("start")
deadline = time.time() + 60
while len(changed) > 1 and queue_checks() < 2 and time.time() < deadline:
    time.sleep(0.02)
say("end")
sys.exit(1 if breaking and set(breaking) <= set(changed) else 0)
"""


def speculation_tasks(make: Any, tmp_path: Path, breaking: str = "") -> tuple[Path, Path, Path]:
    """Tasks a, b and c on a file each, begun together and done one after the other, with
    the checking verify above; the repository, the task file and the check's log."""
    repo = make({"src/a.py": "A = 1\n", "src/b.py": "B = 1\n", "src/c.py": "C = 1\n"})
    (repo / "check.py").write_text(CHECK)
    commit_all(repo, "the check")
    log = tmp_path / "checks.log"
    tasks = tasks_file(
        tmp_path,
        [
            {
                "id": name,
                "prompt": [
                    f"fake-agent: sleep {seconds}",
                    f"fake-agent: replace src/{name}.py: {name.upper()} = 1 => {name.upper()} = 2",
                ],
                "files": [f"src/{name}.py"],
            }
            for name, seconds in (("a", 0.1), ("b", 0.5), ("c", 1.0))
        ],
        verify=f"python check.py {shlex.quote(str(log))} {breaking}".strip(),
    )
    return repo, tasks, log


def checks(log: Path) -> dict[str, dict[str, float]]:
    """When each check began and ended, by the changes its tree held."""
    found: dict[str, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        said = json.loads(line)
        found.setdefault(said["changed"], {})[said["event"]] = said["at"]
    return found


def test_a_change_is_checked_ahead_of_its_turn_on_the_branch_the_changes_ahead_leave(
    make, tmp_path, capsys, uncontained
) -> None:
    repo, tasks, log = speculation_tasks(make, tmp_path)
    base = sh(repo, "rev-parse", "HEAD").strip()

    document = run_json(repo, tasks, capsys, "-j", "3")

    assert document["totals"]["landed"] == 3, document
    assert subjects(repo, base)[1:] == [
        "task(b): fake-agent: sleep 0.5",
        "task(c): fake-agent: sleep 1.0",
    ]
    made = checks(log)
    # c was checked on a with b, and b on a: while b's check ran, c's began, before b
    # landed; and c's check held, so c landed without another.
    assert made["abc"]["start"] < made["ab"]["end"]
    assert sorted(made) == ["a", "ab", "abc", "b", "c"]
    assert document["metrics"]["speculation"] == {"used": 2, "redone": 0}
    assert (repo / "src/c.py").read_text() == "C = 2\n"


def test_a_change_checked_ahead_of_one_that_then_fails_is_checked_again(
    make, tmp_path, capsys, uncontained
) -> None:
    repo, tasks, log = speculation_tasks(make, tmp_path, breaking="ab")

    document = run_json(repo, tasks, capsys, "-j", "3")

    found = by_id(document)
    assert [found[name]["status"] for name in "abc"] == ["landed", "failed", "landed"], document
    assert "passed alone but not on the branch as it is now" in found["b"]["reason"]
    # c was checked on a with b ahead of its turn; b did not land, so c was checked again
    # on the branch as it was: a, without b.
    assert {"ab", "abc", "ac"} <= set(checks(log))
    assert document["metrics"]["speculation"] == {"used": 1, "redone": 1}
    assert [(repo / f"src/{name}.py").read_text() for name in "abc"] == [
        "A = 2\n",
        "B = 1\n",
        "C = 2\n",
    ]


def _until(path: Path) -> None:
    """Wait for the agent, another process, to make ``path`` (the test's timeout bounds it)."""
    while not path.exists():
        time.sleep(0.02)


@pytest.mark.parametrize("user", ["elsewhere", "same-line", "same-line-twice"])
def test_a_change_the_branch_moved_under_is_merged_or_worked_again_once(
    make, tmp_path, user, uncontained
) -> None:
    """While the agent works, the user commits to the task's file: on another line, the two
    merge; on the same line, the task is worked again on the new tip, and fails naming the
    file when that happens once more."""
    repo = make({"src/a.py": "A = 1\nB = 0\nZ = 0\n"})
    first, again = tmp_path / "first-attempt", tmp_path / "worked-again"
    tasks = tasks_file(
        tmp_path,
        [
            {
                "id": "edit-a",
                "prompt": [
                    "Set A.",
                    f"fake-agent: once signal {first}",
                    f"fake-agent: retry signal {again}",
                    "fake-agent: sleep 1",
                    "fake-agent: once replace src/a.py: A = 1 => A = 2",
                    "fake-agent: retry replace src/a.py: A = 'the user' => A = 2",
                ],
                "files": ["src/a.py"],
            }
        ],
    )
    argv = [sys.executable, "-m", "stomper", *run(repo, tasks, "--json")]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _until(first)
        mine = "A = 1\nB = 0\nZ = 'the user'\n"
        if user != "elsewhere":
            mine = "A = 'the user'\nB = 0\nZ = 0\n"
        (repo / "src/a.py").write_text(mine)
        commit_all(repo, "the user's a.py")
        if user == "same-line-twice":
            _until(again)
            (repo / "src/a.py").write_text("A = 'the user, again'\nB = 0\nZ = 0\n")
            commit_all(repo, "the user's a.py, again")
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    (task,) = json.loads(out)["tasks"]
    if user == "elsewhere":
        assert task["status"] == "landed" and task["verdicts"] == ["PASS"], err.decode()
        assert (repo / "src/a.py").read_text() == "A = 2\nB = 0\nZ = 'the user'\n"
    elif user == "same-line":
        assert task["status"] == "landed" and task["verdicts"] == ["PASS", "PASS"], err.decode()
        assert (repo / "src/a.py").read_text() == "A = 2\nB = 0\nZ = 0\n"
    else:
        assert task["status"] == "failed", err.decode()
        assert "src/a.py changed on the branch in a way that does not merge" in task["reason"]
        assert "twice" in task["reason"]
        assert (repo / "src/a.py").read_text() == "A = 'the user, again'\nB = 0\nZ = 0\n"
    assert sh(repo, "status", "--porcelain") == ""


def test_the_merge_queue_goes_on_while_a_task_in_conflict_is_worked_again(
    make, tmp_path, uncontained
) -> None:
    repo = make({"src/a.py": "A = 1\n", "src/b.py": "B = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    first = tmp_path / "first-attempt"
    tasks = tasks_file(
        tmp_path,
        [
            {
                "id": "edit-a",
                "prompt": [
                    "Set A.",
                    f"fake-agent: once signal {first}",
                    "fake-agent: once sleep 0.5",
                    "fake-agent: once replace src/a.py: A = 1 => A = 2",
                    "fake-agent: retry sleep 3",
                    "fake-agent: retry replace src/a.py: A = 'the user' => A = 2",
                ],
                "files": ["src/a.py"],
            },
            {
                "id": "edit-b",
                "prompt": [
                    "Set B.",
                    "fake-agent: sleep 1.5",
                    "fake-agent: replace src/b.py: 1 => 2",
                ],
                "files": ["src/b.py"],
            },
        ],
    )
    argv = [sys.executable, "-m", "stomper", *run(repo, tasks, "--json", "-j", "2")]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _until(first)
        (repo / "src/a.py").write_text("A = 'the user'\n")
        commit_all(repo, "the user's a.py")
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    document = json.loads(out)
    assert [task["status"] for task in document["tasks"]] == ["landed", "landed"], err.decode()
    # edit-b landed while edit-a was worked again, not after it.
    assert subjects(repo, base) == [
        "the user's a.py",
        "task(edit-b): Set B.",
        "task(edit-a): Set A.",
    ]
    assert by_id(document)["edit-a"]["verdicts"] == ["PASS", "PASS"]
    assert sh(repo, "status", "--porcelain") == ""


def test_two_runs_with_overlapping_tasks_never_work_one_file_at_once(
    make, tmp_path, uncontained
) -> None:
    repo = make({"src/shared.py": "S = 0\n", "src/x.py": "X = 0\n", "src/y.py": "Y = 0\n"})
    children = []
    for name, own in (("first", "src/x.py"), ("second", "src/y.py")):
        folder = tmp_path / name
        folder.mkdir()
        tasks = tasks_file(
            folder,
            [
                {
                    "id": f"{name}-shared",
                    "prompt": [
                        "fake-agent: sleep 0.5",
                        f"fake-agent: append src/shared.py: {name} = 1",
                    ],
                    "files": ["src/shared.py"],
                },
                {
                    "id": f"{name}-own",
                    "prompt": ["fake-agent: sleep 0.5", f"fake-agent: append {own}: {name} = 1"],
                    "files": [own],
                },
            ],
        )
        argv = [sys.executable, "-m", "stomper", *run(repo, tasks, "--json")]
        children.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = [child.communicate(timeout=60) for child in children]

    for out, err in outputs:
        document = json.loads(out)
        assert document["totals"]["landed"] == 2, err.decode()
    calls = {entry.task: entry for entry in read_log(uncontained)}
    first, second = calls["first-shared"], calls["second-shared"]
    assert first.started is not None and first.ended is not None
    assert second.started is not None and second.ended is not None
    assert first.ended <= second.started or second.ended <= first.started
    shared = (repo / "src/shared.py").read_text()
    assert "first = 1\n" in shared and "second = 1\n" in shared
    assert sh(repo, "status", "--porcelain") == ""


def test_a_killed_run_resumes_and_every_task_lands_once(
    make, tmp_path, capsys, uncontained
) -> None:
    repo = make({"src/a.py": "A = 1\n", "src/b.py": "B = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    working = tmp_path / "second-is-working"
    tasks = tasks_file(
        tmp_path,
        [
            {
                "id": "first",
                "prompt": ["First.", "fake-agent: replace src/a.py: A = 1 => A = 2"],
                "files": ["src/a.py"],
            },
            {
                "id": "second",
                "prompt": [
                    "Second.",
                    f"fake-agent: signal {working}",
                    "fake-agent: sleep 2",
                    "fake-agent: replace src/b.py: B = 1 => B = 2",
                ],
                "files": ["src/b.py"],
                "depends_on": ["first"],
            },
        ],
    )
    argv = [sys.executable, "-m", "stomper", *run(repo, tasks)]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _until(working)
    finally:
        child.kill()
        child.wait()
    assert subjects(repo, base) == ["task(first): First."]

    assert main(["resume", "--json", "--no-progress", "--repo", str(repo)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {task["id"]: task["status"] for task in document["tasks"]} == {
        "first": "landed",
        "second": "landed",
    }
    assert subjects(repo, base) == ["task(first): First.", "task(second): Second."]
    # The first task's agent ran once; the second's call that was killed wrote no line.
    assert sorted(entry.task or "" for entry in read_log(uncontained)) == ["first", "second"]
    assert (repo / "src/b.py").read_text() == "B = 2\n"
    assert sh(repo, "status", "--porcelain") == ""
    assert main(["resume", "--repo", str(repo)]) == 2  # nothing is left to resume


def test_the_run_demo_lands_its_eight_tasks_and_mends_the_one_that_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "demo"
    assert main(["demo", "run", "--dir", str(root)]) == 0
    err = capsys.readouterr().err
    assert "stand-in" in err and "8 tasks in 3 waves" in err
    assert "slug-strip: its attempts went FAIL -> PASS" in err
    made = sh(root, "log", "--format=%s", "HEAD~8..HEAD").splitlines()
    assert len(made) == 8 and all(subject.startswith("task(") for subject in made)
    readme = (root / "README.md").read_text()
    assert "## Client" in readme and "## Prices" in readme
    assert (root / "shop/discounts.py").exists()
    assert sh(root, "status", "--porcelain") == ""


def test_a_change_that_brings_in_a_ruff_finding_goes_back_to_the_agent(
    make, tmp_path, capsys
) -> None:
    repo = make({"src/a.py": "import os\n\nA = os.sep\n"})  # one finding-free file
    tasks = tasks_file(
        tmp_path,
        [
            {
                "id": "tidy",
                "prompt": [
                    "Make A one.",
                    "fake-agent: once replace src/a.py: A = os.sep => A = 1",
                    "fake-agent: retry write src/a.py: A = 1",
                ],
                "files": ["src/a.py"],
            }
        ],
    )

    document = run_json(repo, tasks, capsys)

    (task,) = document["tasks"]
    assert task["status"] == "landed" and task["verdicts"] == ["FAIL", "PASS"], task
    trail = (repo / ".git" / "stomper" / "runs" / document["run_id"] / "tasks.jsonl").read_text()
    first = json.loads(trail.splitlines()[-1])["attempts"][0]["feedback"]
    assert "ruff finds what was not there before" in first and "F401" in first
    assert (repo / "src/a.py").read_text() == "A = 1\n"


def test_a_spent_budget_keeps_what_landed_and_resume_goes_on(make, tmp_path, capsys) -> None:
    repo = make(FOUR_FILES)
    base = sh(repo, "rev-parse", "HEAD").strip()
    tasks = tasks_file(tmp_path, a_task_a_file())

    document = run_json(repo, tasks, capsys, "-j", "1", "--max-calls", "2")

    assert document["exit_code"] == 1 and document["status"] == "budget"
    statuses = [task["status"] for task in document["tasks"]]
    assert sorted(statuses) == ["landed", "landed", "skipped", "skipped"]
    skipped = [task for task in document["tasks"] if task["status"] == "skipped"]
    assert all("budget of 2 agent calls is spent" in task["reason"] for task in skipped)
    assert len(subjects(repo, base)) == 2

    assert main(["resume", "--max-calls", "5", "--json", "--no-progress", "--repo", str(repo)]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert [task["status"] for task in resumed["tasks"]] == ["landed"] * 4
    assert sorted(subjects(repo, base)) == [f"task(t{n}): Task {n}." for n in range(4)]
    assert sh(repo, "status", "--porcelain") == ""


def test_a_task_of_its_own_budget_stops_retrying() -> None:
    from stomper.budget import Budget, Limits, Spent

    budget = Budget()
    budget.take("t", Limits(max_calls=2))
    budget.take("t", Limits(max_calls=2))
    with pytest.raises(Spent, match="the task's budget of 2 agent calls is spent"):
        budget.take("t", Limits(max_calls=2))
    budget.take("u", Limits(max_calls=2))  # another task's own budget is its own
    assert budget.use.calls == 3 and not budget.spent


def test_an_agent_that_fails_three_times_in_a_row_rests() -> None:
    import asyncio

    from stomper.tasks.breaker import Breaker

    breaker = Breaker(failures=3, rest_s=0.2)
    breaker.record("claude", failed=True)
    breaker.record("claude", failed=True)
    breaker.record("claude", failed=False)  # a success in between: not in a row
    breaker.record("claude", failed=True)
    assert not breaker.resting("claude")
    breaker.record("claude", failed=True)
    breaker.record("claude", failed=True)
    assert breaker.resting("claude") and not breaker.resting("codex")
    asyncio.run(breaker.ready("claude"))
    assert not breaker.resting("claude")


def test_tests_that_fail_at_the_base_are_not_blamed_on_a_task(
    make, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    repo = make(
        {
            "src/__init__.py": "",
            "src/a.py": "A = 1\n",
            "src/b.py": "B = 1\n",
            "tests/test_base.py": "def test_already_broken():\n    assert False\n",
            "tests/test_b.py": "from src.b import B\n\n\ndef test_b():\n    assert B == 1\n",
        }
    )
    tasks = tasks_file(
        tmp_path,
        [
            {
                "id": "a",
                "prompt": ["fake-agent: replace src/a.py: A = 1 => A = 2"],
                "files": ["src/a.py"],
            },
            {
                "id": "b",
                "prompt": ["fake-agent: replace src/b.py: B = 1 => B = 2"],
                "files": ["src/b.py"],
            },
        ],
        max_attempts=1,
    )
    tests = f"{shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider tests"

    document = run_json(repo, tasks, capsys, "--test-cmd", tests)

    a, b = by_id(document)["a"], by_id(document)["b"]
    assert a["status"] == "landed", a
    assert b["status"] == "failed"
    assert "the change makes tests fail: tests/test_b.py::test_b" in b["reason"]
    assert "test_already_broken" not in b["reason"].splitlines()[0]
    assert (repo / "src/b.py").read_text() == "B = 1\n"
    # Each run of the tests is a build in the ops log: each task's, and the tip's alone.
    builds = ops_log(repo, "build")
    tasks_tests = sorted(build["what"] for build in builds if build["files"])
    assert tasks_tests[0] == "tests of a" and set(tasks_tests) == {"tests of a", "tests of b"}
    alone = [build for build in builds if not build["files"]]
    assert alone and all(build["what"].startswith("tests at ") for build in alone)
    assert not any(build["passed"] for build in builds)  # test_already_broken fails each
