"""Blobs written in-process are git's own; paths git converts still go through git."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stomper import git
from stomper.store import Blobs
from tests.conftest import sh

CRLF = b"x = 1\r\ny = 2\r\n"


async def written(repo: Path, paths: list[str], path: str, content: bytes) -> tuple[str, bool]:
    """The id ``Blobs`` gives ``content`` at ``path``, and whether it used no git process."""
    blobs = Blobs(repo)
    try:
        await blobs.prepare(paths)
        in_process = path in blobs.verbatim
        return await blobs.write(path, content), in_process
    finally:
        await blobs.aclose()


def test_an_in_process_blob_is_the_one_git_writes(make) -> None:
    repo = make({"a.py": "x = 1\n", "pkg/b.py": "y = 2\n"})
    content = b"import os\n\nprint('\xc3\xa9')\n" + bytes(range(256))
    oid, in_process = asyncio.run(written(repo, ["a.py", "pkg/b.py"], "pkg/b.py", content))
    assert in_process
    # git reads it back, finds it sound, and would have given it the same id.
    assert git.git_sync(repo, "cat-file", "blob", oid).stdout == content
    assert git.git_sync(repo, "fsck", "--strict").returncode == 0
    assert oid == asyncio.run(git.write_blob(repo, "pkg/b.py", content))


@pytest.mark.parametrize(
    ("attributes", "config"),
    [
        ("*.py text\n", None),
        ("*.py eol=lf\n", None),
        ("*.py filter=lower\n", ("filter.lower.clean", "tr A-Z a-z")),
        (None, ("core.autocrlf", "input")),
    ],
)
def test_a_path_git_converts_is_written_by_git(make, attributes, config) -> None:
    files = {"a.py": "x = 1\n"}
    if attributes is not None:
        files[".gitattributes"] = attributes
    repo = make(files)
    if config is not None:
        sh(repo, "config", *config)
    content = CRLF.upper() if attributes and "filter" in attributes else CRLF
    oid, in_process = asyncio.run(written(repo, ["a.py"], "a.py", content))
    assert not in_process
    expected = git.git_sync(repo, "cat-file", "blob", oid).stdout
    assert expected != content  # git converted it, and so the blob is git's
    assert oid == asyncio.run(git.write_blob(repo, "a.py", content))


def test_binary_attribute_keeps_the_path_in_process(make) -> None:
    repo = make({"a.py": "x = 1\n", ".gitattributes": "*.py -text\n"})
    oid, in_process = asyncio.run(written(repo, ["a.py"], "a.py", CRLF))
    assert in_process
    assert git.git_sync(repo, "cat-file", "blob", oid).stdout == CRLF


def test_read_gives_the_stored_bytes_and_refuses_what_is_no_blob(make) -> None:
    repo = make({"a.py": "x = 1\n"})
    blob = sh(repo, "rev-parse", "HEAD:a.py").strip()
    tree = sh(repo, "rev-parse", "HEAD^{tree}").strip()

    async def read() -> bytes:
        blobs = Blobs(repo)
        try:
            with pytest.raises(ValueError, match="not a blob"):
                await blobs.read(tree)
            with pytest.raises(ValueError, match="not a blob"):
                await blobs.read("0" * 40)
            return await blobs.read(blob)
        finally:
            await blobs.aclose()

    assert asyncio.run(read()) == b"x = 1\n"
