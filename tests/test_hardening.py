"""Hardening, read as an attacker on the same machine or the same Redis would: the metrics
server listens on loopback unless told, its health check uses a connection of its own and
names no host; files in shared places are created 0600, never through a planted symlink, and
replaced atomically; a state dir of another user is refused; TLS checks cannot be turned off
by a URL alone; server-supplied ids never reach a URL unchecked; the HTML page carries a
Content-Security-Policy. Real processes, files, a second uid and a real redis-server."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import (
    ROOT,
    SandboxProcess,
    cli_env,
    read_results,
    run_against,
    run_argv,
    run_cli,
    write_jobs,
)
from tests.redis_server import RedisServer, free_port
from tests.test_metrics import scrape
from worker.sandbox import Sandbox


def listening_address(port: int) -> str:
    """The local address a TCP socket listens on `port`, from /proc/net/tcp (hex)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:
                return address
    raise AssertionError(f"nothing listens on {port}")


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.parametrize(("host", "expected"), [(None, "0100007F"), ("0.0.0.0", "00000000")])
def test_the_metrics_server_listens_on_loopback_unless_told(
    redis_server: RedisServer,
    sandbox_process: Callable[..., SandboxProcess],
    tmp_path: Path,
    host: str | None,
    expected: str,
) -> None:
    """It bound 0.0.0.0 with no way to change it: 127.0.0.1 by default, --metrics-host for a
    scrape from elsewhere. A flood of /healthz asks Redis on one connection of its own, and
    an unavailable Redis is said without its address."""
    sb = sandbox_process("--delete-limit", "unlimited")
    port = free_port()
    argv = run_argv(redis_server.url, sb, "--metrics-port", str(port), "--results",
                    str(tmp_path / "r.jsonl"), "--log-format", "json")  # fmt: skip
    if host is not None:
        argv += ["--metrics-host", host]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=ROOT, env=cli_env(XQUIK_API_KEY=sb.api_key))  # fmt: skip
    try:
        wait_for(lambda: scrape(port, "/healthz")[0] == 200)
        assert listening_address(port) == expected
        import redis

        client = redis.Redis.from_url(redis_server.url)
        before = int(client.info("clients")["connected_clients"])
        with ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(lambda _: scrape(port, "/healthz")[0], range(200)))
        assert set(codes) == {200}
        assert int(client.info("clients")["connected_clients"]) <= before + 1
        client.close()
        redis_server.stop()
        code, body = scrape(port, "/healthz")
        assert code == 503
        assert json.loads(body) == {"ok": False, "redis": "unavailable"}
        assert str(redis_server.port) not in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_new_files_are_private_and_a_symlink_is_never_followed(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """The result log, `plan --out`, `report --html`, the metrics textfile and the
    sandbox's key files are created 0600; a symlinked result log is refused (it appended to
    its victim), and a file written whole replaces a planted link instead of writing
    through it."""
    sb = sandbox_process("--delete-limit", "unlimited", "--tenants", "1", "--keys-out",
                         str(tmp_path / "keys"))  # fmt: skip
    env = cli_env(XQUIK_API_KEY=sb.api_key)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    results = tmp_path / "r.jsonl"
    common = ["--state-dir", "none", "--metrics-textfile", str(tmp_path / "m.prom")]
    done = run_cli("run", str(jobs), "--base-url", sb.base_url, "--results", str(results),
                   *common, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for path in (results, tmp_path / "m.prom", *(tmp_path / "keys").iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    linked = tmp_path / "linked.jsonl"
    linked.symlink_to(victim)
    done = run_cli("run", str(jobs), "--base-url", sb.base_url, "--results", str(linked),
                   "--state-dir", "none", env=env)  # fmt: skip
    assert done.returncode == 2
    assert "symbolic link" in done.stderr
    for target, argv in (
        ("plan.jsonl", ["plan", "--all", "--base-url", sb.base_url, "--out"]),
        ("page.html", ["report", str(results), "--html"]),
        ("m2.prom", ["run", str(jobs), "--base-url", sb.base_url, "--results",
                     str(tmp_path / "r2.jsonl"), "--state-dir", "none", "--fresh",
                     "--metrics-textfile"]),
    ):  # fmt: skip
        planted = tmp_path / target
        planted.symlink_to(victim)
        done = run_cli(*argv, str(planted), env=env)
        assert done.returncode in (0, 1), done.stderr
        assert victim.read_text() == "precious\n"
        assert not planted.is_symlink()
        assert stat.S_IMODE(planted.stat().st_mode) == 0o600


async def test_a_planted_probe_link_in_the_state_dir_truncates_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A `.probe-<pid>` symlink planted in --state-dir truncated its target: the probe's
    name can no longer be guessed, the state files are created 0600 and never followed."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (state / f".probe-{os.getpid()}").symlink_to(victim)
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    summary = await run_against(sandbox, jobs, tmp_path, state_dir=state, rate="15/60s")
    assert summary.exit_code == 0
    assert victim.read_text() == "precious\n"
    files = [p for p in state.iterdir() if not p.name.startswith(".probe-")]
    assert files
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)


@pytest.mark.parametrize(("mode", "owner", "refused"), [
    (0o777, None, True), (0o1777, None, False), (0o700, "nobody", True), (0o700, None, False),
])  # fmt: skip
def test_a_state_dir_others_can_write_or_own_is_refused(
    tmp_path: Path, mode: int, owner: str | None, refused: bool
) -> None:
    """A state dir owned by another user, or writable by others without the sticky bit:
    exit 2 naming it, nothing sent. /tmp-like (sticky) and one's own are fine."""
    import pwd

    if os.geteuid() != 0 and owner is not None:
        pytest.skip("changing a directory's owner needs root")  # CI runs as root
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, mode)
    if owner is not None:
        os.chown(state, pwd.getpwnam(owner).pw_uid, -1)
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    done = run_cli("run", str(jobs), "--sandbox", "--state-dir", str(state), "--results",
                   str(tmp_path / "r.jsonl"))  # fmt: skip
    if refused:
        assert done.returncode == 2, done.stderr
        assert str(state) in done.stderr
    else:
        assert done.returncode == 0, done.stderr


def test_a_url_cannot_turn_redis_tls_checks_off_alone(tmp_path: Path) -> None:
    """`rediss://…?ssl_cert_reqs=none` would let whoever answers in Redis's place feed the
    queue: refused (exit 2) unless --insecure-redis-tls says so."""
    url = f"rediss://127.0.0.1:{free_port()}/0?ssl_cert_reqs=none"
    refused = run_cli("run", url, "--sandbox", "--drain")
    assert refused.returncode == 2
    assert "--insecure-redis-tls" in refused.stderr
    status = run_cli("queue", "status", "--redis", url)
    assert status.returncode == 2
    assert "--insecure-redis-tls" in status.stderr
    allowed = run_cli("queue", "status", "--redis", url, "--insecure-redis-tls",
                      "--redis-connect-timeout", "1")  # fmt: skip
    assert allowed.returncode == 2  # now it tries, and nobody answers
    assert "unreachable" in allowed.stderr


def test_a_redis_password_in_the_arguments_is_warned_and_masked(
    tmp_path: Path, sandbox_process: Callable[..., SandboxProcess]
) -> None:
    """A password in SOURCE or --budget shows in `ps`: the run warns and points to the
    environment or --redis-url-file; a password holding `@` is masked whole."""
    directory = tmp_path / "redis"
    directory.mkdir()
    password = "p@ss:w0rd-long"
    server = RedisServer(directory, password=password)
    server.start()
    try:
        sb = sandbox_process("--delete-limit", "unlimited")
        url = f"redis://:{password}@127.0.0.1:{server.port}/0"
        jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
        done = run_cli("run", str(jobs), "--base-url", sb.base_url, "--budget", url,
                       "--results", str(tmp_path / "r.jsonl"), "--log-format", "json",
                       env=cli_env(XQUIK_API_KEY=sb.api_key))  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "secret_in_arguments" in done.stderr
        assert "ss:w0rd" not in done.stderr
        quiet = run_cli("run", str(jobs), "--base-url", sb.base_url, "--fresh",
                        "--results", str(tmp_path / "q.jsonl"), "--log-format", "json",
                        env=cli_env(XQUIK_API_KEY=sb.api_key, XQUIK_BUDGET=url))  # fmt: skip
        assert quiet.returncode == 0, quiet.stderr
        assert "secret_in_arguments" not in quiet.stderr
    finally:
        server.stop()


def test_pythons_own_logging_goes_through_the_mask() -> None:
    """asyncio's and libraries' log records (a traceback that holds a key) reach stderr
    masked and in the run's format, once the command line owns the process."""
    import worker.logs
    from worker.redact import register

    key = "xq_" + "5e" * 32
    register(key)
    out = io.StringIO()
    worker.logs.route_stdlib = True
    try:
        worker.logs.configure("json", stream=out)
        logging.getLogger("asyncio").error("Task exception was never retrieved: %s", key)
    finally:
        worker.logs.route_stdlib = False
        for handler in list(logging.getLogger().handlers):
            if isinstance(handler, worker.logs.ToStructlog):
                logging.getLogger().removeHandler(handler)
        logging.captureWarnings(False)
    [line] = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["logger"] == "asyncio"
    assert key not in line
    assert "[REDACTED]" in event["message"]


async def test_a_servers_monitor_id_never_reaches_a_url_unchecked(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A listing that gives a monitor id that is no id (`../x/1`) gets a `failed` record
    (invalid_server_id), and no request is sent for it."""
    store = sandbox.state.store
    monitor = store.add_monitor("user1", store.accounts["1"]["xUserId"])
    del store.monitors[monitor["id"]]
    monitor["id"] = "../x/1"
    store.monitors["../x/1"] = monitor
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    summary = await run_against(sandbox, jobs, tmp_path, delete_monitors=True)
    assert summary.exit_code == 1
    records = read_results(tmp_path / "results.jsonl")
    [record] = [r for r in records if r["op"] == "delete_monitor" and r["outcome"] == "failed"]
    assert record["error"].startswith("invalid_server_id")
    assert not any("x/1" in path for _, _, path, _ in sandbox.state.stats.log)


def test_the_html_page_allows_only_its_own_style_and_script(tmp_path: Path) -> None:
    log = tmp_path / "r.jsonl"
    record = {"ts": "2026-11-28T00:00:00Z", "run_id": "r", "account_id": "1"}
    record.update(op="disconnect", outcome="failed", error="x")
    log.write_text(json.dumps(record) + "\n")
    assert run_cli("report", str(log), "--html", str(tmp_path / "p.html")).returncode == 1
    page = (tmp_path / "p.html").read_text()
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\';' in page
    assert "script-src 'sha256-" in page


def test_a_pushgateway_over_plain_http_must_be_loopback(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    done = run_cli("run", str(jobs), "--sandbox", "--pushgateway", "http://push.example.com")
    assert done.returncode == 2
    assert "https" in done.stderr


def test_a_base_url_other_than_the_apis_is_said_once(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Where the key goes is logged once at start: the origin only, never a path or query."""
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    done = run_cli("run", str(jobs), "--base-url", sb.base_url, "--log-format", "json",
                   "--results", str(tmp_path / "r.jsonl"), "--state-dir", "none",
                   env=cli_env(XQUIK_API_KEY=sb.api_key))  # fmt: skip
    [event] = [json.loads(x) for x in done.stderr.splitlines() if '"api_base_url"' in x]
    assert event["origin"] == sb.base_url.removesuffix("/api/v1")
