"""Queue mode against a Redis that goes away, poison messages and a server that echoes the key:
real redis-server processes, real workers, the sandbox on loopback."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from tests.conftest import ROOT, SandboxProcess, cli_env, run_argv, run_cli, write_jobs
from tests.hostile_servers import Server
from tests.redis_server import RedisServer, free_port
from tests.test_queue import STREAM, client, enqueue_ids, results_stream, worker


def wait_for(predicate: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_redis_down_at_start_is_logged_healthz_503_and_a_signal_ends_it(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Nothing listening: redis_unavailable (address, error, next retry) within 2 s, /healthz
    says 503 meanwhile, and SIGINT ends the consumer at once with 130."""
    sb = sandbox_process("--delete-limit", "unlimited")
    port, metrics = free_port(), free_port()
    log = tmp_path / "w.log"
    argv = run_argv(f"redis://:hunter2@127.0.0.1:{port}/0", sb, "--results",
                    str(tmp_path / "r.jsonl"), "--metrics-port", str(metrics), "--log-format",
                    "json", "--state-dir", "none")  # fmt: skip
    with log.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
                                env=cli_env(XQUIK_API_KEY=sb.api_key))  # fmt: skip
    assert wait_for(lambda: '"redis_unavailable"' in log.read_text(), 10)
    every = events(log)
    [first, *_] = [e for e in every if e["event"] == "redis_unavailable"]
    # Within 2 s of the run's first event, on its own clock (not the interpreter's start-up).
    took = datetime.fromisoformat(first["timestamp"]) - datetime.fromisoformat(
        every[0]["timestamp"]
    )
    assert took.total_seconds() < 2.5, (every[0], first)
    assert first["address"] == f"127.0.0.1:{port}/0"
    assert "retry_in_s" in first
    assert wait_for(lambda: healthz(metrics) == 503, 10)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert "hunter2" not in log.read_text()
    assert sb.stats()["received"] == 0


