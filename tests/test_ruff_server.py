"""ruff's findings through ``ruff server`` equal ``ruff check``'s; a server that breaks or
disagrees is dropped for ``ruff check``."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from stomper.agents import AgentTask
from stomper.agents.autofix import AutofixAgent
from stomper.diagnostics import Diagnostic
from stomper.diagnostics.ruff import RuffCollector, fix_source, ruff_binary
from stomper.diagnostics.ruff_server import RuffServer
from stomper.testing.repos import RUFF_CONFIG
from stomper.unit import Unit

SOURCES = {
    "clean": "x = 1\n",
    "fixable": "import os\n\n\nclass Box():\n    size = 1\n",
    "unicode": 's = "é😀"; import sys\nt = "ü"  ;  u = 2\n',
    "syntax error": "import os\ndef f(:\n    pass\n",
    "noqa": "import os  # noqa: F401\nimport sys\n",
    "no final newline": "import os",
    "long line": "x = '" + "a" * 120 + "'\n",
    "crlf": "import os\r\nimport sys\r\n\r\nclass Box():\r\n    pass\r\n",
    "imports to sort": "import sys\nimport os\n\nprint(os, sys)\n",
    "fixes on unicode lines": 'import os\ns = "é😀"   ;   t = "ü"\nclass A(object):\n    pass\n',
}
CONFIG = RUFF_CONFIG + textwrap.dedent(
    """
    [tool.ruff.lint.per-file-ignores]
    "legacy/*" = ["F401"]
    """
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(CONFIG)
    for folder in ("pkg", "legacy"):
        (tmp_path / folder).mkdir()
    return tmp_path


def positions(found: list[Diagnostic]) -> list[tuple[str, str, int, int, str]]:
    return sorted((d.code, d.message, d.line, d.column, d.context) for d in found)


def test_the_server_reports_what_ruff_check_reports(tree: Path) -> None:
    binary = ruff_binary()
    assert binary is not None

    async def both() -> list[tuple[str, list[Diagnostic], list[Diagnostic]]]:
        server = RuffServer(binary, tree)
        checker = RuffCollector()
        await server.start()
        try:
            out = []
            for folder in ("pkg", "legacy"):
                for name, text in SOURCES.items():
                    path = f"{folder}/{name.replace(' ', '_')}.py"
                    source = text.encode()
                    by_server = await server.check(path, source)
                    by_check = await checker._check_source(tree, path, source)
                    out.append((path, by_server, by_check))
            return out
        finally:
            await server.aclose()

    results = asyncio.run(both())
    assert any(by_check for _, _, by_check in results)  # the sources do have findings
    for path, by_server, by_check in results:
        # The server's diagnostics carry no context; the collector adds it from the source.
        assert positions(by_server) == positions([replace(d, context="") for d in by_check]), path


def test_the_collector_uses_the_server_after_it_agreed(tree: Path) -> None:
    source = SOURCES["fixable"].encode()

    async def collect() -> tuple[list[list[Diagnostic]], bool]:
        collector = RuffCollector()
        try:
            found = [await collector.collect_source(tree, f"pkg/m{n}.py", source) for n in range(6)]
            return found, collector._server.serving
        finally:
            await collector.aclose()

    found, serving = asyncio.run(collect())
    assert serving
    codes = {d.code for d in found[0]}
    assert codes == {"F401", "UP039"}
    assert all(positions(f) == positions(found[0]) for f in found)


FAKE_SERVER = """\
import json, os, sys
real, mode = os.environ["REAL_RUFF"], os.environ["FAKE_MODE"]
if sys.argv[1:] != ["server"]:
    os.execv(real, [real, *sys.argv[1:]])
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write("server started\\n")
if mode == "exit":
    sys.exit(3)
