"""``stomper review --apply``: edits built a directory at a time, bisected, landed whole.

Real repositories with real tests as their build (pytest, run by the build command in a
contained workspace), the fake model server on loopback: its edits come from the code's
own ``fake-review: OLD => NEW`` comments, so a test decides which edit breaks what.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stomper.cli import main
from stomper.testing.fake_openai import FakeOpenAI
from stomper.testing.fake_reviewer import ReviewStyle
from tests.conftest import ops_log, sh
from tests.test_durability import landed_units, moved_hook_env, wait_for
from tests.test_review import review as reviewed
from tests.test_sarif import validate

BUILD = f"{shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider {{dir}}"

# alpha: two safe edits. beta: each of two edits builds alone, not both together (their
# product breaks the test), and a third is safe.
ALPHA = {
    "alpha/__init__.py": "",
    "alpha/calc.py": (
        "def is_missing(value):\n"
        "    return value == None\n"
        "\n"
        "\n"
        "def parse(text):\n"
        "    try:\n"
        "        return int(text)\n"
        "    except:\n"
        "        return None\n"
    ),
    "alpha/test_alpha.py": (
        "from alpha.calc import is_missing, parse\n"
        "\n"
        "\n"
        "def test_calc():\n"
        "    assert is_missing(None)\n"
        "    assert parse('x') is None\n"
    ),
}
BETA = {
    "beta/__init__.py": "",
    "beta/limits.py": "LIMIT = 10  # fake-review: 10 => 20\n",
    "beta/other.py": "def empty(value):\n    return value == None\n",
    "beta/scale.py": "SCALE = 1  # fake-review: 1 => 2\n",
    "beta/test_beta.py": (
        "from beta.limits import LIMIT\n"
        "from beta.other import empty\n"
        "from beta.scale import SCALE\n"
        "\n"
        "\n"
        "def test_budget():\n"
        "    assert LIMIT * SCALE < 30\n"
        "    assert empty(None)\n"
    ),
}


@pytest.fixture(autouse=True)
def quick_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The builds' pytest loads none of the plugins this environment has (seconds each)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def review(
    repo: Path, server: FakeOpenAI, *args: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any], str]:
    """``stomper review --apply --json`` with the tests' build, against ``server``."""
    return reviewed(repo, server, "--apply", "--build-cmd", BUILD, *args, capsys=capsys)


