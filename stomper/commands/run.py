"""``stomper run TASKS``: declared tasks, planned into waves that never share a file.

``--plan`` reads the task file, checks the tasks against the repository's tracked files at
HEAD, and shows the plan without running anything: each task with what it waits for and
touches, the waves, and the critical path; every problem found is a line of its own, and
exit 2. Working the tasks themselves (agents in contained workspaces, verification, the
merge queue) is not part of stomper yet: without ``--plan`` the plan is checked, then
the command says so and exits 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stomper import console, git
from stomper.errors import ConfigError
from stomper.repository import open_repository
from stomper.tasks import taskfile
from stomper.tasks.plan import Plan, Planned, plan


@dataclass(frozen=True)
class RunRequest:
    cwd: Path
    tasks: Path
    plan_only: bool = False
    parallel: int = 4
    json: bool = False


async def run(request: RunRequest) -> int:
    if request.parallel < 1:
        raise ConfigError(f"-j must be at least 1, not {request.parallel}")
    repo = await open_repository(request.cwd)
    tasks = taskfile.load(request.tasks)
    tracked = await git.tree_entries(repo.root, repo.head)
    made = plan(tasks, tracked)
    if request.json:
        console.print_document({"tasks_file": str(request.tasks), **made.to_json()})
    if made.problems:
        for problem in made.problems:
            console.error(problem)
        return 2
    if not request.json:
        _show(made, request.parallel)
    if request.plan_only:
        return 0
    raise ConfigError(
        "stomper run can plan tasks (--plan) but not work them yet: the plan above is what "
        "a run would do"
    )


def _show(made: Plan, parallel: int) -> None:
    widest = max((len(wave) for wave in made.waves), default=0)
    count = len(made.tasks)
    console.info(
        f"[bold]{count} task{'s' * (count != 1)} in {len(made.waves)} "
        f"wave{'s' * (len(made.waves) != 1)}[/], at most {min(widest, parallel)} at once "
        f"(-j {parallel})",
    )
    width = max(len(one.id) for one in made.tasks)
    for one in made.tasks:
        console.info(f"  {one.id:<{width}}  {_about(one)}", markup=False)
    for number, wave in enumerate(made.waves, 1):
        console.info(f"wave {number}: {', '.join(wave)}", markup=False)
    path = made.critical_path
    console.info(
        f"critical path: {' -> '.join(path)} ({len(path)} task{'s' * (len(path) != 1)})",
        markup=False,
    )


def _about(one: Planned) -> str:
    changed = len(one.writes - one.creates)
    parts = [f"{changed} file{'s' * (changed != 1)}"]
    if one.creates:
        parts.append(f"{len(one.creates)} new")
    if one.reads:
        parts.append(f"reads {len(one.reads)}")
    if one.task.depends_on:
        parts.append(f"after {', '.join(one.task.depends_on)}")
    return " · ".join(parts)
