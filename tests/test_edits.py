"""The edit formats: parsed strictly, applied exactly or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stomper.agents import AttemptFailed
from stomper.agents.edits import (
    ANSWER_FORMAT,
    WHOLE_FILE_FORMAT,
    SearchReplace,
    WholeFile,
    apply,
    parse,
)


def block(search: str, replace: str, path: str | None = "a.py") -> str:
    head = f"{path}\n" if path else ""
    return f"{head}<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def test_parse_reads_blocks_in_order_with_their_paths() -> None:
    answer = (
        "Here is the fix.\n\n```python\n"
        + block("import os\n", "")
        + "```\n\nAnd another:\n\n`pkg/b.py`\n"
        + block("x = 1\n", "x = 2\n", path=None)
    )
    assert parse(answer) == [
        SearchReplace(1, "a.py", "import os\n", ""),
        SearchReplace(2, "pkg/b.py", "x = 1\n", "x = 2\n"),
    ]


def test_prose_before_a_block_is_not_a_path() -> None:
    (edit,) = parse("I changed this:\n" + block("a\n", "b\n", path=None))
    assert isinstance(edit, SearchReplace)
    assert edit.path is None


def test_parse_reads_a_whole_file_with_a_longer_fence() -> None:
    content = 'DOC = """\n```\nexample\n```\n"""\n'
    answer = f"FILE: `a.py`\n\n````python\n{content}````\n"
    assert parse(answer) == [WholeFile(1, "a.py", content)]


@pytest.mark.parametrize("answer", ["", "I think the code is fine.", "```python\nx = 1\n```\n"])
def test_an_answer_without_a_block_is_refused(answer: str) -> None:
    with pytest.raises(AttemptFailed, match="no SEARCH/REPLACE block"):
        parse(answer)


def test_an_unclosed_block_is_refused() -> None:
    with pytest.raises(AttemptFailed, match=r"Block 1 \(`x = 1`\) has no `>>>>>>> REPLACE`"):
        parse("a.py\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n")


def test_the_formats_are_described_for_the_prompt() -> None:
    assert "<<<<<<< SEARCH" in ANSWER_FORMAT and ">>>>>>> REPLACE" in ANSWER_FORMAT
    assert "FILE: " in WHOLE_FILE_FORMAT


def test_apply_replaces_exactly_one_place(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("import os\nimport sys\n\nprint(sys.argv)\n")
    changed = apply(parse(block("import os\nimport sys\n", "import sys\n")), tmp_path, "a.py")
    assert changed == ["a.py"]
    assert (tmp_path / "a.py").read_text() == "import sys\n\nprint(sys.argv)\n"


def test_blocks_apply_in_order_and_default_to_the_unit_file(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("a = 1\nb = 2\n")
    answer = block("a = 1\n", "a = 10\n", path=None) + block("a = 10\nb = 2\n", "b = 2\n")
    apply(parse(answer), tmp_path, "a.py")
    assert (tmp_path / "a.py").read_text() == "b = 2\n"


def test_bytes_are_preserved_around_the_edit(tmp_path: Path) -> None:
    original = b"# caf\xe9 in latin-1\r\nimport os\r\nx = 1\r\n\r\n\r\n"
    (tmp_path / "a.py").write_bytes(original)
    apply(parse(block("x = 1\n", "x = 2\n")), tmp_path, "a.py")
    assert (tmp_path / "a.py").read_bytes() == original.replace(b"x = 1", b"x = 2")


def test_a_file_without_a_final_newline_keeps_it_so(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_bytes(b"import os\nx = 1")
    apply(parse(block("x = 1\n", "x = 2\n")), tmp_path, "a.py")
    assert (tmp_path / "a.py").read_bytes() == b"import os\nx = 2"
    apply(parse(block("import os\n", "")), tmp_path, "a.py")
    assert (tmp_path / "a.py").read_bytes() == b"x = 2"


def test_a_final_newline_is_never_stripped(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_bytes(b"import os\nx = 1\n")
    apply(parse(block("x = 1\n", "x = 2\n")), tmp_path, "a.py")
    assert (tmp_path / "a.py").read_bytes() == b"import os\nx = 2\n"
    apply(parse("FILE: a.py\n```python\ny = 3\n```\n"), tmp_path, "a.py")
    assert (tmp_path / "a.py").read_bytes() == b"y = 3\n"


def test_whole_file_keeps_a_missing_final_newline_missing(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_bytes(b"x = 1")
    apply(parse("FILE: a.py\n```\nx = 2\ny = 3\n```\n"), tmp_path, "a.py")
    assert (tmp_path / "a.py").read_bytes() == b"x = 2\ny = 3"


def test_a_mismatch_names_the_block_and_shows_the_closest_lines(tmp_path: Path) -> None:
    lines = [f"value_{n} = {n}\n" for n in range(1, 40)]
    lines[19] = "def total(items):\n"
    lines[20] = "    return sum(item.price for item in items)\n"
    (tmp_path / "a.py").write_text("".join(lines))
    answer = block("x = 0\n", "x = 1\n", path=None) + block(
        "def total(items):\n    return sum(item.cost for item in items)\n",
        "def total(items):\n    return 0\n",
    )
    with pytest.raises(AttemptFailed) as failed:
        apply(parse(answer), tmp_path, "a.py")
    feedback = failed.value.feedback
    assert "Block 1 (`x = 0`)" in feedback
    assert "Block 2 (`def total(items):`) in `a.py` does not match" in feedback
    assert "20 | def total(items):\n21 |     return sum(item.price for item in items)" in feedback
    assert (tmp_path / "a.py").read_text() == "".join(lines)


def test_a_search_matching_twice_is_refused_with_its_lines(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\ny = 2\nx = 1\n")
    with pytest.raises(AttemptFailed, match=r"matches 2 places \(at lines 1, 3\)"):
        apply(parse(block("x = 1\n", "x = 3\n")), tmp_path, "a.py")


def test_a_match_must_start_a_line(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("max_x = 1\n")
    with pytest.raises(AttemptFailed, match="does not match"):
        apply(parse(block("x = 1\n", "x = 2\n")), tmp_path, "a.py")


def test_an_empty_search_only_fills_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    with pytest.raises(AttemptFailed, match="empty SEARCH part, but the file is not empty"):
        apply(parse(block("", "y = 2\n")), tmp_path, "a.py")
    apply(parse(block("", "y = 2\n", path="pkg/new.py")), tmp_path, "a.py")
    assert (tmp_path / "pkg" / "new.py").read_text() == "y = 2\n"


def test_nothing_is_written_when_any_block_fails(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 1\n")
    answer = block("x = 1\n", "x = 2\n") + block("nope\n", "", path="b.py")
    with pytest.raises(AttemptFailed, match="Block 2"):
        apply(parse(answer), tmp_path, "a.py")
    assert (tmp_path / "a.py").read_text() == "x = 1\n"


def test_an_edit_of_another_file_inside_is_applied(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "other.py").write_text("y = 1\n")
    assert apply(parse(block("y = 1\n", "y = 2\n", path="./other.py")), tmp_path, "a.py") == [
        "other.py"
    ]
    assert (tmp_path / "other.py").read_text() == "y = 2\n"


@pytest.mark.parametrize("path", ["../outside.py", "/tmp/outside.py", "pkg/../../outside.py"])
def test_a_path_leading_outside_is_refused(tmp_path: Path, path: str) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "a.py").write_text("x = 1\n")
    with pytest.raises(AttemptFailed, match="outside the repository|absolute path"):
        apply(parse(block("", "owned = True\n", path=path)), workspace, "a.py")
    assert not (tmp_path / "outside.py").exists()


def test_a_symlink_leading_outside_is_refused(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (tmp_path / "secret.py").write_text("x = 1\n")
    os.symlink(tmp_path / "secret.py", workspace / "link.py")
    os.symlink(tmp_path, workspace / "up")
    for path in ("link.py", "up/secret.py", "up/new.py"):
        with pytest.raises(AttemptFailed, match="leads outside the repository"):
            apply(parse(block("x = 1\n", "x = 2\n", path=path)), workspace, "a.py")
    assert (tmp_path / "secret.py").read_text() == "x = 1\n"
    assert not (tmp_path / "new.py").exists()


def test_a_character_utf8_cannot_hold_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    with pytest.raises(AttemptFailed, match="not a character UTF-8 can hold"):
        apply(parse(block("x = 1\n", "x = '\ud800'\n")), tmp_path, "a.py")
    assert (tmp_path / "a.py").read_text() == "x = 1\n"


def test_git_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AttemptFailed, match="git's own data"):
        apply(parse(block("", "x\n", path=".git/config")), tmp_path, "a.py")


# No "\r": a file with CRLF endings gets its blocks' line ends converted (tested above).
line_text = st.text(
    st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), max_size=6
)
lines_of = st.lists(line_text, max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    before=lines_of,
    target=st.lists(line_text, min_size=1),
    after=lines_of,
    replacement=lines_of,
    final_newline=st.booleans(),
)
def test_a_unique_block_turns_the_file_into_what_it_says(
    tmp_path_factory: pytest.TempPathFactory,
    before: list[str],
    target: list[str],
    after: list[str],
    replacement: list[str],
    final_newline: bool,
) -> None:
    marker = ["\x00unique"]
    old_lines = before + marker + target + after
    # Without a final newline, a last empty line is no line at all.
    assume(final_newline or old_lines[-1] != "")
    new_lines = before + replacement + after
    end = "\n" if final_newline else ""
    old, new = "\n".join(old_lines) + end, "\n".join(new_lines) + end
    if not new_lines:
        new = ""
    workspace = tmp_path_factory.mktemp("ws")
    (workspace / "a.py").write_bytes(old.encode())
    search = "".join(line + "\n" for line in marker + target)
    replace = "".join(line + "\n" for line in replacement)
    if not after and not final_newline and not replacement and before:
        # Deleting the last lines of a file without a final newline leaves the line before
        # them with its newline: the format cannot say otherwise.
        new += "\n"
    apply(parse(block(search, replace)), workspace, "a.py")
    assert (workspace / "a.py").read_bytes() == new.encode()


def test_an_answer_with_too_many_blocks_is_refused_before_it_is_applied(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    answer = block("x = 1\n", "x = 1\n") * 1001
    with pytest.raises(AttemptFailed, match="1001 blocks, more than the 1000"):
        apply(parse(answer), tmp_path, "a.py")
    assert (tmp_path / "a.py").read_text() == "x = 1\n"


def test_the_feedback_on_many_failing_blocks_tells_the_first_ten(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    answer = "".join(block(f"y = {n}\n", "") for n in range(25))
    with pytest.raises(AttemptFailed) as failed:
        apply(parse(answer), tmp_path, "a.py")
    feedback = failed.value.feedback
    assert "Block 10 (`y = 9`)" in feedback and "Block 11" not in feedback
    assert feedback.endswith("15 more blocks do not apply either.")


def test_a_search_that_matches_very_often_is_counted_up_to_a_bound(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("pass\n" * 5000)
    with pytest.raises(AttemptFailed, match=r"matches 100 or more places \(at lines 1, 2, 3,"):
        apply(parse(block("pass\n", "")), tmp_path, "a.py")


def test_the_closest_lines_of_a_large_file_are_found(tmp_path: Path) -> None:
    # Thousands of runs of lines alike: the copy off in one line is found among them.
    lines = [f"    value_{n} = compute(value_{n - 1}, scale={n % 7})\n" for n in range(20000)]
    (tmp_path / "a.py").write_text("".join(lines))
    copy = lines[12000:12030]
    copy[10] = copy[10].replace("compute", "compute_all")
    with pytest.raises(AttemptFailed) as failed:
        apply(parse(block("".join(copy), "")), tmp_path, "a.py")
    shown = failed.value.feedback.split("The closest lines of the file are:\n")[1].splitlines()
    assert shown[0] == "12001 |     value_12000 = compute(value_11999, scale=2)"
    assert len([line for line in shown if " | " in line]) == 30


def test_matching_a_huge_search_that_occurs_nowhere_ends(tmp_path: Path) -> None:
    # Lines that share nothing with the file's: the closest lines are looked for a bounded
    # while (an unbounded search took minutes, past any timeout).
    lines = [f"value_{n} = compute(value_{n - 1})\n" for n in range(30000)]
    (tmp_path / "a.py").write_text("".join(lines))
    search = "".join(f"value_{n} = compute(value_{n + 1})  # as I remember\n" for n in range(30000))
    with pytest.raises(AttemptFailed, match="does not match"):
        apply(parse(block(search, "")), tmp_path, "a.py")
