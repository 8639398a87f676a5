"""The edits a model may answer with, parsed and applied strictly.

Two formats are accepted. SEARCH/REPLACE blocks, the default::

    path/of/file.py
    <<<<<<< SEARCH
    exact old lines
    =======
    new lines
    >>>>>>> REPLACE

and, for small files, the whole new file after a ``FILE: path`` line, in one fenced block.
Line numbers from the model are never trusted: a SEARCH part must occur in the file exactly,
at one place. A block that does not is an :class:`~stomper.agents.AttemptFailed` whose
feedback shows the lines of the file closest to it, so the next attempt can copy them.

Bytes are preserved: a file is read and written back with undecodable bytes kept as they
were, its line endings and the presence (or absence) of its final newline unchanged.
"""

from __future__ import annotations

import difflib
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from stomper.agents import AttemptFailed

ANSWER_FORMAT = """\
Answer with SEARCH/REPLACE blocks, one for each place you change. Each block is:

path/of/file.py
<<<<<<< SEARCH
the exact lines of the file to replace
=======
the lines to put in their place
>>>>>>> REPLACE

- The line before `<<<<<<< SEARCH` names the file, relative to the repository.
- The SEARCH part must match the file exactly, character for character: the same \
indentation, comments and blank lines, and no line numbers.
- It must match one place only: add a line or two around the change to make it unique, \
but keep blocks small.
- To delete lines, leave the REPLACE part empty.
- Blocks apply in order, each to the file as the blocks before it left it.
"""
"""The instructions for SEARCH/REPLACE answers, for ``task_prompt(answer_format=...)``."""

WHOLE_FILE_FORMAT = """\
Answer with the whole new file, after a line that names it:

FILE: path/of/file.py
```python
every line of the new file
```

- Write out the complete file, the lines you do not change too: nothing is filled in.
- If the file holds a line of three backticks, fence it with four (````).
"""
"""The instructions for whole-file answers (only for files shown whole in the prompt)."""

SEARCH_MARKER = "<<<<<<< SEARCH"
DIVIDER_MARKER = "======="
REPLACE_MARKER = ">>>>>>> REPLACE"

_FILE_LINE = re.compile(r"FILE:\s*(?P<path>\S.*?)\s*")
_FENCE = re.compile(r"(?P<fence>`{3,}|~{3,})[\w+.-]*\s*")
# What a line naming a file may look like once decorations (`, *, #, "File:") are gone:
# no space at all, or spaces but a file extension; either way a dot or a slash.
_PATH_LIKE = re.compile(r"[^\s:]*[./][^\s:]*|[^:]*\S\.\w+")
_SHOWN_LINES = 30
# What an answer may cost to check, whatever it holds: a bounded count of blocks, of places
# counted for one, of problems told back, and of time spent looking for the lines closest
# to SEARCH parts that match nothing (a search that grows with the file and the part).
_MAX_BLOCKS = 1000
_COUNTED_PLACES = 100
_TOLD_PROBLEMS = 10
_CLOSEST_SECONDS = 1.0
_LIKELY_RUNS = 20


@dataclass(frozen=True)
class SearchReplace:
    """Replace the one occurrence of ``search`` in a file with ``replace``."""

    number: int
    """The block's number in the answer, from 1."""
    path: str | None
    """The file named before the block; None for the unit's own file."""
    search: str
    replace: str


@dataclass(frozen=True)
class WholeFile:
    """Replace a file's whole content."""

    number: int
    path: str
    content: str


Edit = SearchReplace | WholeFile


@dataclass(frozen=True)
class Change:
    """The new content of one file, checked and ready to write."""

    path: str
    """Relative to the workspace, as the answer named it (normalised)."""
    target: Path
    content: bytes


def parse(answer: str) -> list[Edit]:
    """The edits in a model's answer, in order.

    Raises :class:`AttemptFailed` when the answer holds no edit at all, or a block that is
    not closed.
    """
    lines = _lines(answer)
    found: list[Edit] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if _is_marker(line, SEARCH_MARKER):
            edit, index = _search_replace(lines, index, len(found) + 1)
            found.append(edit)
            continue
        named = _FILE_LINE.fullmatch(line.rstrip("\r\n"))
        if named is not None:
            path = named["path"].strip("`*\"' ")
            whole, index = _whole_file(lines, index, path, len(found) + 1)
            found.append(whole)
            continue
        index += 1
    if len(found) > _MAX_BLOCKS:
        raise AttemptFailed(
            f"Your answer held {len(found)} blocks, more than the {_MAX_BLOCKS} one answer may "
            "hold: nothing was changed. Answer with fewer blocks, for the diagnostics only."
        )
    if not found:
        shown = answer.strip()[:200] or "(an empty answer)"
        raise AttemptFailed(
            "Your answer held no SEARCH/REPLACE block, so nothing was changed. It began:\n"
            f"{shown}\nAnswer in the format asked for."
        )
    return found


