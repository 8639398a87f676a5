"""Guardrails and retries, driven by agents that cheat, wander or make slow progress."""

from __future__ import annotations

import ast
import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stomper.agents import AgentOutcome, AgentTask, AttemptFailed
from stomper.commands.fix import FixRequest, run_fix
from stomper.config import Settings
from stomper.diagnostics import Diagnostic, ruff
from stomper.guardrails import (
    SUPPRESSIONS,
    _deleted_definitions,
    _keeps_every_definition,
    suppression_violation,
)
from stomper.report import RunReport
from stomper.testing.repos import module
from tests.conftest import sh


def fix_with(repo: Path, agent: object, **settings: object) -> RunReport:
    request = FixRequest(cwd=repo, progress=False)
    return asyncio.run(run_fix(request, Settings(**settings), agent=agent))  # type: ignore[arg-type]


def only(report: RunReport):
    (result,) = report.results
    return result


@dataclass
class Scripted:
    """Does ``edit(task)`` on each call and counts the calls."""

    edit: object
    name: str = "scripted"
    calls: list[int] = field(default_factory=list)

    async def fix(self, task: AgentTask) -> AgentOutcome:
        self.calls.append(task.attempt)
        self.edit(task)  # type: ignore[operator]
        return AgentOutcome(tokens_in=10, tokens_out=5)


def add_noqa(task: AgentTask) -> None:
    lines = task.file.read_text().splitlines(keepends=True)
    for diag in task.unit.diagnostics:
        lines[diag.line - 1] = lines[diag.line - 1].rstrip("\n") + "  # noqa\n"
    task.file.write_text("".join(lines))


def assert_nothing_landed(repo: Path, head: str) -> None:
    assert sh(repo, "rev-parse", "HEAD").strip() == head
    assert sh(repo, "status", "--porcelain") == ""
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


@pytest.fixture
def repo(make) -> Path:
    return make({"a.py": module(["F401", "F821"]), "b.py": "B = 1\n"})


def test_suppression_is_rejected(repo) -> None:
    head = sh(repo, "rev-parse", "HEAD").strip()
    result = only(fix_with(repo, Scripted(add_noqa)))
    assert result.status == "failed"
    assert "suppressions" in result.reason and "# noqa" in result.reason
    assert_nothing_landed(repo, head)


def test_suppression_allowed_by_config(repo) -> None:
    result = only(fix_with(repo, Scripted(add_noqa), allow_suppressions=True))
    assert result.status == "fixed"
    assert result.commit


def test_out_of_scope_edit_is_rejected(repo) -> None:
    head = sh(repo, "rev-parse", "HEAD").strip()

    def wander(task: AgentTask) -> None:
        (task.workspace / "b.py").write_text("B = 2\n")
        add_noqa(task)

    result = only(fix_with(repo, Scripted(wander), allow_suppressions=True))
    assert result.status == "failed"
    assert "outside the unit: b.py" in result.reason
    assert_nothing_landed(repo, head)


def test_new_file_is_rejected(repo) -> None:
    head = sh(repo, "rev-parse", "HEAD").strip()

    def create(task: AgentTask) -> None:
        (task.workspace / "helper.py").write_text("X = 1\n")

    result = only(fix_with(repo, Scripted(create)))
    assert result.status == "failed"
    assert "helper.py" in result.reason
    assert_nothing_landed(repo, head)
    assert not (repo / "helper.py").exists()


def test_symlink_escape_is_rejected(repo, tmp_path) -> None:
    head = sh(repo, "rev-parse", "HEAD").strip()
    outside = tmp_path / "outside.py"
    outside.write_text("X = 1\n")

    def link(task: AgentTask) -> None:
        task.file.unlink()
        os.symlink(outside, task.file)

    result = only(fix_with(repo, Scripted(link)))
    assert result.status == "failed"
    assert "symlink" in result.reason
    assert_nothing_landed(repo, head)
    assert outside.read_text() == "X = 1\n"


