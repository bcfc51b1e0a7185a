"""`xquik-disconnect budget status|forget`: what a key's budget holds and has learned, and a way
to forget what it learned, without finding and deleting a cache file.

For the key (or, with --keys DIR, every tenant's key), each tier (delete, read): the limit in
force, whether it was learned (and when) or is the ceiling, the cooldown left, the slots held
now. From the state file in --state-dir (the user cache dir by default), or from Redis with
--budget URL (the budget queue consumers and --budget runs share). `forget` drops the learned
limit, so the next run starts at the ceiling again; held slots and a cooldown stay (they keep
the server's current window)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from worker.api.keys import fingerprint, read_keys
from worker.budget.make import make_budget
from worker.budget.rate import Rate
from worker.cli.parser import log_level
from worker.cli.say import fail, say
from worker.errors import ConfigError, ExitCode
from worker.logs import configure
from worker.run.options import api_settings, need_key
from worker.settings import ApiSettings


def main(args: argparse.Namespace) -> int:
    configure(args.log_format, level=log_level(args))
    if args.sandbox:
        return fail(f"budget {args.budget_command}", "the built-in sandbox keeps no budget")
    try:
        api, budgets = _budgets(args)
    except ConfigError as exc:
        return fail(f"budget {args.budget_command}", exc)
    try:
        rows = anyio.run(_gather, api, budgets, args.budget_command == "forget")
    except ConfigError as exc:
        return fail(f"budget {args.budget_command}", exc)
    if args.json or not sys.stdout.isatty():
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for row in rows:
            sys.stdout.write(_line(row) + "\n")
    if args.budget_command == "forget":
        forgotten = sum(1 for row in rows if row["forgotten"])
        say(f"forgot {forgotten} learned limit(s); the next run starts at the ceiling")
    return ExitCode.OK


def _budgets(args: argparse.Namespace) -> tuple[ApiSettings, list[tuple[str, str]]]:
    """The API settings, and (tenant, fingerprint) of every budget to look at."""
    options: dict[str, Any] = {
        n: getattr(args, n)
        for n in ("base_url", "api_key_file", "budget", "budget_file", "state_dir", "rate")
        if getattr(args, n, None)
    }
    options["insecure_redis_tls"] = args.insecure_redis_tls
    api = api_settings(**options)
    if args.keys:
        keys = read_keys(Path(args.keys))
        budgets = [
            (name, fingerprint(f"account:{k.account}", api.base_url))
            if k.account
            else (name, fingerprint(k.key, api.base_url))
            for name, k in sorted(keys.items())
        ]
        return api, list(dict.fromkeys(budgets))
    need_key(api)
    return api, [("", fingerprint(api.api_key, api.base_url))]


async def _gather(
    api: ApiSettings, budgets: list[tuple[str, str]], forget: bool
) -> list[dict[str, Any]]:
    redis = None
    if api.budget_url is not None:
        from worker.redis_conn import command_client

        async with command_client(api.budget_url, within=api.budget_connect_timeout) as redis:
            return [row async for row in _rows(api, budgets, forget, redis)]
    if api.state_dir is None:
        raise ConfigError("--state-dir none: there is no budget state to show")
    return [row async for row in _rows(api, budgets, forget, redis)]


async def _rows(api: ApiSettings, budgets: list[tuple[str, str]], forget: bool, redis: Any) -> Any:
    for tenant, print_ in budgets:
        for tier, rate in (("delete", api.rate), ("read", api.read_rate)):
            if redis is not None:
                yield await _redis_row(redis, tenant, print_, tier, rate, forget)
            else:
                yield _file_row(api, tenant, print_, tier, rate, forget)


def _file_row(
    api: ApiSettings, tenant: str, print_: str, tier: str, rate: Rate, forget: bool
) -> dict[str, Any]:
    from worker.budget.local import LocalBudget

    budget = make_budget(
        rate, tier=tier, fingerprint=print_, margin=api.margin, max_cooldown=api.max_cooldown,
        attempt_bound=api.timeout, relearn=api.relearn, state_dir=api.state_dir,
    )  # fmt: skip
    row = _row(tenant, print_, tier, rate)
    if not isinstance(budget, LocalBudget):  # unlimited: nothing to keep
        return row
    learner = budget.learner
    learned = learner.learned if learner is not None else None
    row.update(
        limit=budget.limit,
        learned=bool(learner and learner.is_learned()),
        learned_at=_when(learned.at) if learned else None,
        learned_limit=learned.limit if learned else None,
        cooldown_s=round(budget.cooldown_remaining(), 1),
        slots_held=budget.sends_in_span(),
        state_file=str(budget.state.path) if budget.state is not None else None,
    )
    if forget and learned is not None:
        budget.forget_learned()
        row["forgotten"] = True
    budget.close()
    return row


async def _redis_row(
    redis: Any, tenant: str, print_: str, tier: str, rate: Rate, forget: bool
) -> dict[str, Any]:
    from worker.redis_keys import budget_keys

    keys = budget_keys(redis, print_, tier)
    row = _row(tenant, print_, tier, rate)
    now_s, now_us = await redis.time()
    now_ms = now_s * 1000 + now_us / 1000
    learned = await redis.hgetall(keys.learned)
    cooldown = float((await redis.get(keys.cooldown) or b"0").decode() or 0)
    limit = int(learned[b"limit"]) if b"limit" in learned else None
    at = float(learned[b"at"]) / 1000 if b"at" in learned else None
    row.update(
        limit=min(limit, rate.limit) if limit is not None and rate.limit else rate.limit,
        learned=limit is not None,
        learned_at=_when(at) if at is not None else None,
        learned_limit=limit,
        cooldown_s=round(max(0.0, cooldown - now_ms) / 1000, 1),
        slots_held=int(await redis.zcount(keys.slots, now_ms, "+inf")),
        redis_key=keys.prefix,
    )
    if forget and limit is not None:
        await redis.delete(keys.learned)
        row["forgotten"] = True
    return row


def _row(tenant: str, print_: str, tier: str, rate: Rate) -> dict[str, Any]:
    return {
        "tenant": tenant or None,
        "budget": print_,
        "tier": tier,
        "rate": str(rate),
        "limit": rate.limit,
        "learned": False,
        "learned_at": None,
        "learned_limit": None,
        "cooldown_s": 0.0,
        "slots_held": 0,
        "forgotten": False,
    }


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _line(row: dict[str, Any]) -> str:
    who = f"tenant {row['tenant']} " if row["tenant"] else ""
    limit = "unlimited" if row["limit"] is None else str(row["limit"])
    how = (
        f"learned {row['learned_at']}"
        if row["learned"]
        else "the ceiling, nothing learned"
        if row["learned_limit"] is None
        else f"the ceiling again (learned {row['learned_limit']} at {row['learned_at']})"
    )
    parts = [f"{who}{row['tier']:<6} budget {row['budget']}: limit {limit} ({how})"]
    parts.append(f"{row['slots_held']} slots held")
    if row["cooldown_s"]:
        parts.append(f"cooldown {row['cooldown_s']} s")
    if row["forgotten"]:
        parts.append("learned limit forgotten")
    return ", ".join(parts)


__all__ = ["main"]
