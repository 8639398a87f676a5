"""Findings as SARIF 2.1.0, in the form GitHub code scanning accepts.

Each rule a reviewer named is a ``reportingDescriptor`` with the three descriptions GitHub
shows (short, full, help); each finding a ``result`` with its ``level``, one physical
location (the path from the repository's root, with the lines stomper located) and a
``primaryLocationLineHash`` made of the rule, the path and the flagged line's text, not its
number: a finding that moves with its code keeps its fingerprint, so code scanning sees the
same alert, not a closed one and a new one.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from typing import Any

from stomper import __version__
from stomper.findings import Finding

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def sarif_log(findings: Sequence[Finding], *, persona: str, model: str) -> dict[str, Any]:
    """The SARIF log of ``findings`` (sorted by path and line), one run of one tool."""
    ordered = sorted(findings, key=lambda finding: (finding.path, finding.line, finding.rule))
    rules: dict[str, int] = {}
    descriptors: list[dict[str, Any]] = []
    results = []
    seen: Counter[str] = Counter()
    for finding in ordered:
        if finding.rule not in rules:
            rules[finding.rule] = len(descriptors)
            descriptors.append(_descriptor(finding))
        line_hash = _line_hash(finding)
        seen[line_hash] += 1
        results.append(_result(finding, rules[finding.rule], f"{line_hash}:{seen[line_hash]}"))
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "stomper",
                        "version": __version__,
                        "rules": descriptors,
                    }
                },
                "automationDetails": {"id": f"stomper/review/{persona}/"},
                "originalUriBaseIds": {"%SRCROOT%": {"description": {"text": "The repository."}}},
                "properties": {"persona": persona, "model": model},
                "results": results,
            }
        ],
    }


def _descriptor(finding: Finding) -> dict[str, Any]:
    """A rule as its first finding describes it: reviewers name rules as they go, so the
    descriptions are what was said where the rule was first seen."""
    title = finding.rule.replace("-", " ").replace("_", " ").strip().capitalize()
    return {
        "id": finding.rule,
        "name": "".join(part.capitalize() for part in finding.rule.replace("_", "-").split("-")),
        "shortDescription": {"text": f"{title} ({finding.category})"},
        "fullDescription": {"text": finding.message},
        "help": {"text": finding.message, "markdown": finding.message},
        "defaultConfiguration": {"level": finding.severity},
        "properties": {"tags": [finding.category]},
    }


def _result(finding: Finding, index: int, fingerprint: str) -> dict[str, Any]:
    return {
        "ruleId": finding.rule,
        "ruleIndex": index,
        "level": finding.severity,
        "message": {"text": finding.message},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {
                        "uri": urllib.parse.quote(finding.path),
                        "uriBaseId": "%SRCROOT%",
                    },
                    "region": {"startLine": finding.line, "endLine": finding.end_line},
                }
            }
        ],
        "partialFingerprints": {"primaryLocationLineHash": fingerprint},
        "properties": {"category": finding.category, "confidence": finding.confidence},
    }


def _line_hash(finding: Finding) -> str:
    flagged = " ".join(finding.quote.split())
    return hashlib.sha256(f"{finding.rule}\0{finding.path}\0{flagged}".encode()).hexdigest()[:16]