def test_redis_connect_timeout_exits_2_and_enqueue_fails_in_one_line(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """--redis-connect-timeout 1 (and --drain's own 30 s default): exit 2 naming Redis;
    enqueue to a Redis that is not there: one line, exit 2, no traceback."""
    sb = sandbox_process("--delete-limit", "unlimited")
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = subprocess.run(
        run_argv(url, sb, "--results", str(tmp_path / "r.jsonl"), "--drain",
                 "--redis-connect-timeout", "1", "--state-dir", "none"),
        env=cli_env(XQUIK_API_KEY=sb.api_key), cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--redis-connect-timeout" in done.stderr
    assert "Traceback" not in done.stderr
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    enq = run_cli("enqueue", str(jobs), "--redis", url, "--redis-connect-timeout", "1")
    assert enq.returncode == 2
    assert "unreachable" in enq.stderr
    assert "Traceback" not in enq.stderr


def test_a_poison_message_is_dead_lettered_and_the_consumer_goes_on(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """One message with invalid UTF-8 among good ones: it is invalid, dead-lettered with its
    raw bytes as base64; the others are done; the consumer exits 1 (an invalid job), not dead."""
    import redis

    sb = sandbox_process("--delete-limit", "unlimited")
    enqueue_ids(redis_server, ["1", "2"])
    raw = redis.Redis(port=redis_server.port)
    raw.xadd(STREAM, {b"account_id": b"\xff\xfe3"})
    raw.close()
    enqueue_ids(redis_server, ["4"])
    proc = worker(redis_server, sb, tmp_path, "w1", "--drain", "--rate", "unlimited",
                  "--state-dir", "none")  # fmt: skip
    assert proc.wait(timeout=60) == 1
    records = results_stream(redis_server)
    assert sorted(r["outcome"] for r in records) == ["disconnected"] * 3 + ["invalid"]
    r = client(redis_server)
    [(_, dead)] = r.xrange(f"{STREAM}:dead")
    assert base64.b64decode(dead["account_id_base64"]) == b"\xff\xfe3"
    assert "not UTF-8" in dead["reason"]
    assert r.xpending(STREAM, "xquik-disconnect")["pending"] == 0
    r.close()


async def test_a_key_echoed_by_the_server_reaches_no_stream(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A server that puts the key into its error message: :results, :dead, the log and the
    result file carry [REDACTED], never the key."""
    from aiohttp import web

    key = "xq_" + "c0ffee" * 10 + "beef"

    async def echo(request: web.Request) -> web.StreamResponse:
        seen = request.headers.get("x-api-key", "")
        return web.json_response(
            {"error": "forbidden", "message": f"key {seen} / {seen.upper()} / {seen[3:]}"},
            status=403,
        )

    enqueue_ids(redis_server, ["1", "2"])
    async with Server(echo) as server:
        argv = [
            sys.executable, "-m", "worker", "run", redis_server.url, "--base-url",
            f"{server.url}/api/v1", "--drain", "--results",
            str(tmp_path / "r.jsonl"), "--state-dir", "none", "--rate", "unlimited",
            "--log-format", "json",
        ]  # fmt: skip
        with anyio.fail_after(60):
            done = await anyio.run_process(
                argv, env=cli_env(XQUIK_API_KEY=key), cwd=ROOT, check=False
            )
    assert done.returncode == 1
    r = client(redis_server)
    texts = [json.dumps(r.xrange(s)) for s in (f"{STREAM}:results", f"{STREAM}:dead")]
    r.close()
    texts += [done.stderr.decode(), (tmp_path / "r.jsonl").read_text()]
    assert "[REDACTED]" in texts[0]
    for text in texts:
        assert key[3:].lower() not in text.lower()


def test_redis_away_longer_than_claim_idle_still_one_record_per_job(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Redis (persistent) stops mid-run for three times --claim-idle, then comes back: every
    job has exactly one record in :results, nothing is dead-lettered, nothing pending."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, persist=True)
    server.start()
    try:
        sb = sandbox_process("--accounts", "40", "--delete-limit", "unlimited", "--slow", "1",
                             "--slow-seconds", "0.1")  # fmt: skip
        enqueue_ids(server, [str(i) for i in range(1, 41)])
        procs = [
            worker(
                server,
                sb,
                tmp_path,
                name,
                "--drain",
                "--rate",
                "unlimited",
                "--claim-idle",
                "1",
                "--concurrency",
                "2",
                "--state-dir",
                "none",
            )
            for name in ("w1", "w2")
        ]
        assert wait_for(lambda: len(results_stream(server)) >= 10)
        server.stop()
        time.sleep(3.0)
        server.start()
        assert [p.wait(timeout=90) for p in procs] == [0, 0]
        records = results_stream(server)
        per_account = Counter(r["account_id"] for r in records)
        assert per_account == Counter({str(i): 1 for i in range(1, 41)})
        assert {r["outcome"] for r in records} <= {"disconnected", "already_gone"}
        r = client(server)
        assert r.xlen(f"{STREAM}:dead") == 0
        assert r.xpending(STREAM, "xquik-disconnect")["pending"] == 0
        r.close()
        assert sb.stats()["accounts"] == 0
    finally:
        server.stop()


def test_file_mode_runs_share_a_budget_in_redis(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """--budget redis://…: two file-mode runs on one key with nothing else in common (their own
    logs and state dirs, as on two machines) keep one budget: 0 429s, never 11 in 2 s."""
    sb = sandbox_process("--accounts", "40", "--delete-limit", "10/2s")
    procs = []
    for name, ids in (("a", range(1, 21)), ("b", range(21, 41))):
        jobs = write_jobs(tmp_path / f"{name}.txt", [str(i) for i in range(ids.start, ids.stop)])
        argv = run_argv(jobs, sb, "--state-dir", str(tmp_path / f"state-{name}"), "--rate",
                        "10/2s", "--budget", redis_server.url)  # fmt: skip
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        env = cli_env(XQUIK_API_KEY=sb.api_key)
        procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, **quiet))  # type: ignore[call-overload]
    assert [p.wait(timeout=90) for p in procs] == [0, 0]
    assert sb.stats()["rate_limited"] == 0
    assert sb.stats()["accounts"] == 0
    times = sorted(t for method, _, _, t in sb.requests() if method == "DELETE")
    assert len(times) == 40
    assert all(times[i + 10] - times[i] >= 2.0 for i in range(len(times) - 10))
