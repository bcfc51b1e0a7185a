"""--metrics-port: Prometheus counters that match the result log, and /healthz."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio

from tests.conftest import (
    SandboxFactory,
    SandboxProcess,
    options_for,
    read_results,
    write_jobs,
)
from tests.redis_server import RedisServer, free_port
from tests.test_queue import enqueue_ids, results_stream, worker
from worker import run_async
from worker.budget.rate import Rate
from worker.sandbox import Sandbox


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0


def test_consumer_metrics_match_results_and_healthz_follows_redis(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Scraped while a consumer idles after 25 jobs: counters equal the result stream;
    /healthz is 200, and 503 once Redis is gone."""
    sb = sandbox_process("--delete-limit", "unlimited")
    enqueue_ids(redis_server, [str(i) for i in range(1, 21)] + ["404", "405", "1", "x/y", "22"])
    port = free_port()
    proc = worker(
        redis_server,
        sb,
        tmp_path,
        "w1",
        "--rate",
        "unlimited",
        "--metrics-port",
        str(port),
        "--state-dir",
        str(tmp_path),
    )
    deadline = time.monotonic() + 30
    while len(results_stream(redis_server)) < 25 and time.monotonic() < deadline:
        time.sleep(0.05)
    status, text = scrape(port)
    assert status == 200
    records = results_stream(redis_server)
    outcomes = Counter(r["outcome"] for r in records)
    # The second "1" comes long after the first was done: already_gone, not a duplicate (a
    # consumer lives for months; only the same account twice at once is a duplicate).
    assert outcomes == {"disconnected": 21, "already_gone": 3, "invalid": 1}
    for outcome, n in outcomes.items():
        assert metric(text, "xquik_jobs_total", op="disconnect", outcome=outcome) == n
    # The three already gone were confirmed by a GET each: no DELETE spent on them.
    assert metric(text, "xquik_requests_total", method="DELETE") == 21
    assert metric(text, "xquik_attempts_total") == sum(r["attempts"] for r in records)
    assert metric(text, "xquik_stream_pending") == 0
    assert metric(text, "xquik_stream_length") == 25
    assert metric(text, "xquik_requests_in_flight") == 0
    assert scrape(port, "/healthz")[0] == 200
    redis_server.stop()
    assert scrape(port, "/healthz")[0] == 503
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)


async def test_file_run_metrics_track_the_log_while_running(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """A file run with the flag: mid-run scrapes never count more than the log holds, and
    429s and cooldown seconds show up."""
    sandbox: Sandbox = await sandbox_factory(accounts=30, delete_limit=(10, 1.0))
    sandbox.state.limits["delete"].consume(sandbox.state.clock(), 10)
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 31)])
    port = free_port()
    settings = options_for(sandbox, tmp_path, rate=Rate(10, 1.0), metrics_port=port)
    seen: list[tuple[float, int, float, float]] = []
    texts: list[str] = []

    async def watch() -> None:
        while True:
            await anyio.sleep(0.3)
            try:
                _, text = await anyio.to_thread.run_sync(scrape, port)
            except OSError:
                continue
            texts.append(text)
            logged = len(read_results(tmp_path / "results.jsonl"))
            done = metric(text, "xquik_jobs_total", op="disconnect", outcome="disconnected")
            seen.append(
                (
                    done,
                    logged,
                    metric(text, "xquik_rate_limited_total"),
                    metric(text, "xquik_cooldown_seconds_total"),
                )
            )

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        summary = await run_async(jobs, **settings)
        tg.cancel_scope.cancel()
    assert summary.exit_code == 0
    assert len(seen) >= 3
    assert all(done <= logged for done, logged, _, _ in seen)
    assert max(s[2] for s in seen) >= 1
    assert max(s[3] for s in seen) >= 0.5
    assert texts, "no scrape"
    last = texts[-1]  # the status label, the duration histogram, the build info
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(last)}
    answered = {
        (s.labels["method"], s.labels["status"]): s.value
        for s in families["xquik_responses"].samples
    }
    assert answered[("DELETE", "429")] >= 1
    assert answered[("DELETE", "200")] >= 1
    buckets = [
        s for s in families["xquik_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["method"] == "DELETE"
    ]  # fmt: skip
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)  # cumulative
    assert buckets[-1].labels["le"] == "+Inf"
    assert counts[-1] == sum(v for (m, _), v in answered.items() if m == "DELETE")
    from worker import __version__

    assert metric(last, "xquik_build_info", version=__version__) == 1


async def test_batch_runs_write_a_textfile_and_push(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """--metrics-textfile: node_exporter's file, parsed by prometheus-client's own parser, with
    the run's counts and its last-success time; --pushgateway: one PUT of the same metrics to
    /metrics/job/xquik_disconnect at the end."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prometheus_client.parser import text_string_to_metric_families

    pushed: list[tuple[str, str, str]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            pushed.append(("PUT", self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sandbox: Sandbox = await sandbox_factory(accounts=5, delete_limit=(None, 60.0))
        jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "3"])
        textfile = tmp_path / "xquik.prom"
        settings = options_for(sandbox, tmp_path, metrics_textfile=textfile,
            pushgateway=f"http://127.0.0.1:{server.server_port}",
        )  # fmt: skip
        before = time.time()
        assert (await run_async(jobs, **settings)).exit_code == 0
    finally:
        server.shutdown()
        server.server_close()
    text = textfile.read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert metric(text, "xquik_jobs_total", op="disconnect", outcome="disconnected") == 3
    [last] = families["xquik_last_success_timestamp_seconds"].samples
    assert before <= last.value <= time.time()
    [(method, path, body)] = pushed
    assert method == "PUT"
    assert path == "/metrics/job/xquik_disconnect"
    assert 'xquik_jobs_total{op="disconnect",outcome="disconnected"} 3.0' in body
