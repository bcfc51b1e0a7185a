"""The budgets a run sends through: local (with its state file) or shared in Redis."""

from __future__ import annotations

from worker.limiter import Budget, SlidingWindowBudget, Unlimited
from worker.logs import get_logger
from worker.queue import RedisSource
from worker.settings import Rate, RunSettings
from worker.state import StateFile, default_state_dir

log = get_logger()


def make_budget(settings: RunSettings, rate: Rate, tier: str) -> Budget:
    if rate.limit is None:
        return Unlimited()
    state = None
    if settings.state_dir is not None or not settings.sandbox:
        state = StateFile(
            settings.state_dir or default_state_dir(), settings.key_fingerprint(), tier
        )
    budget = SlidingWindowBudget(
        rate.limit,
        rate.period,
        margin=settings.margin_for(rate),
        max_cooldown=settings.max_cooldown,
        jitter=min(1.0, rate.period * 0.02),
        on_change=state.save if state else None,
    )
    if state is not None and (restored := state.load_into(budget)):
        log.info("budget_restored", tier=tier, recent_sends=restored, state_file=str(state.path))
    return budget


def shared_budget(settings: RunSettings, queue: RedisSource, rate: Rate, tier: str) -> Budget:
    """Queue mode: one budget and cooldown per tier for every worker using this key, in Redis."""
    if rate.limit is None:
        return Unlimited()
    from worker.redis_budget import RedisBudget

    return RedisBudget(
        queue.redis,
        f"xquik:budget:{settings.key_fingerprint()}:{tier}",
        rate.limit,
        rate.period,
        margin=settings.margin_for(rate),
        max_cooldown=settings.max_cooldown,
        jitter=min(1.0, rate.period * 0.02),
    )
