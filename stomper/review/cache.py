"""Reviews already paid for: a file reviewed before is not sent again.

A review is kept by what decides its answer: the file's blob, the persona, the prompt's
version and the model. What is kept is every finding located in the file, before any were
cut, so another ``--max-findings`` or ``--min-severity`` is served from it too. The cache
lives in the repository's state folder (``$(git-common-dir)/stomper/cache/review``), never in
the working tree.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from stomper.findings import Finding
from stomper.review.prompt import PROMPT_VERSION, Persona


@dataclass(frozen=True)
class Cached:
    findings: tuple[Finding, ...]
    unlocated: int
    malformed: int
    reflected: bool = False
    """Each finding carries the score a second look gave it."""
    edited: str | None = None
    """The file after the edits of the answer, when edits were asked for and given."""


class ReviewCache:
    def __init__(self, folder: Path, *, model: str, persona: Persona, edits: bool = False) -> None:
        self.folder = folder
        self._asked = json.dumps(
            [PROMPT_VERSION, model, persona.name, persona.system, persona.focus, edits]
        )

    def _file(self, blob: str, lessons: Sequence[str]) -> Path:
        told = json.dumps(list(lessons)) if lessons else ""
        key = hashlib.sha256(f"{self._asked}\n{told}\n{blob}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.json"

    def get(self, blob: str, path: str, lessons: Sequence[str] = ()) -> Cached | None:
        """The review of ``blob``, its findings placed at ``path``, made with ``lessons``
        in its prompt; None when there is none (or what is kept cannot be read: it is then
        made again)."""
        try:
            record = json.loads(self._file(blob, lessons).read_text(encoding="utf-8"))
            findings = tuple(
                replace(Finding.from_json(item), path=path) for item in record["findings"]
            )
            return Cached(
                findings,
                int(record["unlocated"]),
                int(record["malformed"]),
                bool(record.get("reflected", False)),
                record.get("edited") if isinstance(record.get("edited"), str) else None,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, blob: str, cached: Cached, lessons: Sequence[str] = ()) -> None:
        """Keep the review of ``blob``; a cache that cannot be written is no error (the
        next run asks again)."""
        file = self._file(blob, lessons)
        record = {
            "findings": [finding.to_json() for finding in cached.findings],
            "unlocated": cached.unlocated,
            "malformed": cached.malformed,
            "reflected": cached.reflected,
            "edited": cached.edited,
        }
        with contextlib.suppress(OSError):
            file.parent.mkdir(parents=True, exist_ok=True)
            fd, made = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(record, out)
                os.replace(made, file)
            except OSError:
                Path(made).unlink(missing_ok=True)
                raise
