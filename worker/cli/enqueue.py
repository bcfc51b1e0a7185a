"""`xquik-disconnect enqueue`: validate a jobs file and add each valid job to a stream."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from urllib.parse import urlsplit

import anyio

from worker.cli.options import fail, say
from worker.errors import ExitCode
from worker.models import Invalid
from worker.redis_conn import connect
from worker.sources import FileSource
from worker.sources.stream import enqueue


async def _enqueue(jobs: str, *, url: str, stream: str) -> tuple[int, list[Invalid]]:
    source = FileSource(None if jobs == "-" else Path(jobs))
    redis = connect(url)
    try:
        return await enqueue(source.batches(), redis=redis, stream=stream)
    finally:
        await redis.aclose()


def main(args: argparse.Namespace) -> int:
    if urlsplit(args.redis).scheme not in {"redis", "rediss", "unix"}:
        return fail("enqueue", f"--redis {args.redis!r} is not a redis:// URL")
    if args.jobs != "-" and not os.path.isfile(args.jobs):
        return fail("enqueue", f"jobs file {args.jobs!r} not found")
    added, invalid = anyio.run(lambda: _enqueue(args.jobs, url=args.redis, stream=args.stream))
    for item in invalid:
        say(f"{item.source}: {item.error}")
    print(
        f"enqueued {added} jobs to {args.stream}"
        + (f"; {len(invalid)} invalid lines not enqueued" if invalid else "")
    )
    return ExitCode.FAILED if invalid else ExitCode.OK
