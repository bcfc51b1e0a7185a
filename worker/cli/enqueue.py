"""`xquik-disconnect enqueue`: validate a jobs file and add each valid job to a stream."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import anyio

from worker.cli.parser import log_level
from worker.cli.say import fail, say
from worker.errors import ConfigError, ExitCode
from worker.logs import configure
from worker.models import Invalid
from worker.redis_conn import address, connect, need_url, redis_errors, redis_retrying
from worker.sources.file import FileSource
from worker.sources.stream import enqueue


async def _enqueue(
    jobs: str, *, url: str, stream: str, connect_within: float
) -> tuple[int, list[Invalid]]:
    source = FileSource(None if jobs == "-" else Path(jobs))
    redis = connect(url)
    try:
        async for attempt in redis_retrying(redis, deadline=connect_within):
            with attempt:
                await redis.ping()
        return await enqueue(source.batches(), redis=redis, stream=stream)
    finally:
        await redis.aclose()


def main(args: argparse.Namespace) -> int:
    try:
        args.redis = need_url(args.redis, args.redis_url_file, os.environ)
    except ConfigError as exc:
        return fail("enqueue", exc)
    if args.jobs != "-":
        try:
            FileSource(Path(args.jobs)).check()
        except ConfigError as exc:
            return fail("enqueue", exc)
    configure(args.log_format, level=log_level(args))
    timeout = args.redis_connect_timeout
    try:
        added, invalid = anyio.run(
            lambda: _enqueue(args.jobs, url=args.redis, stream=args.stream, connect_within=timeout)
        )
    except ConfigError as exc:
        return fail("enqueue", exc)
    except redis_errors() as exc:
        return fail("enqueue", f"Redis at {address(args.redis)} went away: {exc}")
    for item in invalid:
        say(f"{item.source}: {item.error}")
    print(
        f"enqueued {added} jobs to {args.stream}"
        + (f"; {len(invalid)} invalid lines not enqueued" if invalid else "")
    )
    return ExitCode.FAILED if invalid else ExitCode.OK
