"""The run, assembled from its settings, in two phases.

`prepare`: the result log checked and locked, earlier records read, Redis, the outputs' server
(`/healthz` answers before the source connects), the source, the sessions. Nothing is sent.
`start`: the confirmation (after the session exists, before anything is sent), the claims, the
operations (or the tenants), the runner. Then the run itself with its companions (the source's
keep-alive, the key-file watch, the progress view), and the summary gathered back up.

Signals work in every phase: during start-up a signal ends the run at once (130, nothing sent);
once it runs, the runner stops within the grace, and a second signal stops it at once.

What a person or a monitoring system sees (progress, metrics, the confirmation prompt, the
notification) is not decided here: it comes in as `Outputs` (the command line's are in
`worker.outputs.standard`); a run without them is quiet.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

import anyio

from worker.api.call import Fatal
from worker.api.keys import key_id
from worker.api.session import Session
from worker.api.urls import DEFAULT_BASE_URL, origin_of
from worker.budget.base import Budget, Unlimited
from worker.errors import ConfigError
from worker.logs import get_logger
from worker.results.prior import PriorResults, Scope, read_prior
from worker.results.sink import FileSink
from worker.run.claims import Claims
from worker.run.operations import Operations
from worker.run.ring import Ring
from worker.run.runner import Runner
from worker.run.summary import Stop, Summary
from worker.run.tenants import DEFAULT, Tenants
from worker.settings import RunSettings, Secret
from worker.sources.base import JobSource

log = get_logger()
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: a closed terminal


@dataclass(slots=True)
class RunView:
    """What the outputs look at, filled in as the run starts up (so `/healthz` can answer, 503
    while Redis is unreachable, before the run has its source or its session)."""

    settings: RunSettings
    runner: Runner | None = None
    session: Session | None = None
    tenants: dict[str, Session] = field(default_factory=dict)  # --keys: each tenant's
    queue: Any = None  # the RedisSource, once connected
    redis: Any = None  # its client (or --budget's), from the start
    prior: PriorResults | None = None
    finished_ok_at: float | None = None  # wall time of the end of a run that exited 0

    def sessions(self) -> list[Session]:
        """Every session of the run: the default key's first."""
        return ([self.session] if self.session is not None else []) + list(self.tenants.values())


class Outputs(Protocol):
    """What a person or a monitoring system sees of a run."""

    def serve(self, view: RunView) -> AbstractAsyncContextManager[object]:
        """For the whole run, from before the source connects (a metrics server)."""
        ...

    async def confirm(self, view: RunView) -> bool:
        """Whether to go on, asked once the session exists and before anything is sent;
        ConfigError when it cannot ask without consuming the jobs."""
        ...

    async def watch(self, view: RunView, total: int | None, budget: Budget) -> None:
        """Runs beside the run until cancelled (a progress view)."""

    async def finished(self, summary: Summary, view: RunView) -> None:
        """The run is over, however it ended (a summary table, a notification)."""


class Quiet:
    """No outputs at all."""

    @contextlib.asynccontextmanager
    async def serve(self, view: RunView) -> AsyncIterator[None]:
        yield

    async def confirm(self, view: RunView) -> bool:
        return True

    async def watch(self, view: RunView, total: int | None, budget: Budget) -> None:
        return None

    async def finished(self, summary: Summary, view: RunView) -> None:
        return None


