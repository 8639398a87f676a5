"""The task file of ``stomper run`` and its plan: what each task touches, waves, problems."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from stomper.cli import main
from stomper.errors import ConfigError
from stomper.tasks import taskfile
from stomper.tasks.paths import Pattern
from stomper.tasks.plan import plan
from stomper.tasks.taskfile import Task

TRACKED = [
    "src/client.py",
    "src/config.py",
    "src/x/deep.py",
    "tests/test_client.py",
    "README.md",
    "docs/a.md",
]

TOML = """\
[defaults]
verify = "pytest -q"
max_attempts = 2

[[task]]
id = "config-v2"
prompt = "Move the config to v2."
files = ["src/config.py"]

[[task]]
id = "retry-client"
prompt_file = "prompts/retry.md"
files = ["src/client.py", "tests/test_client.py", "src/retry.py"]
reads = ["src/config.py"]
depends_on = ["config-v2"]
verify = "pytest -q tests/test_client.py"
timeout = 1200
"""


@pytest.mark.parametrize(
    ("pattern", "path", "named"),
    [
        ("src/**/*.py", "src/a.py", True),
        ("src/**/*.py", "src/x/y/a.py", True),
        ("src/*.py", "src/x/a.py", False),
        ("src", "src/x/a.py", True),
        ("src", "srcx/a.py", False),
        ("a/[bc].py", "a/b.py", True),
        ("a/[!bc].py", "a/b.py", False),
        ("a?.py", "a/.py", False),
        ("**", "any/thing", True),
    ],
)
def test_a_pattern_names_files_as_the_task_file_says(pattern, path, named) -> None:
    assert Pattern(pattern).covers(path) is named


def write_tasks(folder: Path, text: str = TOML, name: str = "tasks.toml") -> Path:
    (folder / "prompts").mkdir(exist_ok=True)
    (folder / "prompts" / "retry.md").write_text("Add retries with backoff.\n\nKeep it small.\n")
    path = folder / name
    path.write_text(text)
    return path


def test_toml_json_and_yaml_say_the_same_and_defaults_fill_in(tmp_path) -> None:
    from_toml = taskfile.load(write_tasks(tmp_path))
    data = tomllib.loads(TOML)
    from_json = taskfile.load(write_tasks(tmp_path, json.dumps(data), "tasks.json"))
    yaml_text = yaml.safe_dump({"defaults": data["defaults"], "tasks": data["task"]})
    assert not yaml_text.lstrip().startswith("{")  # block style, not JSON
    from_yaml = taskfile.load(write_tasks(tmp_path, yaml_text, "tasks.yaml"))

    assert from_toml == from_json == from_yaml
    config, retry = from_toml
    assert (config.verify, config.max_attempts, config.timeout) == ("pytest -q", 2, None)
    assert retry.verify == "pytest -q tests/test_client.py" and retry.timeout == 1200.0
    assert retry.prompt.startswith("Add retries") and retry.title == "Add retries with backoff."
    assert retry.depends_on == ("config-v2",)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('[[task]]\nid = "a"\nprompt = "p"\nfiles = ["x"]\ncolour = 1\n', "unknown key 'colour'"),
        ('[[task]]\nid = "a b"\nprompt = "p"\nfiles = ["x"]\n', "task 1 (a b): an id is letters"),
        ('[[task]]\nid = "a"\nfiles = ["x"]\n', "task 1 (a): the prompt is empty"),
        ('[[task]]\nid = "a"\nprompt = "p"\n', "task 1 (a): files is missing"),
        ('[[task]]\nprompt = "p"\nfiles = ["x"]\n', "task 1: id is missing"),
        ('[[task]]\nid = "a"\nprompt = "p"\nprompt_file = "f"\nfiles = ["x"]\n', "not both"),
        ('[[task]]\nid = "a"\nprompt_file = "gone.md"\nfiles = ["x"]\n', "no prompt_file at"),
        ('[[task]]\nid = "a"\nprompt = "p"\nfiles = "x"\n', "task 1 (a): files:"),
        ('[[task]]\nid = "a"\nprompt = "p"\nfiles = ["/etc/passwd"]\n', "is absolute"),
        ('[[task]]\nid = "a"\nprompt = "p"\nfiles = ["../up.py"]\n', "outside the repository"),
        ('[[task]]\nid = "a"\nprompt = "p"\nfiles = ["x"]\nmax_attempts = 0\n', "max_attempts"),
        ('[[task]]\nid = "a"\nprompt = "p"\nfiles = ["x"]\nverify = "pytest \'-q"\n', "verify"),
        ("[[task]\n", "does not parse"),
        ("[defaults]\n", "no tasks"),
        ('[[job]]\nid = "a"\n', "unknown key 'job'"),
    ],
)
def test_a_bad_task_file_is_one_line_that_says_what_is_wrong(tmp_path, text, said) -> None:
    with pytest.raises(ConfigError) as raised:
        taskfile.load(write_tasks(tmp_path, text))
    assert said in str(raised.value)
    assert "\n" not in str(raised.value)


def task(task_id: str, files: list[str], *, deps=(), reads=()) -> Task:
    return Task(
        task_id,
        f"do {task_id}",
        tuple(Pattern(f) for f in files),
        tuple(Pattern(r) for r in reads),
        tuple(deps),
    )


def test_every_problem_of_the_tasks_together_is_found_at_once() -> None:
    made = plan(
        [
            task("a", ["src/config.py"], deps=["c"]),
            task("b", ["src/*.rs"], deps=["a"], reads=["docs/missing.md"]),
            task("c", ["README.md"], deps=["b"]),
            task("d", ["new/one.py"]),
            task("e", ["new/one.py"]),
            task("d", ["src/client.py"]),
        ],
        TRACKED,
    )
    assert made.problems == (
        "task 'b': files: 'src/*.rs' names no tracked file (a path without wildcards is a "
        "file to create)",
        "task 'b': reads: 'docs/missing.md' names no tracked file",
        "task id 'd' is given twice (tasks 4 and 6)",
        "dependency cycle: a -> c -> b -> a",
    )
    assert made.waves == ()  # no order while there is a cycle

    unknown = plan([task("a", ["README.md"], deps=["nobody"])], TRACKED)
    assert unknown.problems == ("task 'a' depends on 'nobody', which no task is",)

    twice = plan([task("d", ["new/one.py"]), task("e", ["new/one.py"])], TRACKED)
    assert twice.problems == (
        "tasks 'd' and 'e' would both create new/one.py (make one depend on the other)",
    )
    one_after_the_other = plan(
        [task("d", ["new/one.py"]), task("e", ["new/one.py"], deps=["d"])], TRACKED
    )
    assert one_after_the_other.problems == ()


def test_the_waves_keep_conflicting_tasks_apart_and_dependencies_first() -> None:
    made = plan(
        [
            task("config", ["src/config.py"]),
            task("client", ["src/client.py", "tests/test_client.py"], reads=["src/config.py"]),
            task("docs", ["README.md"], reads=["src/client.py"]),
            task("deep", ["src/**"], deps=["config"]),
            task("notes", ["docs/new.md"]),
            task("index", ["docs/*.md"]),
        ],
        TRACKED,
    )
    assert made.problems == ()
    # client reads what config writes; docs reads what client writes; deep writes all of src;
    # index names the file notes creates.
    assert made.waves == (("config", "docs", "notes"), ("client", "index"), ("deep",))
    assert made.critical_path == ("config", "deep")


@given(st.integers(min_value=1, max_value=12), st.data())
def test_a_plan_of_any_tasks_keeps_every_rule(count, data) -> None:
    files = [f"f{n}.py" for n in range(8)]
    tasks = []
    for n in range(count):
        deps = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=3)) if n else []
        writes = data.draw(st.lists(st.sampled_from(files), min_size=1, max_size=3, unique=True))
        reads = data.draw(st.lists(st.sampled_from(files), max_size=2, unique=True))
        tasks.append(task(f"t{n}", writes, deps=[f"t{d}" for d in deps], reads=reads))
    made = plan(tasks, files)
    assert made.problems == ()
    waves = {task_id: at for at, wave in enumerate(made.waves) for task_id in wave}
    assert sorted(waves) == sorted(one.id for one in tasks)
    by_id = {one.id: one for one in made.tasks}
    for wave in made.waves:
        for at, first in enumerate(wave):
            assert not any(by_id[first].conflicts(by_id[other]) for other in wave[at + 1 :])
    for one in tasks:
        assert all(waves[needed] < waves[one.id] for needed in one.depends_on)

    def longest(task_id: str) -> int:
        return 1 + max((longest(d) for d in by_id[task_id].task.depends_on), default=0)

    path = made.critical_path
    assert len(path) == max(longest(one.id) for one in tasks)
    assert all(
        before in by_id[after].task.depends_on
        for before, after in zip(path, path[1:], strict=False)
    )


def test_run_plan_shows_the_plan_and_every_problem_is_a_line_with_exit_2(
    make, tmp_path, capsys
) -> None:
    repo = make(dict.fromkeys(TRACKED, "X = 1\n"))
    tasks = write_tasks(tmp_path)

    assert main(["run", str(tasks), "--plan", "--repo", str(repo)]) == 0
    err = capsys.readouterr().err
    assert "2 tasks in 2 waves" in err
    assert "retry-client  2 files · 1 new · reads 1 · after config-v2" in err
    assert "critical path: config-v2 -> retry-client (2 tasks)" in err

    assert main(["run", str(tasks), "--plan", "--json", "--repo", str(repo)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["waves"] == [["config-v2"], ["retry-client"]]
    assert document["tasks"][1]["creates"] == ["src/retry.py"]

    # Working them needs a CLI agent or a chat model: said before anything runs, exit 2.
    assert main(["run", str(tasks), "--agent", "autofix", "--repo", str(repo)]) == 2
    assert (
        "tasks are worked by a CLI agent or a chat model (openai), not 'autofix'"
        in capsys.readouterr().err
    )

    cyclic = TOML.replace('id = "config-v2"', 'id = "config-v2"\ndepends_on = ["retry-client"]')
    assert main(["run", str(write_tasks(tmp_path, cyclic)), "--plan", "--repo", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "dependency cycle: config-v2 -> retry-client -> config-v2" in err

    assert main(["run", str(tmp_path / "none.toml"), "--plan", "--repo", str(repo)]) == 2
    assert "no task file at" in capsys.readouterr().err


def test_the_most_urgent_tasks_are_those_others_wait_for_or_whose_files_others_write() -> None:
    made = plan(
        [
            task("alone", ["README.md"]),
            task("busy-1", ["src/config.py"]),
            task("busy-2", ["src/config.py"], deps=["busy-1"]),
            task("busy-3", ["src/config.py", "src/client.py"]),
            task("leaf", ["docs/a.md"], deps=["busy-2"]),
        ],
        TRACKED,
    )
    rank = made.urgency()
    # busy-1 is waited for by two and shares its file with two more.
    assert sorted(rank, key=rank.__getitem__) == ["busy-1", "busy-2", "busy-3", "alone", "leaf"]
