"""A review as Markdown, fit for a pull-request comment: the counts, then each file's
findings, most severe first."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from stomper.findings import SEVERITIES, Finding, rank
from stomper.unit import Status, UnitResult

_MARK = {"error": "Error", "warning": "Warning", "note": "Note"}
_REVIEWED = (Status.REVIEWED, Status.APPLIED, Status.ROLLED_BACK)
_EDITED = {Status.APPLIED: " (its edit applied)", Status.ROLLED_BACK: " (its edit rolled back)"}


def review_markdown(results: Sequence[UnitResult], *, persona: str, model: str) -> str:
    findings = [
        finding for result in results if result.review for finding in result.review.findings
    ]
    by_severity = Counter(finding.severity for finding in findings)
    reviewed = sum(1 for result in results if result.status in _REVIEWED)
    status = {result.path: result.status for result in results}
    failed = [result for result in results if result.status is Status.FAILED]
    counts = ", ".join(f"{by_severity[name]} {name}" for name in SEVERITIES)
    lines = [
        f"## stomper review ({persona})",
        "",
        f"{reviewed} files reviewed by `{_code(model)}`: {len(findings)} findings ({counts}).",
    ]
    applied = sum(1 for result in results if result.status is Status.APPLIED)
    rolled_back = sum(1 for result in results if result.status is Status.ROLLED_BACK)
    if applied or rolled_back:
        lines.append(
            f"{applied} edits applied (the build passed with them), {rolled_back} rolled back "
            "(it failed with them)."
        )
    if failed:
        lines.append(f"{len(failed)} files could not be reviewed:")
        lines += [f"- `{_code(result.path)}`: {_text(result.reason or '')}" for result in failed]
    per_file: defaultdict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        per_file[finding.path].append(finding)
    for path in sorted(per_file, key=lambda path: min(rank(f) for f in per_file[path])):
        lines += [
            "",
            f"### `{_code(path)}`{_EDITED.get(status.get(path, Status.REVIEWED), '')}",
            "",
        ]
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
