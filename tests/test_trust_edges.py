"""Trust edges, round three: inherited cooldowns capped, an interrupted enqueue that says what
it did and never doubles the stream, a concurrency with a ceiling and a grace that holds,
SIGHUP, terminal escapes, a Redis at maxmemory, reports over odd records, configuration
mistakes as exit 2, the notify URL kept out of `ps`. Real processes, a real redis-server."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    ROOT,
    SandboxProcess,
    cli_env,
    read_results,
    run_argv,
    run_cli,
    write_jobs,
)
from tests.redis_server import RedisServer
from tests.test_crash import wait_for_records
from tests.test_notify import Receiver
from worker.api.classify import retry_after_seconds
from worker.api.keys import fingerprint
from worker.budget.make import make_budget
from worker.budget.rate import Rate


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in stderr.splitlines()
        if line.startswith("{") and f'"event": "{name}"' in line
    ]


def state_file(tmp_path: Path, sb: SandboxProcess, body: str) -> Path:
    """The DELETE budget's state file of `sb`'s key, holding `body`."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    path = state / f"budget-{fingerprint(sb.api_key, sb.base_url)}-delete.json"
    path.write_text(body + "\n")
    return path


@pytest.mark.parametrize(
    ("body", "warned"),
    [
        ("{day_ahead}", False),
        ('{"cooldown_until": Infinity}', True),
        ('{"cooldown_until": 1e300}', True),
        ('{"learned": {"limit": 1e999, "at": {now}, "cap": 5}}', True),
    ],
)
def test_an_inherited_cooldown_or_limit_never_outlasts_this_runs_bounds(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path, body: str, warned: bool
) -> None:
    """A state file whose cooldown ends a day ahead (a clock that ran ahead), or holds
    Infinity, 1e300, or a learned limit of 1e999: the run with --max-cooldown 2 waits at
    most 2 s, never a day, never for ever, never exit 70; the nonsense is named in a
    warning and the log stays JSON."""
    sb = sandbox_process("--delete-limit", "unlimited")
    now = time.time()
    body = body.replace("{day_ahead}", json.dumps({"cooldown_until": now + 86400}))
    state_file(tmp_path, sb, body.replace("{now}", str(now)))
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    argv = run_argv(jobs, sb, "--state-dir", str(tmp_path / "state"), "--max-cooldown", "2")
    started = time.monotonic()
    done = subprocess.run(
        [*argv, "--log-format", "json", "--results", str(tmp_path / "r.jsonl")],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env=cli_env(XQUIK_API_KEY=sb.api_key),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 20
    assert sorted(sb.stats()["deleted_accounts"]) == ["1", "2"]
    for line in done.stderr.splitlines():
        json.loads(line, parse_constant=_no_constant)  # Infinity never reaches the log
    assert bool(events(done.stderr, "state_value_ignored")) == warned


def _no_constant(name: str) -> float:
    raise AssertionError(f"{name} in the log: not JSON")


def test_a_cooldown_in_redis_is_cut_to_this_workers_max_cooldown(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """The shared budget's cooldown set a day ahead (by a worker with a lying Retry-After):
    a worker with --max-cooldown 2 cuts it to 2 s from now, and its jobs go through."""
    import redis

    sb = sandbox_process("--delete-limit", "unlimited")
    key = f"xquik:budget:{fingerprint(sb.api_key, sb.base_url)}:delete:cooldown"
    client = redis.Redis.from_url(redis_server.url)
    now_s, now_us = client.time()
    client.set(key, str(now_s * 1000 + now_us // 1000 + 86_400_000))
    client.close()
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    done = subprocess.run(
        run_argv(jobs, sb, "--budget", redis_server.url, "--max-cooldown", "2", "--results",
                 str(tmp_path / "r.jsonl")),
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env=cli_env(XQUIK_API_KEY=sb.api_key),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(sb.stats()["deleted_accounts"]) == ["1", "2"]


def test_relearn_is_at_least_one_window_and_a_negative_retry_after_says_nothing() -> None:
    """--relearn 0.0001 tried the ceiling again at once after every 429 (28 x 429 for 40
    DELETEs): it is at least one window. A negative Retry-After (75 x 429 for 30 DELETEs at
    a fixed rate) is as if absent: the budget waits its window."""
    budget = make_budget(
        Rate(10, 60.0, auto=True), tier="delete", fingerprint="f", margin=0, max_cooldown=900,
        relearn=0.0001,
    )  # fmt: skip
    learner = getattr(budget, "learner", None)
    assert learner is not None
    assert learner.relearn == 60.0
    assert retry_after_seconds({"Retry-After": "-5"}, None) is None
    assert retry_after_seconds({}, {"retryAfter": -3}) is None
    assert retry_after_seconds({"Retry-After": "-5"}, {"retryAfter": 7}) == 7
    assert retry_after_seconds({"Retry-After": "0"}, None) == 0


def test_an_interrupted_enqueue_says_what_is_on_the_stream_and_a_rerun_adds_each_job_once(
    tmp_path: Path,
) -> None:
    """Redis killed while 20,000 jobs go onto the stream, and not back within
    --redis-connect-timeout: exit 2 saying how many jobs are surely on it (at most what the
    stream holds); run again on the restarted Redis, the same
    file adds the rest and none twice: exactly 20,000 entries, one per line."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, persist=True)
    server.start()
    try:
        jobs = write_jobs(tmp_path / "jobs.txt", [f"acct{i}" for i in range(20_000)])
        argv = [sys.executable, "-m", "worker", "enqueue", str(jobs), "--redis", server.url]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env=cli_env(),
        )  # fmt: skip
        import redis

        client = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and client.xlen("xquik:disconnect") < 2_000:
            time.sleep(0.01)
        client.close()
        server.stop()
        _, err = proc.communicate(timeout=60)
        if proc.returncode == 0:  # it finished first on a fast day: nothing to interrupt
            pytest.skip("the enqueue finished before Redis could be stopped")
        assert proc.returncode == 2, err
        said = int(err.split(" jobs of this file surely on xquik:disconnect")[0].split()[-1])
        server.start()
        client = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 30
        while True:  # the restarted server loads its data before it answers
            try:
                length = client.xlen("xquik:disconnect")
                break
            except redis.exceptions.BusyLoadingError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert said <= length
        again = run_cli("enqueue", str(jobs), "--redis", server.url)
        assert again.returncode == 0, again.stderr
        added = int(again.stdout.split("enqueued ")[1].split()[0])
        there = int(again.stdout.split("; ")[1].split()[0])
        assert added + there == 20_000
        assert there >= said
        entries: Any = client.xrange("xquik:disconnect")
        ids = [fields[b"account_id"] for _, fields in entries]
        assert len(ids) == 20_000
        assert len(set(ids)) == 20_000
        third = run_cli("enqueue", str(jobs), "--redis", server.url)
        assert "enqueued 0 jobs to xquik:disconnect; 20000 were there" in third.stdout
        assert client.xlen("xquik:disconnect") == 20_000
        client.close()
    finally:
        server.stop()


def test_concurrency_has_a_ceiling_and_the_grace_holds_at_it(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """--concurrency 2000000 used 9.9 GB and took 87 s to stop: above 1024 it is refused
    (exit 2 naming the flag). At 1024 in flight against a server that answers in 60 s,
    SIGTERM with --grace 2 ends the run within the grace and a few seconds."""
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 3000)])
    refused = run_cli("run", str(jobs), "--sandbox", "--concurrency", "2000000")
    assert refused.returncode == 2
    assert "--concurrency" in refused.stderr
    assert "1,024" in refused.stderr
    sb = sandbox_process("--accounts", "3000", "--delete-limit", "unlimited", "--slow", "1",
                         "--slow-seconds", "60")  # fmt: skip
    argv = run_argv(jobs, sb, "--concurrency", "1024", "--grace", "2", "--rate", "unlimited",
                    "--state-dir", "none", "--results", str(tmp_path / "r.jsonl"),
                    "--read-rate", "unlimited", "--no-precheck")  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        env=cli_env(XQUIK_API_KEY=sb.api_key),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sb.stats()["received"] < 1000:
        time.sleep(0.2)
    assert sb.stats()["received"] >= 1000
    stopped = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    assert time.monotonic() - stopped < 2 + 8


def test_sighup_stops_the_run_as_sigterm_does_with_its_summary_and_notice(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """A closed terminal or SSH session (SIGHUP) killed the run at once (exit 129, no
    summary, no --notify): it stops as for SIGTERM, records what finished, summarises,
    notifies, exits 130, and says jobs not read yet remain."""
    receiver = Receiver()
    try:
        sb = sandbox_process("--accounts", "200", "--delete-limit", "unlimited", "--slow", "1",
                             "--slow-seconds", "0.2")  # fmt: skip
        jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 201)])
        results = tmp_path / "r.jsonl"
        argv = run_argv(jobs, sb, "--rate", "unlimited", "--state-dir", "none", "--results",
                        str(results), "--log-format", "json", "--concurrency", "2")  # fmt: skip
        env = cli_env(XQUIK_API_KEY=sb.api_key, XQUIK_NOTIFY=receiver.url)
        with (tmp_path / "err.log").open("w") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=env)
            wait_for_records(results, 3)
            proc.send_signal(signal.SIGHUP)
            assert proc.wait(timeout=30) == 130
        log = (tmp_path / "err.log").read_text()
        [summary] = events(log, "run_summary")
        assert summary["stopped"] == "signal"
        assert summary["unread_jobs_remain"] is True
        assert len(receiver.posts) == 1
        assert "jobs not read yet remain" in receiver.posts[0]["text"]
        assert len(read_results(results)) == summary["records"]
    finally:
        receiver.close()


ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m"


def test_a_servers_terminal_escapes_never_reach_the_terminal(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """A window-title change and a screen clear in a server's text: `report` and `plan
    --format table` print them as visible escapes; `report --json` keeps the text exact."""
    log = tmp_path / "r.jsonl"
    record = {
        "ts": "2026-11-28T17:00:00.000Z", "run_id": "r", "source": "j:1", "account_id": "1",
        "op": "disconnect", "outcome": "failed", "error": f"forbidden: {ESCAPES}",
    }  # fmt: skip
    log.write_text(json.dumps(record) + "\n")
    text = run_cli("report", str(log))
    assert "\x1b" not in text.stdout
    assert "\x07" not in text.stdout
    assert "\\x1b]0;pwned" in text.stdout
    exact = json.loads(run_cli("report", str(log), "--json").stdout)
    assert ESCAPES in next(iter(exact["failed_outstanding"]))
    sb = sandbox_process("--accounts", "2")
    import urllib.request

    # The sandbox's store, through its control surface: a connected account whose listed
    # name holds the escapes (the API's text is the server's).
    urllib.request.urlopen(
        urllib.request.Request(
            f"{sb.url}/_sandbox/accounts",
            data=json.dumps({"id": "9", "xUsername": f"evil{ESCAPES}"}).encode(),
            method="POST",
        ),
        timeout=10,
    ).close()
    table = run_cli("plan", "--all", "--format", "table", "--base-url", sb.base_url,
                    env=cli_env(XQUIK_API_KEY=sb.api_key, COLUMNS="200"))  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "evil" in table.stdout
    assert "\x1b]" not in table.stdout
    assert "\x1b[2J" not in table.stdout


def test_report_reads_a_time_without_a_zone_and_lists_year_9999(tmp_path: Path) -> None:
    """`report` (text, --json, --html) exited 70 on a record whose ts had no zone or was in
    year 9999, on every rerun: the first is read as UTC, the second listed unreadable."""
    log = tmp_path / "r.jsonl"
    base = {"run_id": "r", "source": "j:1", "op": "disconnect", "outcome": "disconnected",
            "http_status": 200}  # fmt: skip
    log.write_text(
        json.dumps({**base, "ts": "2026-11-28T17:00:00", "account_id": "1"})
        + "\n"
        + json.dumps({**base, "ts": "9999-12-31T23:59:59.999Z", "account_id": "2"})
        + "\n"
    )
    for args in ([], ["--json"], ["--html", str(tmp_path / "r.html")]):
        done = run_cli("report", str(log), *args)
        assert done.returncode == 0, done.stderr
    as_json = json.loads(run_cli("report", str(log), "--json").stdout)
    assert as_json["accounts_done"] == 1
    assert as_json["unreadable_lines"] == [2]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["run", "redis://[::1"], "SOURCE"),
        (["run", "{jobs}", "--budget", "redis://[::1"], "--budget"),
        (["run", "{jobs}", "--notify", "https://[::1/hook"], "--notify"),
        (["run", "{jobs}", "--budget", "redis://h:99999/0"], "--budget"),
    ],
)
def test_configuration_mistakes_are_exit_2_naming_the_flag(
    tmp_path: Path, args: list[str], names: str
) -> None:
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    argv = [a.replace("{jobs}", str(jobs)) for a in args]
    done = run_cli(*argv, "--sandbox", timeout=30)
    assert done.returncode == 2, done.stderr
    assert names in done.stderr
    assert "internal error" not in done.stderr


def test_a_stream_name_that_holds_another_type_is_exit_2_naming_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.set("taken", "a string")
    client.close()
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    url = redis_server.url
    for argv in (
        ["run", url, "--sandbox", "--stream", "taken", "--drain"],
        ["queue", "status", "--redis", url, "--stream", "taken"],
        ["dead", "list", "--redis", url, "--stream", "taken:x"],
        ["enqueue", str(jobs), "--redis", url, "--stream", "taken"],
    ):
        if argv[0] == "dead":
            c = redis.Redis.from_url(url)
            c.set("taken:x:dead", "a string")
            c.close()
        done = run_cli(*argv, timeout=60)
        assert done.returncode == 2, (argv, done.stderr)
        assert "another Redis type" in done.stderr or "WRONGTYPE" in done.stderr
        assert "internal error" not in done.stderr


def test_an_unreachable_redis_fails_fast_in_one_line(tmp_path: Path) -> None:
    """enqueue and queue status to a Redis nobody listens on: a few seconds and one line,
    not 32 s and 10 warnings (enqueue with the default --redis-connect-timeout, 5 s; queue
    status with 1 s)."""
    from tests.redis_server import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    status = ["queue", "status", "--redis", url, "--redis-connect-timeout", "1"]
    for argv, most in ((["enqueue", str(jobs), "--redis", url], 12), (status, 8)):
        started = time.monotonic()
        done = run_cli(*argv, timeout=60)
        assert done.returncode == 2
        assert time.monotonic() - started < most
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "unreachable" in done.stderr


def test_the_notify_url_from_a_file_or_the_environment_never_shows_in_ps(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """--notify-file (or XQUIK_NOTIFY) keeps the webhook URL out of the arguments; a bad
    XQUIK_NOTIFY is named as the variable, not as --notify."""
    receiver = Receiver()
    try:
        sb = sandbox_process("--delete-limit", "unlimited")
        jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
        hook = tmp_path / "hook"
        hook.write_text(receiver.url + "\n")
        argv = run_argv(jobs, sb, "--notify-file", str(hook), "--state-dir", "none")
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
            env=cli_env(XQUIK_API_KEY=sb.api_key),
        )  # fmt: skip
        cmdline = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b"worker" not in cmdline:  # exec'd, not forked
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"--notify-file" in cmdline
        assert receiver.url.encode() not in cmdline
        assert proc.wait(timeout=60) == 0
        assert len(receiver.posts) == 1
        bad = run_cli("run", str(jobs), "--sandbox", env=cli_env(XQUIK_NOTIFY="ftp://x/y"))
        assert bad.returncode == 2
        assert "XQUIK_NOTIFY" in bad.stderr
    finally:
        receiver.close()


def test_a_huge_key_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A 1 GiB key file cost 1.09 GB to be refused: at most a key's worth is read."""
    huge = tmp_path / "key"
    with huge.open("wb") as f:
        f.truncate(1 << 30)  # sparse: no disk spent
    probe = (
        "import re\n"
        "from worker.cli import main\n"
        f"code = main(['run', {str(tmp_path / 'j.txt')!r}, '--api-key-file', {str(huge)!r}])\n"
        # VmHWM: this process's own peak (ru_maxrss would carry a large parent's over exec)
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]\n"
        "print(code, int(hwm) // 1024)\n"
    )
    write_jobs(tmp_path / "j.txt", ["1"])
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=ROOT, env=cli_env(), timeout=60)  # fmt: skip
    code, rss_mb = (int(x) for x in done.stdout.split())
    assert code == 2
    assert rss_mb < 200
    assert "--api-key-file" in done.stderr


def test_dead_list_into_a_closed_pipe_blames_no_redis(redis_server: RedisServer) -> None:
    """`dead list | head -1` said "Redis unreachable: Broken pipe": stdout closed is not
    Redis, and nothing is said at all."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    for i in range(3000):
        client.xadd("xquik:disconnect:dead", {"account_id": str(i), "reason": "forbidden: x"})
    client.close()
    done = subprocess.run(
        ["bash", "-c", f"'{sys.executable}' -m worker dead list --redis '{redis_server.url}'"
                       " | head -1"],
        capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert done.stdout.count("\n") == 1
    assert "Redis" not in done.stderr
    assert "Traceback" not in done.stderr


def test_a_redis_at_maxmemory_holds_the_jobs_and_burns_none(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Redis full (maxmemory, noeviction) turned every job into `failed: internal_error`:
    the budget waits as for an outage, says so, and once Redis has room every job is done."""
    import redis

    sb = sandbox_process("--delete-limit", "unlimited")
    client = redis.Redis.from_url(redis_server.url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")  # every write refused: "OOM command not allowed"
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "3"])
    results = tmp_path / "r.jsonl"
    argv = run_argv(jobs, sb, "--budget", redis_server.url, "--results", str(results),
                    "--log-format", "json")  # fmt: skip
    with (tmp_path / "err.log").open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
                                env=cli_env(XQUIK_API_KEY=sb.api_key))  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "OOM" not in (tmp_path / "err.log").read_text():
            time.sleep(0.1)
        assert "OOM" in (tmp_path / "err.log").read_text()
        assert not results.exists() or not results.read_text()
        client.config_set("maxmemory", "0")
        assert proc.wait(timeout=60) == 0
    client.close()
    assert {r["outcome"] for r in read_results(results)} == {"disconnected"}
    assert math.isclose(len(read_results(results)), 3)
