"""Tests as a gate: a unit whose change makes the project's tests fail does not land.

Tests that already fail at the base commit are not blamed on a unit: the command runs once
at the base to record which tests fail there, and a unit is blamed only for failures beyond
those (by pytest's ``FAILED``/``ERROR`` summary lines where there are some, else by the exit
code).
"""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from stomper import events, proc
from stomper.errors import ConfigError
from stomper.events import BuildEvent

_FAILURE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
_TAIL_LINES = 30


@dataclass(frozen=True)
class TestRun:
    passed: bool
    failures: frozenset[str]
    output: str

    def tail(self) -> str:
        return "\n".join(self.output.rstrip().splitlines()[-_TAIL_LINES:])


def split_command(command: str) -> tuple[str, ...]:
    """``test_cmd`` as an argv; a malformed one is the user's to mend."""
    try:
        return proc.split_command(
            command, setting="test_cmd", example="the command that runs the tests"
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def failed_tests(output: str) -> frozenset[str]:
    """The tests a run's output names as failed (pytest's ``FAILED``/``ERROR`` lines)."""
    return frozenset(_FAILURE.findall(output))


async def run_tests(
    argv: tuple[str, ...], tree: Path, *, seconds: float, what: str, files: int
) -> TestRun:
    """The tests in ``tree``, which holds ``files`` edited files; the run's ops log gets
    them as a build, named ``what``."""
    began = time.monotonic()
    ran = await _run_tests(argv, tree, seconds=seconds)
    spent = time.monotonic() - began
    events.record(BuildEvent(what, shlex.join(argv), files, ran.passed, spent, 0.0))
    return ran


async def _run_tests(argv: tuple[str, ...], tree: Path, *, seconds: float) -> TestRun:
    try:
        done = await proc.run(argv, cwd=tree, timeout=seconds, check=False)
    except proc.ProcessTimeout:
        return TestRun(False, frozenset(), f"the tests ran past {seconds:g}s and were stopped")
    except OSError as exc:
        return TestRun(False, frozenset(), f"cannot run the tests: {exc}")
    output = (done.stdout + done.stderr).decode(errors="replace")
    return TestRun(done.returncode == 0, failed_tests(output), output)


class TestGate:
    """Runs ``--test-cmd`` in a unit's worktree and judges it against the base's result."""

    def __init__(
        self,
        command: str,
        *,
        timeout: float,
        base_tree: Callable[[], AbstractAsyncContextManager[Path]],
    ) -> None:
        self.argv = split_command(command)
        self.timeout = timeout
        self._base_tree = base_tree
        self._baseline: TestRun | None = None
        self._lock = asyncio.Lock()

    async def baseline(self) -> TestRun:
        """The tests at the base commit, run once per run whoever asks first."""
        async with self._lock:
            if self._baseline is None:
                async with self._base_tree() as tree:
                    self._baseline = await run_tests(
                        self.argv, tree, seconds=self.timeout, what="tests at the base", files=0
                    )
            return self._baseline

    async def judge(self, tree: Path, unit: str) -> str | None:
        """Why the change of ``unit`` (its name) in ``tree`` fails the gate, or None when it
        passes."""
        result = await run_tests(
            self.argv, tree, seconds=self.timeout, what=f"tests of {unit}", files=1
        )
        if result.passed:
            return None
        base = await self.baseline()
        if base.passed:
            return f"the tests fail with this change:\n{result.tail()}"
        new = result.failures - base.failures
        if new:
            return f"the change makes tests fail: {', '.join(sorted(new))}\n{result.tail()}"
        return None
