"""Lessons: what the edits that broke a directory's build did, kept for later reviews.

Each edit bisection rolled back becomes a lesson (its directory, its file, what it changed,
the build's error), one JSON line in ``$(git-common-dir)/stomper/lessons.jsonl``, across runs.
Later prompts for files of that directory show the most recent few, so a model is told what
not to do again; ``stomper lessons`` lists them and ``--forget`` removes them.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from stomper.errors import RepositoryError

FILE_NAME = "lessons.jsonl"
SHOWN = 5
"""Lessons a prompt shows at most, the most recent first."""
_ERROR_CHARS = 400
_CHANGE_CHARS = 200


@dataclass(frozen=True)
class Lesson:
    directory: str
    path: str
    change: str
    """What the edit did, in a line: the first lines it removed and added."""
    error: str
    """What the build said of it (its relevant lines, shortened)."""
    run_id: str
    at: float

    def line(self) -> str:
        """The lesson as a prompt shows it."""
        error = " ".join(self.error.split())[:_ERROR_CHARS]
        return f"`{self.path}`: {self.change}; the build then failed: {error}"


def change_of(before: str, after: str) -> str:
    """What an edit from ``before`` to ``after`` did, in a line."""
    removed: list[str] = []
    added: list[str] = []
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), n=0, lineterm=""):
        if line.startswith("-") and not line.startswith("---"):
            removed.append(line[1:].strip())
        elif line.startswith("+") and not line.startswith("+++"):
            added.append(line[1:].strip())
    said = (
        f"changed `{removed[0]}` to `{added[0]}`"
        if removed and added
        else f"removed `{removed[0]}`"
        if removed
        else f"added `{added[0]}`"
        if added
        else "changed nothing visible"
    )
    more = max(len(removed), len(added)) - 1
    return said[:_CHANGE_CHARS] + (f" (and {more} more lines)" if more > 0 else "")


class Lessons:
    """The lessons of one repository, in ``file``."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def read(self) -> list[Lesson]:
        """Every lesson, the oldest first; a line that cannot be read is passed over."""
        try:
            text = self.file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise RepositoryError(f"cannot read the lessons in {self.file}: {exc}") from exc
        found = []
        for line in text.splitlines():
            try:
                found.append(Lesson(**json.loads(line)))
            except (ValueError, TypeError):
                continue
        return found

    def for_directory(self, directory: str, *, shown: int = SHOWN) -> list[str]:
        """The lessons of ``directory`` as a prompt shows them, the most recent first."""
        return self.by_directory(shown=shown).get(directory, [])

    def by_directory(self, *, shown: int = SHOWN) -> dict[str, list[str]]:
        """The lessons of every directory as a prompt shows them, the most recent first:
        one reading of the file for a whole run."""
        found: dict[str, list[str]] = {}
        for lesson in reversed(self.read()):
            mine = found.setdefault(lesson.directory, [])
            if len(mine) < shown:
                mine.append(lesson.line())
        return found

    def add(self, lessons: Sequence[Lesson]) -> None:
        """Keep ``lessons``: appended, one line each (a line is written in one call, so
        runs appending at once never interleave within one)."""
        if not lessons:
            return
        text = "".join(json.dumps(asdict(lesson)) + "\n" for lesson in lessons)
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            raise RepositoryError(f"cannot keep the lessons in {self.file}: {exc}") from exc

    def forget(self, directories: Sequence[str] = ()) -> int:
        """Remove the lessons of ``directories`` (all of them when none is given); how many
        were removed."""
        lessons = self.read()
        kept = [lesson for lesson in lessons if directories and lesson.directory not in directories]
        if len(kept) == len(lessons):
            return 0
        text = "".join(json.dumps(asdict(lesson)) + "\n" for lesson in kept)
        try:
            fd, made = tempfile.mkstemp(dir=self.file.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(text)
                os.replace(made, self.file)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(made)
                raise
        except OSError as exc:
            raise RepositoryError(f"cannot rewrite the lessons in {self.file}: {exc}") from exc
        return len(lessons) - len(kept)


def lesson(directory: str, path: str, change: str, error: str, run_id: str) -> Lesson:
    return Lesson(directory, path, change, error, run_id, time.time())
