"""ruff's findings for one file's bytes through one long-lived ``ruff server``.

Verifying a unit means linting its file once more; as a ``ruff check`` process that costs
about 6 ms of CPU, most of it starting the process. ``ruff server`` (ruff's language
server, over stdin and stdout) answers the same question for an open document in well under
a millisecond, with the same settings: it resolves the project's configuration for the
document's path as ``ruff check --stdin-filename`` does.

The same server gives ruff's "Fix all" edits for a file's bytes, as ``ruff check
--fix-only`` would make them under the project's settings.

Only what this needs of the Language Server Protocol is spoken: initialize, open a
document, pull its diagnostics or its fix-all action, close it, shut down. Positions are
asked for in code points (``utf-32``), ruff's own columns. :class:`Vetted` checks the first
answers against ``ruff check`` and falls back to it for good when the server disagrees
with them, stops answering, or is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from stomper import proc
from stomper.diagnostics import Diagnostic

T = TypeVar("T")

_START_WAIT = 10.0
_ANSWER_WAIT = 30.0
_STOP_WAIT = 2.0
# The server adds the fix's title to a message ("... \n\nhelp: Remove ..."); ruff check
# does not.
_HELP = "\n\nhelp:"
_FIX_ALL = "source.fixAll.ruff"
_LINE_END = re.compile(r"\r\n|\r|\n")


class ServerError(Exception):
    """The server failed to start, broke the protocol, or stopped answering."""


class RuffServer:
    """One ``ruff server`` for the tree at ``root``; :meth:`aclose` ends it."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._ids = 0

    async def start(self) -> None:
        try:
            # It logs as it runs; what it says is not needed, and unread it would fill
            # the pipe and stall the server.
            self._process = await proc.start(
                (self.binary, "server"), cwd=self.root, keep_stderr=False
            )
        except OSError as exc:
            raise ServerError(f"cannot start ruff server: {exc}") from exc
        folder = self.root.as_uri()
        await self._ask(
            "initialize",
            {
                "processId": None,
                "rootUri": folder,
                "workspaceFolders": [{"uri": folder, "name": self.root.name}],
                "capabilities": {
                    "general": {"positionEncodings": ["utf-32"]},
                    "textDocument": {
                        "diagnostic": {"dynamicRegistration": False},
                        "codeAction": {
                            "codeActionLiteralSupport": {"codeActionKind": {"valueSet": [_FIX_ALL]}}
                        },
                    },
                },
                "initializationOptions": {},
            },
            wait=_START_WAIT,
        )
        await self._tell("initialized", {})

    async def check(self, path: str, source: bytes) -> list[Diagnostic]:
        """ruff's findings for ``source`` as the file ``root / path``."""
        answer = await self._on_document(path, source.decode("utf-8"), "textDocument/diagnostic")
        if not isinstance(answer, dict) or answer.get("kind") != "full":
            raise ServerError(f"unexpected answer to a diagnostic request: {answer!r:.200}")
        return [_diagnostic(item, path) for item in answer.get("items", [])]

    async def fix_all(self, path: str, source: bytes) -> bytes:
        """``source`` with every fix ruff would apply on its own (its "Fix all" action)."""
        text = source.decode("utf-8")
        lines = _line_starts(text)
        actions = await self._on_document(
            path,
            text,
            "textDocument/codeAction",
            range={"start": _at(0, 0), "end": _at(len(lines), 0)},
            context={"diagnostics": [], "only": [_FIX_ALL]},
        )
        if not isinstance(actions, list):
            raise ServerError(f"unexpected answer to a code action request: {actions!r:.200}")
        uri = (self.root / path).as_uri()
        edits = []
        for action in actions:
            if not isinstance(action, dict) or action.get("kind") != _FIX_ALL:
                continue
            if "edit" not in action:
                raise ServerError("a fix-all action without its edit")
            edits += action["edit"].get("changes", {}).get(uri, [])
        return _apply(text, lines, edits).encode("utf-8")

    async def _on_document(self, path: str, text: str, method: str, **params: Any) -> Any:
        """Open ``text`` as the document ``root / path``, ask ``method`` of it, close it."""
        uri = (self.root / path).as_uri()
        document = {"uri": uri, "languageId": "python", "version": 1, "text": text}
        async with self._lock:
            await self._tell("textDocument/didOpen", {"textDocument": document})
            try:
                return await self._ask(method, {"textDocument": {"uri": uri}, **params})
            finally:
                await self._tell("textDocument/didClose", {"textDocument": {"uri": uri}})

    async def aclose(self) -> None:
        """Shut the server down (after the request under way, if one is), or kill it."""
        async with self._lock:
            process = self._process
            if process is None:
                return
            if process.returncode is None:
                with contextlib.suppress(ServerError):
                    await self._ask("shutdown", None, wait=_STOP_WAIT)
                    await self._tell("exit", None)
            self._process = None
        await proc.stop(process, wait=_STOP_WAIT)

    async def _tell(self, method: str, params: Any) -> None:
        await self._send({"jsonrpc": "2.0", "method": method, "params": params})

    async def _ask(self, method: str, params: Any, *, wait: float = _ANSWER_WAIT) -> Any:
        self._ids += 1
        asked = self._ids
        await self._send({"jsonrpc": "2.0", "id": asked, "method": method, "params": params})
        try:
            async with asyncio.timeout(wait):
                while True:
                    message = await self._receive()
                    if "method" in message:
                        if "id" in message:  # a request of the server's: none is needed here
                            await self._send(
                                {"jsonrpc": "2.0", "id": message["id"], "result": None}
                            )
                        continue
                    if message.get("id") != asked:
                        continue
                    if "error" in message:
                        raise ServerError(f"{method} failed: {message['error']}")
                    return message.get("result")
        except TimeoutError:
            raise ServerError(f"ruff server did not answer {method} in {wait:g}s") from None

    async def _send(self, message: dict[str, Any]) -> None:
        process = self._running()
        assert process.stdin is not None
        body = json.dumps(message).encode()
        try:
            process.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await process.stdin.drain()
        except (OSError, RuntimeError) as exc:
            raise ServerError(f"ruff server stopped: {exc}") from exc

    async def _receive(self) -> dict[str, Any]:
        process = self._running()
        assert process.stdout is not None
        try:
            length = None
            while True:
                line = await process.stdout.readline()
                if not line:
                    raise ServerError("ruff server stopped")
                if line == b"\r\n":
                    break
                name, _, value = line.decode("ascii").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length is None:
                raise ServerError("a message without a length from ruff server")
            message = json.loads(await process.stdout.readexactly(length))
        except (ValueError, UnicodeDecodeError, asyncio.IncompleteReadError) as exc:
            raise ServerError(f"ruff server broke the protocol: {exc}") from exc
        if not isinstance(message, dict):
            raise ServerError(f"ruff server sent {message!r:.200}")
        return message

    def _running(self) -> asyncio.subprocess.Process:
        if self._process is None or self._process.returncode is not None:
            raise ServerError("ruff server is not running")
        return self._process


