"""`xquik-disconnect enqueue`: validate a jobs file and add each valid job to a stream."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import anyio

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
        print(
            f"xquik-disconnect enqueue: error: --redis {args.redis!r} is not a redis:// URL",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    if args.jobs != "-" and not os.path.isfile(args.jobs):
        print(
            f"xquik-disconnect enqueue: error: jobs file {args.jobs!r} not found", file=sys.stderr
        )
        return ExitCode.USAGE
    added, invalid = anyio.run(lambda: _enqueue(args.jobs, url=args.redis, stream=args.stream))
    for item in invalid:
        print(f"{item.source}: {item.error}", file=sys.stderr)
    print(
        f"enqueued {added} jobs to {args.stream}"
        + (f"; {len(invalid)} invalid lines not enqueued" if invalid else "")
    )
    return ExitCode.FAILED if invalid else ExitCode.OK
