from __future__ import annotations

import json

import pytest

from stomper.findings import Finding
from stomper.review.answer import Unreadable, keep, locate, read, read_scores

SOURCE = "def f(x):\n    return eval(x)\n\n\ndef g(y):\n    return eval(x)\n"


def answer(*findings: dict[str, object], fence: str = "```json") -> str:
    return f"My review.\n\n{fence}\n{json.dumps({'findings': list(findings)})}\n```\n"


def reported(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "rule": "eval-of-input",
        "severity": "error",
        "category": "security",
        "line": 2,
        "end_line": 2,
        "quote": "return eval(x)",
        "message": "eval runs anything.",
        "confidence": 0.9,
    }
    return base | overrides


def test_a_finding_is_numbered_by_its_quote_not_by_the_line_the_model_gave() -> None:
    reading = read(answer(reported(line=40, end_line=41)), "m.py", SOURCE)
    (finding,) = reading.findings
    # Line 40 is nearer line 6 than line 2: of the lines the quote matches, the nearest.
    assert (finding.line, finding.end_line) == (6, 6)
    assert finding.quote == "return eval(x)" and reading.unlocated == 0


def test_of_two_lines_that_match_the_quote_the_one_nearest_the_hint_is_taken() -> None:
    lines = SOURCE.splitlines()
    assert locate("return eval(x)", 1, lines) == 2
    assert locate("  return eval(x)  ", 5, lines) == 6
    # A quote that is part of a line, when no line is the quote itself.
    assert locate("eval(", 2, lines) == 2


def test_a_finding_whose_quote_is_not_in_the_file_is_dropped_and_counted() -> None:
    reading = read(answer(reported(), reported(quote="os.system(cmd)")), "m.py", SOURCE)
    assert [finding.line for finding in reading.findings] == [2]
    assert reading.unlocated == 1


def test_a_finding_that_breaks_the_contract_is_dropped_and_counted() -> None:
    broken = reported(severity="catastrophic")
    reading = read(answer(reported(), broken, {"rule": "x"}), "m.py", SOURCE)
    assert len(reading.findings) == 1 and reading.malformed == 2


def test_lenient_fields_take_their_defaults_and_confidence_is_clamped() -> None:
    given = reported(severity=" Warning ", confidence=7)
    del given["category"], given["end_line"]
    (finding,) = read(answer(given), "m.py", SOURCE).findings
    assert (finding.severity, finding.category, finding.confidence) == (
        "warning",
        "maintainability",
        1.0,
    )


def test_a_part_of_a_file_maps_back_to_the_file_lines() -> None:
    part = "    return eval(x)\n"
    (finding,) = read(answer(reported(line=6)), "m.py", part, first_line=6).findings
    assert finding.line == 6


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("No findings here.", "holds no ```json block"),
        ("```json\n{not json\n```\n", "is not valid JSON"),
        ('```json\n{"issues": []}\n```\n', 'holds no "findings" list'),
    ],
)
def test_an_answer_without_a_findings_block_is_unreadable_with_feedback(
    text: str, said: str
) -> None:
    with pytest.raises(Unreadable, match=said):
        read(text, "m.py", SOURCE)


def test_a_bare_fence_with_the_findings_is_read_too() -> None:
    reading = read(answer(reported(), fence="```"), "m.py", SOURCE)
    assert len(reading.findings) == 1


def finding(line: int, severity: str, confidence: float) -> Finding:
    return Finding("m.py", line, line, "r", severity, "bug", "m", "q", confidence)  # type: ignore[arg-type]


def test_keep_takes_the_most_severe_and_confident_and_orders_them_by_line() -> None:
    found = [finding(1, "note", 0.9), finding(2, "error", 0.5), finding(3, "error", 0.8)]
    kept, cut = keep(found, max_findings=2, min_severity="note")
    assert [one.line for one in kept] == [2, 3] and cut == 1
    kept, cut = keep(found, max_findings=5, min_severity="warning")
    assert [one.line for one in kept] == [2, 3] and cut == 1


def test_scores_are_read_by_id_and_clamped_and_what_is_no_score_is_left_unscored() -> None:
    items = [
        {"id": 1, "score": 8},
        {"id": 2, "score": 14.6},
        {"id": 3, "score": True},
        {"id": 9, "score": 5},
        {"id": 4, "score": "high"},
        "nonsense",
        {"id": 5, "score": -2},
    ]
    text = "```json\n" + json.dumps({"scores": items}) + "\n```\n"
    assert read_scores(text, 5) == {1: 8, 2: 10, 5: 0}
    with pytest.raises(Unreadable, match='holds no "scores" list'):
        read_scores('```json\n{"findings": []}\n```\n', 5)
