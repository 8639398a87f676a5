"""``stomper run`` with a chat model as the agent (the fake OpenAI-compatible server on
loopback, answering as a model is prompted to), and budgets of tokens and cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stomper.cli import main
from stomper.tasks.prompt import task_prompt
from stomper.tasks.taskfile import Task
from stomper.testing.fake_openai import FakeOpenAI, read_task
from stomper.testing.repos import RUFF_CONFIG
from tests.conftest import sh
from tests.test_run import FOUR_FILES, a_task_a_file, by_id, subjects, tasks_file

PRICES = '\n[tool.stomper.prices]\n"fake" = { input = 2.0, output = 8.0 }\n'


def chat_tasks(folder: Path, tasks: list[dict[str, Any]]) -> Path:
    return tasks_file(folder, tasks, agent="openai")


def run_chat(
    repo: Path, tasks: Path, server: FakeOpenAI, capsys: pytest.CaptureFixture[str], *more: str
) -> Any:
    code = main(
        [
            "run",
            str(tasks),
            "--model",
            "fake",
            "--base-url",
            server.base_url,
            "--json",
            "--no-progress",
            "--repo",
            str(repo),
            *more,
        ]
    )
    captured = capsys.readouterr()
    document = json.loads(captured.out) if captured.out.strip() else {}
    document["exit_code"] = code
    document["stderr"] = captured.err
    return document


def test_a_model_works_tasks_from_the_files_it_is_shown(make, tmp_path, server, capsys) -> None:
    repo = make(
        {
            "src/a.py": "A = 1\n",
            "src/b.py": "def b():\n    return '```'\n",
            "docs/notes.md": "# Notes\n",
        }
    )
    base = sh(repo, "rev-parse", "HEAD").strip()
    tasks = chat_tasks(
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
                    "Make b say more, and add a module.",
                    "fake-agent: replace src/b.py: '```' => '````'",
                    "fake-agent: write src/new/mod.py: NEW = True",
                    "fake-agent: append docs/notes.md: - b says more",
                ],
                "files": ["src/*.py", "src/new/mod.py", "docs/notes.md"],
                "reads": ["src/a.py"],
                "depends_on": ["one"],
            },
        ],
    )

    document = run_chat(repo, tasks, server, capsys)

    assert document["exit_code"] == 0, document
    assert {task["id"]: task["status"] for task in document["tasks"]} == {
        "one": "landed",
        "two": "landed",
    }
    assert subjects(repo, base) == [
        "task(one): Change A.",
        "task(two): Make b say more, and add a module.",
    ]
    assert (repo / "src/a.py").read_text() == "A = 2\n"
    assert (repo / "src/b.py").read_text() == "def b():\n    return '````'\n"
    assert (repo / "src/new/mod.py").read_text() == "NEW = True\n"
    assert (repo / "docs/notes.md").read_text() == "# Notes\n- b says more\n"
    assert sh(repo, "status", "--porcelain") == ""
    stats = server.stats()
    assert stats.calls_per_path == {"one": 1, "two": 1} and not stats.errors
    use = document["metrics"]["use"]
    assert use["calls"] == 2
    assert (use["tokens_in"], use["tokens_out"]) == (stats.tokens_in, stats.tokens_out)
    assert use["priced"] is False and use["cost"] == 0
    assert by_id(document)["two"]["use"]["calls"] == 1


def test_an_answer_that_does_not_apply_goes_back_to_the_model_with_why(
    make, tmp_path, server, capsys
) -> None:
    repo = make({"src/a.py": "A = 1\n"})
    tasks = chat_tasks(
        tmp_path,
        [
            {
                "id": "one",
                "prompt": [
                    "Change A.",
                    "fake-agent: once fail not today",
                    "fake-agent: retry replace src/a.py: A = 1 => A = 2",
                ],
                "files": ["src/a.py"],
            }
        ],
    )

    document = run_chat(repo, tasks, server, capsys)

    assert document["exit_code"] == 0, document
    assert document["tasks"][0]["verdicts"] == ["FAIL", "PASS"]
    trail = [json.loads(line) for line in _audit(repo).read_text().splitlines()]
    feedback = trail[0]["attempts"][0]["feedback"]
    assert "held no SEARCH/REPLACE block" in feedback and "not today" in feedback
    assert (repo / "src/a.py").read_text() == "A = 2\n"


def test_a_model_that_writes_outside_its_files_is_blocked_and_lands_nothing(
    make, tmp_path, server, capsys
) -> None:
    repo = make({"src/a.py": "A = 1\n", "src/b.py": "B = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    tasks = chat_tasks(
        tmp_path,
        [
            {
                "id": "one",
                "prompt": [
                    "Change A.",
                    "fake-agent: replace src/a.py: A = 1 => A = 2",
                    "fake-agent: write src/b.py: B = 666",
                ],
                "files": ["src/a.py"],
                "reads": ["src/b.py"],  # shown, and so known to the model: only to read
            }
        ],
    )

    document = run_chat(repo, tasks, server, capsys)

    assert document["exit_code"] == 1
    assert document["tasks"][0]["status"] == "blocked"
    assert "src/b.py" in document["tasks"][0]["reason"]
    assert sh(repo, "rev-parse", "HEAD").strip() == base
    assert (repo / "src/b.py").read_text() == "B = 1\n"
    assert server.stats().calls_per_path == {"one": 1}  # blocked: never tried again


def test_a_spent_budget_of_tokens_keeps_what_landed_and_resume_goes_on(
    make, tmp_path, server, capsys
) -> None:
    repo = make(FOUR_FILES)
    base = sh(repo, "rev-parse", "HEAD").strip()
    tasks = chat_tasks(tmp_path, a_task_a_file())

    # One answer takes some hundreds of tokens: the first task's spends the budget.
    document = run_chat(repo, tasks, server, capsys, "-j", "1", "--max-tokens", "10")

    assert document["exit_code"] == 1 and document["status"] == "budget", document
    statuses = [task["status"] for task in document["tasks"]]
    assert statuses.count("landed") == 1 and statuses.count("skipped") == 3
    skipped = [task for task in document["tasks"] if task["status"] == "skipped"]
    assert all("budget of 10 tokens is spent" in task["reason"] for task in skipped)
    assert server.stats().completions == 1
    assert len(subjects(repo, base)) == 1

    code = main(
        ["resume", "--max-tokens", "1000000", "--json", "--no-progress", "--repo", str(repo)]
    )
    resumed = json.loads(capsys.readouterr().out)
    assert code == 0, resumed
    assert [task["status"] for task in resumed["tasks"]] == ["landed"] * 4
    assert sorted(subjects(repo, base)) == [f"task(t{n}): Task {n}." for n in range(4)]
    assert server.stats().completions == 4  # none that landed was asked again


def test_a_budget_of_cost_counts_at_the_models_price_per_task_and_run(
    make, tmp_path, server, capsys
) -> None:
    repo = make({"pyproject.toml": RUFF_CONFIG + PRICES, "src/a.py": "A = 1\n"})
    tasks = chat_tasks(
        tmp_path,
        [
            {
                "id": "never",
                "prompt": ["It cannot be done.", "fake-agent: fail no"],
                "files": ["src/a.py"],
                "max_cost": 0.000001,
            },
        ],
    )

    document = run_chat(repo, tasks, server, capsys, "--max-cost", "5")

    stats = server.stats()
    assert stats.completions == 1, document  # the task's own budget: no second attempt
    task = document["tasks"][0]
    assert task["status"] == "skipped" and "the task's budget of $1e-06 is spent" in task["reason"]
    cost = (stats.tokens_in * 2.0 + stats.tokens_out * 8.0) / 1_000_000
    assert document["metrics"]["use"]["priced"] is True
    assert document["metrics"]["use"]["cost"] == pytest.approx(cost)
    assert task["use"]["cost"] == pytest.approx(cost)


@pytest.mark.parametrize(
    ("agent", "flags", "said"),
    [
        ("openai", ["--max-cost", "1"], "a budget of cost needs the price of the model 'fake'"),
        ("command", ["--max-tokens", "100"], "the command agent reports no tokens"),
    ],
)
def test_a_budget_the_run_cannot_count_is_refused_before_anything_runs(
    make, tmp_path, server, capsys, agent, flags, said
) -> None:
    repo = make({"src/a.py": "A = 1\n"})
    tasks = chat_tasks(
        tmp_path,
        [{"id": "one", "prompt": ["Change A."], "files": ["src/a.py"], "agent": agent}],
    )

    document = run_chat(repo, tasks, server, capsys, "--agent-cmd", "true", *flags)

    assert document["exit_code"] == 2
    assert said in document["stderr"]
    assert len(document["stderr"].strip().splitlines()) == 1
    assert server.stats().completions == 0


_TEXT = st.text(st.sampled_from("ab `\n#=<>"), max_size=60)


@given(st.dictionaries(st.sampled_from(["a.py", "b/c.md", "d.txt"]), st.none() | _TEXT))
def test_the_files_a_prompt_shows_read_back_as_they_are(shown: dict[str, str | None]) -> None:
    task = Task(id="t", prompt="Do it.", files=())
    read = read_task(task_prompt(task, shown=shown, answer_format="Answer."))
    assert read is not None
    expected = {
        path: text if text is None or not text or text.endswith("\n") else text + "\n"
        for path, text in shown.items()
    }
    assert read.shown == expected


def _audit(repo: Path) -> Path:
    found = list((repo / ".git" / "stomper" / "runs").glob("*/tasks.jsonl"))
    assert len(found) == 1
    return found[0]
