"""`xquik-disconnect run`: wiring only. One session per key, one source, one sink, one runner."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import replace
from functools import partial
from pathlib import Path

import anyio

from worker.api import Session
from worker.budget import default_state_dir
from worker.cli.confirm import confirm, preview, should_ask
from worker.cli.metrics import RunView
from worker.cli.options import fail
from worker.cli.progress import print_summary, watch
from worker.errors import ConfigError, ExitCode
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


def execute(
    settings: RunSettings, *, log_format: LogFormat | None = None, log_level: str = "info"
) -> int:
    configure(log_format, level=log_level)
    try:
        summary = anyio.run(run_async, settings)
    except ConfigError as exc:
        return fail("run", exc)
    except BaseExceptionGroup as group:
        # A configuration problem met inside a task group (e.g. Redis unreachable for
        # --redis-connect-timeout) is still a configuration problem.
        config, rest = group.split(ConfigError)
        if config is not None and rest is None:
            return fail("run", _leaf(config))
        raise
    return summary.exit_code()


def _leaf(group: BaseExceptionGroup[ConfigError]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _total(lines: int | None, limit: int | None) -> int | None:
    """What the progress bar counts to: the file's lines, or --limit when it is smaller."""
    if lines is None:
        return limit
    return lines if limit is None else min(lines, limit)


def _source_stat(settings: RunSettings) -> os.stat_result | None:
    """What the jobs source is on disk, so the result log can never be it."""
    if settings.queue is not None:
        return None
    try:
        return os.fstat(0) if settings.source == "-" else os.stat(settings.source)
    except OSError:
        return None


class _Stopper:
    """SIGINT/SIGTERM in every state: while the run starts up (waiting for a lock or for
    Redis) a signal ends it at once (130); once it runs, the runner stops within the grace,
    and a second signal stops it at once."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.runner: Runner | None = None
        self.startup = anyio.CancelScope()
        self.interrupted = False

    async def watch(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.runner is None:
                    log.warning("stopping", signal=name, during="start-up")
                    self.interrupted = True
                    self.startup.cancel()
                    continue
                first = self.runner.summary.stopped != "signal"
                log.warning("stopping", signal=name, grace_s=self.grace if first else 0)
                self.runner.stop(self.grace if first else 0.0)


async def run_async(settings: RunSettings) -> Summary:
    stopper = _Stopper(settings.grace)
    summary: Summary | None = None
    async with anyio.create_task_group() as guard:
        guard.start_soon(stopper.watch)
        with stopper.startup:
            summary = await _run(settings, stopper)
        guard.cancel_scope.cancel()
    if summary is None:  # stopped by a signal before the run began: nothing was sent
        summary = Summary(run_id="-", stopped="signal")
    log.info("run_summary", **summary.as_event())
    if settings.progress or sys.stderr.isatty():
        print_summary(summary, str(settings.results))
    if settings.notify_url is not None:
        from worker.cli.notify import notify

        await notify(settings.notify_url, summary, str(settings.results))
    return summary


async def _run(settings: RunSettings, stopper: _Stopper) -> Summary:
    view = RunView()
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
        # Queue mode never skips by the local log: a message is acked with its record in
        # <stream>:results, so a redelivered one has no record there yet, and must get one (a
        # resent DELETE answers 404: already_gone).
        prior = None if settings.fresh or settings.queue else read_prior(settings.results)
        if prior and prior.bad_lines:
            log.warning(
                "results_unreadable_lines",
                file=str(settings.results),
                lines=prior.bad_lines[:20],
                count=len(prior.bad_lines),
            )
        budget_redis = None
        if settings.queue is not None:
            from worker.redis_conn import connect

            view.redis = budget_redis = connect(settings.queue.url)
        elif settings.budget_url is not None:
            from worker.redis_conn import connected

            deadline = settings.budget_connect_timeout
            budget_redis = await connected(settings.budget_url, deadline=deadline)
            stack.push_async_callback(budget_redis.aclose)
            view.redis = budget_redis
        if settings.metrics_port is not None:
            from worker.cli.metrics import MetricsServer

            await stack.enter_async_context(MetricsServer(view, port=settings.metrics_port))
            log.info("metrics_listening", port=settings.metrics_port)
        source = await stack.enter_async_context(
            open_source(settings.source, queue=settings.queue, redis=view.redis)
        )
        if isinstance(source, RedisSource):
            view.queue = source
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
                margin=settings.margin,
                max_cooldown=settings.max_cooldown,
                relearn=settings.relearn,
                state_dir=state_dir,
                redis=budget_redis,
                backoff_base=settings.backoff_base,
                backoff_cap=settings.backoff_cap,
            )
        )
        view.session = session
        if should_ask(settings, yes=settings.yes):
            done = prior.done | prior.done_names if prior else frozenset()
            preview_ = await anyio.to_thread.run_sync(
                partial(
                    preview,
                    Path(settings.source),
                    frozenset(done),
                    delete_monitors=settings.delete_monitors,
                    limit=settings.limit,
                )
            )
            go = await anyio.to_thread.run_sync(
                partial(
                    confirm, preview_, over=settings.confirm_over, budget=session.delete_budget
                ),
                abandon_on_cancel=True,
            )
            if not go:
                log.warning("not_confirmed", accounts=preview_.accounts, sent=0)
                return Summary(run_id=Runner.new_run_id(), stopped="declined")
        ops = Operations(
            session,
            run_id=Runner.new_run_id(),
            claims=Claims(prior.done | prior.done_names if prior else frozenset()),
            dry_run=settings.dry_run,
            delete_monitors=settings.delete_monitors,
            keyword_monitors=settings.keyword_monitors,
            wait_monitors=settings.wait_monitors,
            precheck=settings.precheck,
            strict_missing=settings.strict_missing,
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
        log.info(
            "run_started",
            run_id=runner.summary.run_id,
            source=source.name,
            results=str(settings.results),
            rate=str(settings.rate),
            concurrency=settings.concurrency,
            skipping_done=len(prior.done) if prior else 0,
        )
        budget = session.read_budget if settings.dry_run else session.delete_budget
        # From here a signal stops the runner (within the grace), no longer the start-up.
        view.runner = stopper.runner = runner
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.keep_alive)
            if settings.metrics_textfile is not None:
                from worker.cli.metrics import textfile_loop

                tg.start_soon(textfile_loop, view, settings.metrics_textfile)
            tg.start_soon(
                partial(
                    watch,
                    runner,
                    total=_total(source.total(), settings.limit),
                    budget=budget,
                    tty=settings.progress,
                )
            )
            await runner.run()
            tg.cancel_scope.cancel()
        runner.summary.sent = Counter(session.sent)
        runner.summary.retries = session.retries
        runner.summary.rate = session.delete_budget.describe()
        if settings.metrics_textfile is not None or settings.pushgateway:
            from worker.cli.metrics import push, write_textfile

            if runner.summary.exit_code() == ExitCode.OK:
                view.finished_ok_at = time.time()
            if settings.metrics_textfile is not None:
                await write_textfile(view, settings.metrics_textfile)
            if settings.pushgateway:
                await push(view, settings.pushgateway)
    return runner.summary
