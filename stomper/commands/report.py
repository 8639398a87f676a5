"""``stomper report [RUN_ID]``: a run's report, read from its journal alone (any mode's
run, a crashed or resumed one too): ``--html FILE`` a self-contained page with its
timeline, ``--markdown FILE`` a summary for a pull request; neither given, the Markdown on
stdout."""

from __future__ import annotations

from pathlib import Path

from stomper import console, redaction
from stomper.commands.show import find_recorded
from stomper.config import load_settings
from stomper.errors import ConfigError
from stomper.repository import open_repository
from stomper.run_report import RecordedRun, markdown, page


async def report(
    cwd: Path, run_id: str | None, *, html: Path | None, markdown_file: Path | None
) -> int:
    repo = await open_repository(cwd)
    redaction.use(redaction.Redaction.of(load_settings(repo.root, {})))
    run = RecordedRun.read(find_recorded(repo.state, run_id))
    if html is None and markdown_file is None:
        console.print_text(markdown(run))
        return 0
    for path, text in ((html, page(run) if html else ""), (markdown_file, markdown(run))):
        if path is None:
            continue
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write the report to {path}: {exc.strerror}") from None
        console.info(f"wrote {path}", markup=False)
    return 0
