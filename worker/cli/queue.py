"""`xquik-disconnect queue status`: the queue as a pipeline owner needs to see it.

Stream length, entries not yet delivered to the group, pending entries per consumer with their
idle time, the oldest pending entry's age, dead letters by error code, each key's shared DELETE
budget (slots held, cooldown, the limit in force) and the results stream's length. A table on a
terminal, JSON otherwise; exit 1 while dead letters exist (for alerting from cron)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from typing import Any

import anyio

from worker.cli.say import fail
from worker.errors import ConfigError, ExitCode
from worker.redact import printable
from worker.redis_conn import address, command_client, need_url, unavailable
from worker.redis_keys import budget_keys, budget_slots_pattern, fingerprint_of_slots, stream_keys

UNDELIVERED_CAP = 1_000_000  # counted exactly up to this many; "at least" beyond
PENDING_SCAN = 10_000  # pending entries read back for their tenant, at most


def text(value: Any) -> str:
    """A Redis reply as text, whatever its bytes."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def error_code(fields: dict[str, str]) -> str:
    """A dead letter's code (`invalid`, `failed:<error>`, `max_deliveries`, `rejected_key`):
    its `code` field; a letter written before codes existed gets one from its reason."""
    if fields.get("code"):
        return fields["code"]
    reason = fields.get("reason", "").strip()
    if reason.startswith("unauthenticated"):
        return "rejected_key"
    if reason.startswith("delivered "):
        return "max_deliveries"
    head = reason.split(":", 1)[0].split(" ", 1)[0]
    return f"failed:{head}" if head.isidentifier() and head.islower() else "invalid"


def code_matches(code: str, wanted: str) -> bool:
    """`--error CODE`: the code itself, or the error of a failed one (`forbidden` matches
    failed:forbidden); `unauthenticated` is rejected_key."""
    wanted = "rejected_key" if wanted == "unauthenticated" else wanted
    return code in (wanted, f"failed:{wanted}")


async def status(redis: Any, stream: str, group: str) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    out: dict[str, Any] = {"stream": stream, "group": group, "length": await redis.xlen(stream)}
    groups = (
        {text(g["name"]): g for g in await redis.xinfo_groups(stream)}
        if out["length"] or (await redis.exists(stream))
        else {}
    )
    info = groups.get(group)
    consumers: list[dict[str, Any]] = []
    waiting: Counter[str] = Counter()  # undelivered and pending jobs, by tenant
    undelivered = 0
    start = "-" if info is None else f"({text(info['last-delivered-id'])}"
    while out["length"] and undelivered < UNDELIVERED_CAP:
        chunk = await redis.xrange(stream, min=start, max="+", count=10_000)
        if not chunk:
            break
        undelivered += len(chunk)
        start = f"({text(chunk[-1][0])}"
        for _, fields in chunk:
            waiting[text(fields.get(b"tenant", b""))] += 1
    out["undelivered"] = undelivered
    if info is None:
        out.update(pending=0, oldest_pending_age_s=None)
    else:
        out["pending"] = int(info["pending"])
        if out["pending"]:  # whose jobs are in progress (the first PENDING_SCAN of them)
            ids = await redis.xpending_range(stream, group, min="-", max="+", count=PENDING_SCAN)
            pipe = redis.pipeline(transaction=False)
            for p in ids:
                pipe.xrange(stream, min=p["message_id"], max=p["message_id"])
            for entries in await pipe.execute():
                for _, fields in entries:
                    waiting[text(fields.get(b"tenant", b""))] += 1
        summary = await redis.xpending(stream, group)
        oldest = summary.get("min") if summary else None
        out["oldest_pending_age_s"] = (
            round((now_ms - _ms(text(oldest))) / 1000, 1) if oldest else None
        )
        for c in await redis.xinfo_consumers(stream, group):
            consumers.append(
                {"name": text(c["name"]), "pending": int(c["pending"]), "idle_s": c["idle"] / 1000}
            )
    out["consumers"] = consumers
    dead: Counter[str] = Counter()
    dead_by_tenant: Counter[str] = Counter()
    keys = stream_keys(redis, stream)
    for _, fields in await redis.xrange(keys.dead, min="-", max="+"):
        dead[error_code({text(k): text(v) for k, v in fields.items()})] += 1
        dead_by_tenant[text(fields.get(b"tenant", b""))] += 1
    out["dead_letters"] = dict(sorted(dead.items(), key=lambda kv: -kv[1]))
    out["dead_total"] = sum(dead.values())
    if any(dead_by_tenant):  # several keys: whose jobs they are ("" for the default key)
        out["dead_by_tenant"] = dict(sorted(dead_by_tenant.items(), key=lambda kv: -kv[1]))
    if any(waiting):
        out["waiting_by_tenant"] = dict(sorted(waiting.items(), key=lambda kv: -kv[1]))
    out["results"] = await redis.xlen(keys.results)
    out["budgets"] = await budgets(redis)
    return out


