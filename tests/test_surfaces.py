"""Surfaces no other test reached, each end to end in real processes: Redis over TLS
(rediss:// with a throwaway CA) and over a unix socket, a custom stream and group, --retain
inside a running consumer, `plan --status --out`, a redirect answering a GET, and the key kept
out of the console log, the --notify body, the metrics and the HTML page."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import redis
import trustme

from tests.conftest import (
    ROOT,
    SandboxProcess,
    cli_env,
    read_results,
    run_argv,
    run_cli,
    write_jobs,
)
from tests.hostile_servers import Server, redirect
from tests.redis_server import RedisServer, TlsProxy, free_port
from tests.test_hostile_server import no_key_in, run_worker
from tests.test_queue import enqueue_ids


def drain(
    url: str, sb: SandboxProcess, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    argv = run_argv(url, sb, "--drain", "--rate", "unlimited", "--state-dir", "none",
                    "--results", str(tmp_path / "r.jsonl"), *args)  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env=cli_env(XQUIK_API_KEY=sb.api_key))  # fmt: skip


def test_rediss_with_a_ca_of_ones_own_and_a_certificate_it_does_not_sign(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """rediss:// through real TLS, the CA given in the URL as redis-py takes it: enqueue, a
    draining consumer and `queue status` work; a server whose certificate another CA signed
    stops `run` with exit 2 before any request, naming TLS."""
    ca, stranger = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    good = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(good)
    bad = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    stranger.issue_cert("127.0.0.1").configure_cert(bad)
    sb = sandbox_process("--accounts", "5", "--delete-limit", "unlimited")
    with TlsProxy(redis_server.port, good) as tls, TlsProxy(redis_server.port, bad) as forged:
        url = f"rediss://127.0.0.1:{tls.port}/0?ssl_ca_certs={ca_file}"
        ids = write_jobs(tmp_path / "ids.txt", ["1", "2", "3"])
        assert run_cli("enqueue", str(ids), "--redis", url).returncode == 0
        done = drain(url, sb, tmp_path)
        assert done.returncode == 0, done.stderr
        assert Counter(r["outcome"] for r in read_results(tmp_path / "r.jsonl")) == {
            "disconnected": 3
        }
        status = run_cli("queue", "status", "--redis", url, "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["results"] == 3
        forged_url = f"rediss://127.0.0.1:{forged.port}/0?ssl_ca_certs={ca_file}"
        refused = drain(forged_url, sb, tmp_path, "--redis-connect-timeout", "2")
    assert refused.returncode == 2, refused.stderr
    assert "certificate" in refused.stderr.lower() or "tls" in refused.stderr.lower()
    assert sb.stats()["by_status"].get("DELETE 200") == 3  # only the good run's


def test_a_unix_socket_url_works_for_enqueue_run_and_status(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sock = tmp_path / "redis.sock"
    server = RedisServer(tmp_path, unix_socket=sock)
    server.start()
    try:
        url = f"unix://{sock}?db=0"
        sb = sandbox_process("--accounts", "5", "--delete-limit", "unlimited")
        ids = write_jobs(tmp_path / "ids.txt", ["4", "5"])
        enq = run_cli("enqueue", str(ids), "--redis", url)
        assert enq.returncode == 0, enq.stderr
        done = drain(url, sb, tmp_path)
        assert done.returncode == 0, done.stderr
        assert sorted(r["account_id"] for r in read_results(tmp_path / "r.jsonl")) == ["4", "5"]
        r: Any = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
        assert r.xlen("xquik:disconnect:results") == 2  # the same server, through the socket
        r.close()
    finally:
        server.stop()


def test_a_custom_stream_and_group_leave_the_default_ones_alone(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process("--accounts", "6", "--delete-limit", "unlimited")
    enqueue_ids(redis_server, ["1", "2"])  # the default stream: not ours to touch
    ids = write_jobs(tmp_path / "ids.txt", ["3", "4", "5"])
    enq = run_cli("enqueue", str(ids), "--redis", redis_server.url, "--stream", "team:offboard")
    assert enq.returncode == 0, enq.stderr
    done = drain(redis_server.url, sb, tmp_path, "--stream", "team:offboard", "--group", "hr")
    assert done.returncode == 0, done.stderr
    r: Any = redis.Redis(port=redis_server.port, decode_responses=True)
    assert [g["name"] for g in r.xinfo_groups("team:offboard")] == ["hr"]
    assert r.xlen("team:offboard:results") == 3
    assert r.xlen("xquik:disconnect") == 2  # untouched: no group, nothing read, nothing acked
    assert not r.exists("xquik:disconnect:results")
    with_group = r.xinfo_groups("team:offboard")[0]
    assert (with_group["pending"], with_group["last-delivered-id"] != "0-0") == (0, True)
    r.close()
    assert sorted(rec["account_id"] for rec in read_results(tmp_path / "r.jsonl")) == [
        "3",
        "4",
        "5",
    ]


def test_retain_trims_inside_a_running_consumer_but_never_a_pending_entry(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """A consumer that keeps running with --retain 1s: its first pass drops the old, done
    entries of the job stream, :results and :dead, but keeps everything from another group's
    oldest pending entry on, and every new entry."""
    r: Any = redis.Redis(port=redis_server.port, decode_responses=True)
    stream = "xquik:disconnect"
    for i in range(1, 7):  # old jobs (ids in 1970), all done by our group
        r.xadd(stream, {"account_id": str(i)}, id=f"{i}-0")
    r.xgroup_create(stream, "xquik-disconnect", id="6-0")
    r.xgroup_create(stream, "audit", id="0")  # another pipeline: acked 1-3, holds 4
    r.xreadgroup("audit", "a1", {stream: ">"}, count=4)
    r.xack(stream, "audit", "1-0", "2-0", "3-0")
    r.xadd(f"{stream}:results", {"message_id": "1-0", "record": "{}"}, id="1-0")
    r.xadd(f"{stream}:dead", {"account_id": "9", "reason": "old"}, id="1-0")
    sb = sandbox_process("--accounts", "12", "--delete-limit", "unlimited")
    enqueue_ids(redis_server, ["10", "11"])
    log = tmp_path / "w.log"
    argv = run_argv(redis_server.url, sb, "--retain", "1s", "--claim-idle", "0.6", "--rate",
                    "unlimited", "--state-dir", "none", "--results", str(tmp_path / "r.jsonl"),
                    "--log-format", "json")  # fmt: skip
    with log.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
                                env=cli_env(XQUIK_API_KEY=sb.api_key))  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while '"streams_trimmed"' not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert '"streams_trimmed"' in log.read_text(), log.read_text()[-2000:]
        assert proc.poll() is None  # trimmed while running, not at its end
        ids = [entry_id for entry_id, _ in r.xrange(stream)]
        assert ids[:3] == ["4-0", "5-0", "6-0"]  # 4-0 is pending in `audit`: kept, and after
        assert len(ids) == 5  # ... and both new jobs
        assert "1-0" not in [entry_id for entry_id, _ in r.xrange(f"{stream}:results")]
        assert r.xlen(f"{stream}:dead") == 0
        assert r.xpending(stream, "audit")["pending"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, 130)
        r.close()


def test_plan_status_out_writes_the_jobs_file_run_reads(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process("--delete-limit", "unlimited")
    listing = sb.get("/x/accounts")["accounts"]
    # Every sandbox account is active: --status active with --health suspended is the
    # suspended ones; --status locked is none of them.
    expected = {a["id"] for a in listing if a["status"] == "active" and a["health"] == "suspended"}
    assert 0 < len(expected) < len(listing)
    out, none = tmp_path / "plan.jsonl", tmp_path / "none.jsonl"
    env = cli_env(XQUIK_API_KEY=sb.api_key)
    base = ("--base-url", sb.base_url)
    planned = run_cli("plan", "--status", "active", "--health", "suspended", "--out", str(out),
                      *base, env=env)  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout == ""  # the jobs went to the file
    assert {json.loads(line)["account_id"] for line in out.read_text().splitlines()} == expected
    nothing = run_cli("plan", "--status", "locked", "--out", str(none), *base, env=env)
    assert nothing.returncode == 0, nothing.stderr
    assert none.read_text() == ""
    ran = run_cli("run", str(out), *base, "--state-dir", "none", env=env)
    assert ran.returncode == 0, ran.stderr
    left = {a["id"] for a in sb.get("/x/accounts")["accounts"]}
    assert not expected & left
    assert len(left) == len(listing) - len(expected)


async def test_a_redirect_answering_a_get_is_not_followed(tmp_path: Path) -> None:
    """The precheck's listing answered with a 302 elsewhere: nothing goes there (not the key,
    not a request), and no job counts as done on the strength of it."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    async with Server(redirect(200, lambda: "")) as elsewhere:

        async def handle(request: Any) -> Any:
            from aiohttp import web

            if request.method == "GET":
                return web.Response(status=302, headers={"Location": f"{elsewhere.url}/steal"})
            return web.json_response({"success": True})

        async with Server(handle) as origin:
            code, out, err = await run_worker(jobs, origin.url, tmp_path, "--rate", "unlimited")
    assert elsewhere.seen == []
    gets = [path for method, path, _ in origin.seen if method == "GET"]
    assert gets  # the precheck asked, and was redirected
    assert all("steal" not in path for _, path, _ in origin.seen)
    records = read_results(tmp_path / "results.jsonl")
    assert len(records) == 2
    for record in records:  # no success without a DELETE answered 2xx
        assert record["outcome"] != "already_gone"
    no_key_in(out, err, (tmp_path / "results.jsonl").read_text())
    del code