def read():
    length = None
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            sys.exit(0)
        if line == b"\\r\\n":
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return json.loads(sys.stdin.buffer.read(length))
def send(message):
    body = json.dumps(message).encode()
    sys.stdout.buffer.write(b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
    sys.stdout.buffer.flush()
while True:
    message = read()
    if "id" not in message:
        continue
    if message["method"] == "initialize":
        if mode == "chatty":  # more log than a pipe holds, before the first answer
            sys.stderr.write("log line\\n" * 200_000)
            sys.stderr.flush()
        send({"jsonrpc": "2.0", "id": message["id"], "result": {"capabilities": {}}})
    elif message["method"] == "textDocument/diagnostic":
        if mode == "garbage":
            sys.stdout.buffer.write(b"Content-Length: 5\\r\\n\\r\\nnope!")
            sys.stdout.buffer.flush()
        else:  # "silent": finds nothing, where ruff check finds something
            send({"jsonrpc": "2.0", "id": message["id"], "result": {"kind": "full", "items": []}})
    else:
        send({"jsonrpc": "2.0", "id": message["id"], "result": None})
"""


def fake_ruff(bin_dir: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> Path:
    """Put a ruff first on PATH whose server behaves as ``mode`` says; its start log."""
    real = ruff_binary()
    assert real is not None
    fake = bin_dir / "ruff"
    fake.write_text(f"#!{sys.executable}\n{FAKE_SERVER}")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("REAL_RUFF", real)
    monkeypatch.setenv("FAKE_MODE", mode)
    log = bin_dir / "log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    return log


@pytest.mark.parametrize("mode", ["exit", "garbage", "silent"])
def test_a_server_that_breaks_or_disagrees_is_dropped_for_ruff_check(
    tree: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, mode
) -> None:
    log = fake_ruff(tmp_path_factory.mktemp("bin"), monkeypatch, mode)
    source = SOURCES["fixable"].encode()

    async def collect() -> tuple[list[list[Diagnostic]], bool]:
        collector = RuffCollector()
        try:
            # At once, so that the server is dropped while other requests are under way.
            found = await asyncio.gather(
                *(collector.collect_source(tree, f"pkg/m{n}.py", source) for n in range(8))
            )
            return list(found), collector._server.serving
        finally:
            await collector.aclose()

    found, serving = asyncio.run(collect())
    assert not serving
    # Eight units asked at once, and one server was started for them all.
    assert log.read_text().splitlines() == ["server started"]
    for each in found:
        assert {d.code for d in each} == {"F401", "UP039"}


def test_the_servers_fix_all_is_ruff_checks_fix(tree: Path) -> None:
    binary = ruff_binary()
    assert binary is not None

    async def both() -> list[tuple[str, bytes, bytes, bytes]]:
        server = RuffServer(binary, tree)
        await server.start()
        try:
            out = []
            for name, text in SOURCES.items():
                if name == "syntax error":
                    continue  # nothing is fixed in a file that does not parse
                path = f"pkg/{name.replace(' ', '_')}.py"
                source = text.encode()
                by_server = await server.fix_all(path, source)
                by_check = await fix_source(
                    source, tree / path, root=tree, select=(), ignore=(), unsafe=False
                )
                out.append((path, source, by_server, by_check))
            return out
        finally:
            await server.aclose()

    results = asyncio.run(both())
    assert sum(source != by_check for _, source, _, by_check in results) >= 4
    for path, _, by_server, by_check in results:
        assert by_server == by_check, path


async def autofix_some(agent: AutofixAgent, tree: Path, source: str) -> bool:
    """Let ``agent`` fix five copies of ``source``; whether it ended on the server."""
    try:
        for n in range(5):
            path = f"pkg/u{n}.py"
            (tree / path).write_text(source)
            diag = Diagnostic("ruff", "F401", "`os` imported but unused", path, 1)
            unit = Unit(n, path, "0" * 40, (diag,), (diag,), "0" * 40, "100644")
            await agent.fix(AgentTask(unit=unit, workspace=tree))
        return agent._server.serving
    finally:
        await agent.aclose()


@pytest.mark.parametrize("unsafe_in_config", [False, True])
def test_autofix_uses_the_server_unless_the_project_speaks_of_unsafe_fixes(
    tree: Path, unsafe_in_config: bool
) -> None:
    if unsafe_in_config:
        config = CONFIG.replace("[tool.ruff]\n", "[tool.ruff]\nunsafe-fixes = true\n")
        (tree / "pyproject.toml").write_text(config)
    source = SOURCES["fixable"]
    expected = asyncio.run(
        fix_source(
            source.encode(), tree / "pkg/u0.py", root=tree, select=(), ignore=(), unsafe=False
        )
    )
    assert expected != source.encode()
    serving = asyncio.run(autofix_some(AutofixAgent(), tree, source))
    assert serving is not unsafe_in_config
    for n in range(5):
        assert (tree / "pkg" / f"u{n}.py").read_bytes() == expected


@pytest.mark.parametrize(("where", "serving"), [("pkg", False), ("other", True), ("user", False)])
def test_only_the_configurations_ruff_may_read_for_a_file_keep_it_off_the_server(
    tree: Path, where: str, serving: bool
) -> None:
    # A folder above the files, a folder beside them, the user's own configuration.
    user = Path(os.environ["XDG_CONFIG_HOME"]) / "ruff"
    place = user if where == "user" else tree / where
    place.mkdir(parents=True, exist_ok=True)
    (place / "ruff.toml").write_text('unsafe-fixes = true\n[lint]\nselect = ["F"]\n')
    assert asyncio.run(autofix_some(AutofixAgent(), tree, SOURCES["fixable"])) is serving


def test_a_server_that_logs_a_lot_is_not_stalled_by_its_own_log(
    tree: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_ruff(tmp_path_factory.mktemp("bin"), monkeypatch, "chatty")
    binary = ruff_binary()
    assert binary is not None

    async def start_and_stop() -> None:
        server = RuffServer(binary, tree)
        try:
            await server.start()  # ServerError if the log had filled an unread pipe
        finally:
            await server.aclose()

    asyncio.run(start_and_stop())