def apply(edits: Sequence[Edit], workspace: Path, default_path: str) -> list[str]:
    """Apply ``edits`` to the files under ``workspace``; the paths that changed.

    All or nothing: every edit is checked before any file is written. Raises
    :class:`AttemptFailed` naming each block that does not apply.
    """
    changes = prepare(edits, workspace, default_path)
    write(changes)
    return [change.path for change in changes]


def prepare(edits: Sequence[Edit], workspace: Path, default_path: str) -> list[Change]:
    """Check ``edits`` against the files and compute their new contents; writes nothing.

    An edit may name any file inside ``workspace`` (what the unit may touch is for the
    caller to judge); a path that leads outside it is refused.
    """
    root = workspace.resolve()
    texts: dict[str, str] = {}
    originals: dict[str, str] = {}
    targets: dict[str, Path] = {}
    problems: list[str] = []
    give_up = time.monotonic() + _CLOSEST_SECONDS
    for edit in edits:
        try:
            path, target = _target(root, edit.path or default_path)
        except _Refused as refused:
            problems.append(f"Block {edit.number} {_first_line(edit)}: {refused}")
            continue
        if path not in texts:
            try:
                texts[path] = originals[path] = _read(target)
            except _Refused as refused:
                problems.append(f"Block {edit.number} {_first_line(edit)}: {refused}")
                continue
            targets[path] = target
        outcome = _apply_one(edit, path, texts[path], give_up)
        if isinstance(outcome, _Refused):
            problems.append(str(outcome))
        else:
            texts[path] = outcome
    changes = []
    for path, text in texts.items():
        if text == originals[path]:
            continue
        try:
            changes.append(Change(path, targets[path], _encode(text)))
        except UnicodeEncodeError as exc:
            problems.append(
                f"The new `{path}` holds {exc.object[exc.start : exc.end]!r}, which is not a "
                "character UTF-8 can hold: write plain text."
            )
    if problems:
        raise AttemptFailed(_nothing_changed(problems))
    return changes


def _nothing_changed(problems: Sequence[str]) -> str:
    """The feedback on blocks that do not apply: the first few of ``problems``."""
    untold = len(problems) - _TOLD_PROBLEMS
    return (
        "Nothing was changed: "
        + ("this block does not apply" if len(problems) == 1 else "these blocks do not apply")
        + ".\n\n"
        + "\n\n".join(problems[:_TOLD_PROBLEMS])
        + (f"\n\n{untold} more blocks do not apply either." if untold > 0 else "")
    )


def apply_to(edits: Sequence[Edit], path: str, text: str) -> str:
    """The text of the file at ``path`` after ``edits``, each of which must name that file
    or none; computed in memory, all or nothing. Raises :class:`AttemptFailed` naming each
    block that does not apply."""
    problems: list[str] = []
    give_up = time.monotonic() + _CLOSEST_SECONDS
    own = PurePosixPath(path)
    for edit in edits:
        if edit.path is not None and PurePosixPath(edit.path) != own:
            problems.append(
                f"Block {edit.number} {_first_line(edit)} names `{edit.path}`: only `{path}`, "
                "the file under review, may be changed."
            )
            continue
        outcome = _apply_one(edit, path, text, give_up)
        if isinstance(outcome, _Refused):
            problems.append(str(outcome))
        else:
            text = outcome
    if problems:
        raise AttemptFailed(_nothing_changed(problems))
    return text


def write(changes: Sequence[Change]) -> None:
    """Write checked changes (quick: no parsing or matching left to do)."""
    for change in changes:
        change.target.parent.mkdir(parents=True, exist_ok=True)
        change.target.write_bytes(change.content)


class _Refused(Exception):
    """Why one edit cannot apply; gathered into one AttemptFailed."""


def _lines(text: str) -> list[str]:
    """Lines with their ends kept; only ``\\n`` ends a line (not form feeds, unlike
    ``str.splitlines``), so file content passes through unchanged."""
    parts = text.split("\n")
    out = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def _is_marker(line: str, marker: str) -> bool:
    return line.rstrip() == marker