class Vetted:
    """A ruff server for the tree at one root, used in place of ``ruff check`` once its first
    answers matched ``ruff check``'s; dropped for good at the first disagreement, protocol
    error or silence. Files that are not plain UTF-8 always go to ``ruff check``."""

    def __init__(self, binary: str | None, *, cross_checks: int = 3) -> None:
        self.binary = binary
        self.cross_checks = cross_checks
        self._server: RuffServer | None = None
        self._off = binary is None
        self._agreed = 0
        self._starting = asyncio.Lock()

    async def answer(
        self,
        root: Path,
        source: bytes,
        served: Callable[[RuffServer], Awaitable[T]],
        checked: Callable[[], Awaitable[T]],
    ) -> T:
        """``served(server)``, or ``checked()`` (ruff check) where the server is not to be
        used or not yet trusted; both while it is being vetted."""
        server = await self._server_for(root) if _plain_utf8(source) else None
        if server is None:
            return await checked()
        try:
            answer = await served(server)
        except ServerError:
            await self.aclose()
            return await checked()
        if self._agreed >= self.cross_checks:
            return answer
        reference = await checked()
        if answer == reference:
            self._agreed += 1
        else:
            await self.aclose()
        return reference

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def aclose(self) -> None:
        """Stop using the server, for good."""
        server, self._server = self._server, None
        self._off = True
        if server is not None:
            await server.aclose()

    async def _server_for(self, root: Path) -> RuffServer | None:
        # Units ask at once: the first starts the one server, the others wait for it.
        async with self._starting:
            if self._server is None and not self._off:
                assert self.binary is not None
                server = RuffServer(self.binary, root)
                try:
                    await server.start()
                except ServerError:
                    await server.aclose()
                    self._off = True
                    return None
                self._server = server
        if self._server is not None and self._server.root != root:
            return None
        return self._server


def _plain_utf8(source: bytes) -> bool:
    if source.startswith(b"\xef\xbb\xbf"):
        return False  # a BOM: the server would see it as text
    try:
        source.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _at(line: int, character: int) -> dict[str, int]:
    return {"line": line, "character": character}


def _line_starts(text: str) -> list[int]:
    """Where each line of ``text`` starts, lines ending as the protocol ends them (at
    ``\r\n``, ``\n`` or ``\r``, and nowhere else)."""
    return [0, *(match.end() for match in _LINE_END.finditer(text))]


def _apply(text: str, starts: list[int], edits: list[dict[str, Any]]) -> str:
    """``text`` with ``edits`` (non-overlapping, positions in code points) applied."""

    def offset(position: dict[str, int]) -> int:
        line = int(position["line"])
        if line >= len(starts):
            return len(text)
        return min(starts[line] + int(position["character"]), len(text))

    spans = sorted(
        (
            (offset(e["range"]["start"]), offset(e["range"]["end"]), str(e["newText"]))
            for e in edits
        ),
        reverse=True,
    )
    for start, end, new in spans:
        text = text[:start] + new + text[end:]
    return text


def _diagnostic(item: dict[str, Any], path: str) -> Diagnostic:
    start = item["range"]["start"]
    message = str(item["message"])
    return Diagnostic(
        tool="ruff",
        code=str(item.get("code") or "syntax-error"),
        message=message.split(_HELP, 1)[0],
        path=path,
        line=int(start["line"]) + 1,
        column=int(start["character"]) + 1,
    )
