"""``stomper demo``: a sample repository, fixed N files at once by the embedded agent."""

from __future__ import annotations

import tempfile
from pathlib import Path

from stomper import console, git, proc
from stomper.commands.fix import FixRequest, run_fix
from stomper.config import Settings
from stomper.errors import ConfigError
from stomper.testing.repos import make_repo, sample_project


async def demo(*, files: int, parallel: int, directory: Path | None) -> int:
    root = _sample_repository(directory, files)
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


def _sample_repository(directory: Path | None, files: int) -> Path:
    """The sample repository, made in ``directory`` (a new temporary folder if None)."""
    where = "a temporary folder" if directory is None else f"--dir {directory}"
    try:
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="stomper-demo-"))
        elif directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise ConfigError(f"--dir {directory} is not an empty folder: name a new or empty one")
        return make_repo(directory.absolute(), sample_project(files), message="sample project")
    except (OSError, proc.CalledProcessError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = " ".join(reason.split())
        raise ConfigError(
            f"cannot make the sample repository in {where}: {reason}: name a folder you can "
            "write with --dir"
        ) from None