def test_the_key_is_absent_from_console_log_notify_metrics_and_html(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """One run with every output on: the console log (debug), the --notify body, the
    /metrics page while running, the metrics textfile and the HTML report never carry the
    key or its tail."""
    got: list[bytes] = []

    async def hook() -> None:
        from aiohttp import web

        async def take(request: web.Request) -> web.Response:
            got.append(await request.read())
            return web.Response(status=200)

        async with Server(take) as server:
            await run_with(server.url)

    sb = sandbox_process("--accounts", "20", "--delete-limit", "unlimited", "--slow", "1",
                         "--slow-seconds", "0.05")  # fmt: skip
    key = sb.api_key
    metrics_port = free_port()
    scraped: list[str] = []

    async def run_with(notify: str) -> None:
        jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 21)] + ["404404"])
        argv = run_argv(jobs, sb, "--notify", notify, "--metrics-port", str(metrics_port),
                        "--metrics-textfile", str(tmp_path / "m.prom"), "--log-level", "debug",
                        "--log-format", "console", "--state-dir", str(tmp_path / "s"),
                        "--concurrency", "2", "--results", str(tmp_path / "r.jsonl"))  # fmt: skip
        async with await anyio.open_process(argv, env=cli_env(XQUIK_API_KEY=key), cwd=ROOT) as p:
            with anyio.fail_after(60):
                while not scraped:
                    try:
                        url = f"http://127.0.0.1:{metrics_port}/metrics"
                        text = await anyio.to_thread.run_sync(_fetch, url)
                        if "xquik" in text:
                            scraped.append(text)
                    except OSError:
                        await anyio.sleep(0.05)
                assert p.stderr is not None
                err = b"".join([chunk async for chunk in p.stderr])
                await p.wait()
        scraped.append(err.decode())

    anyio.run(hook)
    page = tmp_path / "r.html"
    assert run_cli("report", str(tmp_path / "r.jsonl"), "--html", str(page)).returncode in (0, 1)
    outputs = {
        "console log": scraped[-1],
        "notify body": b"".join(got).decode(),
        "metrics": scraped[0],
        "textfile": (tmp_path / "m.prom").read_text(),
        "html": page.read_text(),
        "results": (tmp_path / "r.jsonl").read_text(),
    }
    assert got  # the hook was called
    assert "run_summary" in outputs["console log"] or "records" in outputs["console log"]
    for name, text in outputs.items():
        assert text, name
        assert key not in text, name
        assert key[-12:] not in text, name  # nor its tail


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as answer:
        return str(answer.read().decode())
