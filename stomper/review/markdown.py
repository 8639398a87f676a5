"""A review as Markdown, fit for a pull-request comment: the counts, then each file's
findings, most severe first."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from stomper.findings import SEVERITIES, Finding, rank
from stomper.unit import Status, UnitResult

_MARK = {"error": "Error", "warning": "Warning", "note": "Note"}


def review_markdown(results: Sequence[UnitResult], *, persona: str, model: str) -> str:
    findings = [
        finding for result in results if result.review for finding in result.review.findings
    ]
    by_severity = Counter(finding.severity for finding in findings)
    reviewed = sum(1 for result in results if result.status is Status.REVIEWED)
    failed = [result for result in results if result.status is Status.FAILED]
    counts = ", ".join(f"{by_severity[name]} {name}" for name in SEVERITIES)
    lines = [
        f"## stomper review ({persona})",
        "",
        f"{reviewed} files reviewed by `{_code(model)}`: {len(findings)} findings ({counts}).",
    ]
    if failed:
        lines.append(f"{len(failed)} files could not be reviewed:")
        lines += [f"- `{_code(result.path)}`: {_text(result.reason or '')}" for result in failed]
    per_file: defaultdict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        per_file[finding.path].append(finding)
    for path in sorted(per_file, key=lambda path: min(rank(f) for f in per_file[path])):
        lines += ["", f"### `{_code(path)}`", ""]
        lines += ["| line | severity | rule | finding |", "|---:|---|---|---|"]
        for finding in sorted(per_file[path], key=rank):
            lines.append(
                f"| {finding.line} | {_MARK[finding.severity]} | `{_code(finding.rule)}` "
                f"| {_cell(finding.message)} |"
            )
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    return text.replace("`", "'")


def _text(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return _text(text).replace("|", "\\|")