async def budgets(redis: Any) -> list[dict[str, Any]]:
    """Every key's shared DELETE budget in this Redis (by fingerprint: never the key)."""
    found = []
    now_s, now_us = await redis.time()
    now_ms = now_s * 1000 + now_us / 1000
    async for raw in redis.scan_iter(match=budget_slots_pattern(redis), count=1000):
        fingerprint = fingerprint_of_slots(text(raw))
        keys = budget_keys(redis, fingerprint, "delete")
        held = await redis.zcount(keys.slots, now_ms, "+inf")
        cooldown = float(text(await redis.get(keys.cooldown) or b"0"))
        learned = await redis.hgetall(keys.learned)
        found.append(
            {
                "key": fingerprint,
                "slots_held": held,
                "cooldown_s": round(max(0.0, cooldown - now_ms) / 1000, 1),
                "learned_limit": int(text(learned[b"limit"])) if b"limit" in learned else None,
            }
        )
    return found


def render(s: dict[str, Any]) -> str:
    lines = [
        f"stream {s['stream']} (group {s['group']}): {s['length']} entries, "
        f"{s['undelivered']} not yet delivered, {s['pending']} pending"
        + (f", the oldest for {s['oldest_pending_age_s']} s" if s["oldest_pending_age_s"] else ""),
    ]
    for c in s["consumers"]:
        lines.append(f"  consumer {c['name']}: {c['pending']} pending, idle {c['idle_s']:.1f} s")
    if s.get("waiting_by_tenant"):
        tenants = ", ".join(f"{t or '(default)'} {n}" for t, n in s["waiting_by_tenant"].items())
        lines.append(f"  waiting (not delivered or pending) by tenant: {tenants}")
    lines.append(f"results: {s['results']} records in {s['stream']}:results")
    if s["dead_total"]:
        by = ", ".join(f"{code} {n}" for code, n in s["dead_letters"].items())
        lines.append(f"dead letters: {s['dead_total']} ({by}) in {s['stream']}:dead")
        if s.get("dead_by_tenant"):
            tenants = ", ".join(f"{t or '(default)'} {n}" for t, n in s["dead_by_tenant"].items())
            lines.append(f"  by tenant: {tenants}")
    else:
        lines.append("dead letters: none")
    for b in s["budgets"]:
        limit = b["learned_limit"] if b["learned_limit"] is not None else "not learned"
        cooling = f", cooldown {b['cooldown_s']} s" if b["cooldown_s"] else ""
        lines.append(
            f"budget of key {b['key']}: {b['slots_held']} slots held{cooling}, limit {limit}"
        )
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    try:
        args.redis = need_url(
            args.redis, args.redis_url_file, os.environ, insecure=args.insecure_redis_tls
        )
    except ConfigError as exc:
        return fail("queue status", exc)

    async def go() -> dict[str, Any]:
        async with command_client(args.redis, within=args.redis_connect_timeout) as redis:
            return await status(redis, args.stream, args.group)

    try:
        s = anyio.run(go)
    except ConfigError as exc:
        return fail("queue status", exc)
    except Exception as exc:
        if not unavailable(exc):
            raise
        return fail("queue status", f"Redis at {address(args.redis)} went away: {exc}")
    if args.json or not sys.stdout.isatty():
        json.dump(s, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(printable(render(s)))
    return ExitCode.FAILED if s["dead_total"] else ExitCode.OK
