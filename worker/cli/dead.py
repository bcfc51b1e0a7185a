"""`xquik-disconnect dead list|requeue|purge`: dead letters that can be dealt with.

`<stream>:dead` holds the jobs that failed for good (a permanent error, retries exhausted, an
invalid message, too many deliveries), each with its job fields and the reason. `list` shows
them; `requeue` puts jobs back on the stream (with `requeued_from`) and removes them from the
dead letters in one atomic script, so a crash never loses or duplicates one; `purge` drops
old ones."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import anyio

from worker.cli.queue import code_matches, error_code, text
from worker.cli.say import fail, say
from worker.errors import ConfigError, ExitCode
from worker.redact import printable
from worker.redis_conn import address, command_client, need_url, unavailable
from worker.redis_keys import stream_keys

KEPT_OUT = {"message_id", "code", "reason", "requeued_from"}  # ours, not the job's


async def letters(redis: Any, stream: str) -> list[dict[str, Any]]:
    out = []
    for entry_id, raw in await redis.xrange(stream_keys(redis, stream).dead, min="-", max="+"):
        fields = {text(k): text(v) for k, v in raw.items()}
        eid = text(entry_id)
        out.append(
            {
                "id": eid,
                "when": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(eid.split("-")[0]) / 1000)
                ),
                "error": error_code(fields),
                "reason": fields.get("reason", ""),
                "message_id": fields.get("message_id"),
                "job": {k: v for k, v in fields.items() if k not in KEPT_OUT},
            }
        )
    return out


def chosen(all_: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    if getattr(args, "all", False):
        return all_
    if getattr(args, "id", None):
        wanted = set(args.id)
        return [d for d in all_ if d["id"] in wanted]
    if getattr(args, "error", None):
        return [d for d in all_ if code_matches(d["error"], args.error)]
    return all_


# Moves one dead letter back onto the job stream, atomically: only if it is still there (a
# letter requeued by another run is skipped, never twice). A script, not WATCH/MULTI: live
# consumers write to the dead letters all the time, and a WATCH would fail on every write.
# KEYS: dead, stream. ARGV: letter id, then the job's fields and values.
REQUEUE = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""


async def requeue(redis: Any, stream: str, picked: list[dict[str, Any]]) -> int:
    """Each job back on the stream (with `requeued_from`) and out of the dead letters,
    atomically per letter; a letter already gone is skipped."""
    script = redis.register_script(REQUEUE)
    done = 0
    keys = [stream_keys(redis, stream).dead, stream]
    for letter in picked:
        fields = [x for kv in {**letter["job"], "requeued_from": letter["id"]}.items() for x in kv]
        done += int(await script(keys=keys, args=[letter["id"], *fields]))
    return done


def main(args: argparse.Namespace) -> int:
    command = f"dead {args.dead_command}"
    try:
        args.redis = need_url(
            args.redis, args.redis_url_file, os.environ, insecure=args.insecure_redis_tls
        )
    except ConfigError as exc:
        return fail(command, exc)
    if args.dead_command == "requeue" and not (args.all or args.id or args.error):
        return fail(command, "say which: --error CODE, --id ID … or --all")

    async def go() -> int:
        async with command_client(args.redis, within=args.redis_connect_timeout) as redis:
            every = await letters(redis, args.stream)
            if args.dead_command == "list":
                picked = chosen(every, args)
                if args.json or not sys.stdout.isatty():
                    for d in picked:
                        print(json.dumps(d))
                else:
                    for d in picked:  # Redis's text, for a person: printable
                        job = " ".join(f"{k}={v}" for k, v in d["job"].items())
                        print(printable(f"{d['id']}  {d['when']}  {d['error']:<20} {job}"))
                    say(f"{len(picked)} of {len(every)} dead letters")
                return ExitCode.OK
            if args.dead_command == "requeue":
                n = await requeue(redis, args.stream, chosen(every, args))
                say(f"requeued {n} dead letters onto {args.stream}")
                return ExitCode.OK
            cutoff_ms = int((time.time() - args.older_than) * 1000)
            old = [d["id"] for d in every if int(d["id"].split("-")[0]) < cutoff_ms]
            if old:
                await redis.xdel(stream_keys(redis, args.stream).dead, *old)
            say(f"purged {len(old)} dead letters older than {args.older_than:g} s")
            return ExitCode.OK

    try:
        return anyio.run(go)
    except ConfigError as exc:
        return fail(command, exc)
    except Exception as exc:
        if not unavailable(exc):  # a reader that went away (`dead list | head`) is not Redis
            raise
        return fail(command, f"Redis at {address(args.redis)} went away: {exc}")
