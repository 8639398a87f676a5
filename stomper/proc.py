"""The one door to child processes: argv tuples, a timeout that kills the whole group."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#  Git's own variables leak into hooks and aliases; a child pointed at another
#  repository through them would edit the wrong tree.
_LEAKY_GIT_VARIABLES = ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE", "GIT_PREFIX")


class CalledProcessError(RuntimeError):
    """A child exited with an unexpected code; ``str()`` shows the command and its output."""

    def __init__(self, argv: Sequence[str], returncode: int, output: bytes) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.output = output
        super().__init__(argv, returncode, output)

    def __str__(self) -> str:
        text = self.output.decode(errors="replace").rstrip()
        shown = "\n".join(f"    {line}" for line in text.splitlines()) or "    (no output)"
        return f"command: {' '.join(self.argv)}\nreturn code: {self.returncode}\noutput:\n{shown}"


class ProcessTimeout(RuntimeError):
    """A child ran past its timeout; it and its whole process group were killed."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self.argv = tuple(argv)
        self.timeout = timeout
        super().__init__(f"timed out after {timeout:g}s: {' '.join(self.argv)}")


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: bytes


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_GIT_VARIABLES}
    if extra:
        env.update(extra)
    return env


async def run(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
    ok_codes: Sequence[int] = (0,),
) -> Completed:
    """Run ``argv`` and return its output.

    The child gets a process group of its own, so a timeout or a cancellation kills it and
    everything it started: nothing it spawned can go on editing files after we gave up.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=child_env(env),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        await kill_group(proc)
        raise ProcessTimeout(argv, timeout or 0.0) from None
    except BaseException:
        await kill_group(proc)
        raise
    returncode = proc.returncode if proc.returncode is not None else -1
    if check and returncode not in ok_codes:
        raise CalledProcessError(argv, returncode, stdout + stderr)
    return Completed(returncode, stdout, stderr)


async def kill_group(proc: asyncio.subprocess.Process) -> None:
    """Kill a child and everything it started, and reap it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    # Reap the child so no zombie is left; shielded from a second cancellation.
    await asyncio.shield(proc.wait())


async def start(
    argv: Sequence[str], *, cwd: Path | str | None = None, keep_stderr: bool = True
) -> asyncio.subprocess.Process:
    """Start a child to be spoken to through its pipes for a while (a long-lived server).

    It gets a process group of its own: a Ctrl-C meant for stomper must not end it half-way;
    :func:`stop` ends it. Its stderr is read only at the end, so a child that logs as it
    goes must not keep it (``keep_stderr=False``): a full pipe would stall it.
    """
    return await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if keep_stderr else subprocess.DEVNULL,
        start_new_session=True,
    )


async def stop(process: asyncio.subprocess.Process, *, wait: float) -> bytes:
    """End a child from :func:`start` at the end of its input, or kill its group when it
    lingers past ``wait`` seconds; what it wrote to stderr."""
    assert process.stdin is not None
    process.stdin.close()
    try:
        _, err = await asyncio.wait_for(process.communicate(), wait)
    except TimeoutError:
        await kill_group(process)
        _, err = await process.communicate()
    return err or b""


def run_sync(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> Completed:
    """The blocking twin of :func:`run`, for code that runs outside the event loop."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ProcessTimeout(argv, timeout or 0.0) from None
    if check and done.returncode != 0:
        raise CalledProcessError(argv, done.returncode, done.stdout + done.stderr)
    return Completed(done.returncode, done.stdout, done.stderr)


if sys.version_info < (3, 12):
    # Only Python 3.11 defines this: 3.12 deprecates the child watchers and 3.14 removes
    # them, and there children are waited for through pidfds, which costs the loop nothing.

    class ReusedThreadsChildWatcher(asyncio.AbstractChildWatcher):
        """Learns of children's exits in threads that are reused, for Python 3.11.

        3.11's default watcher starts a new thread for every child and waits, on the event
        loop, until that thread runs: about a millisecond a child on two busy cores, in which
        the loop does nothing else. Here a thread that saw its child exit waits for the next
        one; a new thread starts only when every thread is busy. Threads are daemons, as the
        default watcher's are, so a child never reaped cannot hold up the exit.
        """

        def __init__(self) -> None:
            self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
            self._idle = 0
            self._lock = threading.Lock()
            self._names = itertools.count()

        def add_child_handler(
            self, pid: int, callback: Callable[..., object], *args: object
        ) -> None:
            loop = asyncio.get_running_loop()
            with self._lock:
                start = self._idle == 0
                if not start:
                    self._idle -= 1  # that thread takes this job
            self._jobs.put(lambda: _wait_child(loop, pid, callback, args))
            if start:
                threading.Thread(
                    target=self._serve, name=f"stomper-waitpid-{next(self._names)}", daemon=True
                ).start()

        def _serve(self) -> None:
            while True:
                self._jobs.get()()
                with self._lock:
                    self._idle += 1

        def remove_child_handler(self, pid: int) -> bool:
            return True  # asyncio never calls it

        def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
            pass

        def close(self) -> None:
            pass

        def is_active(self) -> bool:
            return True

        def __enter__(self) -> ReusedThreadsChildWatcher:
            return self

        def __exit__(self, *exc_info: object) -> None:
            pass

    def _wait_child(
        loop: asyncio.AbstractEventLoop,
        pid: int,
        callback: Callable[..., object],
        args: tuple[object, ...],
    ) -> None:
        try:
            _, status = os.waitpid(pid, 0)
            returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            returncode = 255  # reaped elsewhere, as asyncio's own watchers report it
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(callback, pid, returncode, *args)

    @functools.cache
    def _shared_watcher() -> ReusedThreadsChildWatcher:
        return ReusedThreadsChildWatcher()


def install_child_watcher() -> None:
    """On Python 3.11, use :class:`ReusedThreadsChildWatcher` (one for the process: its
    threads serve every event loop); later versions keep their own, and this does nothing."""
    if sys.version_info < (3, 12):
        asyncio.set_child_watcher(_shared_watcher())
