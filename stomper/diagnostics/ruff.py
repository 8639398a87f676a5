"""The ruff collector: ``ruff check --output-format json``."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from stomper import proc
from stomper.diagnostics import Diagnostic, ToolInfo, attach_context, failure, fold
from stomper.diagnostics.ruff_server import RuffServer, Vetted
from stomper.errors import ToolError

# Explicit file lists are chunked: the kernel caps one argv, and 10,000 paths exceed it.
_CHUNK = 2000
_VERSION_TIMEOUT = 30.0
CONFIG_FILES = frozenset({"pyproject.toml", "ruff.toml", ".ruff.toml"})
"""The names of the files ruff takes its settings from."""


def ruff_binary() -> str | None:
    """The ruff on PATH, else the one installed beside stomper."""
    found = shutil.which("ruff")
    if found:
        return found
    beside = Path(sys.executable).parent / "ruff"
    return str(beside) if os.access(beside, os.X_OK) else None


def _require_binary() -> str:
    binary = ruff_binary()
    if binary is None:
        raise ToolError("ruff is not installed: pip install ruff")
    return binary


class RuffCollector:
    """ruff's findings: over a tree through ``ruff check``; for one file's bytes through a
    long-lived ``ruff server`` once its first answers matched ``ruff check``'s, else through
    ``ruff check`` on stdin. :meth:`aclose` ends the server."""

    name = "ruff"
    per_file = True

    def __init__(self) -> None:
        self._server = Vetted(ruff_binary())

    async def info(self) -> ToolInfo:
        binary = ruff_binary()
        if binary is None:
            return ToolInfo("ruff", False, None, "pip install ruff")
        hint = f"reinstall ruff (pip install ruff), or put a working one first on PATH: {binary}"
        try:
            done = await proc.run((binary, "--version"), check=False, timeout=_VERSION_TIMEOUT)
        except (OSError, proc.ProcessTimeout) as exc:
            return ToolInfo("ruff", False, None, hint, f"{binary} does not run ({exc}): {hint}")
        said = done.stdout.decode(errors="replace").strip()
        if done.returncode != 0:
            problem = f"ruff does not run: {failure(f'{binary} --version', done)}: {hint}"
            return ToolInfo("ruff", False, None, hint, problem)
        if not said.startswith("ruff "):
            problem = f"{binary} is not ruff (its --version printed {said[:80]!r}): {hint}"
            return ToolInfo("ruff", False, None, hint, problem)
        return ToolInfo("ruff", True, said, binary)

    async def collect(
        self, root: Path, paths: Sequence[str], *, cache_dir: Path | None = None
    ) -> list[Diagnostic]:
        binary = _require_binary()
        found: list[Diagnostic] = []
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start : start + _CHUNK]
            argv = [binary, "check", "--output-format", "json", "--exit-zero", "--no-fix"]
            if cache_dir is None:
                argv.append("--no-cache")
            else:
                # Explicit paths bypass ruff's exclusions unless forced: honour the project's.
                argv += ["--cache-dir", str(cache_dir), "--force-exclude"]
            done = await proc.run((*argv, "--", *chunk), cwd=root, check=False)
            if done.returncode != 0:
                raise ToolError(failure("ruff check", done))
            found += parse(done.stdout, root)
        return attach_context(root, found)

    async def collect_source(self, root: Path, path: str, source: bytes) -> list[Diagnostic]:
        async def served(server: RuffServer) -> list[Diagnostic]:
            return sorted(await server.check(path, source), key=_place)

        async def checked() -> list[Diagnostic]:
            return sorted(await self._check_source(root, path, source), key=_place)

        found = await self._server.answer(root, source, served, checked)
        return _with_context(found, source)

    async def aclose(self) -> None:
        await self._server.aclose()

    async def _check_source(self, root: Path, path: str, source: bytes) -> list[Diagnostic]:
        return await check_source(source, root / path, root=root)


async def check_source(source: bytes, config_path: Path, *, root: Path) -> list[Diagnostic]:
    """ruff's findings in ``source`` as the file at ``config_path`` in the tree at ``root``,
    with paths relative to ``root``."""
    binary = _require_binary()
    argv = (binary, "check", "--output-format", "json", "--exit-zero", "--no-fix", "--no-cache")
    done = await proc.run(
        (*argv, "--stdin-filename", str(config_path), "-"), cwd=root, stdin=source, check=False
    )
    if done.returncode != 0:
        raise ToolError(failure("ruff check", done))
    return parse(done.stdout, root)


def _with_context(found: list[Diagnostic], source: bytes) -> list[Diagnostic]:
    lines = source.decode("utf-8", errors="replace").splitlines()
    return [
        replace(d, context=fold(lines[d.line - 1]) if 0 < d.line <= len(lines) else "")
        for d in found
    ]


def _place(diag: Diagnostic) -> tuple[int, int, str, str]:
    return (diag.line, diag.column, diag.code, diag.message)


def parse(output: bytes, root: Path) -> list[Diagnostic]:
    """ruff's JSON report; a :class:`ToolError` when what it printed is not one."""
    try:
        return [_diagnostic(item, root) for item in json.loads(output or b"[]")]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        shown = " ".join(output[:80].decode(errors="replace").split())
        raise ToolError(
            f"ruff printed no JSON report ({type(exc).__name__}; it began {shown!r}): "
            f"check that {ruff_binary()} is ruff, or reinstall it (pip install ruff)"
        ) from None


