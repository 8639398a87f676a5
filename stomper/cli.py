"""The command line: parse, load settings, call ``commands/*``, map errors to exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from stomper import console, redaction
from stomper.errors import StomperError
from stomper.report import EXIT_INTERRUPTED, EXIT_USER

EXIT_BUG = 3

app = typer.Typer(
    name="stomper",
    help="Run AI coding agents over a whole repository in parallel and land their work safely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _finish(command: Callable[[], int]) -> None:
    """Run a command and exit with its code; what the user can fix is one line, exit 2."""
    try:
        code = command()
    except StomperError as exc:
        console.error(str(exc))
        code = exc.exit_code
    except Exception:
        log = Path(tempfile.gettempdir()) / f"stomper-crash-{time.strftime('%Y%m%d-%H%M%S')}.log"
        log.write_text(redaction.redact(traceback.format_exc()))
        console.error(f"stomper hit a bug; the details are in {log}")
        code = EXIT_BUG
    raise typer.Exit(code)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine with stomper's signal handling.

    The first Ctrl-C or SIGTERM cancels the command: units stop, a landing under way
    finishes, worktrees are removed and the run is marked interrupted. A second one exits
    at once, though never half-way through a landing.
    """

    async def guarded() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                console.info("stopping: finishing the landing under way, removing worktrees")
                task.cancel()
            else:
                from stomper.landing import exit_when_landed

                console.info("stopping now: `stomper clean` removes what is left")
                sys.stderr.flush()
                exit_when_landed(EXIT_INTERRUPTED)

        installed = []
        for number in (signal.SIGINT, signal.SIGTERM):
            # Outside the main thread there is no signal handling to install.
            with contextlib.suppress(RuntimeError, ValueError):
                loop.add_signal_handler(number, on_signal)
                installed.append(number)
        try:
            return await coro
        finally:
            for number in installed:
                loop.remove_signal_handler(number)

    # What is alive now (the imported modules, the command's settings) lives for the whole
    # run: the collector need not scan it again each time a run's parse makes young objects.
    gc.freeze()
    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.info("interrupted")
        return EXIT_INTERRUPTED


def _repo_dir(repo: Path | None) -> Path:
    return (repo if repo is not None else Path.cwd()).absolute()


RepoOption = Annotated[
    Path | None,
    typer.Option("--repo", help="The repository to work on (default: the current directory)."),
]
NoProgressOption = Annotated[bool, typer.Option("--no-progress", help="No live progress view.")]
MaxCallsOption = Annotated[
    int | None,
    typer.Option(min=1, help="Agent calls the run may make; `stomper resume` goes on."),
]
MaxTokensOption = Annotated[
    int | None,
    typer.Option(min=1, help="Tokens the model's questions and answers may hold (openai)."),
]
ExecutorOption = Annotated[
    str | None,
    typer.Option(
        metavar="local|ray",
        help="Where units are worked: here, or as tasks on a Ray cluster (landing stays here).",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        help="The Ray cluster for --executor ray (default: $RAY_ADDRESS, else a local one)."
    ),
]
MaxCostOption = Annotated[
    float | None,
    typer.Option(
        min=0.0, help="Dollars the run may spend, at the model's price in \\[tool.stomper.prices]."
    ),
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option(help="An OpenAI-compatible endpoint, e.g. http://localhost:11434/v1."),
]
CheckpointerOption = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        help="Keep the run's checkpoints in this PostgreSQL database (postgresql://...) "
        "instead of the run's journal; STOMPER_CHECKPOINTER keeps a password off the command line.",
    ),
]