def _search_replace(lines: list[str], start: int, number: int) -> tuple[SearchReplace, int]:
    path = _path_before(lines, start)
    index = start + 1
    search: list[str] = []
    while index < len(lines) and not _is_marker(lines[index], DIVIDER_MARKER):
        search.append(lines[index])
        index += 1
    first = _quote(search[0]) if search else "(empty SEARCH)"
    if index >= len(lines):
        raise AttemptFailed(
            f"Block {number} ({first}) has no `{DIVIDER_MARKER}` line after its SEARCH part: "
            "nothing was changed. Close every block as the format shows."
        )
    index += 1
    replace: list[str] = []
    while index < len(lines) and not _is_marker(lines[index], REPLACE_MARKER):
        replace.append(lines[index])
        index += 1
    if index >= len(lines):
        raise AttemptFailed(
            f"Block {number} ({first}) has no `{REPLACE_MARKER}` line: nothing was changed. "
            "Close every block as the format shows."
        )
    return SearchReplace(number, path, "".join(search), "".join(replace)), index + 1


def _path_before(lines: list[str], start: int) -> str | None:
    """The file named on the line before a block, skipping blank lines and code fences."""
    index = start - 1
    while index >= 0 and (not lines[index].strip() or _FENCE.fullmatch(lines[index].strip())):
        index -= 1
    if index < 0:
        return None
    candidate = lines[index].strip().strip("`*#\"' ")
    candidate = re.sub(r"^(file|path)\s*:\s*", "", candidate, flags=re.IGNORECASE)
    candidate = candidate.strip("`*\"' ")
    if not candidate or candidate.endswith(":") or not _PATH_LIKE.fullmatch(candidate):
        return None
    return candidate


def _whole_file(lines: list[str], start: int, path: str, number: int) -> tuple[WholeFile, int]:
    index = start + 1
    while index < len(lines) and not lines[index].strip():
        index += 1
    opening = _FENCE.fullmatch(lines[index].strip()) if index < len(lines) else None
    if opening is None:
        raise AttemptFailed(
            f"Block {number} (FILE: {path}) is not followed by a fenced code block: nothing "
            "was changed. Put the whole file in one fenced block right after the FILE: line."
        )
    fence = opening["fence"]
    index += 1
    content: list[str] = []
    while index < len(lines) and lines[index].rstrip() != fence:
        content.append(lines[index])
        index += 1
    if index >= len(lines):
        raise AttemptFailed(
            f"Block {number} (FILE: {path}) has no closing {fence} line: nothing was changed. "
            "If the file holds such a line, fence it with more backticks."
        )
    return WholeFile(number, path, "".join(content)), index + 1


def _target(root: Path, name: str) -> tuple[str, Path]:
    """The normalised relative path and the real location of a file an edit names."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or re.match(r"[A-Za-z]:[\\/]", name):
        raise _Refused(f"`{name}` is an absolute path; name files relative to the repository")
    parts = [part for part in pure.parts if part != "."]
    if not parts:
        raise _Refused(f"`{name}` names no file")
    if ".." in parts:
        raise _Refused(f"`{name}` leads outside the repository; edit files inside it only")
    if parts[0] == ".git":
        raise _Refused(f"`{name}` is inside git's own data; edit the project's files only")
    target = root.joinpath(*parts).resolve()
    if target == root or not target.is_relative_to(root):
        raise _Refused(f"`{name}` leads outside the repository (a link); edit files inside it")
    return "/".join(parts), target


def _read(target: Path) -> str:
    if target.is_dir():
        raise _Refused(f"`{target.name}` is a directory, not a file")
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return ""
    # Undecodable bytes survive the round trip: they are written back exactly as read.
    return data.decode("utf-8", errors="surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


def _apply_one(edit: Edit, path: str, text: str, give_up: float) -> str | _Refused:
    """The text after ``edit``, or why it does not apply (with the closest lines of the
    file, if they are found before ``give_up``, a ``time.monotonic()``)."""
    if isinstance(edit, WholeFile):
        content = _like(text, edit.content)
        if text and not text.endswith(("\n", "\r")) and content.endswith("\n"):
            # The format always ends the file with a newline; keep the file's own ending.
            content = content[:-1]
            if content.endswith("\r") and "\r\n" in text:
                content = content[:-1]
        return content
    search, replace = _like(text, edit.search), _like(text, edit.replace)
    label = f"Block {edit.number} {_first_line(edit)} in `{path}`"
    if not search:
        if not text:
            return replace
        return _Refused(
            f"{label} has an empty SEARCH part, but the file is not empty. Copy the lines to "
            "change into the SEARCH part."
        )
    places = _occurrences(text, search)
    if len(places) == 1:
        start = places[0]
        return text[:start] + replace + text[start + len(search) :]
    if len(places) > 1:
        numbers = ", ".join(str(text.count("\n", 0, place) + 1) for place in places[:10])
        count = f"{len(places)}" if len(places) < _COUNTED_PLACES else f"{_COUNTED_PLACES} or more"
        return _Refused(
            f"{label} matches {count} places (at lines {numbers}). Add lines around "
            "the change to the SEARCH part so that it matches one place only."
        )
    at_end = _at_end_without_newline(text, search)
    if at_end is not None:
        # The file ends without a newline; so does the REPLACE part, to keep it that way.
        return text[:at_end] + _drop_line_end(replace)
    if not text:
        return _Refused(f"{label} does not match: the file is empty or does not exist.")
    closest = _closest(text, search, give_up)
    shown = f"The closest lines of the file are:\n{closest}\n" if closest else ""
    return _Refused(
        f"{label} does not match: its SEARCH lines do not occur in the file exactly. {shown}"
        "Copy the SEARCH lines exactly from the file: indentation, blank lines and comments "
        "included, without line numbers."
    )


def _like(text: str, block: str) -> str:
    """``block`` with the file's line ends: a CRLF file gets CRLF, whatever the model wrote."""
    if "\r\n" in text and "\r" not in block:
        return block.replace("\n", "\r\n")
    return block


