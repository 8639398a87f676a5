"""What the agent of a task is told: the task's prompt as written, the files it may touch,
the rules, and what went wrong the time before. An agent that does not see the tree (a
chat model) is also shown the files, as they are at the attempt's start, and told how to
answer (:data:`stomper.agents.edits.ANSWER_FORMAT`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from stomper.redaction import redact

if TYPE_CHECKING:  # the fake agent reads FEEDBACK_HEADING, and starts faster without these
    from stomper.tasks.taskfile import Task

FEEDBACK_HEADING = "## What went wrong the last time"
"""Begins the part of a prompt that says why the attempt before was not taken."""
FILES_HEADING = "## The files as they are now"
"""Begins the part of a prompt that shows an agent the files, each under ``### `path```."""
MISSING = "(not there yet: create it with an empty SEARCH part)"
"""What stands after the heading of a file that does not exist yet."""
TOO_LARGE = "(not shown: too large for the prompt, or not text)"

SYSTEM = (
    "You are a careful software engineer working on one task in a repository. Do what "
    "the task asks, keep the code's behaviour otherwise, and change only the files it "
    "lets you change."
)

RULES = (
    "Change, create or delete only the files listed above; read anything else you need.",
    "Do not run git: your work is taken from the files, and what you commit is ignored.",
    "Fix causes: never add `# noqa`, `# type: ignore`, `pytest.mark.skip` or `xfail` to "
    "silence a tool or a test.",
)


def task_prompt(
    task: Task,
    *,
    feedback: str | None = None,
    shown: Mapping[str, str | None] | None = None,
    too_large: Sequence[str] = (),
    answer_format: str | None = None,
) -> str:
    """The whole prompt of one attempt at ``task``; ``shown`` maps the files to show to
    their text (None: not there yet), ``too_large`` names those left out for their size."""
    parts = [f"# Task {task.id}", "", task.prompt.rstrip(), "", "## Files you may change"]
    parts += [f"- {pattern.text}" for pattern in task.files]
    if task.reads:
        parts += ["", "## Files you may read (do not change them)"]
        parts += [f"- {pattern.text}" for pattern in task.reads]
    parts += ["", "## Rules", *(f"- {rule}" for rule in RULES)]
    if task.verify:
        parts += ["", f"Your change must pass `{task.verify}`, run from the repository's root."]
    if shown is not None:
        parts += ["", FILES_HEADING]
        for path, text in sorted(shown.items()):
            parts += ["", *_shown(path, text)]
        parts += [f"\n### `{path}` {TOO_LARGE}" for path in sorted(too_large)]
    if answer_format:
        parts += ["", "## How to answer", "", answer_format.rstrip()]
        parts += ["- To create a file, name it and leave the SEARCH part empty."]
    if feedback:
        parts += ["", FEEDBACK_HEADING, "", redact(feedback.rstrip())]
    return "\n".join(parts) + "\n"


def _shown(path: str, text: str | None) -> list[str]:
    """A file under its heading, in a fence longer than any run of backticks it holds."""
    if text is None:
        return [f"### `{path}` {MISSING}"]
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") or not text else text + "\n"
    return [f"### `{path}`", f"{fence}\n{body}{fence}"]


def first_file(patterns: Sequence[str]) -> str:
    """What ``{file}`` stands for in an agent's command: the task's first pattern."""
    return patterns[0]