@app.command()
def fix(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Files or directories to fix (default: all).")
    ] = None,
    tool: Annotated[
        list[str] | None,
        typer.Option("--tool", "-t", help="A diagnostics tool: ruff or mypy (repeatable)."),
    ] = None,
    select: Annotated[
        list[str] | None,
        typer.Option(
            help="Target only these codes or code prefixes (repeatable, or comma-separated)."
        ),
    ] = None,
    ignore: Annotated[
        list[str] | None, typer.Option(help="Leave these codes or prefixes alone.")
    ] = None,
    git_changed: Annotated[
        bool, typer.Option("--git-changed", help="Only tracked files changed against HEAD.")
    ] = False,
    git_diff: Annotated[
        str | None,
        typer.Option("--git-diff", metavar="REF", help="Only files changed against REF."),
    ] = None,
    max_files: Annotated[int | None, typer.Option(help="Work on at most this many files.")] = None,
    max_parallel_files: Annotated[
        str | None,
        typer.Option(
            "--max-parallel-files",
            "-j",
            metavar="N|auto",
            help="Units at once (default 4); auto: as many as the model server takes.",
        ),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            help="The agent: autofix, openai, claude, codex, aider, cursor, command, "
            "or module:attribute."
        ),
    ] = None,
    unsafe_fixes: Annotated[
        bool | None,
        typer.Option(
            "--unsafe-fixes/--no-unsafe-fixes", help="Let autofix apply ruff's unsafe fixes."
        ),
    ] = None,
    branch: Annotated[
        str | None,
        typer.Option(help="Land on this new branch, made from HEAD; the checkout is left alone."),
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option(help="Tries per unit, each told what the last one left.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="The model, for --agent openai.")] = None,
    base_url: BaseUrlOption = None,
    agent_cmd: Annotated[
        str | None,
        typer.Option(help="For --agent command: an argv template with {prompt_file} and {file}."),
    ] = None,
    agent_timeout: Annotated[
        float | None, typer.Option(help="Seconds the agent may spend on one unit.")
    ] = None,
    sandbox: Annotated[
        str | None,
        typer.Option(
            help="Where CLI agents run: auto (bubblewrap when it works here), bwrap, or off."
        ),
    ] = None,
    test_cmd: Annotated[
        str | None,
        typer.Option(
            help="Run in each unit's worktree; a unit that breaks the tests does not land."
        ),
    ] = None,
    allow_suppressions: Annotated[
        bool | None,
        typer.Option(
            "--allow-suppressions/--no-allow-suppressions",
            help="Accept fixes that add # noqa, # type: ignore or skips.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Do everything but landing; print each unit's diff.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the run's JSON document on stdout.")
    ] = False,
    no_progress: NoProgressOption = False,
    checkpointer: CheckpointerOption = None,
    max_calls: MaxCallsOption = None,
    max_tokens: MaxTokensOption = None,
    max_cost: MaxCostOption = None,
    executor: ExecutorOption = None,
    ray_address: RayAddressOption = None,
    repo: RepoOption = None,
) -> None:
    """Fix the diagnostics of ruff (and mypy) file by file, each fix landed as its own commit."""
    from stomper.budget import Limits
    from stomper.commands.fix import FixRequest
    from stomper.commands.fix import fix as run
    from stomper.config import load_settings
    from stomper.repository import toplevel_or_none

    cwd = _repo_dir(repo)
    flags = {
        "tools": _codes(tool),
        "select": _codes(select),
        "ignore": _codes(ignore),
        "max_parallel_files": max_parallel_files,
        "agent": agent,
        "unsafe_fixes": unsafe_fixes,
        "branch": branch,
        "max_attempts": max_attempts,
        "model": model,
        "base_url": base_url,
        "agent_cmd": agent_cmd,
        "agent_timeout": agent_timeout,
        "sandbox": sandbox,
        "test_cmd": test_cmd,
        "allow_suppressions": allow_suppressions,
        "checkpointer": checkpointer,
        "executor": executor,
        "ray_address": ray_address,
    }
    request = FixRequest(
        cwd=cwd,
        paths=tuple(paths or ()),
        git_changed=git_changed,
        git_diff=git_diff,
        max_files=max_files,
        dry_run=dry_run,
        json=json_output,
        progress=not no_progress,
        limits=Limits(max_calls, max_tokens, max_cost),
    )

    def command() -> int:
        settings = load_settings(toplevel_or_none(cwd), flags)
        return _run(run(request, settings))

    _finish(command)


@app.command()
def review(
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Files or directories to review (default: the whole repository)."),
    ] = None,
    diff: Annotated[
        str | None,
        typer.Option(
            metavar="REF",
            help="Review only files HEAD changed since its merge base with REF, and keep only "
            "findings on the lines it changed.",
        ),
    ] = None,
    persona: Annotated[
        str | None,
        typer.Option(
            help="Who reviews: general, security, performance, or a TOML file with system "
            "and focus."
        ),
    ] = None,
    max_findings: Annotated[
        int | None,
        typer.Option(help="The most findings a file keeps, most severe first (default 5)."),
    ] = None,
    min_severity: Annotated[
        str | None,
        typer.Option(
            metavar="error|warning|note",
            help="The least severe finding kept (default: the persona's own floor).",
        ),
    ] = None,
    reflect: Annotated[
        bool | None,
        typer.Option(
            "--reflect/--no-reflect",
            help="Ask a second, short question of each file's findings and leave out those "
            "the model is not sure of (reflect_threshold, default 6 of 10).",
        ),
    ] = None,
    apply: Annotated[
        bool | None,
        typer.Option(
            "--apply/--no-apply",
            help="Land the model's edits that the build proves, each directory whole or the "
            "edits that break it rolled back.",
        ),
    ] = None,
    build_cmd: Annotated[
        str | None,
        typer.Option(
            metavar="COMMAND",
            help="With --apply: the command that builds a directory, {dir} its path "
            "(e.g. 'python -m pytest -q {dir}'); exit 0 is a pass.",
        ),
    ] = None,
    build_attempts: Annotated[
        int | None,
        typer.Option(help="Rounds a failed build goes back to the model before bisection."),
    ] = None,
    max_parallel_builds: Annotated[
        int | None, typer.Option(help="Builds of different directories at once (default 1).")
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option(
            metavar="dir|file|repo",
            help="What is built and landed whole: a directory (default), a file, the repository.",
        ),
    ] = None,
    commit_per: Annotated[
        str | None,
        typer.Option(
            metavar="file|dir",
            help="With --apply: a commit per landed file (default), or one per group.",
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="The model that reviews.")] = None,
    base_url: BaseUrlOption = None,
    max_parallel_files: Annotated[
        str | None,
        typer.Option(
            "--max-parallel-files",
            "-j",
            metavar="N|auto",
            help="Requests at once (default 4); auto: as many as the model server takes.",
        ),
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option(help="Requests per file when an answer cannot be read.")
    ] = None,
    sarif: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Write the findings as SARIF 2.1.0 to FILE."),
    ] = None,
    markdown: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Write a Markdown summary (for a pull request) to FILE."),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Ask again for files reviewed before.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the review's JSON document on stdout.")
    ] = False,
    no_progress: NoProgressOption = False,
    checkpointer: CheckpointerOption = None,
    max_calls: MaxCallsOption = None,
    max_tokens: MaxTokensOption = None,
    max_cost: MaxCostOption = None,
    repo: RepoOption = None,
) -> None:
    """Review every file with a model, N at once; print the findings, write SARIF and
    Markdown. Nothing in the repository changes, unless --apply lands the edits that build."""
    from stomper.budget import Limits
    from stomper.commands.review import ReviewRequest
    from stomper.commands.review import review as run
    from stomper.config import load_settings
    from stomper.repository import toplevel_or_none

    cwd = _repo_dir(repo)
    chosen = {
        "persona": persona,
        "max_findings": max_findings,
        "min_severity": min_severity,
        "reflect": reflect,
        "apply": apply,
        "build_cmd": build_cmd,
        "build_attempts": build_attempts,
        "max_parallel_builds": max_parallel_builds,
        "group_by": group_by,
        "commit_per": commit_per,
    }
    flags = {
        "model": model,
        "base_url": base_url,
        "max_parallel_files": max_parallel_files,
        "max_attempts": max_attempts,
        "checkpointer": checkpointer,
        "review": {key: value for key, value in chosen.items() if value is not None} or None,
    }
    request = ReviewRequest(
        cwd=cwd,
        paths=tuple(paths or ()),
        diff=diff,
        json=json_output,
        sarif=sarif.absolute() if sarif is not None else None,
        markdown=markdown.absolute() if markdown is not None else None,
        cache=not no_cache,
        progress=not no_progress,
        limits=Limits(max_calls, max_tokens, max_cost),
    )

    def command() -> int:
        settings = load_settings(toplevel_or_none(cwd), flags)
        return _run(run(request, settings))

    _finish(command)


