"""Every module imports on Python 3.11 to 3.14: nothing that 3.12 and later deprecate."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import stomper
from stomper.testing import repos

PACKAGE = Path(stomper.__file__).parent

# What 3.12, 3.13 and 3.14 deprecate (most of it removed by 3.14), by module and name, with
# the version that deprecates it. Only the names this code could plausibly reach for.
DEPRECATED = {
    "asyncio": {
        **dict.fromkeys(
            (
                "AbstractChildWatcher",
                "SafeChildWatcher",
                "FastChildWatcher",
                "MultiLoopChildWatcher",
                "ThreadedChildWatcher",
                "PidfdChildWatcher",
                "get_child_watcher",
                "set_child_watcher",
            ),
            (3, 12),
        ),
        **dict.fromkeys(
            (
                "AbstractEventLoopPolicy",
                "DefaultEventLoopPolicy",
                "get_event_loop_policy",
                "set_event_loop_policy",
                "iscoroutinefunction",
            ),
            (3, 14),
        ),
    },
    "datetime": dict.fromkeys(("utcnow", "utcfromtimestamp"), (3, 12)),
    "ast": dict.fromkeys(("Num", "Str", "Bytes", "NameConstant", "Ellipsis"), (3, 12)),
    "pkgutil": dict.fromkeys(("find_loader", "get_loader"), (3, 12)),
    "typing": {"ByteString": (3, 12), "no_type_check_decorator": (3, 13)},
    "codecs": {"open": (3, 14)},
}


def modules() -> list[str]:
    """Every module of the package but ``__main__``, which runs the command line."""
    found = pkgutil.walk_packages(stomper.__path__, "stomper.")
    return sorted(m.name for m in found if not m.name.endswith(".__main__"))


def test_every_module_imports_with_deprecation_warnings_as_errors() -> None:
    # A fresh interpreter: modules this process imported already would not warn again.
    names = modules()
    assert "stomper.proc" in names and "stomper.diagnostics.ruff" in names
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", script, *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# What a run loads only once it has units to work: LangGraph and what it brings along.
ORCHESTRATION = frozenset({"langgraph", "langchain_core", "langsmith", "langgraph_sdk"})

LOADED = """\
import json, sys
{before}
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}})))
"""


def loaded_by(before: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after running ``before``."""
    script = LOADED.format(before=before)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def run_fix_in_child(repo: Path) -> str:
    return (
        "from stomper.cli import main\n"
        f"code = main(['fix', '--repo', {str(repo)!r}, '--no-progress'])\n"
        "assert code in (0, 1), code\n"
    )


def test_the_command_line_loads_no_langgraph() -> None:
    assert loaded_by("import stomper.cli") & ORCHESTRATION == set()


def test_a_run_with_nothing_to_do_loads_no_langgraph(make) -> None:
    repo = make({"clean.py": repos.CLEAN})
    assert loaded_by(run_fix_in_child(repo)) & ORCHESTRATION == set()


def test_a_run_with_units_loads_langgraph(make) -> None:
    repo = make({"dirty.py": repos.module(["F401"])})
    assert "langgraph" in loaded_by(run_fix_in_child(repo))


def _guarded_below(node: ast.If) -> tuple[int, ...] | None:
    """The version of ``if sys.version_info < (3, N):``, whose body later versions skip."""
    test = node.test
    if (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Attribute)
        and test.left.attr == "version_info"
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Lt)
        and isinstance(test.comparators[0], ast.Tuple)
    ):
        parts = test.comparators[0].elts
        if all(isinstance(part, ast.Constant) and isinstance(part.value, int) for part in parts):
            return tuple(int(part.value) for part in parts)
    return None


def deprecated_uses(source: str) -> list[str]:
    """Each use of a deprecated name in ``source`` that a version deprecating it would run."""
    found: list[str] = []

    def visit(node: ast.AST, below: tuple[int, ...]) -> None:
        if isinstance(node, ast.If) and (guard := _guarded_below(node)) is not None:
            for child in node.body:
                visit(child, min(below, guard))
            for child in node.orelse:
                visit(child, below)
            return
        names: list[tuple[str, str]] = []
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            names.append((node.value.id, node.attr))
        elif isinstance(node, ast.ImportFrom) and node.module in DEPRECATED:
            names += [(node.module, alias.name) for alias in node.names]
        for module, name in names:
            since = DEPRECATED.get(module, {}).get(name)
            if since is not None and below > since:
                found.append(f"line {node.lineno}: {module}.{name} (deprecated in {since})")
        for child in ast.iter_child_nodes(node):
            visit(child, below)

    visit(ast.parse(source), (99,))
    return found


def test_no_module_uses_what_later_versions_deprecate() -> None:
    """On 3.11 nothing warns of them: this reads the code for them instead. A use inside
    ``if sys.version_info < (3, 12):`` is one the versions that deprecate it never run."""
    uses = {
        str(path.relative_to(PACKAGE)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if (found := deprecated_uses(path.read_text(encoding="utf-8")))
    }
    assert uses == {}


def test_the_reading_finds_a_deprecated_use_outside_a_version_guard() -> None:
    source = (
        "import asyncio, sys\n"
        "if sys.version_info < (3, 12):\n"
        "    class W(asyncio.AbstractChildWatcher): ...\n"
        "else:\n"
        "    asyncio.set_child_watcher(None)\n"
        "asyncio.get_event_loop_policy()\n"
        "from datetime import utcnow\n"
    )
    assert deprecated_uses(source) == [
        "line 5: asyncio.set_child_watcher (deprecated in (3, 12))",
        "line 6: asyncio.get_event_loop_policy (deprecated in (3, 14))",
        "line 7: datetime.utcnow (deprecated in (3, 12))",
    ]