def test_mode_change_is_rejected(repo) -> None:
    head = sh(repo, "rev-parse", "HEAD").strip()

    def chmod(task: AgentTask) -> None:
        add_noqa(task)
        task.file.chmod(0o755)

    result = only(fix_with(repo, Scripted(chmod), allow_suppressions=True))
    assert result.status == "failed"
    assert "mode" in result.reason
    assert_nothing_landed(repo, head)


def test_deleting_the_flagged_code_is_rejected(repo) -> None:
    head = sh(repo, "rev-parse", "HEAD").strip()

    def delete(task: AgentTask) -> None:
        text = task.file.read_text()
        start = text.index("def total():")
        end = text.index("def add(")
        task.file.write_text(text[:start] + text[end:])

    result = only(fix_with(repo, Scripted(delete)))
    assert result.status == "failed"
    assert "deletes the flagged code" in result.reason and "total" in result.reason
    assert_nothing_landed(repo, head)


def test_fixing_one_per_attempt_converges(make) -> None:
    repo = make({"a.py": module(["E713", "F401", "F541"])})

    @dataclass
    class OneAtATime:
        name: str = "one-at-a-time"
        feedback: list[str | None] = field(default_factory=list)

        async def fix(self, task: AgentTask) -> AgentOutcome:
            self.feedback.append(task.feedback)
            left = sorted(d.code for d in task.unit.diagnostics)
            if task.feedback:
                left = [code for code in left if code in task.feedback]
            await ruff.apply_fixes(
                task.workspace, task.unit.path, select=left[:1], ignore=(), unsafe=False
            )
            return AgentOutcome()

    agent = OneAtATime()
    result = only(fix_with(repo, agent, max_attempts=3))
    assert result.status == "fixed"
    assert result.attempts == 3
    assert agent.feedback[0] is None
    assert "Still reported" in agent.feedback[1]
    assert "import os" not in (repo / "a.py").read_text()


def test_no_progress_stops_after_the_first_unproductive_attempt(repo) -> None:
    head = sh(repo, "rev-parse", "HEAD").strip()

    def comment(task: AgentTask) -> None:
        task.file.write_text(task.file.read_text() + "# thinking\n")

    agent = Scripted(comment)
    result = only(fix_with(repo, agent, max_attempts=5))
    assert agent.calls == [1]
    assert result.attempts == 1
    assert result.status == "failed"
    assert "did not reduce" in result.reason
    assert_nothing_landed(repo, head)


def test_partial_progress_then_stall_lands_the_best(make) -> None:
    repo = make({"a.py": module(["F401", "F821"])})

    def fix_then_nothing(task: AgentTask) -> None:
        if task.attempt == 1:
            text = task.file.read_text().replace("import os\n", "")
            task.file.write_text(text)
        else:
            task.file.write_text(task.file.read_text() + "# still thinking\n")

    agent = Scripted(fix_then_nothing)
    result = only(fix_with(repo, agent, max_attempts=3))
    assert agent.calls == [1, 2]
    assert result.status == "partial"
    assert result.commit
    assert "# still thinking" not in (repo / "a.py").read_text()
    assert "did not reduce" in result.reason


def test_unparseable_answers_are_retried_with_feedback(make) -> None:
    repo = make({"a.py": module(["F401"])})

    @dataclass
    class Garbled:
        name: str = "garbled"
        seen: list[str | None] = field(default_factory=list)

        async def fix(self, task: AgentTask) -> AgentOutcome:
            self.seen.append(task.feedback)
            if task.attempt == 1:
                task.file.write_text("half-written")
                raise AttemptFailed("block 1 did not match", tokens_in=7)
            task.file.write_text(task.file.read_text().replace("import os\n", ""))
            return AgentOutcome(tokens_in=3, tokens_out=2)

    agent = Garbled()
    report = fix_with(repo, agent)
    result = only(report)
    assert result.status == "fixed" and result.attempts == 2
    assert agent.seen == [None, "block 1 did not match"]
    assert result.tokens_in == 10 and result.tokens_out == 2
    assert report.to_json()["metrics"]["tokens"] == {"input": 10, "output": 2}


