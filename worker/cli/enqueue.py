"""`xquik-disconnect enqueue`: validate a jobs file and add each valid job to a stream, once.

Each job line has an idempotency key (the file, the line, its fields), kept beside the stream
for --dedupe-for: run again after a failure (Redis gone mid-way, an interruption), the same
file adds none of the jobs it added already. Whatever happens, the command says how many jobs
are surely on the stream. A JSONL or CSV file's jobs go on in turns, one of each tenant per
turn, each tenant's in file order (as `run --keys` reads a file)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import anyio

from worker.cli.parser import log_level
from worker.cli.say import fail, say
from worker.errors import ConfigError, ExitCode
from worker.logs import configure
from worker.redis_conn import address, command_client, need_url, unavailable
from worker.sources.file import FileSource
from worker.sources.stream import Enqueued, enqueue


def main(args: argparse.Namespace) -> int:
    try:
        args.redis = need_url(
            args.redis, args.redis_url_file, os.environ, insecure=args.insecure_redis_tls
        )
    except ConfigError as exc:
        return fail("enqueue", exc)
    path = None if args.jobs == "-" else Path(args.jobs)
    if path is not None:
        try:
            FileSource(path).check()
        except ConfigError as exc:
            return fail("enqueue", exc)
    configure(args.log_format, level=log_level(args))
    origin = "stdin" if path is None else str(path.resolve())
    done = Enqueued()

    async def go() -> None:
        async with command_client(
            args.redis, within=args.redis_connect_timeout, min_replicas=args.min_replicas
        ) as redis:
            await enqueue(
                # In turns, one job of each tenant per turn (a JSONL or CSV file): consumers
                # take the stream in its order, so a file grouped by tenant would start its
                # last tenants only when the first were done.
                FileSource(path, fair=True).batches(),
                redis=redis,
                stream=args.stream,
                origin=origin,
                window=args.dedupe_for,
                done=done,
                patience=args.redis_connect_timeout,
            )

    try:
        anyio.run(go)
    except ConfigError as exc:
        if done.sending:  # Redis went away mid-way for longer than it may
            exc = ConfigError(f"{exc}; {_counted(done, args.stream)}")
        return fail("enqueue", exc)
    except KeyboardInterrupt:  # Ctrl-C (waiting for replicas, say): what is surely there
        say(f"interrupted; {_counted(done, args.stream)}")
        return ExitCode.INTERRUPTED
    except Exception as exc:
        if not unavailable(exc):
            raise
        return fail(
            "enqueue",
            f"Redis at {address(args.redis)} went away ({type(exc).__name__}); "
            + _counted(done, args.stream),
        )
    for item in done.invalid:
        say(f"{item.source}: {item.error}")
    already = f"; {done.already} were there from an earlier run" if done.already else ""
    invalid = f"; {len(done.invalid)} invalid lines not enqueued" if done.invalid else ""
    print(f"enqueued {done.added} jobs to {args.stream}{already}{invalid}")
    return ExitCode.FAILED if done.invalid else ExitCode.OK


def _counted(done: Enqueued, stream: str) -> str:
    """What an enqueue that stopped part way leaves: how many jobs are surely there."""
    return (
        f"{done.on_stream} jobs of this file surely on {stream} (added now: {done.added}, "
        f"from an earlier run: {done.already}). Run it again: no job is added twice"
    )