class Stopper:
    """SIGINT, SIGTERM and SIGHUP in every phase of the run."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.runner: Runner | None = None
        self.startup = anyio.CancelScope()

    async def watch(self) -> None:
        with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.runner is None:
                    log.warning("stopping", signal=name, during="start-up")
                    self.startup.cancel()
                    continue
                first = self.runner.summary.stopped is not Stop.SIGNAL
                log.warning("stopping", signal=name, grace_s=self.grace if first else 0)
                self.runner.stop(self.grace if first else 0.0)


async def run(
    settings: RunSettings, outputs: Outputs | None = None, *, handle_signals: bool = True
) -> Summary:
    """The whole run. `handle_signals`: stop on SIGINT, SIGTERM and SIGHUP (only where signals
    can be received: the main thread)."""
    outputs = outputs or Quiet()
    stopper = Stopper(settings.grace)
    view = RunView(settings)
    summary: Summary | None = None
    try:
        async with anyio.create_task_group() as guard:
            if handle_signals and threading.current_thread() is threading.main_thread():
                guard.start_soon(stopper.watch)
            with stopper.startup:
                summary = await Assembly(settings, outputs, view, stopper).run()
            guard.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # A configuration problem met inside a task group (e.g. Redis unreachable for
        # --redis-connect-timeout) is still a configuration problem.
        config, rest = group.split(ConfigError)
        if config is not None and rest is None:
            raise _leaf(config) from None
        raise
    if summary is None:  # stopped by a signal before the run began: nothing was sent
        summary = Summary(run_id="-", stopped=Stop.SIGNAL)
    log.info("run_summary", **summary.as_event())
    await outputs.finished(summary, view)
    return summary


def _leaf(group: BaseExceptionGroup[ConfigError]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


class Assembly:
    """One run's parts, put together in order (see the module's docstring)."""

    def __init__(
        self, settings: RunSettings, outputs: Outputs, view: RunView, stopper: Stopper
    ) -> None:
        self.settings = settings
        self.outputs = outputs
        self.view = view
        self.stopper = stopper
        self.stack = AsyncExitStack()
        self.sink: FileSink | None = None
        self.source: JobSource | None = None
        self.session: Session | None = None
        self.tenants: Tenants | None = None
        self.runner: Runner | None = None
        self._http: Any = None  # several keys: one aiohttp session for all
        self._budgets: dict[str, tuple[Budget, Budget]] | None = None
        self._fatal_early: Fatal | None = None  # a key rejected before the runner exists

    async def run(self) -> Summary:
        async with self.stack:
            await self.prepare()
            runner = await self.start()
            if runner is None:
                summary = Summary(run_id=Runner.new_run_id(), stopped=Stop.DECLINED)
            else:
                await self.go(runner)
                summary = self.gather(runner)
            # The log's chain head now: whoever keeps it can tell later that the log up to
            # here was not rewritten (report --check --head).
            summary.chain_head = self.sink.head if self.sink is not None else None
            return summary

    # Phase 1 ------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Everything but sending: a failure here is a configuration problem (exit 2)."""
        s, stack, view = self.settings, self.stack, self.view
        # The result log first: checked and locked before anything else is read or sent.
        source_stat = _source_stat(s)
        if s.wait_lock:
            self.sink = await FileSink.open_waiting(s.results, source_stat=source_stat)
        else:
            self.sink = FileSink.open(s.results, source_stat=source_stat)
        stack.callback(self.sink.close)
        if s.api.sandbox:
            from worker.sandbox import Sandbox

            sandbox = await stack.enter_async_context(Sandbox())
            api = replace(s.api, base_url=sandbox.base_url, api_key=Secret(sandbox.api_key))
            self.settings = view.settings = s = replace(s, api=api)
            log.info("sandbox_started", base_url=sandbox.base_url)
        if s.api.base_url != DEFAULT_BASE_URL:  # said once: where the key is sent
            log.info("api_base_url", origin=origin_of(s.api.base_url), sandbox=s.api.sandbox)
        view.prior = self._prior()
        # Served first: a consumer waiting for its Redis answers /healthz meanwhile.
        await stack.enter_async_context(self.outputs.serve(view))
        await self._redis()
        from worker.sources import open_source

        self.source = await stack.enter_async_context(
            open_source(
                s.source,
                queue=s.queue,
                redis=view.redis,
                done=view.prior.done if view.prior is not None else None,
                fair=bool(s.keys),
            )
        )
        if s.queue is not None:
            view.queue = self.source
        if s.api.state_dir is None and not s.api.sandbox and s.api.budget_url is None:
            log.warning(
                "budget_not_persisted",
                reason="--state-dir none: a restarted or concurrent run on this key may burst "
                "past the server's window",
            )
        if s.keys:
            # Several keys: one pool of connections for all, and one budget per Xquik account.
            _enough_files(4 * len(s.keys) + 256)  # each budget's state file: 2 fds
            from worker.api.client import http_session

            self._http = http_session(concurrency=s.api.concurrency, timeout=s.api.timeout)
            stack.push_async_callback(self._http.close)
            self._budgets = {}
        if s.api.api_key:
            session = self.new_session(DEFAULT, s.api.api_key)
            self.session = view.session = await stack.enter_async_context(session)

    def _prior(self) -> PriorResults | None:
        """What earlier runs did. Queue mode never skips by the local log: a message is acked
        with its record in <stream>:results, so a redelivered one has no record there yet, and
        must get one (a resent DELETE answers 404: already_gone)."""
        s = self.settings
        if s.fresh or s.queue is not None:
            return None
        prior = read_prior(s.results, self._scope())
        if prior.bad_lines:
            log.warning(
                "results_unreadable_lines",
                file=str(s.results),
                lines=prior.bad_lines[:20],
                count=len(prior.bad_lines),
            )
        if prior.incomplete:
            log.warning(
                "results_not_counted",
                reason="done records without origin or key_id (another tool, an older "
                "version, a hand-written line): their jobs are sent again",
                lines=prior.incomplete[:20],
                count=len(prior.incomplete),
            )
        if prior.foreign:
            log.info(
                "results_of_another_api_or_key",
                reason="done by a sandbox rehearsal, another key or another API: not this "
                "run's, not counted",
                count=prior.foreign,
            )
        return prior

    def _scope(self) -> Scope:
        """Whose records count as done: this run's API and keys (a tenant's key, or its key
        group)."""
        s = self.settings
        key_ids = {tenant: key_id(key) for tenant, (key, _) in s.keys.items()}
        groups = {tenant: account for tenant, (_, account) in s.keys.items()}
        if s.api.api_key:
            key_ids[DEFAULT] = key_id(s.api.api_key)
        return Scope(origin_of(s.api.base_url), s.api.sandbox, key_ids, groups)

    async def _redis(self) -> None:
        """The queue's Redis (waited for as --redis-connect-timeout says, for ever by default;
        the source closes it), or --budget's (within its timeout): a cluster's client when it
        is one."""
        s = self.settings
        if s.queue is not None:  # the source closes it
            from worker.redis_conn import open_client

            self.view.redis = await open_client(
                s.queue.url, deadline=s.queue.connect_timeout, min_replicas=s.queue.min_replicas
            )
        elif s.api.budget_url is not None:
            from worker.redis_conn import connected

            deadline = s.api.budget_connect_timeout
            self.view.redis = await connected(s.api.budget_url, deadline=deadline)
            self.stack.push_async_callback(self.view.redis.aclose)

    def new_session(self, name: str, key: str, account: str | None = None) -> Session:
        return Session(
            self.settings.api,
            api_key=key,
            on_fatal=partial(self.fatal, name),
            redis=self.view.redis,
            share_listing=True,
            http=self._http,
            account=account,
            budgets=self._budgets,
        )

    def fatal(self, name: str, exc: Fatal) -> None:
        """A key was rejected (or the API's certificate cannot be verified)."""
        if self.tenants is not None:
            self.tenants.fatal(name, exc)
        elif self.runner is not None:
            self.runner.key_failed(exc)
        else:
            self._fatal_early = exc

    # Phase 2 ------------------------------------------------------------------------------
    async def start(self) -> Runner | None:
        """The runner, ready to send; None when the confirmation was declined."""
        s = self.settings
        if not await self.outputs.confirm(self.view):
            log.warning("not_confirmed", sent=0)
            return None
        prior = self.view.prior
        run_id = Runner.new_run_id()
        claims = Claims(
            prior.done | prior.done_names if prior else frozenset(),
            in_flight_only=s.queue is not None,
        )
        handler: Operations | Tenants
        ring = None
        if s.keys:
            keys = dict(s.keys)
            if s.api.api_key:
                keys[DEFAULT] = (s.api.api_key, None)
            handler = self.tenants = Tenants(
                keys,
                run_id=run_id,
                make_ops=partial(self._tenant_ops, run_id, claims),
                on_all_rejected=self._all_rejected,
                claims=claims,
            )
            ring = Ring(self.tenants)
            log.info("tenants", keys=len(s.keys), default_key=bool(s.api.api_key))
        else:
            assert self.session is not None
            handler = self.operations(self.session, run_id, claims)
        assert self.source is not None
        assert self.sink is not None
        self.runner = runner = Runner(
            handler,
            source=self.source,
            sink=self.sink,
            concurrency=s.api.concurrency,
            limit=s.limit,
            sync_before_settle=s.queue is not None,
            grace=s.grace,
            ring=ring,
            read_ahead=s.read_ahead,
            shared_source=s.queue is not None,
            sync_every=s.intervals.sync,
        )
        runner.summary.consumer = s.queue is not None and not s.queue.drain
        if self._fatal_early is not None:
            self.fatal(DEFAULT, self._fatal_early)
        return runner

    def operations(self, session: Session, run_id: str, claims: Claims) -> Operations:
        s = self.settings
        return Operations(
            session,
            run_id=run_id,
            claims=claims,
            dry_run=s.dry_run,
            delete_monitors=s.delete_monitors,
            keyword_monitors=s.keyword_monitors,
            wait_monitors=s.wait_monitors,
            precheck=s.precheck,
            strict_missing=s.strict_missing,
        )

    def _tenant_ops(
        self, run_id: str, claims: Claims, name: str, key: str, account: str | None
    ) -> Operations:
        if name == DEFAULT and self.session is not None:
            return self.operations(self.session, run_id, claims)
        self.view.tenants[name] = session = self.new_session(name, key, account)
        return self.operations(session, run_id, claims)

    def _all_rejected(self, exc: Fatal) -> None:
        assert self.runner is not None
        self.runner.key_failed(exc)

    # The run ------------------------------------------------------------------------------
    async def go(self, runner: Runner) -> None:
        s, source = self.settings, self.source
        assert source is not None
        prior = self.view.prior
        log.info(
            "run_started",
            run_id=runner.summary.run_id,
            source=source.name,
            results=str(s.results),
            rate=str(s.api.rate),
            concurrency=s.api.concurrency,
            skipping_done=len(prior.done) if prior else 0,
        )
        budget: Budget = Unlimited()  # with several keys, the pace tells the ETA
        if self.session is not None and self.tenants is None:
            budget = self.session.read_budget if s.dry_run else self.session.delete_budget
        total = progress_total(source.total(), s.limit)
        # From here a signal stops the runner (within the grace), no longer the start-up.
        self.view.runner = self.stopper.runner = runner
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.keep_alive)
            if self.tenants is not None and s.keys_dir is not None:
                tg.start_soon(self.tenants.watch, s.keys_dir, s.intervals.key_poll)
            tg.start_soon(self.outputs.watch, self.view, total, budget)
            await runner.run()
            tg.cancel_scope.cancel()
        if s.source == "-" and runner.summary.read == 0 and runner.summary.stopped is None:
            # `plan … | run -` whose plan failed looks just like this: say so.
            log.warning("no_jobs_read", message="no jobs read from stdin")

    def gather(self, runner: Runner) -> Summary:
        """The run's numbers, from its sessions too."""
        summary = runner.summary
        if (
            self.tenants is not None
            and summary.stopped is None
            and self.tenants.every_used_key_rejected()
        ):
            summary.stopped = Stop.AUTH
        every = self.view.sessions()
        summary.sent = sum((Counter(s.sent) for s in every), Counter())
        summary.retries = sum(s.retries for s in every)
        if every:
            summary.rate = every[0].delete_budget.describe()
        if self.tenants is not None:
            summary.tenant_rates = {
                name: s.delete_budget.describe() for name, s in self.view.tenants.items()
            }
            if self.session is not None and DEFAULT in summary.by_tenant:
                summary.tenant_rates[DEFAULT] = self.session.delete_budget.describe()
        return summary


def progress_total(lines: int | None, limit: int | None) -> int | None:
    """What the progress view counts to: the file's lines, or --limit when it is smaller."""
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


__all__ = ["Assembly", "Outputs", "Quiet", "RunView", "run"]
