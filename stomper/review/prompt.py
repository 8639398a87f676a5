"""What a reviewer is asked: its persona, the file with numbered lines, the answer's contract."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import cast

from stomper.errors import ConfigError
from stomper.findings import SEVERITIES, Severity

PROMPT_VERSION = "1"
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


def review_prompt(path: str, source: str, persona: Persona, *, feedback: str | None = None) -> str:
    """The request for one file: ``source`` shown whole, each line numbered."""
    lines = source.splitlines()
    width = len(str(len(lines)))
    numbered = "\n".join(f"{number:>{width}} | {line}" for number, line in enumerate(lines, 1))
    parts = [
        f"Review the file `{path}`{_language(path)}.",
        f"Look for: {persona.focus}.",
        "",
        f"The file `{path}`, each line numbered:",
        "```",
        numbered,
        "```",
        "",
        CONTRACT,
    ]
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
