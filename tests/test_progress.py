"""What the progress view promises: a total that respects --limit, an ETA that counts a cooldown
in force, and the limit in force in words."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.fakes import FakeClock
from worker.budget.base import Unlimited
from worker.budget.local import LocalBudget
from worker.outputs.progress import eta_seconds
from worker.run.assemble import progress_total
from worker.run.summary import Summary, limit_words


@pytest.mark.parametrize(
    ("lines", "limit", "total"), [(100, None, 100), (100, 20, 20), (10, 20, 10), (None, 5, 5)]
)
def test_the_total_respects_limit(lines: int | None, limit: int | None, total: int) -> None:
    assert progress_total(lines, limit) == total


async def test_the_eta_counts_a_cooldown_in_force() -> None:
    """At the pace so far (10 of 20 in 10 s: 10 s more), plus a 60 s cooldown: 70 s."""
    clock = FakeClock()
    budget = Unlimited(clock=clock, sleep=clock.sleep)
    summary = Summary(run_id="r", outcomes=Counter({"disconnected": 10}))
    assert eta_seconds(summary, 20, budget, elapsed=10.0) == pytest.approx(10.0)
    await budget.hold(60.0)
    assert eta_seconds(summary, 20, budget, elapsed=10.0) == pytest.approx(70.0)
    limited = LocalBudget(5, 60.0, clock=clock, sleep=clock.sleep)
    await limited.hold(30.0)
    assert eta_seconds(summary, 20, limited, elapsed=10.0) == pytest.approx(30.0 + 60.0)


def test_the_limit_in_words() -> None:
    assert limit_words({}) == ""
    assert limit_words(Unlimited().describe()) == "unlimited"
    assert limit_words(LocalBudget(15, 60.0).describe()) == "15/60s fixed"
    auto = {"limit": 12, "window_s": 4.0, "mode": "auto", "learned": True, "ceiling": 40}
    assert limit_words(auto) == "12/4s learned (ceiling 40/4s)"
    auto["learned"] = False
    assert "nothing learned" in limit_words(auto)


def test_the_printed_summary_shows_each_tenants_limit(capsys: pytest.CaptureFixture[str]) -> None:
    """With several keys the summary's table has each tenant's outcomes and the DELETE limit
    in force for it (one learned lower, one at the ceiling), not one key's limit for all."""
    from collections import Counter

    from worker.outputs.progress import print_summary
    from worker.run.summary import Summary

    summary = Summary("r1")
    summary.by_tenant = {"t1": Counter(failed=2), "t3": Counter(disconnected=20)}
    auto = {"window_s": 60.0, "mode": "auto", "ceiling": 20}
    summary.tenant_rates = {
        "t1": {**auto, "limit": 1, "learned": True},
        "t3": {**auto, "limit": 20, "learned": False},
    }
    summary.rate = summary.tenant_rates["t1"]
    print_summary(summary, "r.jsonl")
    err = " ".join(capsys.readouterr().err.split())
    assert "t1 │ failed 2 │ 1/60s learned (ceiling 20/60s)" in err
    assert "t3 │ disconnected 20 │ 20/60s (auto: the ceiling, nothing learned)" in err
    assert "DELETE limit in force:" not in err  # one key's limit would speak for all
