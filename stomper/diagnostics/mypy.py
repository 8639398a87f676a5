"""The mypy collector: ``mypy --output json``, one JSON object a line."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from stomper import proc
from stomper.diagnostics import Diagnostic, ToolInfo, attach_context, failure
from stomper.errors import ToolError

_VERSION_TIMEOUT = 60.0


def mypy_command() -> tuple[str, ...] | None:
    found = shutil.which("mypy")
    if found:
        return (found,)
    if importlib.util.find_spec("mypy") is not None:
        return (sys.executable, "-m", "mypy")
    return None


class MypyCollector:
    name = "mypy"
    per_file = False

    async def info(self) -> ToolInfo:
        command = mypy_command()
        if command is None:
            return ToolInfo("mypy", False, None, "pip install mypy")
        hint = (
            f"reinstall mypy (pip install mypy), or put a working one first on PATH: {command[0]}"
        )
        try:
            done = await proc.run((*command, "--version"), check=False, timeout=_VERSION_TIMEOUT)
        except (OSError, proc.ProcessTimeout) as exc:
            return ToolInfo("mypy", False, None, hint, f"{command[0]} does not run ({exc}): {hint}")
        if done.returncode != 0:
            problem = (
                f"mypy does not run: {failure(' '.join(command) + ' --version', done)}: {hint}"
            )
            return ToolInfo("mypy", False, None, hint, problem)
        return ToolInfo("mypy", True, done.stdout.decode(errors="replace").strip(), command[0])

    async def collect(
        self, root: Path, paths: Sequence[str], *, cache_dir: Path | None = None
    ) -> list[Diagnostic]:
        command = mypy_command()
        if command is None:
            raise ToolError("mypy is not installed: pip install mypy")
        if not paths:
            return []
        argv = [*command, "--output", "json", "--no-error-summary", "--no-pretty"]
        argv += ["--cache-dir", str(cache_dir)] if cache_dir else ["--cache-dir", "/dev/null"]
        done = await proc.run((*argv, "--", *paths), cwd=root, check=False)
        # mypy exits 1 when it found errors and 2 when it could not run at all.
        if done.returncode not in (0, 1):
            raise ToolError(failure("mypy", done))
        wanted = set(paths)
        found = [diag for diag in parse(done.stdout, root) if diag.path in wanted]
        return attach_context(root, found)

    async def collect_source(self, root: Path, path: str, source: bytes) -> list[Diagnostic]:
        # A module's types depend on the modules it imports: mypy checks files in a tree.
        raise ToolError("mypy checks files in a tree, not a source alone: use a worktree")


def parse(output: bytes, root: Path) -> list[Diagnostic]:
    out = []
    for raw in output.decode(errors="replace").splitlines():
        if not raw.startswith("{"):
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            raise ToolError(
                f"mypy printed a line that is not JSON ({raw[:80]!r}): is it mypy 1.11 or newer?"
            ) from None
        if item.get("severity") != "error":
            continue
        path = Path(item["file"])
        if path.is_absolute():
            path = path.relative_to(root)
        out.append(
            Diagnostic(
                tool="mypy",
                code=item.get("code") or "misc",
                message=item["message"],
                path=path.as_posix(),
                line=int(item.get("line", 0)),
                column=int(item.get("column", 0)),
            )
        )
    return out