def test_agent_timeout_fails_the_unit(make) -> None:
    repo = make({"a.py": module(["F401"])})

    class Sleepy:
        name = "sleepy"

        async def fix(self, task: AgentTask) -> AgentOutcome:
            await asyncio.sleep(30)
            return AgentOutcome()

    result = only(fix_with(repo, Sleepy(), agent_timeout=0.5))
    assert result.status == "failed"
    assert "ran past 0.5s" in result.reason


def test_test_gate_blocks_a_unit_that_breaks_tests(make) -> None:
    checker = (
        "import pathlib\nimport sys\n\n"
        "TEXT = pathlib.Path('a.py').read_text()\n"
        "sys.exit(0 if 'import os' in TEXT else 1)\n"
    )
    repo = make({"a.py": module(["F401"]), "check.py": checker})
    head = sh(repo, "rev-parse", "HEAD").strip()
    import sys

    from stomper.agents.autofix import AutofixAgent

    result = only(fix_with(repo, AutofixAgent(), test_cmd=f"{sys.executable} check.py"))
    assert result.status == "failed"
    assert "tests fail" in result.reason
    assert_nothing_landed(repo, head)


def test_tests_failing_at_base_are_not_blamed(make) -> None:
    import sys

    test_file = "def test_broken():\n    assert False\n"
    repo = make({"a.py": module(["F401"]), "test_base.py": test_file})
    from stomper.agents.autofix import AutofixAgent

    command = f"{sys.executable} -m pytest -q -p no:cacheprovider test_base.py"
    result = only(fix_with(repo, AutofixAgent(), test_cmd=command))
    assert result.status == "fixed", result.reason
    assert result.commit


def test_suppression_patterns() -> None:
    assert suppression_violation("x = 1\n", "x = 1  # type: ignore\n", ())
    assert suppression_violation("x = 1\n", "x = 1  # NOQA: F401\n", ())
    assert suppression_violation("x = 1\n", "x = 1  # pyright: ignore[reportX]\n", ())
    assert suppression_violation("", "pytest.xfail('later')\n", ())
    assert suppression_violation("", "@pytest.mark.skip\ndef test(): pass\n", ())
    assert suppression_violation("x = 1  # noqa\n", "y = 1  # noqa\n", ()) is None


def added_by_counting_all(before: str, after: str) -> list[str]:
    """What the suppression check means, by counting over both whole sources."""
    return [
        name
        for name, _word, pattern in SUPPRESSIONS
        if len(pattern.findall(after)) > len(pattern.findall(before))
    ]