def _occurrences(text: str, search: str) -> list[int]:
    """Where ``search`` starts in ``text``, at the start of a line only (overlaps counted;
    no more than ``_COUNTED_PLACES``)."""
    places: list[int] = []
    start = text.find(search)
    while start != -1 and len(places) < _COUNTED_PLACES:
        if start == 0 or text[start - 1] == "\n":
            places.append(start)
        start = text.find(search, start + 1)
    return places


def _at_end_without_newline(text: str, search: str) -> int | None:
    """Where ``search`` matches the file's last lines when the file lacks a final newline."""
    if text.endswith("\n") or not search.endswith("\n"):
        return None
    stem = _drop_line_end(search)
    if not stem or not text.endswith(stem):
        return None
    start = len(text) - len(stem)
    return start if start == 0 or text[start - 1] == "\n" else None


def _drop_line_end(block: str) -> str:
    if block.endswith("\r\n"):
        return block[:-2]
    return block[:-1] if block.endswith("\n") else block


def _closest(text: str, search: str, give_up: float) -> str:
    """The run of the file's lines most like ``search`` (its first lines, those shown),
    numbered as the prompt numbers them: the best found by ``give_up``, or "" when there
    was no time to look."""
    lines = _lines(text)
    wanted = _lines(search)[:_SHOWN_LINES]
    size = max(1, len(wanted))
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2("".join(wanted))
    best_ratio, best_start = -1.0, 0
    starts = _likely_starts(lines, wanted) or range(max(1, len(lines) - size + 1))
    for start in starts:
        if time.monotonic() > give_up:
            break
        matcher.set_seq1("".join(lines[start : start + size]))
        # The cheap upper bounds first: most windows are ruled out without the full ratio.
        if (
            matcher.real_quick_ratio() > best_ratio
            and matcher.quick_ratio() > best_ratio
            and matcher.ratio() > best_ratio
        ):
            best_ratio, best_start = matcher.ratio(), start
    if best_ratio < 0:
        return ""
    end = min(len(lines), best_start + size)
    width = len(str(end))
    return "\n".join(
        f"{number + 1:>{width}} | {lines[number].rstrip(chr(13) + chr(10))}"
        for number in range(best_start, end)
    )


def _likely_starts(lines: list[str], wanted: list[str]) -> list[int]:
    """The starts of the runs of ``len(wanted)`` lines that share the most lines with
    ``wanted`` once stripped (a copy that is off in a line or two, or in its indentation),
    in order; none when no line is shared. Found in one pass, so that the close comparison
    of characters is made for a few runs, not for every run of a large file."""
    want = Counter(key for line in wanted if (key := line.strip()))
    if not want:
        return []
    size = len(wanted)
    keys = [line.strip() for line in lines]
    have: Counter[str] = Counter()
    shared = 0
    scores: list[tuple[int, int]] = []
    for index, key in enumerate(keys):
        if key in want:
            have[key] += 1
            shared += have[key] <= want[key]
        if index >= size and (old := keys[index - size]) in want:
            shared -= have[old] <= want[old]
            have[old] -= 1
        if index >= size - 1 or index == len(keys) - 1:
            scores.append((shared, max(0, index - size + 1)))
    best = sorted(scores, key=lambda score: (-score[0], score[1]))[:_LIKELY_RUNS]
    return sorted(start for shared, start in best if shared > 0)


def _first_line(edit: Edit) -> str:
    if isinstance(edit, WholeFile):
        return f"(FILE: {edit.path})"
    first = next((line for line in _lines(edit.search) if line.strip()), "")
    return f"({_quote(first)})" if first else "(empty SEARCH)"


def _quote(line: str) -> str:
    text = line.rstrip("\r\n")
    if len(text) > 80:
        text = text[:77] + "..."
    return f"`{text}`"
