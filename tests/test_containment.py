"""CLI agents are contained: each attack seen in the wild, as a real malicious agent script
(``tests/agents/``), run through ``stomper fix --agent command`` with the sandbox on and
off. git itself is the oracle of the user's repository."""

from __future__ import annotations

from stomper.testing.repos import module
from tests.conftest import run_json, sh


def by_path(doc: dict) -> dict[str, dict]:
    return {unit["path"]: unit for unit in doc["units"]}


# Symlinks, submodules ---------------------------------------------------------------------


def test_a_tracked_symlink_is_never_a_unit_and_nothing_is_written_through_it(
    make, tmp_path, capsys
) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text(module(["F401"]))
    repo = make({"a.py": module(["F401"])})
    (repo / "evil.py").symlink_to("../outside.py")
    (repo / "twin.py").symlink_to("a.py")
    sh(repo, "add", "evil.py", "twin.py")
    sh(repo, "commit", "-qm", "links")
    code, doc = run_json(repo, capsys=capsys)
    units = by_path(doc)
    assert units["a.py"]["status"] == "fixed"
    for link in ("evil.py", "twin.py"):
        assert units[link]["status"] == "skipped", units[link]
        assert "symlink" in units[link]["reason"]
        assert units[link]["commit"] is None
    # a.py's diagnostics counted once, not once more through twin.py.
    assert doc["totals"]["diagnostics_before"] == units["a.py"]["diagnostics_before"]
    assert outside.read_text() == module(["F401"])
    assert sh(repo, "status", "--porcelain") == ""


def test_a_submodule_is_never_a_unit(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    head = sh(repo, "rev-parse", "HEAD").strip()
    sh(repo, "update-index", "--add", "--cacheinfo", f"160000,{head},vendored.py")
    sh(repo, "commit", "-qm", "a submodule")
    code, doc = run_json(repo, capsys=capsys)
    units = by_path(doc)
    assert units["vendored.py"]["status"] == "skipped"
    assert "submodule" in units["vendored.py"]["reason"]
    assert units["a.py"]["status"] == "fixed"