def _diagnostic(item: dict[str, Any], root: Path) -> Diagnostic:
    location = item.get("location") or {}
    filename = Path(item["filename"])
    path = filename.relative_to(root) if filename.is_absolute() else filename
    return Diagnostic(
        tool="ruff",
        code=item.get("code") or "syntax-error",
        message=item["message"],
        path=path.as_posix(),
        line=int(location.get("row", 0)),
        column=int(location.get("column", 0)),
    )


async def fix_source(
    source: bytes,
    config_path: Path,
    *,
    root: Path,
    select: Sequence[str],
    ignore: Sequence[str],
    unsafe: bool,
    unfixable: Sequence[str] = (),
) -> bytes:
    """``source`` with ruff's fixes applied, under the settings that hold at ``config_path``
    in the tree at ``root``, except the fixes of the rules ``unfixable`` names.

    With no ``select`` the project's own rule set applies, so a fix that leaves something
    for another rule to clean up (an import a fix made unused) is finished in the same pass.
    """
    binary = _require_binary()
    argv = await _fix_argv(binary, select, ignore, unsafe, unfixable)
    argv += ["--stdin-filename", str(config_path), "-"]
    # From the root, as collection and verification run: with no configuration of its own,
    # a project is rooted where ruff runs, and that decides which imports are first-party.
    done = await proc.run(argv, cwd=root, stdin=source, check=False)
    if done.returncode != 0:
        raise ToolError(f"ruff could not fix {config_path.name}: {failure('ruff check', done)}")
    return done.stdout


async def fix_files(
    root: Path, paths: Sequence[str], *, select: Sequence[str], ignore: Sequence[str], unsafe: bool
) -> None:
    """Let ruff fix what it can in ``paths`` of the tree at ``root``, as :func:`fix_source`
    fixes one file, in as few calls as the kernel lets one command line name."""
    binary = _require_binary()
    argv = await _fix_argv(binary, select, ignore, unsafe, ())
    for start in range(0, len(paths), _CHUNK):
        chunk = paths[start : start + _CHUNK]
        done = await proc.run((*argv, "--", *chunk), cwd=root, check=False)
        if done.returncode != 0:
            raise ToolError(f"ruff could not fix {len(chunk)} files: {failure('ruff check', done)}")


async def _fix_argv(
    binary: str,
    select: Sequence[str],
    ignore: Sequence[str],
    unsafe: bool,
    unfixable: Sequence[str],
) -> list[str]:
    argv = [binary, "check", "--fix-only", "--exit-zero", "--no-cache", "--quiet"]
    argv.append("--unsafe-fixes" if unsafe else "--no-unsafe-fixes")
    select, ignore = await _selectors(binary, select), await _selectors(binary, ignore)
    if select:
        argv += ["--select", ",".join(select)]
    if ignore:
        argv += ["--ignore", ",".join(ignore)]
    if unfixable:
        argv += ["--unfixable", ",".join(unfixable)]
    return argv


async def apply_fixes(
    root: Path, path: str, *, select: Sequence[str], ignore: Sequence[str], unsafe: bool
) -> None:
    """Let ruff fix what it can in one file of the tree at ``root`` (see ``fix_source``)."""
    file = root / path
    source = file.read_bytes()
    fixed = await fix_source(source, file, root=root, select=select, ignore=ignore, unsafe=unsafe)
    if fixed != source:
        file.write_bytes(fixed)


async def _selectors(binary: str, codes: Sequence[str]) -> list[str]:
    """Those of ``codes`` that ruff knows as rule selectors: a code of another tool (mypy's
    "assignment") or one that matches no rule (a typo) would make ruff refuse the call."""
    wanted = [code for code in codes if re.fullmatch(r"[A-Z]+[0-9]*", code)]
    if not wanted:
        return []
    if binary not in _known_rules:
        done = await proc.run(
            (binary, "rule", "--all", "--output-format", "json"),
            check=False,
            timeout=_VERSION_TIMEOUT,
        )
        try:
            _known_rules[binary] = frozenset(str(rule["code"]) for rule in json.loads(done.stdout))
        except (ValueError, TypeError, KeyError):
            _known_rules[binary] = frozenset()
    known = _known_rules[binary]
    if not known:
        return wanted  # a ruff that cannot list its rules: let it judge the codes itself
    return [
        code for code in wanted if code == "ALL" or any(rule.startswith(code) for rule in known)
    ]


# The rule codes each ruff knows, asked once a process: what ruff knows does not change.
_known_rules: dict[str, frozenset[str]] = {}
