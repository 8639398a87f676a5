"""What the agent of a task is told: the task's prompt as written, the files it may touch,
the rules, and what went wrong the time before."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from stomper.redaction import redact

if TYPE_CHECKING:  # the fake agent reads FEEDBACK_HEADING, and starts faster without these
    from stomper.tasks.taskfile import Task

FEEDBACK_HEADING = "## What went wrong the last time"
"""Begins the part of a prompt that says why the attempt before was not taken."""

RULES = (
    "Change, create or delete only the files listed above; read anything else you need.",
    "Do not run git: your work is taken from the files, and what you commit is ignored.",
    "Fix causes: never add `# noqa`, `# type: ignore`, `pytest.mark.skip` or `xfail` to "
    "silence a tool or a test.",
)


def task_prompt(task: Task, *, feedback: str | None = None) -> str:
    """The whole prompt of one attempt at ``task``."""
    parts = [f"# Task {task.id}", "", task.prompt.rstrip(), "", "## Files you may change"]
    parts += [f"- {pattern.text}" for pattern in task.files]
    if task.reads:
        parts += ["", "## Files you may read (do not change them)"]
        parts += [f"- {pattern.text}" for pattern in task.reads]
    parts += ["", "## Rules", *(f"- {rule}" for rule in RULES)]
    if task.verify:
        parts += ["", f"Your change must pass `{task.verify}`, run from the repository's root."]
    if feedback:
        parts += ["", FEEDBACK_HEADING, "", redact(feedback.rstrip())]
    return "\n".join(parts) + "\n"


def first_file(patterns: Sequence[str]) -> str:
    """What ``{file}`` stands for in an agent's command: the task's first pattern."""
    return patterns[0]
