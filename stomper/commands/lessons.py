"""``stomper lessons``: what failed builds taught ``review --apply``, listed or forgotten."""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from stomper import console
from stomper.repository import open_repository, require_state
from stomper.review.lessons import FILE_NAME, Lessons


async def lessons(cwd: Path, *, directories: tuple[str, ...] = (), forget: bool = False) -> int:
    """List the lessons (of ``directories``, or all), or remove them with ``forget``."""
    repo = await open_repository(cwd)
    require_state(repo)
    book = Lessons(repo.state.root / FILE_NAME)
    if forget:
        removed = book.forget(directories)
        noun = "lesson" if removed == 1 else "lessons"
        console.info(f"forgot {removed} {noun}", markup=False)
        return 0
    found = [one for one in book.read() if not directories or one.directory in directories]
    if not found:
        console.info("no lessons: no edit of `stomper review --apply` has broken a build yet")
        return 0
    table = Table(title=f"Lessons ({book.file})", title_justify="left", show_edge=False)
    for column in ("when", "directory", "file", "what the edit did", "the build said"):
        table.add_column(column, overflow="fold")
    for one in reversed(found):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(one.at))
        table.add_row(
            when,
            one.directory,
            one.path,
            one.change,
            one.error.splitlines()[0][:200] if one.error else "",
        )
    console.err.print(table)
    return 0
