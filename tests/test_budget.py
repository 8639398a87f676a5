"""Budgets of agent calls, tokens and cost in ``stomper fix``: when one is spent, the units
at work finish, nothing new begins, what finished lands, and ``stomper resume`` with a
larger budget goes on (the model is the fake server on loopback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stomper.budget import Budget, Limits, Spent
from stomper.cli import main
from stomper.config import Price
from stomper.testing.fake_openai import Behaviour, FakeOpenAI
from stomper.testing.repos import RUFF_CONFIG, module
from tests.conftest import run_json, sh
from tests.test_review import CORE, review

PRICES = '\n[tool.stomper.prices]\n"fake" = { input = 2.0, output = 8.0 }\n'


def openai_fix(repo: Path, server: FakeOpenAI, *args: str, capsys: Any) -> tuple[int, Any]:
    return run_json(
        repo, "--agent", "openai", "--model", "fake", "--base-url", server.base_url, *args,
        capsys=capsys,
    )  # fmt: skip


def resume(repo: Path, *args: str, capsys: Any) -> tuple[int, Any]:
    code = main(["resume", "--json", "--no-progress", "--repo", str(repo), *args])
    return code, json.loads(capsys.readouterr().out)


def test_a_spent_budget_of_calls_lands_what_finished_and_resume_goes_on(
    make, server, capsys
) -> None:
    repo = make({f"pkg/m{n}.py": module(["F401"]) for n in range(4)})
    base = sh(repo, "rev-parse", "HEAD").strip()

    code, doc = openai_fix(repo, server, "-j", "1", "--max-calls", "2", capsys=capsys)

    assert doc["status"] == "budget" and code != 0, doc
    statuses = sorted(unit["status"] for unit in doc["units"])
    assert statuses == ["fixed", "fixed", "skipped", "skipped"]
    skipped = [unit for unit in doc["units"] if unit["status"] == "skipped"]
    assert all(
        unit["reason"] == "not begun: the run's budget of 2 agent calls is spent"
        for unit in skipped
    )
    assert server.stats().completions == 2
    assert len(sh(repo, "rev-list", f"{base}..HEAD").split()) == 2

    code, resumed = resume(repo, "--max-calls", "10", capsys=capsys)

    assert code == 0 and resumed["status"] == "completed", resumed
    assert sorted(unit["status"] for unit in resumed["units"]) == ["fixed"] * 4
    assert server.stats().completions == 4  # none that landed was asked again
    assert len(sh(repo, "rev-list", f"{base}..HEAD").split()) == 4
    assert sh(repo, "status", "--porcelain") == ""


def test_a_unit_at_work_when_the_tokens_run_out_keeps_what_it_fixed(make, capsys) -> None:
    """The model fixes one diagnostic an answer; the budget is spent after the first: the
    unit lands that fix, partial, and says why it stopped."""
    repo = make({"pkg/a.py": module(["F401", "E713", "F541"])})
    with FakeOpenAI(behaviour=Behaviour.ONE_PER_ATTEMPT) as server:
        code, doc = openai_fix(repo, server, "--max-tokens", "10", capsys=capsys)
        assert server.stats().completions == 1
    (unit,) = doc["units"]
    assert unit["status"] == "partial", unit
    assert "the run's budget of 10 tokens is spent" in unit["reason"]
    # Nothing was left unbegun: the run completed, as far as its budget let it.
    assert doc["status"] == "completed" and code == 1


def test_a_budget_of_cost_is_counted_at_the_models_price(make, server, capsys) -> None:
    repo = make({"pyproject.toml": RUFF_CONFIG + PRICES, "pkg/a.py": module(["F401"])})
    argv = ["fix", "--repo", str(repo), "--json", "--no-progress", "--agent", "openai"]
    code = main([*argv, "--model", "fake", "--base-url", server.base_url, "--max-cost", "5"])
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert code == 0 and doc["status"] == "completed", doc
    stats = server.stats()
    assert doc["metrics"]["tokens"] == {"input": stats.tokens_in, "output": stats.tokens_out}
    cost = (stats.tokens_in * 2.0 + stats.tokens_out * 8.0) / 1_000_000
    assert doc["metrics"]["cost"] == pytest.approx(cost, abs=1e-6)
    assert f"${cost:.4f}" in captured.err  # the summary says it too


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--max-calls", "3"], "autofix calls no model"),
        (
            ["--agent", "openai", "--model", "fake", "--max-cost", "1"],
            "--max-cost needs the price of the model 'fake'",
        ),
        (
            ["--agent", "command", "--agent-cmd", "true", "--max-tokens", "9"],
            "the command agent reports no tokens",
        ),
    ],
)
def test_a_budget_the_run_cannot_count_is_one_line_and_exit_2(
    make, server, capsys, args, said
) -> None:
    repo = make({"pkg/a.py": module(["F401"])})
    base = sh(repo, "rev-parse", "HEAD").strip()
    code = main(["fix", "--repo", str(repo), "--base-url", server.base_url, *args])
    err = capsys.readouterr().err
    assert code == 2 and said in err and len(err.strip().splitlines()) == 1, err
    assert sh(repo, "rev-parse", "HEAD").strip() == base
    assert server.stats().completions == 0


def test_what_is_spent_is_counted_for_the_run_and_each_of_its_parts() -> None:
    budget = Budget(Limits(max_tokens=1_000, max_cost=0.01), Price(input=2.0, output=8.0))
    call = budget.take("a")
    budget.spend("a", 400, 100)
    call.close()
    assert budget.use.cost == pytest.approx((400 * 2.0 + 100 * 8.0) / 1_000_000)
    assert not budget.spent
    call = budget.take("b", Limits(max_calls=1))
    budget.spend("b", 400, 100)
    call.close()
    assert budget.spent and budget.use.tokens == 1_000 and budget.of("b").tokens == 500
    with pytest.raises(Spent, match="the run's budget of 1,000 tokens is spent"):
        budget.take("c")


def test_calls_under_way_count_as_what_the_answers_so_far_spent_on_average() -> None:
    budget = Budget(Limits(max_tokens=1_000))
    first, second = budget.take("a"), budget.take("b")
    budget.spend("a", 300, 100)
    first.close()
    # 400 spent, one call open, likely to spend 400 too: a third may begin.
    third = budget.take("c")
    # 400 spent and two open: 1,200 likely, past the limit: a fourth may not.
    with pytest.raises(Spent, match="the run's budget of 1,000 tokens is spent"):
        budget.take("d")
    assert budget.spent and budget.use.tokens == 400 and budget.use.calls == 3
    # The two end without an answer (a timeout, a refusal): nothing is open, a call may begin.
    second.close()
    third.close()
    third.close()  # closing twice counts once
    assert budget.open == 0
    budget.take("e").close()
    assert budget.use.calls == 4


def test_a_review_that_spends_its_budget_says_so_and_the_cache_goes_on_from_there(
    make, server, capsys
) -> None:
    project = make({f"pkg/m{n}.py": f"{CORE}# {n}\n" for n in range(3)})
    code, document, err = review(project, server, "-j", "1", "--max-calls", "2", capsys=capsys)

    assert document["status"] == "budget" and code == 1, err
    assert document["metrics"]["cost"] is None  # the model has no price here
    statuses = sorted(unit["status"] for unit in document["units"])
    assert statuses == ["reviewed", "reviewed", "skipped", "skipped"]
    assert server.stats().completions == 2
    # Run again with more to spend: what was reviewed comes from the cache, unpaid.
    code, again, err = review(project, server, "--max-calls", "2", capsys=capsys)
    assert code == 0 and again["status"] == "completed", err
    assert sorted(unit["status"] for unit in again["units"]) == ["reviewed"] * 4
    assert server.stats().completions == 4


def test_a_review_says_what_it_cost_at_the_models_price(make, server, capsys) -> None:
    project = make({"pyproject.toml": RUFF_CONFIG + PRICES, "pkg/a.py": CORE})
    code, document, err = review(project, server, capsys=capsys)
    assert code == 0, err
    stats = server.stats()
    cost = (stats.tokens_in * 2.0 + stats.tokens_out * 8.0) / 1_000_000
    assert document["metrics"]["cost"] == pytest.approx(cost, abs=1e-6)
    assert f"${cost:.4f} at the model's price" in err
