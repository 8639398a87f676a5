"""``stomper demo``: a sample repository, fixed N files at once by the embedded agent; or,
``stomper demo review``, reviewed and its edits built, against a stand-in model; or,
``stomper demo run``, declared tasks worked by a stand-in CLI agent."""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from stomper import console, git, proc
from stomper.commands.fix import FixRequest, run_fix
from stomper.config import ReviewSettings, Settings
from stomper.errors import ConfigError
from stomper.testing.repos import make_repo, review_project, sample_project, tasks_project

MODES = ("fix", "review", "run")


async def demo(*, files: int, parallel: int, directory: Path | None, mode: str = "fix") -> int:
    if mode not in MODES:
        raise ConfigError(f"no demo {mode!r}: choose {', '.join(MODES[:-1])} or {MODES[-1]}")
    if mode == "review":
        return await demo_review(parallel=parallel, directory=directory)
    if mode == "run":
        return await demo_run(parallel=parallel, directory=directory)
    root = _sample_repository(directory, sample_project(files))
    console.info(f"made a sample repository with {files} Python files in {root}")
    settings = Settings(max_parallel_files=parallel, agent="autofix", tools=["ruff"])
    report = await run_fix(FixRequest(cwd=root), settings)
    console.print_summary(report)
    log = await git.git(root, "log", "--oneline", "--no-decorate", f"{report.base}..HEAD")
    console.info("\n[bold]landed commits[/]\n" + (log.stdout.decode().rstrip() or "(none)"))
    left = report.totals()["diagnostics_remaining"]
    console.info(
        f"\nthe repository is at {root}\n"
        f"{left} diagnostics are left that ruff cannot fix by itself: an AI agent's work."
    )
    return 0 if report.status == "completed" else report.exit_code()


async def demo_review(*, parallel: int, directory: Path | None) -> int:
    """Review the two packages of :func:`review_project` with ``--apply``, their tests as
    the build, against the fake model server stomper ships: one edit breaks its package's
    tests, and bisection lands the rest."""
    from stomper.commands.review import ReviewRequest, publish, run_review
    from stomper.testing.fake_openai import FakeOpenAI

    root = _sample_repository(directory, review_project())
    build = f"{shlex.quote(sys.executable)} -m unittest discover -q -s {{dir}} -t ."
    console.info(
        f"made a sample repository of two packages with their tests in {root}\n"
        "the model is a stand-in: the fake OpenAI-compatible server stomper ships for its "
        "tests, which flags a few well-known patterns, fixes them, and makes the change a "
        "line's `fake-review:` comment asks for (here, a rename that breaks a test)\n"
        f"each package's build: {build}",
        markup=False,
    )
    sarif, markdown = root / "review.sarif", root / "review.md"
    with FakeOpenAI() as server:
        settings = Settings(
            model="fake",
            base_url=server.base_url,
            max_parallel_files=parallel,
            review=ReviewSettings(apply=True, build_cmd=build),
        )
        request = ReviewRequest(cwd=root, sarif=sarif, markdown=markdown)
        report = await run_review(request, settings)
    code = publish(report, request)
    log = await git.git(root, "log", "--oneline", "--no-decorate", f"{report.base}..HEAD")
    console.info("\n[bold]landed commits[/]\n" + (log.stdout.decode().rstrip() or "(none)"))
    for group in report.groups:
        if group.build in ("bisected", "failed"):
            console.info(
                f"{group.name}: its build failed with every edit and passed without them; "
                f"bisection found the edit that breaks it and landed the rest "
                f"({group.builds} builds in all)",
                markup=False,
            )
    console.info(f"\nthe findings: {sarif} (SARIF) and {markdown}", markup=False)
    return code


async def demo_run(*, parallel: int, directory: Path | None) -> int:
    """Work the 8 tasks of :func:`tasks_project` with the fake CLI agent stomper ships: the
    plan, then the tasks side by side where they share no file, verified by the package's
    tests, landed one at a time."""
    from stomper.commands.run import RunRequest, run

    root = _sample_repository(directory, tasks_project(sys.executable))
    agent = (
        f"{shlex.quote(sys.executable)} -m stomper.testing.fake_cli_agent --mode task "
        "--prompt-file {prompt_file} {file}"
    )
    console.info(
        f"made a sample repository of a small package with its tests in {root}, and "
        f"{root / 'tasks.toml'}: 8 tasks, some waiting for others, two writing one file\n"
        "the agent is a stand-in: the fake CLI agent stomper ships for its tests, which does "
        "what the `fake-agent:` lines of a task's prompt say (one task's first attempt "
        "breaks the tests, and its second mends it)\n",
        markup=False,
    )
    settings = Settings(max_parallel_files=parallel, agent="command", agent_cmd=agent)
    request = RunRequest(cwd=root, tasks=root / "tasks.toml")
    base = (await git.git(root, "rev-parse", "HEAD")).stdout.decode().strip()
    await run(replace(request, plan_only=True), settings)
    console.info("")
    code = await run(request, settings)
    log = await git.git(root, "log", "--oneline", "--no-decorate", f"{base}..HEAD")
    console.info("\n[bold]landed commits[/]\n" + (log.stdout.decode().rstrip() or "(none)"))
    (journal,) = (root / ".git" / "stomper" / "runs").glob("*/tasks.jsonl")
    for line in journal.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        verdicts = [attempt["verdict"] for attempt in record["attempts"]]
        if len(verdicts) > 1:
            console.info(
                f"{record['task']}: its attempts went {' -> '.join(verdicts)}: the failure's "
                "output went back to the agent",
                markup=False,
            )
    console.info(
        f"\nthe audit trail of every task: {journal}\nthe repository is at {root}", markup=False
    )
    return code


def _sample_repository(directory: Path | None, files: Mapping[str, str]) -> Path:
    """The sample repository, made in ``directory`` (a new temporary folder if None)."""
    where = "a temporary folder" if directory is None else f"--dir {directory}"
    try:
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="stomper-demo-"))
        elif directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise ConfigError(f"--dir {directory} is not an empty folder: name a new or empty one")
        return make_repo(directory.absolute(), files, message="sample project")
    except (OSError, proc.CalledProcessError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = " ".join(reason.split())
        raise ConfigError(
            f"cannot make the sample repository in {where}: {reason}: name a folder you can "
            "write with --dir"
        ) from None
