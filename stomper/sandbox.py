"""The sandbox a CLI agent runs in: bubblewrap where the machine has it, a reaper where not.

With ``bwrap`` the agent sees the whole filesystem read-only but for its workspace, the
folder of its prompt (where its ``TMPDIR`` is) and its own state (``~/.claude`` and the
like); it
runs in a PID namespace of its own, so everything it started dies with it, and dies when
stomper dies. The network is shared: agents call their APIs.

Without one (``off``, or ``auto`` on a machine without a working bwrap) the agent can write
wherever the user can. On Linux it then runs under :data:`REAPER`, a small parent that
becomes the subreaper of the agent's descendants and kills every one of them when the
agent exits, also those that left its process group (``setsid``); stomper's
:mod:`stomper.tripwire` watches the user's repository around each call instead.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stomper import console, proc
from stomper.errors import AgentError

MODES = ("auto", "bwrap", "off")
BWRAP = "bwrap"
INSTALL = "install bubblewrap (Debian and Ubuntu: apt-get install bubblewrap)"
_PROBE_TIMEOUT = 30.0

# Run as `python -I -S -c REAPER ARGV...`. PR_SET_CHILD_SUBREAPER (36) makes every
# descendant whose parent dies a child of this process, whatever its session or group;
# once the agent exits, they are killed until none is left. A SIGTERM (stomper's timeout)
# kills the agent first, and then the rest the same way.
REAPER = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
argv = sys.argv[1:]
agent = os.fork()
if agent == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write(f"cannot run {argv[0]}: {exc}\\n")
    os._exit(127)
signal.signal(signal.SIGTERM, lambda *_: os.kill(agent, signal.SIGKILL))
status = os.waitpid(agent, 0)[1]
signal.signal(signal.SIGTERM, signal.SIG_IGN)
me = str(os.getpid())

def children():
    try:
        with open(f"/proc/{me}/task/{me}/children", "rb") as listed:
            return [int(pid) for pid in listed.read().split()]
    except OSError:
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rpartition(b")")[2].split()
            except OSError:
                continue
            if fields[1].decode() == me:
                found.append(int(entry))
    return found

while True:
    for pid in children():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


@dataclass(frozen=True)
class Sandbox:
    """How an agent's command is run: under bwrap (``bwrap`` is its path), or not."""

    bwrap: str | None = None

    @property
    def contained(self) -> bool:
        return self.bwrap is not None

    def wrap(
        self,
        argv: Sequence[str],
        *,
        workspace: Path,
        scratch: Path,
        state: Sequence[Path] = (),
    ) -> tuple[str, ...]:
        """The command that runs ``argv`` in ``workspace``, contained as this sandbox can.

        ``state`` are the agent's own files and folders that it may write (those that
        exist). Its temporary files go to a folder of its own in ``scratch`` (``TMPDIR``):
        ``/tmp`` is read-only, as the rest, and stays whole, since what the agent runs (a
        program, an interpreter's packages) may live there.
        """
        if self.bwrap is None:
            if sys.platform.startswith("linux"):
                return (sys.executable, "-I", "-S", "-c", REAPER, *argv)
            return tuple(argv)
        temporary = scratch / "tmp"
        temporary.mkdir(exist_ok=True)
        binds: list[str] = []
        for path in (workspace, scratch):
            binds += ["--bind", str(path), str(path)]
        for path in state:
            binds += ["--bind-try", str(path), str(path)]
        return _bwrap(
            self.bwrap,
            [*binds, "--setenv", "TMPDIR", str(temporary)],
            ["--chdir", str(workspace), "--", *argv],
        )


def _bwrap(bwrap: str, binds: Sequence[str], command: Sequence[str]) -> tuple[str, ...]:
    """bwrap's argv: everything read-only, a private /dev and /proc, then ``binds`` over
    them; a PID namespace and a session of its own, ended with stomper."""
    return (
        bwrap,
        *("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"),
        *binds,
        *("--unshare-pid", "--die-with-parent", "--new-session"),
        *command,
    )


async def probe() -> tuple[str | None, str]:
    """bwrap's path when it is installed and can make a sandbox here; else why not."""
    found = shutil.which(BWRAP)
    if found is None:
        return None, "bwrap is not installed"
    argv = _bwrap(found, [], ["--", shutil.which("true") or "/bin/true"])
    try:
        done = await proc.run(argv, timeout=_PROBE_TIMEOUT, check=False)
    except (OSError, proc.ProcessTimeout) as exc:
        return None, f"bwrap at {found} cannot run: {exc}"
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode(errors="replace").strip()
        first = said.splitlines()[0] if said else f"exit code {done.returncode}"
        return None, f"bwrap at {found} cannot make a sandbox here: {first}"
    return found, ""


async def resolve(mode: str, *, agent: str) -> Sandbox:
    """The sandbox ``mode`` gives on this machine; ``auto`` without bwrap warns, in one
    line, of what is not contained, and ``bwrap`` without it is refused."""
    if mode == "off":
        return Sandbox()
    found, why = await probe()
    if found is not None:
        return Sandbox(found)
    if mode == "bwrap":
        raise AgentError(f"sandbox = bwrap, but {why}: {INSTALL}, or set --sandbox auto or off")
    console.warning(uncontained_warning(agent, why))
    return Sandbox()


def uncontained_warning(agent: str, why: str) -> str:
    return (
        f"no sandbox for the {agent} agent ({why}): it can write anywhere you can; stomper "
        "checks your repository's checkout, refs, hooks and config around each call and "
        "kills what the agent leaves running, but does not watch files git ignores or "
        f"anything outside the repository: {INSTALL} to contain it, or set sandbox = "
        '"off" to run without one knowingly'
    )


async def describe(mode: str) -> tuple[bool, str]:
    """For ``stomper doctor``: whether ``mode`` can be had here, and what CLI agents get."""
    if mode == "off":
        return True, "off: CLI agents run uncontained (set by sandbox)"
    found, why = await probe()
    if found is None:
        if mode == "bwrap":
            return False, f"{why}: {INSTALL}"
        return True, f"off ({why}): CLI agents run uncontained; {INSTALL} to contain them"
    version = await _version(found)
    return True, f"bwrap ({version}): CLI agents run contained"


async def _version(bwrap: str) -> str:
    try:
        done = await proc.run((bwrap, "--version"), timeout=_PROBE_TIMEOUT, check=False)
    except (OSError, proc.ProcessTimeout):
        return "version unknown"
    return done.stdout.decode(errors="replace").strip() or "version unknown"


def state_paths(home: str | None, names: Sequence[str]) -> list[Path]:
    """The agent's own state under ``home`` (each name relative to it; a trailing ``*``
    matches by prefix), those that exist."""
    if not home or not names:
        return []
    base = Path(home)
    found: list[Path] = []
    for name in names:
        if name.endswith("*"):
            found += sorted(base.glob(name)) if base.is_dir() else []
        elif os.path.lexists(base / name):
            found.append(base / name)
    return found
