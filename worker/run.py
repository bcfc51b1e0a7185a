"""`xquik-disconnect run`: settings from flags and environment, then one run, end to end."""

from __future__ import annotations

import signal
import sys
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import anyio

from worker.budgets import make_budget, shared_budget
from worker.calls import Caller
from worker.client import XquikClient
from worker.errors import ConfigError
from worker.logs import LogFormat, configure, get_logger
from worker.operations import Operations
from worker.queue import RedisSource
from worker.results import FileSink, read_prior
from worker.runner import Runner
from worker.settings import (
    RunSettings,
    Secret,
)
from worker.sources import FileSource, JobSource
from worker.summary import Summary
from worker.ui import print_summary, watch

log = get_logger()


def _total(source: JobSource) -> int | None:
    return source.count_lines() if isinstance(source, FileSource) else None


def execute(settings: RunSettings, *, log_format: LogFormat | None = None) -> int:
    configure(log_format)
    try:
        summary = anyio.run(run_async, settings)
    except ConfigError as exc:
        print(f"xquik-disconnect run: error: {exc}", file=sys.stderr)
        return 2
    return summary.exit_code()


async def run_async(settings: RunSettings) -> Summary:
    async with AsyncExitStack() as stack:
        if settings.sandbox:
            from worker.sandbox import Sandbox

            sandbox = await stack.enter_async_context(Sandbox())
            settings = _replace(settings, base_url=sandbox.base_url, key=sandbox.api_key)
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
        source: JobSource
        if settings.queue is not None:
            queue = await stack.enter_async_context(RedisSource(settings.queue))
            source = queue
            delete_budget = shared_budget(settings, queue, settings.rate, "delete")
            read_budget = shared_budget(settings, queue, settings.read_rate, "read")
            log.info(
                "queue_consumer",
                stream=queue.config.stream,
                group=queue.config.group,
                consumer=queue.consumer,
            )
        else:
            source = FileSource(None if settings.source == "-" else Path(settings.source))
            delete_budget = make_budget(settings, settings.rate, "delete")
            read_budget = make_budget(settings, settings.read_rate, "read")
        client = await stack.enter_async_context(
            XquikClient(
                base_url=settings.base_url,
                api_key=settings.api_key,
                timeout=settings.timeout,
                concurrency=settings.concurrency,
                delete_budget=delete_budget,
                read_budget=read_budget,
                default_cooldown=settings.rate.period,
            )
        )
        sink = FileSink(settings.results)
        stack.callback(sink.close)
        runner = Runner(
            Operations(
                client,
                run_id=Runner.new_run_id(),
                caller=Caller(
                    max_attempts=settings.max_attempts,
                    on_auth_error=lambda exc: runner.auth_failed(exc),
                    backoff_base=settings.backoff_base,
                    backoff_cap=settings.backoff_cap,
                ),
            ),
            source=source,
            sink=sink,
            concurrency=settings.concurrency,
            done_before=prior.done if prior else frozenset(),
            dry_run=settings.dry_run,
            delete_monitors=settings.delete_monitors,
            limit=settings.limit,
            sync_before_settle=settings.queue is not None,
        )
        runner.summary.consumer = settings.queue is not None and not settings.queue.drain
        if settings.metrics_port is not None:
            from worker.metrics import MetricsServer

            await stack.enter_async_context(
                MetricsServer(
                    runner,
                    client,
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
            skipping_done=len(prior.done) if prior else 0,
        )
        budget = client.read_budget if settings.dry_run else client.delete_budget
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signals, runner, settings.grace)
            if isinstance(source, RedisSource):
                tg.start_soon(source.keep_alive)
            tg.start_soon(
                partial(watch, runner, total=_total(source), budget=budget, tty=settings.progress)
            )
            await runner.run()
            tg.cancel_scope.cancel()
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


def _replace(settings: RunSettings, *, base_url: str, key: str) -> RunSettings:
    from dataclasses import replace

    return replace(settings, base_url=base_url, api_key=Secret(key))
