"""The fake server's reviewer: it reads stomper's review prompt and answers by its contract.

It looks for a handful of well-known defects, line by line, in any language (a stand-in
model, not a real review): each becomes a finding whose ``quote`` is the flagged line's
text, as the contract of :mod:`stomper.review.prompt` asks. Asked for edits too, it fixes
what has a mechanical fix (``== None``, a bare ``except:``) with SEARCH/REPLACE blocks, and
makes the change a line's comment asks of it: ``fake-review: OLD => NEW`` (the way test
repositories get an edit that breaks their build). :class:`ReviewStyle` makes it misbehave
as models do: misnumbered lines, quotes of lines the file does not hold.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

_LESSON = re.compile(r"^- `[^`\n]+`: (changed .*)$", re.MULTILINE)
_HEADER = re.compile(r"Review the file `(?P<path>[^`\n]+)`")
_NUMBERED = re.compile(r" *(?P<number>\d+) \| (?P<text>.*)")
_SHOWN = "each line numbered:\n```\n"


@dataclass(frozen=True)
class ReviewPrompt:
    path: str
    lines: tuple[tuple[int, str], ...]
    """The lines shown, each with its number in the file."""
    edits: bool = False
    """Edits are asked for, as well as findings."""
    lessons: tuple[str, ...] = ()
    """What the prompt says earlier edits did that broke the build: never made again."""


@dataclass(frozen=True)
class ReviewStyle:
    """How the fake reviewer errs."""

    line_offset: int = 0
    """Added to every line number it gives (models misnumber lines)."""
    false_quote: bool = False
    """Adds a finding whose quote is no line of the file."""
    hostile_edit: str | None = None
    """Asked for edits, answers with one that must never land: ``other_file`` (an edit of
    another file), ``suppress`` (a ``# noqa`` on each flagged line), ``leak`` (the API key
    it was sent, written into the file), ``syntax`` (a line that no longer parses)."""


@dataclass(frozen=True)
class _Rule:
    rule: str
    pattern: re.Pattern[str]
    severity: str
    category: str
    message: str
    confidence: float
    fix: tuple[str, str] | None = None
    """What its edit replaces in the flagged line, and with what."""


_SUGGESTED = re.compile(r"fake-review: (?P<old>.+?) => (?P<new>.+?)\s*$")

_RULES = (
    _Rule(
        "eval-of-input",
        re.compile(r"\beval\("),
        "error",
        "security",
        "eval() runs whatever text it is given: parse the value instead.",
        0.9,
    ),
    _Rule(
        "unsafe-copy",
        re.compile(r"\b(strcpy|gets|sprintf)\("),
        "error",
        "security",
        "An unbounded copy overflows its buffer on long input: use a bounded call.",
        0.9,
    ),
    _Rule(
        "hard-coded-secret",
        re.compile(r"(?i)\b(password|secret|api_key)\s*=\s*['\"][^'\"]+['\"]"),
        "error",
        "security",
        "A secret in the code is a secret in every copy of it: read it from the environment.",
        0.8,
    ),
    _Rule(
        "bare-except",
        re.compile(r"^\s*except\s*:"),
        "warning",
        "bug",
        "A bare except also catches KeyboardInterrupt and SystemExit: name the exceptions.",
        0.7,
        ("except:", "except Exception:"),
    ),
    _Rule(
        "compare-to-none",
        re.compile(r"[!=]= None\b"),
        "note",
        "style",
        "Compare to None with `is` or `is not`.",
        0.6,
        ("== None", "is None"),
    ),
    _Rule(
        "todo-left",
        re.compile(r"\b(TODO|FIXME)\b"),
        "note",
        "maintainability",
        "A TODO left in the code: do it, or file it.",
        0.3,
    ),
)


def read_review(text: str) -> ReviewPrompt | None:
    """The file and its path, read out of a prompt of :func:`review_prompt`; None for a
    prompt of another kind."""
    header = _HEADER.match(text)
    start = text.find(_SHOWN)
    if header is None or start == -1:
        return None
    end = text.find("\n```\n", start + len(_SHOWN) - 1)
    shown = text[start + len(_SHOWN) : end] if end != -1 else ""
    lines = [_NUMBERED.fullmatch(line) for line in shown.split("\n")] if shown else []
    return ReviewPrompt(
        header["path"],
        tuple((int(found["number"]), found["text"]) for found in lines if found),
        "<<<<<<< SEARCH" in text,
        tuple(_LESSON.findall(text)),
    )


_CHECK = re.compile(r"Check the findings a reviewer reported on the file `(?P<path>[^`\n]+)`")
_FINDING = re.compile(r"^Finding (?P<number>\d+): \[\w+\] (?P<rule>\S+) at line", re.MULTILINE)


@dataclass(frozen=True)
class ReflectPrompt:
    path: str
    rules: tuple[tuple[int, str], ...]
    """Each finding to score: its id and its rule."""


def read_reflection(text: str) -> ReflectPrompt | None:
    """The findings a prompt of :func:`reflect_prompt` asks to score; None for a prompt of
    another kind."""
    header = _CHECK.match(text)
    if header is None:
        return None
    rules = tuple((int(found["number"]), found["rule"]) for found in _FINDING.finditer(text))
    return ReflectPrompt(header["path"], rules)


def reflect_answer(prompt: ReflectPrompt) -> str:
    """The scores, as the contract has them: ten times the confidence of the rule that made
    the finding (5 for a rule of another reviewer)."""
    confidence = {rule.rule: rule.confidence for rule in _RULES}
    scores = [
        {"id": number, "score": round(10 * confidence.get(rule, 0.5))}
        for number, rule in prompt.rules
    ]
    return "```json\n" + json.dumps({"scores": scores}) + "\n```\n"


def review_answer(prompt: ReviewPrompt, style: ReviewStyle, key: str = "") -> str:
    """The answer: a ```json block of the findings, as the contract has it, then the edit
    blocks when they are asked for; ``key`` is the API key the request came with."""
    findings: list[dict[str, object]] = []
    edits: list[tuple[str, str]] = []
    for number, text in prompt.lines:
        flagged = [(rule, rule.fix) for rule in _RULES if rule.pattern.search(text)]
        suggested = _SUGGESTED.search(text)
        if suggested is not None:
            old, new = suggested["old"], suggested["new"]
            said = f"Change `{old}` to `{new}`, as the comment asks."
            rule = _Rule("suggested-change", _SUGGESTED, "warning", "maintainability", said, 0.8)
            flagged.append((rule, (old, new)))
        fixed = text
        for rule, fix in flagged:
            line = max(1, number + style.line_offset)
            findings.append(
                {
                    "rule": rule.rule,
                    "severity": rule.severity,
                    "category": rule.category,
                    "line": line,
                    "end_line": line,
                    "quote": text.strip(),
                    "message": rule.message,
                    "confidence": rule.confidence,
                }
            )
            if fix is not None:
                code, marker, comment = fixed.partition("fake-review:")
                fixed = code.replace(fix[0], fix[1], 1) + marker + comment
                if fix[0] == "== None":
                    fixed = fixed.replace("!= None", "is not None", 1)
        if flagged and style.hostile_edit is not None:
            fixed = _hostile(style.hostile_edit, text, key)
        taught = f"`{text.strip()}` to `{fixed.strip()}`"
        if fixed != text and not any(taught in lesson for lesson in prompt.lessons):
            edits.append((text, fixed))
    if style.false_quote:
        findings.append(
            {
                "rule": "imagined",
                "severity": "error",
                "category": "bug",
                "line": 1,
                "end_line": 1,
                "quote": "this line is in no file at all()",
                "message": "A defect on a line the file does not have.",
                "confidence": 1.0,
            }
        )
    document = json.dumps({"findings": findings}, indent=2)
    answer = f"Here is my review of `{prompt.path}`.\n\n```json\n{document}\n```\n"
    if prompt.edits:
        path = prompt.path
        if style.hostile_edit == "other_file":
            path = str(PurePosixPath(path).with_name("elsewhere.py"))
        for old, new in edits:
            answer += f"\n{path}\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n"
    return answer


def _hostile(kind: str, line: str, key: str) -> str:
    """``line`` as a hostile edit of ``kind`` leaves it."""
    if kind == "suppress":
        return f"{line}  # noqa"
    if kind == "leak":
        return f"{line}  # {key}"
    if kind == "syntax":
        return f"{line} ((("
    return line.replace("None", "NONE")
