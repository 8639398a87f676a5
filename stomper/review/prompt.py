"""What a reviewer is asked: its persona, the file with numbered lines, the answer's contract."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import cast

from stomper.errors import ConfigError
from stomper.findings import SEVERITIES, Finding, Severity
from stomper.review.chunks import Chunk, imports

PROMPT_VERSION = "3"
"""Changes whenever what is asked changes: a cached review answers the prompt it was made for."""

CONTRACT = """\
Answer with one ```json block in this form (nothing else in your answer is read):
```json
{"findings": [{"rule": "short-kebab-case-id", "severity": "error", "category": "bug", \
"line": 12, "end_line": 14, "quote": "exact text of line 12", "message": "What is wrong, \
why it matters, and how to fix it.", "confidence": 0.8}]}
```
- severity is "error", "warning" or "note"; category is "bug", "security", "performance", \
"maintainability" or "style"; confidence is from 0 to 1.
- quote is the exact text of the first flagged line, copied from the file without its \
number: a finding whose quote is not in the file is dropped.
- Report only problems you can point at in this file, most important first; \
{"findings": []} when there are none. No praise, no summaries, no style nits a formatter fixes."""


EDIT_CONTRACT = """\
After the ```json block, fix each finding you are sure how to fix, within this file only, \
with SEARCH/REPLACE blocks; leave a finding without a block when its fix is not certain. \
The directory's build and tests run with your edits, and edits that break them are rolled \
back: never rename or remove what other files use. Each block is:

{path}
<<<<<<< SEARCH
the exact lines of the file to replace
=======
the lines to put in their place
>>>>>>> REPLACE

- The SEARCH part must match the file exactly, character for character, without the line \
numbers shown here, and match one place only.
- To delete lines, leave the REPLACE part empty."""


REFLECT_CONTRACT = """\
Answer with one ```json block in this form (nothing else in your answer is read):
```json
{"scores": [{"id": 1, "score": 8}]}
```
- One score for each finding, by its id, from 0 (wrong, or not worth changing the code for) \
to 10 (certainly a real problem worth fixing)."""
_AROUND = 3


@dataclass(frozen=True)
class Persona:
    """Who reviews: what it is told it is, what it looks for, and the least severe finding
    it reports."""

    name: str
    system: str
    focus: str
    min_severity: Severity = "note"


_REVIEWER = (
    "You are a meticulous senior engineer reviewing code. You report defects a careful "
    "maintainer would fix, each tied to the exact line it is on, and nothing you are unsure of."
)
PERSONAS = {
    "general": Persona(
        "general",
        _REVIEWER,
        "bugs (wrong results, unhandled errors, resource leaks, races), security problems, "
        "and code that will mislead its next reader",
    ),
    "security": Persona(
        "security",
        "You are an application security auditor. You report vulnerabilities an attacker "
        "could use, each tied to the exact line it is on, and nothing you are unsure of.",
        "injection (SQL, shell, path), unsafe deserialisation, secrets in code, missing "
        "authorisation or validation of untrusted input, weak cryptography, unsafe defaults",
        "warning",
    ),
    "performance": Persona(
        "performance",
        "You are a performance engineer reviewing code. You report what makes it slow or "
        "wasteful at realistic sizes, each tied to the exact line it is on.",
        "work repeated in loops, quadratic algorithms, blocking calls in async code, "
        "needless copies and allocations, missing caching of pure results",
        "warning",
    ),
}


def load_persona(choice: str, root: Path) -> Persona:
    """A persona by name, or read from a TOML file (``system``, ``focus``, and optionally
    ``name`` and ``min_severity``) at ``choice``, relative to ``root``."""
    if choice in PERSONAS:
        return PERSONAS[choice]
    path = Path(choice) if Path(choice).is_absolute() else root / choice
    if not path.is_file():
        raise ConfigError(
            f"unknown persona {choice!r}: choose from {', '.join(PERSONAS)}, "
            "or give the path of a TOML file with system and focus"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the persona {path}: {exc}") from None
    missing = [key for key in ("system", "focus") if not isinstance(data.get(key), str)]
    if missing:
        raise ConfigError(f"the persona {path} needs {' and '.join(missing)} (text)")
    floor = data.get("min_severity", "note")
    if floor not in SEVERITIES:
        raise ConfigError(
            f"the persona {path}: min_severity is {floor!r}: choose from {', '.join(SEVERITIES)}"
        )
    name = data.get("name") if isinstance(data.get("name"), str) else path.stem
    return Persona(str(name), data["system"], data["focus"], cast(Severity, floor))


def review_prompt(
    path: str,
    source: str,
    persona: Persona,
    *,
    part: Chunk | None = None,
    feedback: str | None = None,
    edits: bool = False,
    lessons: Sequence[str] = (),
    build_failure: str | None = None,
) -> str:
    """The request for ``source``, the text of the file at ``path``: the whole of it, or
    the lines of ``part`` with the file's imports, each line numbered as in the file.

    ``edits``: fixes are asked for too, as SEARCH/REPLACE blocks; ``lessons`` are what
    earlier builds of the file's directory taught, and ``build_failure`` what the build
    said of the edits of the last answer."""
    lines = source.splitlines()
    first, last = (part.first, part.last) if part is not None else (1, len(lines))
    width = len(str(last))
    numbered = "\n".join(
        f"{number:>{width}} | {lines[number - 1]}" for number in range(first, last + 1)
    )
    parts = [f"Review the file `{path}`{_language(path)}.", f"Look for: {persona.focus}."]
    if (first, last) != (1, len(lines)):
        parts += [
            "",
            f"The file has {len(lines)} lines: this request shows lines {first} to {last}, "
            "other requests the rest. Report only what is wrong in the lines shown.",
        ]
        shown = [line for line in imports(source) if line not in lines[first - 1 : last]]
        if shown:
            parts += ["", "The file's imports, for context (not to review):", "```", *shown, "```"]
    parts += [
        "",
        f"The file `{path}`, each line numbered:",
        "```",
        numbered,
        "```",
        "",
        CONTRACT,
    ]
    if edits:
        parts += ["", EDIT_CONTRACT.replace("{path}", path)]
        if lessons:
            parts += ["", "Edits of earlier reviews broke this directory's build; never again:"]
            parts += [f"- {lesson}" for lesson in lessons]
    if build_failure:
        parts += [
            "",
            "With the edits of your previous answer, the directory's build failed:",
            "```",
            build_failure,
            "```",
            "Answer again: the findings, and only edits that keep the build passing.",
        ]
    if feedback:
        parts += ["", f"Your previous answer could not be read: {feedback}"]
    return "\n".join(parts) + "\n"