SUPPRESSING_LINES = st.lists(
    st.sampled_from(
        [
            "x = 1\n",
            "x = 1  # noqa\n",
            "x = 1  # NOQA: F401\r\n",
            "#\tnoqa\n",
            "# \n",
            "noqa\n",
            "y = 2  # type: ignore[assignment]\n",
            "#type:ignore\r",
            "# pyright: ignore\n",
            "@pytest.mark.skip\n",
            "pytest.xfail('x')\n",
            "",
        ]
    ),
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(SUPPRESSING_LINES, SUPPRESSING_LINES, SUPPRESSING_LINES, SUPPRESSING_LINES)
@example(["# \n"], [], ["noqa\n"], [])  # a comment never goes on past its line
def test_suppressions_are_counted_where_the_sources_differ_as_over_all_of_them(
    head: list[str], old: list[str], new: list[str], tail: list[str]
) -> None:
    before = "".join(head + old + tail)
    after = "".join(head + new + tail)
    found = suppression_violation(before, after, ())
    expected = added_by_counting_all(before, after)
    if expected:
        assert found == f"the change adds suppressions instead of fixes: {', '.join(expected)}"
    else:
        assert found is None or "suppressions" not in found


def deleted_by_parsing_both(before: str, after: str, lines: set[int]) -> list[str]:
    """What the deleted-definition check means, by parsing both sources every time."""

    def definitions(source: str) -> dict[str, tuple[int, int]] | None:
        try:
            body = ast.parse(source).body
        except SyntaxError:
            return None
        kinds = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
        return {
            node.name: (node.lineno, node.end_lineno or node.lineno)
            for node in body
            if isinstance(node, kinds)
        }

    old, new = definitions(before), definitions(after)
    if old is None or new is None:
        return []
    return sorted(
        name
        for name, (start, end) in old.items()
        if name not in new and any(start <= line <= end for line in lines)
    )


# Top-level definitions in the shapes Python allows, and look-alikes that are not ones.
BLOCKS = [
    "def {n}():\n    return 1\n",
    "async def {n}():\n    return 1\n",
    "class {n}:\n    def method(self):\n        return 1\n",
    "@decorator\ndef {n}():\n    pass\n",
    "def \\\n  {n}():\n    pass\n",
    "async \\\n    def {n}():\n    pass\n",
    "\\\n  def {n}(): pass\n",
    "\fdef {n}():\n    pass\n",
    "  \f\fclass {n}(object): pass\n",
    "class {n}\\\n  (object): pass\n",
    "def {n}(): pass\r",
    "def {n}(): pass\r\n",
    "if True:\n    def {n}():\n        pass\n",
    "TEXT = '''\ndef {n}():\n'''\n",
    "# def {n}\n",
    "{n} = lambda: 1\n",
    "class {n}():\n    size = 1\n",
    "class Hang:\n    \\\n    x = 1\n",
    "X = 1 + \\\n    2\n",
]
NAMES = ["alpha", "beta", "ﬁx", "e\u0301t\u00e9", "_x9"]


@pytest.mark.parametrize(
    ("before", "name", "line"),
    [
        ("async \\\n    def gone():\n    pass\n", "gone", 2),
        ("class \\\n  gone(object): pass\n", "gone", 1),
        (" \f\fdef gone(): pass\n", "gone", 1),
        ("X = 1\rdef gone(): pass\r", "gone", 2),
        ("def gone\\\n(): pass\n", "gone", 1),
        ("def ﬁx(): pass\n", "fix", 1),
    ],
)
def test_a_deleted_definition_of_any_shape_is_found(before: str, name: str, line: int) -> None:
    targeted = [Diagnostic("ruff", "F401", "x", "a.py", line, 1)]
    assert _deleted_definitions(before, "Y = 2\n", targeted) == [name]


@pytest.mark.parametrize(
    ("before", "after", "line"),
    [
        pytest.param(
            "def gone():\n    pass\n", "X = '''\ndef gone():\n    pass\n'''\n", 1, id="quote"
        ),
        pytest.param(
            "def gone(): pass\n",
            "class Holder:\n    \\\ndef gone(): pass\n",
            1,
            id="backslash",
        ),
        pytest.param(
            "class Hang:\n    \\\n    x = 1\ndef gone(): pass\n",
            "class Hang:\n    \\\ndef gone(): pass\n",
            4,
            id="line-before-ends-in-backslash",
        ),
        pytest.param("X = 1\ndef gone():\n    pass\n", "X = 1\n", 2, id="header-gone"),
        # From 3.12 on, a brace opens a replacement field in an f-string's text, where a
        # triple quote opens a string: the definition after it becomes text. (3.11 reads
        # the f-string whole, and the new source does not parse.)
        pytest.param(
            'X = f"""\na\n"""\ndef gone(): pass\nZ = """}"""\n',
            'X = f"""\n{\n"""\ndef gone(): pass\nZ = """}"""\n',
            4,
            id="brace",
        ),
    ],
)
def test_changed_lines_that_may_hide_a_definition_are_parsed(
    before: str, after: str, line: int
) -> None:
    targeted = [Diagnostic("ruff", "F821", "x", "a.py", line, 1)]
    assert not _keeps_every_definition(before, after)
    expected = deleted_by_parsing_both(before, after, {line})
    assert _deleted_definitions(before, after, targeted) == expected
    assert expected == ([] if "{" in after and sys.version_info < (3, 12) else ["gone"])


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(
            "import os\n\n\ndef kept():\n    pass\n", "\n\ndef kept():\n    pass\n", id="F401"
        ),
        pytest.param("class Box():\n    size = 1\n", "class Box:\n    size = 1\n", id="UP039"),
        pytest.param(
            "def missing(key, table):\n    return not key in table\n",
            "def missing(key, table):\n    return key not in table\n",
            id="E713",
        ),
        pytest.param('GREETING = f"hello"  # it\'s\n', 'GREETING = "hello"  # it\'s\n', id="F541"),
    ],
)
def test_a_change_that_keeps_every_definition_needs_no_parse(before: str, after: str) -> None:
    assert _keeps_every_definition(before, after)
    assert _deleted_definitions(before, after, []) == []


