"""One budget of one tier (DELETE or read) of one key: local, with its state file, or shared
through Redis by every worker on every machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.budget.base import Budget, Unlimited
from worker.budget.local import Learner, LocalBudget
from worker.budget.rate import Rate
from worker.budget.state import StateFile
from worker.logs import get_logger
from worker.redis_keys import budget_keys

log = get_logger()


def make_budget(
    rate: Rate,
    *,
    tier: str,
    fingerprint: str,
    margin: float,
    max_cooldown: float,
    attempt_bound: float = 60.0,
    relearn: float = 86400.0,
    redis: Any | None = None,
    state_dir: Path | None = None,
) -> Budget:
    """The budget of one tier of one key. With `redis` it lives there, shared by every worker
    using the key; else it is local, and its held slots persist in `state_dir` (if any). An
    `auto` rate learns the limit in force (kept with the slots) under its ceiling."""
    if rate.limit is None:
        return Unlimited(window=rate.period, max_cooldown=max_cooldown)
    # The ceiling is tried again no sooner than one window after a 429 (--relearn 0.0001 met
    # the server's 429s over and over).
    relearn = max(relearn, rate.period)
    jitter = min(1.0, rate.period * 0.02)
    if redis is not None:
        from worker.budget.shared import RedisBudget

        return RedisBudget(
            redis,
            budget_keys(redis, fingerprint, tier),
            rate.limit,
            rate.period,
            margin=margin,
            max_cooldown=max_cooldown,
            jitter=jitter,
            attempt_bound=attempt_bound,
            auto=rate.auto,
            relearn=relearn,
        )
    state = StateFile(state_dir, fingerprint, tier) if state_dir is not None else None
    budget = LocalBudget(
        rate.limit,
        rate.period,
        margin=margin,
        max_cooldown=max_cooldown,
        jitter=jitter,
        attempt_bound=attempt_bound,
        state=state,
        learner=Learner(rate.limit, relearn) if rate.auto else None,
    )
    if state is not None and (restored := state.load_into(budget)):
        log.info("budget_restored", tier=tier, recent_sends=restored, state_file=str(state.path))
    if budget.learner is not None and budget.learner.is_learned():
        log.info("rate_learned_earlier", tier=tier, limit=budget.limit, ceiling=rate.limit)
    return budget


__all__ = ["make_budget"]