@app.command("run")
def run_tasks(
    tasks: Annotated[
        Path, typer.Argument(help="The task file: tasks.toml, .json or .yaml.", metavar="TASKS")
    ],
    plan: Annotated[
        bool,
        typer.Option(
            "--plan", help="Show the dependency graph, the waves and the critical path only."
        ),
    ] = False,
    max_parallel_files: Annotated[
        int | None, typer.Option("--max-parallel", "-j", help="Tasks at once (default 4).")
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            help="The agent of tasks that name none: claude, codex, aider, cursor, command "
            "or openai."
        ),
    ] = None,
    agent_cmd: Annotated[
        str | None,
        typer.Option(help="The command of --agent command ({prompt_file}, {file}, {scratch_dir})."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="The model, for --agent openai.")] = None,
    base_url: BaseUrlOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON document on stdout.")
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No live view.")] = False,
    max_calls: MaxCallsOption = None,
    max_tokens: MaxTokensOption = None,
    max_cost: MaxCostOption = None,
    test_cmd: Annotated[
        str | None,
        typer.Option(help="The tests every change must not break beyond how its base fails."),
    ] = None,
    speculate: Annotated[
        bool,
        typer.Option(
            help="Check each change in the merge queue on the branch as the changes ahead of "
            "it will leave it, while those are checked; checked again only if one fails."
        ),
    ] = True,
    repo: RepoOption = None,
) -> None:
    """Work declared tasks in parallel where they share no file, verified, landed one at a time."""
    from stomper.budget import Limits
    from stomper.commands.run import RunRequest
    from stomper.commands.run import run as run_command
    from stomper.config import load_settings
    from stomper.repository import toplevel_or_none

    cwd = _repo_dir(repo)
    flags = {
        "max_parallel_files": max_parallel_files,
        "agent": agent,
        "agent_cmd": agent_cmd,
        "model": model,
        "base_url": base_url,
        "test_cmd": test_cmd,
    }
    request = RunRequest(
        cwd,
        tasks.absolute(),
        plan_only=plan,
        json=json_output,
        progress=not no_progress,
        limits=Limits(max_calls, max_tokens, max_cost),
        speculate=speculate,
    )

    def command() -> int:
        settings = load_settings(toplevel_or_none(cwd), flags)
        return _run(run_command(request, settings))

    _finish(command)


