"""`--metrics-port`: Prometheus metrics and /healthz, served from the run's own event loop.

The numbers are read at scrape time from counters the run keeps anyway (summary, client), so
the job path pays a few integer increments, nothing more. prometheus-client is imported only
when the flag is given. /healthz answers 200 while the loop is alive (it is answering) and,
in queue mode, Redis answers PING; else 503.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import anyio
from aiohttp import web

from worker._version import __version__
from worker.api.client import DURATION_BUCKETS
from worker.errors import ConfigError
from worker.files import write_atomically
from worker.logs import get_logger
from worker.run.assemble import RunView

log = get_logger()


class _Collector:
    def __init__(self, view: RunView) -> None:
        self.view = view
        self.queue: dict[str, float] = {}

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        info = GaugeMetricFamily("xquik_build_info", "This worker's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        view = self.view
        sessions = [("", view.session)] if view.session is not None else []
        sessions += list(view.tenants.items())
        if view.runner is None or not sessions:
            return
        s = view.runner.summary
        # With several keys (--keys) the per-key series carry a `tenant` label ("" for the
        # default key): one series set per tenant.
        by_tenant = bool(view.tenants) or bool(s.by_tenant)
        extra = ["tenant"] if by_tenant else []
        jobs = CounterMetricFamily(
            "xquik_jobs", "Result records by op and outcome", labels=["op", "outcome", *extra]
        )
        if by_tenant:
            for tenant, counts in sorted(s.by_tenant.items()):
                for outcome, n in counts.items():
                    jobs.add_metric(["disconnect", outcome, tenant], n)
        else:
            for outcome, n in s.outcomes.items():
                jobs.add_metric(["disconnect", outcome], n)
        for outcome, n in s.monitors.items():
            jobs.add_metric(["delete_monitor", outcome, *([""] if by_tenant else [])], n)
        yield jobs
        requests = CounterMetricFamily(
            "xquik_requests", "HTTP requests sent, resends included", labels=["method", *extra]
        )
        responses = CounterMetricFamily(
            "xquik_responses",
            "HTTP answers by method and status",
            labels=["method", "status", *extra],
        )
        limited = CounterMetricFamily("xquik_rate_limited", "429 answers received", labels=extra)
        for tenant, session in sessions:
            label = [tenant] if by_tenant else []
            for method, n in session.client.sent.items():
                requests.add_metric([method, *label], n)
            for (method, status), n in sorted(session.client.answered.items()):
                responses.add_metric([method, str(status), *label], n)
            limited.add_metric(label, session.client.rate_limited)
        yield requests
        yield responses
        yield limited
        clients = [session.client for _, session in sessions]
        durations: dict[str, list[int]] = {}
        duration_sum: dict[str, float] = {}
        for c in clients:
            for method, hist in c.durations.items():
                into = durations.setdefault(method, [0] * len(hist))
                durations[method] = [a + b for a, b in zip(into, hist, strict=True)]
                duration_sum[method] = duration_sum.get(method, 0.0) + c.duration_sum[method]
        duration = HistogramMetricFamily(
            "xquik_request_duration_seconds",
            "Seconds from a request's send to its answer's headers",
            labels=["method"],
        )
        for method, hist in sorted(durations.items()):
            running, buckets = 0, []
            for le, n in zip((*DURATION_BUCKETS, float("inf")), hist, strict=True):
                running += n
                buckets.append(("+Inf" if le == float("inf") else f"{le:g}", running))
            duration.add_metric([method], buckets, sum_value=duration_sum[method])
        yield duration
        for name, doc, value in (
            ("xquik_attempts", "Attempts made by recorded jobs", s.attempts),
            (
                "xquik_retries",
                "Retries after transient errors",
                sum(session.retries for _, session in sessions),
            ),
            (
                "xquik_cooldown_seconds",
                "Seconds of key-wide cooldown applied",
                sum(c.cooldown_s for c in clients),
            ),
            (
                "xquik_budget_wait_seconds",
                "Seconds requests waited for the rate budget",
                sum(c.budget_wait_s for c in clients),
            ),
            ("xquik_skipped_done", "Jobs skipped as done in an earlier run", s.skipped_done),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "xquik_requests_in_flight",
            "Requests in flight",
            value=sum(c.in_flight for c in clients),
        )
        yield GaugeMetricFamily(
            "xquik_not_finished", "Jobs stopped before their record", value=s.not_finished
        )
        if self.view.finished_ok_at is not None:  # batch runs: alert when it gets old
            yield GaugeMetricFamily(
                "xquik_last_success_timestamp_seconds",
                "When this run ended with exit code 0 (Unix time)",
                value=self.view.finished_ok_at,
            )
        for name, value in self.queue.items():
            yield GaugeMetricFamily(f"xquik_stream_{name}", f"Stream {name}", value=value)


def registry(view: RunView) -> Any:
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(view))
    return reg


async def write_textfile(view: RunView, path: Path) -> None:
    """node_exporter's textfile collector: written whole under a name nobody can guess, then
    renamed (never through a planted symlink), off the event loop."""
    from prometheus_client import generate_latest

    try:
        body = generate_latest(registry(view))
        await anyio.to_thread.run_sync(write_atomically, path, body)
    except OSError as exc:
        log.warning("metrics_textfile_failed", path=str(path), error=exc.strerror)


async def textfile_loop(view: RunView, path: Path, every: float = 10.0) -> None:
    """Runs until cancelled: the textfile every `every` seconds (10)."""
    while True:
        await write_textfile(view, path)
        await anyio.sleep(every)


async def push(view: RunView, url: str) -> None:
    """One push to a Pushgateway at the end of a run (job xquik_disconnect), within 10 s."""
    from prometheus_client import push_to_gateway

    where = urlsplit(url)
    try:
        with anyio.fail_after(10):
            await anyio.to_thread.run_sync(
                lambda: push_to_gateway(
                    url, job="xquik_disconnect", registry=registry(view), timeout=5
                ),
                abandon_on_cancel=True,
            )
        log.info("metrics_pushed", gateway=f"{where.scheme}://{where.netloc.rpartition('@')[2]}")
    except Exception as exc:  # a push never changes the run's outcome
        log.warning("metrics_push_failed", error=f"{type(exc).__name__}: {exc}")


class MetricsServer:
    """/metrics and /healthz, on `host` (127.0.0.1 unless told: a scrape from another host,
    a Kubernetes probe, needs --metrics-host 0.0.0.0). Redis is asked through a connection of
    the server's own, one check at a time however many requests come: a flood of probes
    never takes a connection the workers need. An unhealthy Redis is said
    to be unavailable, never with its error (which names internal hosts)."""

    def __init__(self, view: RunView, *, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import CollectorRegistry

        self._view = view
        self._collector = _Collector(view)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._collector)
        self._host, self.port = host, port
        self._runner: web.AppRunner | None = None
        self._redis: Any = None  # our own small client (never the workers' pool)
        self._lock = anyio.Lock()
        self._checked: tuple[float, bool] = (float("-inf"), False)

    def _url(self) -> str | None:
        settings = self._view.settings
        if settings.queue is not None:
            return settings.queue.url
        return settings.api.budget_url

    async def _redis_ok(self) -> bool:
        """Redis answers PING. One check at a time: a request that waited while a check ran
        (one that began after it came) takes that check's answer, so a flood of probes costs
        Redis one PING at a time, on our own connection."""
        arrived = anyio.current_time()
        async with self._lock:
            began, ok = self._checked
            if began >= arrived:
                return ok
            began = anyio.current_time()
            url = self._url()
            if self._redis is None and url is not None:
                from worker.redis_conn import connect

                self._redis = connect(url, once=2.0, pool_size=1)
            try:
                with anyio.fail_after(2):
                    await self._redis.ping()
                ok = True
            except Exception:
                ok = False
            self._checked = (began, ok)
            return ok

    async def metrics(self, request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if self._view.queue is not None and await self._redis_ok():
            try:
                self._collector.queue = await self._view.queue.stats(self._redis)
            except Exception:
                self._collector.queue = {}
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        if self._url() is not None and not await self._redis_ok():
            return web.json_response({"ok": False, "redis": "unavailable"}, status=503)
        return web.json_response({"ok": True, "running": self._view.runner is not None})

    async def __aenter__(self) -> MetricsServer:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            where = f"--metrics-host {self._host} --metrics-port {self.port}"
            raise ConfigError(f"{where}: {exc.strerror}") from None
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._redis is not None:
            await self._redis.aclose()
