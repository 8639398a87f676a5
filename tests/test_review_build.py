"""Bisection of a directory's failed build: what it keeps builds, and it costs few builds."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from stomper.review.build import Bisected, bisect
from stomper.review.lessons import Lessons, change_of, lesson
from stomper.workflow.build import Built, Edited


def edits(count: int) -> list[Edited]:
    return [Edited(f"dir/f{n}.py", "100644", "0" * 40, b"x") for n in range(count)]


def bisected(count: int, breaks: Sequence[frozenset[int]]) -> tuple[Bisected, list[int]]:
    """Bisect ``count`` edits whose build fails when it holds all of one of ``breaks``; the
    sizes of the sets it built."""
    built: list[int] = []

    def fails(subset: Sequence[Edited]) -> bool:
        held = {int(edit.path.removeprefix("dir/f").removesuffix(".py")) for edit in subset}
        return any(broken <= held for broken in breaks)

    async def build(subset: Sequence[Edited]) -> Built:
        built.append(len(subset))
        return Built(not fails(subset), "FAILED dir/test_it.py" if fails(subset) else "")

    everything = edits(count)
    assert fails(everything)
    return asyncio.run(bisect(build, everything, Built(False, "FAILED"))), built


@given(st.integers(min_value=1, max_value=40), st.data())
def test_what_bisection_keeps_builds_and_no_culprit_could_be_added_back(count, data) -> None:
    sets = st.frozensets(st.integers(min_value=0, max_value=count - 1), min_size=1, max_size=3)
    breaks = data.draw(st.lists(sets, min_size=1, max_size=3))
    found, _built = bisected(count, breaks)

    held = {int(e.path.removeprefix("dir/f").removesuffix(".py")) for e in found.kept}
    assert not any(broken <= held for broken in breaks)
    for path in found.culprits:
        with_it = held | {int(path.removeprefix("dir/f").removesuffix(".py"))}
        assert any(broken <= with_it for broken in breaks)
    assert len(found.kept) + len(found.culprits) == count
    assert found.builds == len(_built)


@given(st.integers(min_value=1, max_value=64), st.data())
def test_one_culprit_costs_a_build_a_halving_and_one_for_the_rest(count, data) -> None:
    culprit = data.draw(st.integers(min_value=0, max_value=count - 1))
    found, built = bisected(count, [frozenset({culprit})])
    assert list(found.culprits) == [f"dir/f{culprit}.py"]
    assert found.builds == len(built) <= math.ceil(math.log2(count)) + 1
    # The edits kept were built together: the last build is of all of them.
    assert count == 1 or built[-1] == count - 1


def test_a_lesson_says_what_the_edit_changed_and_is_forgotten_on_request(tmp_path) -> None:
    book = Lessons(tmp_path / "lessons.jsonl")
    change = change_of("A = 1\nB = 2\n", "A = 1\nB = 3\n")
    assert change == "changed `B = 2` to `B = 3`"
    book.add([lesson("pkg", "pkg/b.py", change, "E   assert 3 == 2", "run-1")])
    book.add([lesson("other", "other/c.py", "removed `x`", "error", "run-2")])
    assert book.for_directory("pkg") == [
        "`pkg/b.py`: changed `B = 2` to `B = 3`; the build then failed: E assert 3 == 2"
    ]
    assert book.forget(["pkg"]) == 1
    assert [one.directory for one in book.read()] == ["other"]
    assert book.forget() == 1
    assert book.read() == []