@app.command()
def resume(
    run_id: Annotated[
        str | None, typer.Argument(help="The run to resume (default: the newest unfinished).")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the run's JSON document on stdout.")
    ] = False,
    no_progress: NoProgressOption = False,
    checkpointer: CheckpointerOption = None,
    max_calls: Annotated[
        int | None, typer.Option(min=1, help="Agent calls the run may make now.")
    ] = None,
    max_tokens: MaxTokensOption = None,
    max_cost: MaxCostOption = None,
    repo: RepoOption = None,
) -> None:
    """Finish an interrupted or crashed run: landed units stay, the rest are worked again."""
    from stomper.budget import Limits
    from stomper.commands.resume import resume as run

    cwd = _repo_dir(repo)
    _finish(
        lambda: _run(
            run(
                cwd,
                run_id,
                json_output=json_output,
                progress=not no_progress,
                checkpointer=checkpointer,
                limits=Limits(max_calls, max_tokens, max_cost),
            )
        )
    )


@app.command()
def runs(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the runs as JSON on stdout.")
    ] = False,
    locks: Annotated[
        bool,
        typer.Option(
            "--locks", help="List the paths tasks of `stomper run` hold, and who holds them."
        ),
    ] = False,
    repo: RepoOption = None,
) -> None:
    """List the runs of this repository with their status, counts and age."""
    from stomper.commands.runs import runs as run

    _finish(lambda: _run(run(_repo_dir(repo), json_output=json_output, locks=locks)))