# What an agent may do to the old source: drop a block, rename one, nest one, swallow
# everything after a point into a string, put lines before one, cut its last line, or
# change its header as ruff's fixes do.
EDITS = ["drop", "rename", "nest", "quote", "keep", "insert", "cut", "reheader"]
INSERTS = [
    "x = 1\n",
    "@decorator\n",
    "if True:\n    pass\n",
    "class Holder:\n",
    "x = (\n",
    "    \\\n",
    "class Holder:\n    \\\n",
    "# a comment \\\n",
    "'''\n",
]


@st.composite
def sources(draw: st.DrawFn) -> tuple[str, str, set[int]]:
    chosen = draw(st.lists(st.tuples(st.sampled_from(BLOCKS), st.sampled_from(NAMES)), max_size=6))
    blocks = [block.format(n=name) for block, name in chosen]
    prefix = draw(st.sampled_from(["", "\ufeff", "import os\n"]))
    before = prefix + "".join(blocks)
    edited = list(blocks)
    for _ in range(draw(st.integers(0, 3))):
        if not edited:
            break
        at = draw(st.integers(0, len(edited) - 1))
        edit = draw(st.sampled_from(EDITS))
        if edit == "drop":
            del edited[at]
        elif edit == "rename":
            edited[at] = edited[at].replace(chosen[at % len(chosen)][1], "renamed", 1)
        elif edit == "nest":
            body = "".join("    " + line for line in edited[at].splitlines(keepends=True))
            edited[at] = "class Holder:\n" + body
        elif edit == "quote":
            edited[at] = 'LATER = """\n' + edited[at]
            edited.append('"""\n')
        elif edit == "insert":
            edited[at] = draw(st.sampled_from(INSERTS)) + edited[at]
        elif edit == "cut":
            edited[at] = "".join(edited[at].splitlines(keepends=True)[:-1])
        elif edit == "reheader":
            edited[at] = edited[at].replace("():", ":", 1).replace("(object):", ":", 1)
    after = prefix + "".join(edited)
    count = before.count("\n") + 1
    lines = set(draw(st.lists(st.integers(1, count), max_size=4)))
    return before, after, lines


@settings(max_examples=1500, deadline=None)
@given(sources())
def test_the_deleted_definitions_are_those_parsing_both_finds(
    case: tuple[str, str, set[int]],
) -> None:
    before, after, lines = case
    targeted = [Diagnostic("ruff", "F401", "x", "a.py", line, 1) for line in lines]
    assert _deleted_definitions(before, after, targeted) == deleted_by_parsing_both(
        before, after, lines
    )