def reflect_prompt(
    path: str, source: str, findings: Sequence[Finding], *, feedback: str | None = None
) -> str:
    """The second look at ``findings``: each with the lines it points at (and a few around
    them), numbered as in the file, to be scored."""
    lines = source.splitlines()
    parts = [
        f"Check the findings a reviewer reported on the file `{path}`{_language(path)}.",
        "For each, read the code it points at and score how sure you are that it is a real "
        "problem worth changing the code for.",
    ]
    for number, finding in enumerate(findings, 1):
        first = max(1, finding.line - _AROUND)
        last = min(len(lines), finding.end_line + _AROUND)
        width = len(str(last))
        parts += [
            "",
            f"Finding {number}: [{finding.severity}] {finding.rule} at line {finding.line}: "
            f"{' '.join(finding.message.split())}",
            "```",
            *(f"{at:>{width}} | {lines[at - 1]}" for at in range(first, last + 1)),
            "```",
        ]
    parts += ["", REFLECT_CONTRACT]
    if feedback:
        parts += ["", f"Your previous answer could not be read: {feedback}"]
    return "\n".join(parts) + "\n"


_LANGUAGES = {
    ".c": "C",
    ".h": "C",
    ".cc": "C++",
    ".cpp": "C++",
    ".hpp": "C++",
    ".cs": "C#",
    ".go": "Go",
    ".java": "Java",
    ".js": "JavaScript",
    ".jsx": "JavaScript",
    ".kt": "Kotlin",
    ".php": "PHP",
    ".py": "Python",
    ".pyi": "Python",
    ".rb": "Ruby",
    ".rs": "Rust",
    ".scala": "Scala",
    ".sh": "shell",
    ".sql": "SQL",
    ".swift": "Swift",
    ".ts": "TypeScript",
    ".tsx": "TypeScript",
}


def _language(path: str) -> str:
    language = _LANGUAGES.get(PurePosixPath(path).suffix.lower())
    return f" ({language})" if language else ""