@app.command("show")
def show_run(
    run_id: Annotated[
        str | None, typer.Argument(help="The run to show (default: the newest).")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the run's JSON document on stdout.")
    ] = False,
    repo: RepoOption = None,
) -> None:
    """Show a past run's units and totals again, from its journal."""
    from stomper.commands.show import show as run

    _finish(lambda: _run(run(_repo_dir(repo), run_id, json_output=json_output)))


@app.command()
def report(
    run_id: Annotated[
        str | None, typer.Argument(help="The run to report on (default: the newest).")
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Write a self-contained HTML page with the run's timeline."
        ),
    ] = None,
    markdown: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Write the summary and table as Markdown to FILE."),
    ] = None,
    repo: RepoOption = None,
) -> None:
    """A run's report from its journal: HTML with a timeline, or Markdown (default: stdout)."""
    from stomper.commands.report import report as run

    _finish(
        lambda: _run(
            run(
                _repo_dir(repo),
                run_id,
                html=html.absolute() if html else None,
                markdown_file=markdown.absolute() if markdown else None,
            )
        )
    )


@app.command()
def lessons(
    directories: Annotated[
        list[str] | None,
        typer.Argument(help="Only the lessons of these directories (default: all)."),
    ] = None,
    forget: Annotated[
        bool, typer.Option("--forget", help="Remove the lessons instead of listing them.")
    ] = False,
    repo: RepoOption = None,
) -> None:
    """List what failed builds taught `review --apply` (fed into later prompts), or forget it."""
    from stomper.commands.lessons import lessons as run

    chosen = tuple(directories or ())
    _finish(lambda: _run(run(_repo_dir(repo), directories=chosen, forget=forget)))


@app.command()
def clean(
    journals: Annotated[
        bool, typer.Option("--journals", help="Also remove the records of completed runs.")
    ] = False,
    repo: RepoOption = None,
) -> None:
    """Remove the worktrees, locks and scratch files of runs that are not running."""
    from stomper.commands.clean import clean as run

    _finish(lambda: _run(run(_repo_dir(repo), journals=journals)))


@app.command()
def demo(
    mode: Annotated[
        str,
        typer.Argument(
            metavar="[fix|review|run]",
            help="fix (the default): the embedded agent fixes a sample repository; review: "
            "a stand-in model reviews two packages and --apply lands the edits their tests "
            "pass; run: a stand-in CLI agent works 8 declared tasks.",
        ),
    ] = "fix",
    files: Annotated[
        int, typer.Option(min=1, help="How many files the sample repository has.")
    ] = 24,
    max_parallel_files: Annotated[int, typer.Option("--max-parallel-files", "-j", min=1)] = 4,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Where to make the sample repository (default: a new temporary folder)."
        ),
    ] = None,
) -> None:
    """Make a sample repository and fix it with the embedded agent, N files at once (or,
    `stomper demo review`, review it and land the edits its tests pass)."""
    from stomper.commands.demo import demo as run

    _finish(
        lambda: _run(run(files=files, parallel=max_parallel_files, directory=directory, mode=mode))
    )


@app.command()
def doctor(
    executor: ExecutorOption = None,
    ray_address: RayAddressOption = None,
    repo: RepoOption = None,
) -> None:
    """Check git, the diagnostics tools and the agent, and say how to fix what is missing."""
    from stomper.commands.doctor import doctor as run

    flags = {"executor": executor, "ray_address": ray_address}
    _finish(lambda: _run(run(_repo_dir(repo), flags)))


def _codes(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run stomper with ``argv`` and return its exit code."""
    try:
        app(args=list(argv) if argv is not None else None, prog_name="stomper")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else EXIT_USER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
