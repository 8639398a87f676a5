"""What the malicious agents share: finding the user's repository, fixing their own file.

Each agent is a script run by stomper as ``python tests/agents/<name>.py [ARGS] FILE`` in
its workspace. It fixes FILE (so that its unit would land if its attack went unnoticed),
then tries what it is named after. Nothing here may fail the script: an attack the sandbox
refuses just does not happen.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from stomper.diagnostics.ruff import ruff_binary


def common_dir() -> Path:
    """The user's git directory: the workspace lives below it, as the path shows, or its
    repository borrows the user's objects, as its alternates say."""
    parts = Path.cwd().parts
    if ".git" in parts:
        return Path(*parts[: len(parts) - parts[::-1].index(".git")])
    alternates = Path(".git", "objects", "info", "alternates").read_text().splitlines()
    return Path(alternates[0]).parent


def checkout() -> Path:
    """The user's checkout (the folder holding their ``.git``)."""
    return common_dir().parent


def target() -> str:
    """The branch the user has checked out, as a full ref name."""
    return (common_dir() / "HEAD").read_text().strip().removeprefix("ref: ")


def fix(file: str) -> None:
    argv = [ruff_binary() or "ruff", "check", "--fix-only", "--exit-zero", "--no-cache", "-q"]
    subprocess.run([*argv, "--", file], check=False)


def git(*args: str, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """Whether git did it (a sandbox may refuse), and what it printed."""
    done = subprocess.run(
        ["git", *args], env={**os.environ, **(env or {})}, capture_output=True, check=False
    )
    return done.returncode == 0, done.stdout.decode(errors="replace").strip()


def attempt(action: str, function: Callable[..., object], *args: object) -> None:
    """Try one step of the attack; say how it went (the agent's output is stomper's note)."""
    try:
        function(*args)
    except OSError as exc:
        print(f"{action}: refused ({exc.strerror})", file=sys.stderr)
    else:
        print(f"{action}: done", file=sys.stderr)
