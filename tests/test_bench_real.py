"""The pure parts of ``bench real``: finding pip's archive, grouping refusals, comparing
what is left file by file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.real import beyond, by_status, reason_kind, refusals, sdist


def test_the_archive_is_found_under_the_name_pip_gave_it(tmp_path: Path) -> None:
    for name in ("Django-1.11.29.tar.gz", "Django-1.11.2.tar.gz", "django_extras-1.11.29.tgz"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sympy-1.5.zip").write_bytes(b"")

    assert sdist(tmp_path, "django", "1.11.29") == tmp_path / "Django-1.11.29.tar.gz"
    assert sdist(tmp_path, "Django_Extras", "1.11.29") == tmp_path / "django_extras-1.11.29.tgz"
    assert sdist(tmp_path, "sympy", "1.5") is None
    assert sdist(tmp_path / "missing", "django", "1.11.29") is None


def test_refusals_of_one_kind_count_together_whatever_their_lines_and_names() -> None:
    introduced = (
        "stopped after attempt {n}, which did not reduce what is left: the change "
        "introduced {k} new diagnostic(s): {found}"
    )
    units = [
        {
            "status": "failed",
            "reason": introduced.format(
                n=1, k=1, found="B018 Found useless expression. (line 140)"
            ),
            "remaining": [{}] * 3,
        },
        {
            "status": "failed",
            "reason": introduced.format(
                n=2,
                k=2,
                found="B018 Found useless expression. (line 5); B018 Found useless "
                "attribute access. (line 9)",
            ),
            "remaining": [{}] * 4,
        },
        {
            "status": "failed",
            "reason": introduced.format(
                n=1, k=1, found="SIM101 Multiple `isinstance` calls for `o` (line 3)"
            ),
            "remaining": [{}],
        },
        {"status": "partial", "reason": "attempt 2 changed nothing more", "remaining": [{}] * 2},
        {"status": "partial", "reason": None, "remaining": [{}]},
        {"status": "fixed", "reason": None, "remaining": []},
        {"status": "unchanged", "reason": "the agent changed nothing", "remaining": [{}]},
    ]

    stopped = introduced.format(n="N", k="N", found="")
    assert refusals(units) == {
        f"failed: {stopped}B018": (2, 7),
        f"failed: {stopped}SIM101": (1, 1),
        "partial: attempt N changed nothing more": (1, 2),
        "partial: (no reason given)": (1, 1),
    }


def test_a_reason_without_codes_keeps_its_words_and_masks_numbers_and_names() -> None:
    assert reason_kind("the agent ran past 600s on `x.py`\nTraceback ...") == (
        "the agent ran past 600s on `...`"
    )
    assert reason_kind("stopped after 12 tries") == "stopped after N tries"
    assert reason_kind("left: E501 x2, F841") == "left: what the agent has no fix for"
    assert reason_kind("left: B009 (ruff's fix for B009 was held back: it brought in B018)") == (
        "ruff's fix for B009, B018"
    )


def test_what_is_left_beyond_the_reference_is_counted_file_by_file() -> None:
    mine = Counter({("a.py", "F401"): 2, ("a.py", "E501"): 1, ("b.py", "F821"): 1})
    theirs = Counter({("a.py", "F401"): 1, ("b.py", "F821"): 3, ("c.py", "F401"): 1})

    assert beyond(mine, theirs) == Counter({"a.py": 2})
    assert beyond(theirs, mine) == Counter({"b.py": 2, "c.py": 1})


def test_counts_by_file_are_told_by_the_status_of_each_files_unit() -> None:
    statuses = {"a.py": "failed", "b.py": "partial", "c.py": "failed", "d.py": "fixed"}
    counts = Counter({"a.py": 5, "b.py": 2, "c.py": 1, "e.py": 1})

    assert by_status(counts, statuses) == "9 (failed 6, partial 2, no unit 1)"
    assert by_status(Counter(), statuses) == "0"
