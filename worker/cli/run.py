"""`xquik-disconnect run`: wiring only. One session per key, one source, one sink, one runner."""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import replace
from functools import partial

import anyio

from worker.api import Session
from worker.budget import default_state_dir
from worker.cli.options import fail
from worker.cli.progress import print_summary, watch
from worker.errors import ConfigError
from worker.logs import LogFormat, configure, get_logger
from worker.operations import Operations
from worker.results import FileSink, read_prior
from worker.runner import Runner
from worker.seen import Claims
from worker.settings import RunSettings, Secret
from worker.sources import open_source
from worker.sources.stream import RedisSource
from worker.summary import Summary

log = get_logger()


def execute(settings: RunSettings, *, log_format: LogFormat | None = None) -> int:
    configure(log_format)
    try:
        summary = anyio.run(run_async, settings)
    except ConfigError as exc:
        return fail("run", exc)
    return summary.exit_code()


def _source_stat(settings: RunSettings) -> os.stat_result | None:
    """What the jobs source is on disk, so the result log can never be it."""
    if settings.queue is not None:
        return None
    try:
        return os.fstat(0) if settings.source == "-" else os.stat(settings.source)
    except OSError:
        return None


async def run_async(settings: RunSettings) -> Summary:
    async with AsyncExitStack() as stack:
        # The result log first: checked and locked before anything else is read or sent.
        source_stat = _source_stat(settings)
        if settings.wait_lock:
            sink = await FileSink.open_waiting(settings.results, source_stat=source_stat)
        else:
            sink = FileSink.open(settings.results, source_stat=source_stat)
        stack.callback(sink.close)
        if settings.sandbox:
            from worker.sandbox import Sandbox

            sandbox = await stack.enter_async_context(Sandbox())
            settings = replace(settings, base_url=sandbox.base_url, api_key=Secret(sandbox.api_key))
            log.info("sandbox_started", base_url=sandbox.base_url)
        # Queue mode never skips by the local log: a message is acked in the same MULTI as its
        # record in <stream>:results, so a redelivered one has no record there yet, and must
        # get one (a resent DELETE answers 404: already_gone).
        prior = None if settings.fresh or settings.queue else read_prior(settings.results)
        if prior and prior.bad_lines:
            log.warning(
                "results_unreadable_lines",
                file=str(settings.results),
                lines=prior.bad_lines[:20],
                count=len(prior.bad_lines),
            )
        redis = None
        if settings.queue is not None:
            from worker.redis_conn import connect

            redis = connect(settings.queue.url)
        source = await stack.enter_async_context(
            open_source(settings.source, queue=settings.queue, redis=redis)
        )
        state_dir = settings.state_dir
        if state_dir is None and not settings.sandbox and settings.persist_budget:
            state_dir = default_state_dir()
        if not settings.persist_budget:
            log.warning(
                "budget_not_persisted",
                reason="--state-dir none: a restarted or concurrent run on this key may burst "
                "past the server's window",
            )
        session = await stack.enter_async_context(
            Session(
                base_url=settings.base_url,
                api_key=settings.api_key,
                rate=settings.rate,
                read_rate=settings.read_rate,
                on_fatal=lambda exc: runner.key_failed(exc),
                concurrency=settings.concurrency,
                timeout=settings.timeout,
                max_attempts=settings.max_attempts,
                margin=settings.margin_for,
                max_cooldown=settings.max_cooldown,
                state_dir=state_dir,
                redis=redis,
                backoff_base=settings.backoff_base,
                backoff_cap=settings.backoff_cap,
            )
        )
        ops = Operations(
            session,
            run_id=Runner.new_run_id(),
            claims=Claims(prior.done if prior else frozenset()),
            dry_run=settings.dry_run,
            delete_monitors=settings.delete_monitors,
        )
        runner = Runner(
            ops,
            source=source,
            sink=sink,
            concurrency=settings.concurrency,
            limit=settings.limit,
            sync_before_settle=settings.queue is not None,
            grace=settings.grace,
        )
        runner.summary.consumer = settings.queue is not None and not settings.queue.drain
        if settings.metrics_port is not None:
            from worker.cli.metrics import MetricsServer

            await stack.enter_async_context(
                MetricsServer(
                    runner,
                    session,
                    port=settings.metrics_port,
                    queue=source if isinstance(source, RedisSource) else None,
                )
            )
            log.info("metrics_listening", port=settings.metrics_port)
        log.info(
            "run_started",
            run_id=runner.summary.run_id,
            source=source.name,
            results=str(settings.results),
            rate=str(settings.rate),
            concurrency=settings.concurrency,
            skipping_done=ops.claims.done_before,
        )
        budget = session.read_budget if settings.dry_run else session.delete_budget
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signals, runner, settings.grace)
            tg.start_soon(source.keep_alive)
            tg.start_soon(
                partial(watch, runner, total=source.total(), budget=budget, tty=settings.progress)
            )
            await runner.run()
            tg.cancel_scope.cancel()
        runner.summary.sent = Counter(session.sent)
        runner.summary.retries = session.retries
    summary = runner.summary
    log.info("run_summary", **summary.as_event())
    if settings.progress or sys.stderr.isatty():
        print_summary(summary, str(settings.results))
    return summary


async def _stop_on_signals(runner: Runner, grace: float) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            first = runner.summary.stopped != "signal"
            log.warning(
                "stopping", signal=signal.Signals(signum).name, grace_s=grace if first else 0
            )
            runner.stop(grace if first else 0.0)
