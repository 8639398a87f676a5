"""``stomper review`` end to end: real repositories, the fake model server on loopback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stomper.cli import main
from stomper.testing.fake_openai import FakeOpenAI, Fault, FaultPolicy
from stomper.testing.fake_reviewer import ReviewStyle
from tests.conftest import sh
from tests.test_sarif import validate

CORE = """\
import os


def load(text):
    # TODO: validate the text first
    return eval(text)


def check(value):
    try:
        return value == None
    except:
        return False
"""
COPY_C = """\
#include <string.h>

void copy(char *to, const char *from) {
    strcpy(to, from);
}
"""
SETTINGS = 'PASSWORD = "hunter2"\n'


@pytest.fixture
def project(make: Callable[..., Path]) -> Path:
    return make({"pkg/core.py": CORE, "native/copy.c": COPY_C, "pkg/settings.py": SETTINGS})


def review(
    repo: Path, server: FakeOpenAI, *args: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any], str]:
    """``stomper review --json`` against ``server``: exit code, document, stderr."""
    code = main(
        [
            "review",
            "--repo",
            str(repo),
            "--model",
            "fake",
            "--base-url",
            server.base_url,
            "--json",
            "--no-progress",
            *args,
        ]
    )
    captured = capsys.readouterr()
    document = json.loads(captured.out) if captured.out.strip() else {}
    return code, document, captured.err


def by_path(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {unit["path"]: unit for unit in document["units"]}


def lines_of(unit: dict[str, Any]) -> dict[str, int]:
    return {finding["rule"]: finding["line"] for finding in unit["findings"]}


def test_every_file_of_any_language_is_reviewed_and_the_checkout_is_untouched(
    project: Path, server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    head, status = sh(project, "rev-parse", "HEAD"), sh(project, "status", "--porcelain")
    code, document, err = review(project, server, capsys=capsys)
    assert code == 0, err
    units = by_path(document)
    assert {path: unit["status"] for path, unit in units.items()} == {
        "native/copy.c": "reviewed",
        "pkg/core.py": "reviewed",
        "pkg/settings.py": "reviewed",
        "pyproject.toml": "reviewed",
    }
    assert lines_of(units["pkg/core.py"]) == {
        "todo-left": 5,
        "eval-of-input": 6,
        "compare-to-none": 11,
        "bare-except": 12,
    }
    assert lines_of(units["native/copy.c"]) == {"unsafe-copy": 4}
    assert document["totals"]["findings"] == 6 and document["totals"]["error"] == 3
    assert server.stats().completions == 4
    assert sh(project, "rev-parse", "HEAD") == head
    assert sh(project, "status", "--porcelain") == status
    assert "6 findings (3 error, 1 warning, 2 note)" in err


def test_a_wrong_line_with_a_true_quote_is_relocated_and_a_false_quote_dropped(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    style = ReviewStyle(line_offset=3, false_quote=True)
    with FakeOpenAI(review=style) as server:
        code, document, err = review(project, server, "pkg/core.py", capsys=capsys)
    assert code == 0, err
    (unit,) = document["units"]
    assert lines_of(unit) == {
        "todo-left": 5,
        "eval-of-input": 6,
        "compare-to-none": 11,
        "bare-except": 12,
    }
    assert all(finding["rule"] != "imagined" for finding in unit["findings"])
    assert unit["unlocated"] == 1 and document["totals"]["unlocated"] == 1
    text = CORE.splitlines()
    for finding in unit["findings"]:
        assert text[finding["line"] - 1].strip() == finding["quote"]


def test_a_file_reviewed_before_is_served_from_the_cache_without_a_request(
    project: Path, server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    code, first, err = review(project, server, "pkg", capsys=capsys)
    assert code == 0, err
    asked = server.stats().completions
    assert asked == 2
    # Fewer findings kept is served from the same cache: it holds them all.
    code, again, err = review(project, server, "pkg", "--max-findings", "1", capsys=capsys)
    assert code == 0, err
    assert server.stats().completions == asked
    assert again["totals"]["cached"] == 2 and again["totals"]["tokens_in"] == 0
    assert [len(unit["findings"]) for unit in again["units"]] == [1, 1]
    assert by_path(again)["pkg/core.py"]["findings"][0]["rule"] == "eval-of-input"
    # Another persona, or --no-cache, asks again.
    code, _, err = review(project, server, "pkg", "--persona", "security", capsys=capsys)
    assert code == 0, err
    assert server.stats().completions == asked + 2
    code, _, err = review(project, server, "pkg", "--no-cache", capsys=capsys)
    assert server.stats().completions == asked + 4


def test_a_changed_file_is_asked_again_as_its_blob_is_new(
    project: Path, server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    review(project, server, "pkg/core.py", capsys=capsys)
    (project / "pkg" / "core.py").write_text("\n\n" + CORE)
    sh(project, "commit", "-qam", "move everything down")
    code, document, err = review(project, server, "pkg/core.py", capsys=capsys)
    assert code == 0, err
    assert server.stats().completions == 2
    assert lines_of(document["units"][0])["eval-of-input"] == 8


def test_the_file_is_read_from_the_commit_not_from_the_users_edits(
    project: Path, server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    edited = "SAFE = 1\n"
    (project / "pkg" / "settings.py").write_text(edited)
    code, document, err = review(project, server, "pkg/settings.py", capsys=capsys)
    assert code == 0, err
    assert lines_of(document["units"][0]) == {"hard-coded-secret": 1}
    assert (project / "pkg" / "settings.py").read_text() == edited


def test_vendored_generated_and_binary_files_are_left_out(
    make: Callable[..., Path], server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make(
        {
            "app.py": CORE,
            "vendor/lib.py": CORE,
            "web/app.min.js": "eval(x)\n",
            "package-lock.json": "{}\n",
            "gen/api.py": "# Code generated by protoc. DO NOT EDIT.\nx = eval(y)\n",
            "marked/schema.py": CORE,
            ".gitattributes": "marked/** linguist-generated\n",
            "logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        }
    )
    code, document, err = review(repo, server, capsys=capsys)
    assert code == 0, err
    units = by_path(document)
    assert {path for path, unit in units.items() if unit["status"] == "reviewed"} == {
        "app.py",
        ".gitattributes",
        "pyproject.toml",
    }
    assert units["logo.png"]["reason"] == "binary file"
    assert units["gen/api.py"]["reason"].startswith("generated file")
    assert document["totals"]["left_out"] == 4
    assert server.stats().calls_per_path.keys() == {"app.py", ".gitattributes", "pyproject.toml"}


def test_include_and_exclude_come_from_the_project_file(
    make: Callable[..., Path], server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    config = (
        '[tool.ruff]\nline-length = 100\n\n[tool.stomper.review]\ninclude = ["src/*"]\n'
        'exclude = ["src/legacy/*"]\nmax_findings = 2\n'
    )
    repo = make(
        {
            "pyproject.toml": config,
            "src/a.py": CORE,
            "src/legacy/b.py": CORE,
            "tools/c.py": CORE,
        }
    )
    code, document, err = review(repo, server, "--max-findings", "3", capsys=capsys)
    assert code == 0, err
    (unit,) = document["units"]
    assert unit["path"] == "src/a.py" and len(unit["findings"]) == 3 and unit["cut"] == 1


def test_a_persona_file_sets_the_prompt_and_the_floor_and_a_flag_lowers_it(
    project: Path, server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    persona = project / "strict.toml"
    persona.write_text(
        'name = "strict"\nsystem = "You are strict."\nfocus = "everything"\n'
        'min_severity = "error"\n'
    )
    code, document, err = review(
        project, server, "pkg/core.py", "--persona", str(persona), capsys=capsys
    )
    assert code == 0, err
    assert lines_of(document["units"][0]) == {"eval-of-input": 6}
    assert document["persona"] == "strict"
    code, document, err = review(
        project,
        server,
        "pkg/core.py",
        "--persona",
        str(persona),
        "--min-severity",
        "warning",
        capsys=capsys,
    )
    assert set(lines_of(document["units"][0])) == {"eval-of-input", "bare-except"}


def test_an_unreadable_answer_is_asked_again_with_what_was_wrong(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faults = FaultPolicy(per_path={"pkg/settings.py": (Fault.GARBAGE,)})
    with FakeOpenAI(faults=faults) as server:
        code, document, err = review(project, server, "pkg/settings.py", capsys=capsys)
    assert code == 0, err
    (unit,) = document["units"]
    assert unit["attempts"] == 2 and lines_of(unit) == {"hard-coded-secret": 1}


def test_the_same_unreadable_answer_twice_ends_the_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faults = FaultPolicy(per_path={"pkg/settings.py": (Fault.GARBAGE,) * 5})
    with FakeOpenAI(faults=faults) as server:
        code, document, err = review(project, server, "pkg", capsys=capsys)
        asked = server.stats().calls_per_path["pkg/settings.py"]
    assert code == 1
    units = by_path(document)
    assert units["pkg/settings.py"]["status"] == "failed"
    assert "the same unreadable answer twice" in units["pkg/settings.py"]["reason"]
    assert asked == 2
    assert units["pkg/core.py"]["status"] == "reviewed"


def test_overload_is_waited_out_and_no_file_is_lost(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faults = FaultPolicy(schedule=(Fault.RATE_LIMIT, Fault.SERVER_ERROR, Fault.RATE_LIMIT))
    with FakeOpenAI(faults=faults, retry_after=0.01) as server:
        code, document, err = review(project, server, "-j", "2", capsys=capsys)
    assert code == 0, err
    assert {unit["status"] for unit in document["units"]} == {"reviewed"}
    assert document["totals"]["findings"] == 6


def test_sarif_and_markdown_files_are_written(
    project: Path, server: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sarif, markdown = tmp_path / "out.sarif", tmp_path / "review.md"
    code, _, err = review(
        project, server, "--sarif", str(sarif), "--markdown", str(markdown), capsys=capsys
    )
    assert code == 0, err
    log = json.loads(sarif.read_text())
    validate(log)
    (run,) = log["runs"]
    assert len(run["results"]) == 6
    text = markdown.read_text()
    assert text.startswith("## stomper review (general)")
    assert "| 6 | Error | `eval-of-input` |" in text and "### `native/copy.c`" in text


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--persona", "pirate"], "unknown persona 'pirate'"),
        (["--min-severity", "fatal"], "review.min_severity"),
        (["--max-findings", "0"], "--max-findings"),
        (["nowhere"], "no such file or directory: nowhere"),
        (["--sarif", "/nonexistent/folder/out.sarif"], "--sarif"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    project: Path,
    server: FakeOpenAI,
    args: list[str],
    said: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, document, err = review(project, server, *args, capsys=capsys)
    assert code == 2 and not document
    assert said in err and len(err.strip().splitlines()) == 1, err
    assert server.stats().completions == 0


def test_without_a_model_review_says_how_to_name_one(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["review", "--repo", str(project), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--model" in err and len(err.strip().splitlines()) == 1


def test_a_review_run_is_listed_and_refuses_resume(
    project: Path, server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    code, document, _ = review(project, server, "pkg", capsys=capsys)
    assert code == 0
    assert main(["runs", "--repo", str(project), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [run["command"] for run in listed] == ["review"]
    assert main(["resume", document["run_id"], "--repo", str(project)]) == 2
    assert "is a review" in capsys.readouterr().err


def test_with_diff_only_changed_files_are_reviewed_and_only_changed_lines_kept(
    project: Path, server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    sh(project, "branch", "main-line")
    sh(project, "commit", "-q", "--allow-empty", "-m", "nothing")
    added = "\n\ndef run(command):\n    return eval(command)  # TODO: a parser\n"
    (project / "pkg" / "core.py").write_text(CORE + added)
    sh(project, "commit", "-qam", "add run")
    # A commit on the other line of history is not part of the change.
    sh(project, "checkout", "-q", "main-line")
    (project / "pkg" / "settings.py").write_text(SETTINGS + 'TOKEN = "abc"\n')
    sh(project, "commit", "-qam", "elsewhere")
    sh(project, "checkout", "-q", "-")
    code, document, err = review(project, server, "--diff", "main-line", capsys=capsys)
    assert code == 0, err
    (unit,) = document["units"]
    assert unit["path"] == "pkg/core.py"
    changed = range(len(CORE.splitlines()) + 1, len(CORE.splitlines()) + 5)
    assert unit["findings"] and all(finding["line"] in changed for finding in unit["findings"])
    assert {finding["rule"] for finding in unit["findings"]} == {"eval-of-input", "todo-left"}
    assert unit["outside_diff"] == 4
    assert document["diff_base"] == sh(project, "rev-parse", "main-line~1").strip()
    code, _, err = review(project, server, "--diff", "no-such-ref", capsys=capsys)
    assert code == 2 and "--diff: 'no-such-ref' is not a commit" in err


def test_a_large_file_is_asked_in_parts_and_its_findings_keep_the_file_lines(
    make: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    body = "".join(f"    x{line} = {line}\n" for line in range(95))
    functions = [f"\n\ndef f{n}(text):\n{body}    return text\n" for n in range(10)]
    functions[1] = functions[1].replace("return text", "return eval(text)")
    functions[8] = functions[8].replace("return text", "return eval(text)")
    source = "import os\n" + "".join(functions)
    lines = source.splitlines()
    notes = "".join(f"line {n}\n" for n in range(1, 1001)).replace("line 390\n", "TODO: 390\n")
    repo = make({"big.py": source, "notes.txt": notes})
    with FakeOpenAI(review=ReviewStyle(line_offset=-7)) as server:
        code, document, err = review(repo, server, "big.py", "notes.txt", capsys=capsys)
        calls = server.stats().calls_per_path
    assert code == 0, err
    units = by_path(document)
    evals = [n for n, line in enumerate(lines, 1) if "eval(" in line]
    assert [f["line"] for f in units["big.py"]["findings"]] == evals
    assert calls["big.py"] == 3
    # Line 390 is in two windows of notes.txt (1-400 and 381-780): it is reported once.
    assert [(f["rule"], f["line"]) for f in units["notes.txt"]["findings"]] == [("todo-left", 390)]
    assert calls["notes.txt"] == 3


def test_reflect_scores_each_finding_and_leaves_out_those_under_the_threshold(
    project: Path, server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    code, document, err = review(project, server, "pkg/core.py", "--reflect", capsys=capsys)
    assert code == 0, err
    (unit,) = document["units"]
    # The fake scores a finding ten times its confidence: the TODO (0.3) is not sure enough.
    scores = {finding["rule"]: finding["score"] for finding in unit["findings"]}
    assert scores == {"eval-of-input": 9, "compare-to-none": 6, "bare-except": 7}
    assert unit["refuted"] == 1 and document["totals"]["refuted"] == 1
    assert server.stats().completions == 2
    assert "1 refuted by --reflect" in err


def test_reflect_on_a_cached_review_asks_only_the_second_question_and_then_nothing(
    project: Path, server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    review(project, server, "pkg", capsys=capsys)
    assert server.stats().completions == 2
    code, document, err = review(project, server, "pkg", "--reflect", capsys=capsys)
    assert code == 0, err
    assert server.stats().completions == 4
    code, again, err = review(project, server, "pkg", "--reflect", capsys=capsys)
    assert server.stats().completions == 4
    assert again["totals"]["cached"] == 2
    assert again["totals"]["findings"] == document["totals"]["findings"] == 4


def test_a_reflection_that_cannot_be_read_keeps_the_findings_and_says_so(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first request about the file is its review; the next two, its reflection.
    faults = FaultPolicy(per_path={"pkg/settings.py": (None, Fault.GARBAGE, Fault.GARBAGE)})
    with FakeOpenAI(faults=faults) as server:
        code, document, err = review(project, server, "pkg/settings.py", "--reflect", capsys=capsys)
    assert code == 0, err
    (unit,) = document["units"]
    assert lines_of(unit) == {"hard-coded-secret": 1} and unit["findings"][0]["score"] is None
    assert "--reflect: the same unreadable answer twice" in unit["reason"]


def test_the_api_key_in_a_reviewed_file_is_masked_in_every_output(
    make: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = "sk-review-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    repo = make({"conf.py": f'api_key = "{key}"\n'})
    sarif, markdown = tmp_path / "out.sarif", tmp_path / "out.md"
    with FakeOpenAI(api_key=key) as server:
        code, document, err = review(
            repo,
            server,
            "conf.py",
            "--sarif",
            str(sarif),
            "--markdown",
            str(markdown),
            capsys=capsys,
        )
    assert code == 0, err
    (finding,) = document["units"][0]["findings"]
    assert finding["rule"] == "hard-coded-secret" and key not in finding["quote"]
    for text in (json.dumps(document), err, sarif.read_text(), markdown.read_text()):
        assert key not in text