def units(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {unit["path"]: unit for unit in document["units"]}


def groups(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {group["group"]: group for group in document["groups"]}


def subjects(repo: Path, since: str) -> list[str]:
    return sh(repo, "log", "--format=%s", f"{since}..HEAD").splitlines()


def test_each_directory_lands_what_builds_and_bisection_rolls_back_the_breaking_edit(
    make: Callable[..., Path], server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make({**ALPHA, **BETA})
    base = sh(repo, "rev-parse", "HEAD").strip()

    code, doc, err = review(repo, server, "-j", "4", capsys=capsys)

    assert code == 0, err
    found = units(doc)
    assert found["alpha/calc.py"]["status"] == "applied"
    assert found["beta/limits.py"]["status"] == "applied"
    assert found["beta/other.py"]["status"] == "applied"
    # Either edit of the pair builds alone: bisection keeps the first, rolls back the second.
    assert found["beta/scale.py"]["status"] == "rolled_back"
    assert "rolled back" in found["beta/scale.py"]["reason"]
    assert "test_beta.py" in found["beta/scale.py"]["reason"]
    built = groups(doc)
    assert built["alpha"]["build"] == "passed" and built["alpha"]["builds"] == 1
    assert built["beta"]["build"] == "bisected"
    assert built["beta"]["landed"] == ["beta/limits.py", "beta/other.py"]
    assert built["beta"]["rolled_back"] == ["beta/scale.py"]
    # The build with every edit failed; the one at the base passed; then bisection.
    assert 3 <= built["beta"]["builds"] <= 2 + 2 * 2 + 2
    # One commit per landed file, named for its first finding, on the checked-out branch.
    assert sorted(subjects(repo, base)) == [
        "review(general): compare-to-none in alpha/calc.py",
        "review(general): compare-to-none in beta/other.py",
        "review(general): suggested-change in beta/limits.py",
    ]
    commit = found["beta/limits.py"]["commit"]
    body = sh(repo, "log", "-1", "--format=%B", commit)
    assert "Stomper-Unit: beta/limits.py" in body and f"Stomper-Run: {doc['run_id']}" in body
    # The checkout followed: the landed files are there, the rolled-back one is as it was.
    assert (repo / "beta/limits.py").read_text() == "LIMIT = 20  # fake-review: 10 => 20\n"
    assert (repo / "beta/scale.py").read_text() == BETA["beta/scale.py"]
    assert "is None" in (repo / "alpha/calc.py").read_text()
    assert sh(repo, "status", "--porcelain") == ""
    sh(repo, "fsck", "--strict")
    # What the landed tree holds builds, as the gate said.
    assert "LIMIT * SCALE" in (repo / "beta/test_beta.py").read_text()
    # The ops log holds each build and each landing.
    builds = ops_log(repo, "build")
    what = Counter(build["what"] for build in builds)
    assert what == {"build of alpha": 1, "build of beta": built["beta"]["builds"]}
    assert all(build["command"].endswith(("alpha", "beta")) for build in builds)
    beta = [build for build in builds if build["what"] == "build of beta"]
    assert not beta[0]["passed"] and beta[0]["files"] == 3  # all three edits together
    assert {build["files"] for build in beta if build["passed"]} >= {0, 2}  # base, the kept
    assert all(build["seconds"] > 0 and build["waited"] >= 0 for build in builds)
    landings = ops_log(repo, "landing")
    assert sum(landing["landed"] for landing in landings) == 3
    assert landings[-1]["tip"] == sh(repo, "rev-parse", "HEAD").strip()
    landed_files = sorted(path for landing in landings for c in landing["commits"] for path in c)
    assert landed_files == ["alpha/calc.py", "beta/limits.py", "beta/other.py"]
    # The report draws each build, passed or failed, and each landing.
    page = repo.parent / "report.html"
    assert main(["report", "--repo", str(repo), "--html", str(page)]) == 0
    html = page.read_text()
    failed = sum(not build["passed"] for build in builds)
    assert html.count('<rect class="build failed"') == failed >= 1
    assert html.count('<rect class="build passed"') == len(builds) - failed
    assert html.count('<rect class="landing"') == len(landings)
    assert doc["totals"]["applied"] == 3 and doc["totals"]["rolled_back"] == 1
    assert "3 edits applied, 1 rolled back" in err
    assert "(groups: 1 bisected, 1 passed, 1 without edits)" in err


def test_a_rolled_back_directory_leaves_the_branch_and_the_checkout_as_they_were(
    make: Callable[..., Path], server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make(
        {
            "geo/__init__.py": "",
            "geo/shapes.py": "def area(w, h):  # fake-review: def area => def region\n"
            "    return w * h\n",
            "geo/test_geo.py": "from geo.shapes import area\n\n\ndef test_area():\n"
            "    assert area(2, 3) == 6\n",
            "notes.txt": "mine\n",
        }
    )
    base = sh(repo, "rev-parse", "HEAD").strip()
    # The user's own work, staged and not, is there while the run lands nothing.
    (repo / "notes.txt").write_text("mine, edited\n")
    (repo / "staged.txt").write_text("staged\n")
    sh(repo, "add", "staged.txt")
    status = sh(repo, "status", "--porcelain")

    code, doc, err = review(repo, server, "geo", capsys=capsys)

    assert code == 0, err
    assert units(doc)["geo/shapes.py"]["status"] == "rolled_back"
    assert groups(doc)["geo"]["build"] == "failed"
    assert sh(repo, "rev-parse", "HEAD").strip() == base
    assert sh(repo, "status", "--porcelain") == status
    assert (repo / "notes.txt").read_text() == "mine, edited\n"
    assert "def area" in (repo / "geo/shapes.py").read_text()
    sh(repo, "diff", "--cached", "--exit-code", "--", "geo")


def test_a_build_that_fails_at_the_base_reviews_without_applying(
    make: Callable[..., Path], server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make(
        {
            "broken/__init__.py": "",
            "broken/calc.py": "def empty(value):\n    return value == None\n",
            "broken/test_broken.py": "def test_never():\n    assert 1 == 2\n",
        }
    )
    base = sh(repo, "rev-parse", "HEAD").strip()

    code, doc, err = review(repo, server, capsys=capsys)

    assert code == 0, err
    unit = units(doc)["broken/calc.py"]
    assert unit["status"] == "reviewed"
    assert unit["findings"], unit
    assert "fails without the edits too" in unit["reason"]
    assert groups(doc)["broken"]["build"] == "base_failed"
    assert sh(repo, "rev-parse", "HEAD").strip() == base


def test_a_lesson_from_a_broken_build_keeps_the_next_review_from_repeating_the_edit(
    make: Callable[..., Path], server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make(BETA)
    code, doc, err = review(repo, server, capsys=capsys)
    assert code == 0, err
    assert units(doc)["beta/scale.py"]["status"] == "rolled_back"
    lessons = (repo / ".git/stomper/lessons.jsonl").read_text().splitlines()
    assert len(lessons) == 1
    taught = json.loads(lessons[0])
    assert taught["directory"] == "beta" and taught["path"] == "beta/scale.py"
    assert "`SCALE = 1  # fake-review: 1 => 2` to `SCALE = 2" in taught["change"]

    # The next review of the directory is told, and the model does not make that edit again:
    # nothing breaks, so the build runs once.
    code, doc, err = review(repo, server, capsys=capsys)
    assert code == 0, err
    assert units(doc)["beta/scale.py"]["status"] == "reviewed"
    assert groups(doc)["beta"]["builds"] in (0, 1)

    assert main(["lessons", "--repo", str(repo)]) == 0
    assert "beta/scale.py" in capsys.readouterr().err
    assert main(["lessons", "--repo", str(repo), "--forget"]) == 0
    assert "forgot 1 lesson" in capsys.readouterr().err
    assert not (repo / ".git/stomper/lessons.jsonl").read_text()


def test_an_edit_of_a_file_with_changes_of_the_users_is_not_applied(
    make: Callable[..., Path], server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make(ALPHA)
    (repo / "alpha/calc.py").write_text(ALPHA["alpha/calc.py"] + "# mine\n")
    code, doc, err = review(repo, server, capsys=capsys)
    assert code == 0, err
    unit = units(doc)["alpha/calc.py"]
    assert unit["status"] == "reviewed"
    assert "changes of yours" in unit["reason"]
    assert (repo / "alpha/calc.py").read_text().endswith("# mine\n")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--build-cmd", ""], "--build-cmd"),
        (["--build-cmd", "'unclosed"], "cannot parse build_cmd"),
        (["--group-by", "team"], "group_by"),
        (["--build-cmd", "no-such-builder {dir}"], "no program 'no-such-builder' on PATH"),
    ],
)
def test_bad_apply_settings_are_refused_in_one_line_before_any_request(
    make: Callable[..., Path],
    server: FakeOpenAI,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    said: str,
) -> None:
    repo = make(ALPHA)
    code, _doc, err = review(repo, server, *args, capsys=capsys)
    assert code == 2
    assert said in err
    assert server.stats().requests == 0


def test_apply_without_a_build_command_or_on_a_detached_head_is_refused(
    make: Callable[..., Path], server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make(ALPHA)
    code = main(
        ["review", "--repo", str(repo), "--model", "fake", "--base-url", server.base_url, "--apply"]
    )
    assert code == 2
    assert "--build-cmd" in capsys.readouterr().err
    sh(repo, "checkout", "--detach", "-q")
    code, _doc, err = review(repo, server, capsys=capsys)
    assert code == 2
    assert "detached" in err
    assert server.stats().requests == 0


def directory(name: str) -> dict[str, str]:
    """A package whose two modules each get a safe edit, and its test."""
    return {
        f"{name}/__init__.py": "",
        f"{name}/one.py": "def empty(value):\n    return value == None\n",
        f"{name}/two.py": "def blank(value):\n    return value == None\n",
        f"{name}/test_{name}.py": f"from {name}.one import empty\nfrom {name}.two import blank\n"
        "\n\ndef test_it():\n    assert empty(None) and blank(None)\n",
    }


def landed_files(repo: Path, base: str) -> list[str]:
    """The files each commit since ``base`` changed, one entry per commit and file."""
    out = sh(repo, "log", "--format=", "--name-only", f"{base}..HEAD")
    return [line for line in out.splitlines() if line]


@pytest.mark.parametrize("commit_per", ["file", "dir"])
def test_sigkill_mid_way_through_a_directorys_landing_then_resume_lands_it_whole_once(
    make: Callable[..., Path], server: FakeOpenAI, tmp_path: Path, commit_per: str
) -> None:
    repo = make({**directory("d1"), **directory("d2"), **directory("d3")})
    base = sh(repo, "rev-parse", "HEAD").strip()
    # Held once the branch made its first move: one directory landed, nothing recorded yet.
    env = moved_hook_env(tmp_path, repo, {**os.environ, "STOMPER_MAX_PARALLEL_FILES": "2"}, 1)
    args = ["--model", "fake", "--base-url", server.base_url, "--no-progress", "--repo", str(repo)]
    apply = ["--apply", "--build-cmd", BUILD, "--commit-per", commit_per]
    child = subprocess.Popen(
        [sys.executable, "-m", "stomper", "review", *apply, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    marker = tmp_path / "hang" / "marker"
    try:
        wait_for(marker.exists, "the first move of the branch")
    finally:
        child.kill()
        child.communicate(timeout=60)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    (repo / ".git" / "hooks" / "reference-transaction").unlink()
    first = sorted(landed_files(repo, base))
    assert first in ([f"{name}/one.py", f"{name}/two.py"] for name in ("d1", "d2", "d3")), (
        first
    )  # a directory lands whole

    resumed = subprocess.run(
        [sys.executable, "-m", "stomper", "resume", "--json", *args[-3:]],
        env=os.environ,
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    doc = json.loads(resumed.stdout)
    counts = Counter(landed_files(repo, base))
    assert set(counts) == {
        f"{name}/{file}" for name in ("d1", "d2", "d3") for file in ("one.py", "two.py")
    }
    assert max(counts.values()) == 1, "a file landed twice"
    found = units(doc)
    assert all(found[path]["status"] == "applied" for path in counts)
    assert {found[path]["reason"] for path in first} == {"landed before the run was cut short"}
    commits = sh(repo, "rev-list", f"{base}..HEAD").split()
    assert len(commits) == (6 if commit_per == "file" else 3)
    if commit_per == "dir":
        subjects = sh(repo, "log", "--format=%s", f"{base}..HEAD").splitlines()
        assert sorted(subjects) == [
            f"review(general): 2 findings in 2 files of {name}" for name in ("d1", "d2", "d3")
        ]
    assert sh(repo, "status", "--porcelain") == ""
    sh(repo, "fsck", "--strict")


def test_the_review_demo_lands_what_builds_and_rolls_back_the_rename_that_breaks_a_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "demo"
    assert main(["demo", "review", "--dir", str(root)]) == 0
    err = capsys.readouterr().err
    assert "stand-in" in err
    assert "bisection found the edit that breaks it" in err
    assert sorted(landed_units(root)) == [
        "geometry/units.py",
        "inventory/pricing.py",
        "inventory/stock.py",
    ]
    assert "def area" in (root / "geometry/shapes.py").read_text()
    assert sh(root, "status", "--porcelain", "--untracked-files=no") == ""
    validate(json.loads((root / "review.sarif").read_text()))
    markdown = (root / "review.md").read_text()
    assert "### `geometry/shapes.py` (its edit rolled back)" in markdown
    assert "3 edits applied" in markdown


def test_an_unknown_demo_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "bogus", "--dir", str(tmp_path / "demo")]) == 2
    assert "no demo 'bogus': choose fix, review or run" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("hostile", "said"),
    [
        ("other_file", "only `alpha/calc.py`, the file under review, may be changed"),
        ("suppress", "adds suppressions instead of fixes: # noqa"),
        ("leak", "writes the API key ($OPENAI_API_KEY) into the file"),
        ("syntax", "the edited `alpha/calc.py` no longer parses"),
    ],
)
def test_an_edit_that_breaks_a_guardrail_never_reaches_the_build_and_the_findings_stand(
    make: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    hostile: str,
    said: str,
) -> None:
    key = "sk-review-key-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    repo = make(ALPHA)
    base = sh(repo, "rev-parse", "HEAD").strip()
    style = ReviewStyle(hostile_edit=hostile)
    with FakeOpenAI(review=style, api_key=key) as server:
        code, doc, err = review(repo, server, "alpha", capsys=capsys)
    assert code == 0, err
    unit = units(doc)["alpha/calc.py"]
    assert unit["status"] == "reviewed"
    assert unit["findings"]
    assert "its edits were left out" in unit["reason"] and said in unit["reason"]
    assert unit["attempts"] == 2  # told once what was wrong; the same again ends it
    assert groups(doc)["alpha"]["builds"] == 0
    assert sh(repo, "rev-parse", "HEAD").strip() == base
    assert sh(repo, "status", "--porcelain") == ""
    assert key not in json.dumps(doc) + err
