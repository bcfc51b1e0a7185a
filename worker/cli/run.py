"""`xquik-disconnect run`: wiring only. One session per key, one source, one sink, one runner."""

from __future__ import annotations

import contextlib
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
from worker.api.call import Fatal
from worker.api.client import http_session
from worker.budget import Budget, Unlimited, default_state_dir
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
from worker.tenants import DEFAULT, Ring, Tenants

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
        http = None
        budgets: dict[str, tuple[Budget, Budget]] | None = None
        tenants: Tenants | None = None
        if settings.keys:
            # Several keys: one pool of connections for all, and one budget per Xquik account.
            _enough_files(4 * len(settings.keys) + 256)  # each budget's state file: 2 fds
            http = http_session(concurrency=settings.concurrency, timeout=settings.timeout)
            stack.push_async_callback(http.close)
            budgets = {}

        def fatal(name: str, exc: Fatal) -> None:
            if tenants is not None:
                tenants.fatal(name, exc)
            else:
                runner.key_failed(exc)

        def new_session(name: str, key: str, account: str | None = None) -> Session:
            return Session(
                base_url=settings.base_url,
                api_key=key,
                rate=settings.rate,
                read_rate=settings.read_rate,
                on_fatal=partial(fatal, name),
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
                http=http,
                account=account,
                budgets=budgets,
            )

        session = None
        if settings.api_key:
            session = await stack.enter_async_context(new_session(DEFAULT, settings.api_key))
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
            ask_budget = session.delete_budget if session is not None else Unlimited()
            go = await anyio.to_thread.run_sync(
                partial(confirm, preview_, over=settings.confirm_over, budget=ask_budget),
                abandon_on_cancel=True,
            )
            if not go:
                log.warning("not_confirmed", accounts=preview_.accounts, sent=0)
                return Summary(run_id=Runner.new_run_id(), stopped="declined")
        run_id = Runner.new_run_id()
        claims = Claims(
            prior.done | prior.done_names if prior else frozenset(),
            in_flight_only=settings.queue is not None,
        )

        def operations(of: Session) -> Operations:
            return Operations(
                of,
                run_id=run_id,
                claims=claims,
                dry_run=settings.dry_run,
                delete_monitors=settings.delete_monitors,
                keyword_monitors=settings.keyword_monitors,
                wait_monitors=settings.wait_monitors,
                precheck=settings.precheck,
                strict_missing=settings.strict_missing,
            )

        handler: Operations | Tenants
        ring = None
        if settings.keys:

            def tenant_ops(name: str, key: str, account: str | None) -> Operations:
                if name == DEFAULT and session is not None:
                    return operations(session)
                view.tenants[name] = tenant_session = new_session(name, key, account)
                return operations(tenant_session)

            keys = dict(settings.keys)
            if settings.api_key:
                keys[DEFAULT] = (settings.api_key, None)
            handler = tenants = Tenants(
                keys,
                run_id=run_id,
                make_ops=tenant_ops,
                on_all_rejected=lambda exc: runner.key_failed(exc),
                claims=claims,
            )
            ring = Ring(tenants)
            log.info("tenants", keys=len(settings.keys), default_key=bool(settings.api_key))
        else:
            assert session is not None
            handler = operations(session)
        runner = Runner(
            handler,
            source=source,
            sink=sink,
            concurrency=settings.concurrency,
            limit=settings.limit,
            sync_before_settle=settings.queue is not None,
            grace=settings.grace,
            ring=ring,
            read_ahead=settings.read_ahead,
            shared_source=settings.queue is not None,
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
        budget: Budget = Unlimited()  # with several keys, the pace tells the ETA
        if session is not None and tenants is None:
            budget = session.read_budget if settings.dry_run else session.delete_budget
        # From here a signal stops the runner (within the grace), no longer the start-up.
        view.runner = stopper.runner = runner
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.keep_alive)
            if tenants is not None and settings.keys_dir is not None:
                tg.start_soon(_watch_keys, settings.keys_dir, tenants)
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
        if (
            tenants is not None
            and runner.summary.stopped is None
            and tenants.every_used_key_rejected()
        ):
            runner.summary.stopped = "auth"
        every = ([session] if session is not None else []) + list(view.tenants.values())
        runner.summary.sent = sum((Counter(s.sent) for s in every), Counter())
        runner.summary.retries = sum(s.retries for s in every)
        if every:
            runner.summary.rate = every[0].delete_budget.describe()
        if tenants is not None:
            runner.summary.tenant_rates = {
                name: s.delete_budget.describe() for name, s in view.tenants.items()
            }
            if session is not None and DEFAULT in runner.summary.by_tenant:
                runner.summary.tenant_rates[DEFAULT] = session.delete_budget.describe()
        if settings.metrics_textfile is not None or settings.pushgateway:
            from worker.cli.metrics import push, write_textfile

            if runner.summary.exit_code() == ExitCode.OK:
                view.finished_ok_at = time.time()
            if settings.metrics_textfile is not None:
                await write_textfile(view, settings.metrics_textfile)
            if settings.pushgateway:
                await push(view, settings.pushgateway)
    return runner.summary


def _enough_files(wanted: int) -> None:
    """Raise the soft limit of open files towards `wanted` (within the hard limit): a run
    with thousands of keys keeps a state file open per budget, past a container's usual
    1,024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _watch_keys(directory: Path, tenants: Tenants, every: float = 5.0) -> None:
    """Runs until cancelled: read the key files again every few seconds; a rotated key needs
    no restart. A directory caught half-updated (or broken) keeps the keys already held."""
    from worker.cli.keys import tenant_keys

    while True:
        await anyio.sleep(every)
        try:
            keys = await anyio.to_thread.run_sync(tenant_keys, directory)
        except ConfigError as exc:
            log.warning("keys_unreadable", error=str(exc))
            continue
        tenants.update_keys(keys)
