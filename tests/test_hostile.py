"""Tried as a hostile or careless user would: servers that are not our sandbox, inputs nobody
planned for, flags that go wrong. Real processes, real files, servers on loopback."""

from __future__ import annotations

import contextlib
import json
import resource
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from tests.conftest import (
    ROOT,
    SandboxFactory,
    cli_env,
    read_results,
    run_argv,
    run_cli,
    write_jobs,
)
from tests.hostile_servers import Server, answer, flood, redirect, trickle
from worker.budget import SlidingWindowBudget, StateFile
from worker.sandbox import Sandbox

KEY = "xq_" + "ab12" * 16


async def run_worker(
    jobs: Path, base: str, tmp_path: Path, *args: str, key: str = KEY, timeout: float = 60
) -> tuple[int, str, str]:
    argv = [
        sys.executable, "-m", "worker", "run", str(jobs), "--base-url", f"{base}/api/v1",
        "--results", str(tmp_path / "results.jsonl"), "--state-dir", str(tmp_path / "state"),
        *args,
    ]  # fmt: skip
    with anyio.fail_after(timeout):
        done = await anyio.run_process(argv, env=cli_env(XQUIK_API_KEY=key), cwd=ROOT, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def no_key_in(*texts: str) -> None:
    for text in texts:
        assert KEY not in text
        assert KEY[3:].upper() not in text.upper()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("same_port", [True, False])
async def test_a_redirect_is_never_followed_and_never_a_success(
    tmp_path: Path, status: int, same_port: bool
) -> None:
    """A 3xx to another port (or another path of the same server): the key goes nowhere else,
    nothing else is asked, and the job is failed with where it pointed (no query, no key)."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    async with Server(answer(200, {"success": True})) as elsewhere:
        target = lambda: f"{elsewhere.url}/api/v1/x/accounts/1?token=secret"  # noqa: E731
        async with Server(redirect(status, target)) as origin:
            if same_port:
                origin.handler = redirect(status, lambda: "/somewhere/else?token=secret")
            code, out, err = await run_worker(
                jobs, origin.url, tmp_path, "--rate", "unlimited", "--no-precheck"
            )
    assert code == 1
    assert elsewhere.seen == []
    assert [m for m, _, _ in origin.seen] == ["DELETE", "DELETE"]
    records = read_results(tmp_path / "results.jsonl")
    assert {r["outcome"] for r in records} == {"failed"}
    where = origin.url if same_port else elsewhere.url
    expected = f"unexpected_redirect: {status} to {where}"
    assert {r["error"] for r in records} == {expected}
    assert all(r["attempts"] == 1 for r in records)
    no_key_in(out, err, (tmp_path / "results.jsonl").read_text())
    assert "secret" not in (tmp_path / "results.jsonl").read_text()


async def test_a_trickling_answer_is_timed_out_as_a_whole(tmp_path: Path) -> None:
    """One byte every 0.2 s never ends an answer: --timeout 1 bounds the whole attempt, so
    the run ends (failed, retries exhausted) instead of hanging for ever."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "3"])
    async with Server(trickle(0.2)) as slow:
        started = time.monotonic()
        code, _, _ = await run_worker(
            jobs, slow.url, tmp_path, "--timeout", "1", "--max-attempts", "2", "--rate",
            "unlimited", "--concurrency", "3", "--no-precheck",
        )  # fmt: skip
        took = time.monotonic() - started
    assert code == 1
    records = read_results(tmp_path / "results.jsonl")
    assert len(records) == 3
    assert all("timeout" in r["error"] for r in records)
    assert took < 30  # 2 attempts of 1 s and a backoff each; a hang would hit the 60 s cap


async def test_a_flood_of_a_body_is_read_only_up_to_a_bound(tmp_path: Path) -> None:
    """A 100 MB answer to a DELETE: the worker reads a bounded prefix and its memory stays
    small (the 200 itself still counts: the DELETE was answered with success)."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    async with Server(flood(100)) as big:
        code, _, err = await run_worker(
            jobs, big.url, tmp_path, "--rate", "unlimited", "--log-format", "json", "--no-precheck"
        )
    assert code == 0, err
    assert [r["outcome"] for r in read_results(tmp_path / "results.jsonl")] == ["disconnected"] * 2


async def test_a_certificate_that_cannot_be_verified_stops_the_run(tmp_path: Path) -> None:
    """Self-signed https: one attempt, no retries, the run stops (exit 2) naming the host, and
    the failed handshakes do not stay counted in the persisted budget."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 11)])
    async with Server(answer(200, {"success": True}), ssl_context=context) as tls:
        code, _, err = await run_worker(
            jobs, tls.url, tmp_path, "--rate", "15/60s", "--concurrency", "2",
            "--log-format", "json",
        )  # fmt: skip
    assert code == 2
    assert tls.seen == []  # no request ever reached it
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    [stop] = [e for e in events if e["event"] == "tls_verification_failed"]
    assert f"127.0.0.1:{tls.port}" in stop["error"]
    records = read_results(tmp_path / "results.jsonl")
    assert 1 <= len(records) <= 2  # at most what was in flight
    assert all(r["error"].startswith("tls_verification_failed") for r in records)
    states = list((tmp_path / "state").glob("budget-*.json"))
    assert states  # the precheck's listing (read tier) tried, at least
    for state in states:  # every slot taken was given back: none is held
        fingerprint, tier = state.stem.removeprefix("budget-").rsplit("-", 1)
        held = StateFile(state.parent, fingerprint, tier).load_into(SlidingWindowBudget(1, 60.0))
        assert held == 0, state.read_text()


async def test_unlimited_lifts_our_limit_never_the_servers(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """--rate unlimited against a server at 30/1s: after the first burst of 429s the key waits
    out each Retry-After, so every job is done and 429s come only at each window's edge."""
    sandbox: Sandbox = await sandbox_factory(accounts=120, delete_limit=(30, 1.0))
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 121)])
    code, _, err = await run_worker(
        jobs, sandbox.url, tmp_path, "--rate", "unlimited", "--concurrency", "4",
        key=sandbox.api_key,
    )  # fmt: skip
    assert code == 0, err
    assert sandbox.state.store.accounts == {}
    # At most what was in flight when each window filled: 4 windows, 4 workers.
    assert sandbox.state.stats.rate_limited <= 4 * 4


def test_a_utf16_jobs_file_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """Exit 2 naming the encoding problem; no sandbox, no request."""
    jobs = tmp_path / "jobs.csv"
    jobs.write_bytes("account_id\n1\n".encode("utf-16"))
    done = run_cli("run", str(jobs), "--sandbox")
    assert done.returncode == 2
    assert "not UTF-8 text" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "jobs.csv.results.jsonl").exists()


def test_a_stray_carriage_return_in_a_csv_finishes_with_one_record_per_line(tmp_path: Path) -> None:
    """The 0.1 crash, end to end: 14 rows (the sandbox's burst), row 8 with a \r inside,
    every row recorded once, the bad one invalid and named."""
    rows = [f"{i},user{i}" for i in range(1, 15)]
    rows[7] = "8,\ruser8"
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("account_id,username\n" + "\n".join(rows) + "\n")
    done = run_cli("run", str(jobs), "--sandbox", "--log-format", "json")
    assert done.returncode == 1  # the invalid line
    records = read_results(tmp_path / "jobs.csv.results.jsonl")
    assert sorted(int(r["source"].rsplit(":", 1)[1]) for r in records) == list(range(2, 16))
    [bad] = [r for r in records if r["outcome"] == "invalid"]
    assert bad["source"].endswith(":9")
    assert {r["outcome"] for r in records} == {"invalid", "disconnected"}
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [("--api-key", KEY), (f"--api-key={KEY}",), ("--api-key-fil", KEY), ("--api",)],
)
def test_the_key_is_never_a_flag_and_never_echoed(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A key typed as a flag (or an abbreviation of one) exits 2 without echoing it."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    done = run_cli("run", str(jobs), *args)
    assert done.returncode == 2
    no_key_in(done.stdout, done.stderr)
    if args[0].startswith("--api-key") and args[0] != "--api-key-fil":
        assert "the key is never a flag" in done.stderr


def test_an_environment_value_names_its_variable(tmp_path: Path) -> None:
    """XQUIK_RATE=abc: the error names XQUIK_RATE (environment), not --rate."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    done = run_cli("run", str(jobs), "--sandbox", env=cli_env(XQUIK_RATE="abc"))
    assert done.returncode == 2
    assert "XQUIK_RATE (environment): 'abc' is not N/PERIOD" in done.stderr
    assert "argument --rate" not in done.stderr


def test_the_api_key_can_come_from_stdin(sandbox_process: Any, tmp_path: Path) -> None:
    """--api-key-file - reads the key from stdin (as docker login --password-stdin does), and
    is refused when stdin is the jobs source too."""
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    argv = ("run", str(jobs), "--base-url", sb.base_url, "--api-key-file", "-")
    done = run_cli(*argv, "--state-dir", str(tmp_path), stdin=sb.api_key + "\n")
    assert done.returncode == 0, done.stderr
    both = run_cli("run", "-", "--base-url", sb.base_url, "--api-key-file", "-", stdin="1\n")
    assert both.returncode == 2
    assert "stdin" in both.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:hunter2@example.com/api/v1", "http://***@example.com/api/v1"),
        ("ftp://user:hunter2@127.0.0.1/", "ftp://***@127.0.0.1/"),
        ("http://127.0.0.1:99999/api/v1", "port"),
    ],
)
def test_a_bad_base_url_is_refused_without_its_password(
    tmp_path: Path, url: str, shown: str
) -> None:
    """Exit 2, one line, userinfo masked; a bad port is a message, not a traceback."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    for command in (("run", str(jobs)), ("plan", "--all")):
        done = run_cli(*command, "--base-url", url, env=cli_env(XQUIK_API_KEY=KEY))
        assert done.returncode == 2
        assert "hunter2" not in done.stderr
        assert shown in done.stderr
        assert "Traceback" not in done.stderr


def deletes_by_account(sb: Any) -> Counter[str]:
    log = sb.requests()
    return Counter(path.rsplit("/", 1)[1] for method, path, _, _ in log if method == "DELETE")


def test_a_second_run_on_the_same_log_exits_2_at_once(sandbox_process: Any, tmp_path: Path) -> None:
    """Two runs on one result log (a cron run still going when the next starts): the second
    exits 2 naming the first's pid and sends nothing; every account is deleted once."""
    sb = sandbox_process("--accounts", "12", "--delete-limit", "unlimited", "--slow", "1",
                         "--slow-seconds", "1")  # fmt: skip
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 13)])
    env = cli_env(XQUIK_API_KEY=sb.api_key)
    argv = [*run_argv(jobs, sb, "--state-dir", str(tmp_path / "s"), "--concurrency", "2")]
    first = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 20
    while sb.stats()["received"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    before = sb.stats()["received"]
    second = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert first.poll() is None  # still running: the two overlapped
    assert second.returncode == 2, second.stderr
    assert f"in use by pid {first.pid}" in second.stderr
    first.communicate(timeout=60)
    assert first.returncode == 0
    assert deletes_by_account(sb) == Counter({str(i): 1 for i in range(1, 13)})
    assert sb.stats()["received"] >= before
    records = read_results(tmp_path / "jobs.txt.results.jsonl")
    assert len(records) == 12


def test_wait_lock_runs_after_the_holder(sandbox_process: Any, tmp_path: Path) -> None:
    """--wait-lock: the second run waits for the first, then skips everything it did."""
    sb = sandbox_process("--accounts", "6", "--delete-limit", "unlimited", "--slow", "1",
                         "--slow-seconds", "1")  # fmt: skip
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 7)])
    env = cli_env(XQUIK_API_KEY=sb.api_key)
    argv = run_argv(jobs, sb, "--state-dir", str(tmp_path / "s"), "--log-format", "json",
                    "--concurrency", "1")  # fmt: skip
    first = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while sb.stats()["received"] == 0:
        time.sleep(0.05)
    second = subprocess.run([*argv, "--wait-lock"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert first.wait(timeout=30) == 0
    assert second.returncode == 0
    assert '"waiting_for_lock"' in second.stderr
    assert '"skipping_done": 6' in second.stderr
    assert deletes_by_account(sb) == Counter({str(i): 1 for i in range(1, 7)})


def test_two_runs_with_two_logs_share_one_budget(sandbox_process: Any, tmp_path: Path) -> None:
    """A manual run beside a cron run on one key, different logs: together no 429 and never
    more than N DELETEs in any window, because they share the state file's window."""
    sb = sandbox_process("--accounts", "40", "--delete-limit", "10/2s")
    env = cli_env(XQUIK_API_KEY=sb.api_key)
    procs = []
    for name, ids in (("a", range(1, 21)), ("b", range(21, 41))):
        jobs = write_jobs(tmp_path / f"{name}.txt", [str(i) for i in ids])
        argv = run_argv(jobs, sb, "--state-dir", str(tmp_path / "shared"), "--rate", "10/2s",
                        "--rate-margin", "0.3")  # fmt: skip
        procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))  # fmt: skip
    assert [p.wait(timeout=90) for p in procs] == [0, 0]
    assert sb.stats()["rate_limited"] == 0
    assert sb.stats()["accounts"] == 0
    times = sorted(t for method, _, status, t in sb.requests() if method == "DELETE")
    assert len(times) == 40
    assert all(times[i + 10] - times[i] >= 2.0 for i in range(len(times) - 10))


@pytest.mark.parametrize(
    ("results", "says"),
    [
        ("{dir}", "is a directory"),
        ("/proc/version", "not a regular file"),
        ("/proc/no-such-dir/r.jsonl", "cannot be opened"),
        ("{jobs}", "is the jobs source itself"),
    ],
)
def test_an_unusable_result_log_exits_2_before_any_request(
    sandbox_process: Any, tmp_path: Path, results: str, says: str
) -> None:
    """Checked before the first request: exit 2 naming the path and why; 0 requests."""
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    path = results.format(dir=tmp_path, jobs=jobs)
    done = subprocess.run(
        run_argv(jobs, sb, "--results", path, "--state-dir", str(tmp_path / "s")),
        env=cli_env(XQUIK_API_KEY=sb.api_key), cwd=ROOT, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert sb.stats()["received"] == 0


def test_stdin_that_is_the_result_log_is_refused(sandbox_process: Any, tmp_path: Path) -> None:
    """`run - < results.jsonl` with stdin's default log: it would read its own appends."""
    sb = sandbox_process("--delete-limit", "unlimited")
    log = tmp_path / "results.jsonl"
    log.write_text('{"account_id": "1"}\n')
    with log.open("rb") as stdin:
        done = subprocess.run(
            run_argv("-", sb, "--state-dir", str(tmp_path / "s")), stdin=stdin,
            env=cli_env(XQUIK_API_KEY=sb.api_key), cwd=tmp_path, capture_output=True,
            text=True, timeout=30,
        )  # fmt: skip
    assert done.returncode == 2
    assert "is the jobs source itself" in done.stderr
    assert sb.stats()["received"] == 0


def test_an_unusable_state_dir_exits_2_and_none_opts_out(
    sandbox_process: Any, tmp_path: Path
) -> None:
    """A state dir under a file: exit 2 naming it, nothing sent; `none` runs and says so."""
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    (tmp_path / "file").write_text("")
    env = cli_env(XQUIK_API_KEY=sb.api_key)
    bad = subprocess.run(run_argv(jobs, sb, "--state-dir", str(tmp_path / "file" / "s")),
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert bad.returncode == 2
    assert "--state-dir" in bad.stderr
    assert sb.stats()["received"] == 0
    ok = subprocess.run(run_argv(jobs, sb, "--state-dir", "none", "--log-format", "json"),
                        env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert ok.returncode == 0
    assert ok.stderr.count('"budget_not_persisted"') == 1


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_mid_run_stops_with_exit_4_and_a_rerun_finishes(
    sandbox_process: Any, tmp_path: Path
) -> None:
    """The log stops taking writes after about 20 records (RLIMIT_FSIZE: writes past it fail
    as on a full disk): sending stops, exit 4 with results_write_failed; the rerun, with room
    again, ends with every account done exactly once (unrecorded ones come back
    already_gone)."""
    sb = sandbox_process("--accounts", "60", "--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 61)])
    results = tmp_path / "r.jsonl"
    argv = run_argv(jobs, sb, "--results", str(results), "--state-dir", "none",
                    "--log-format", "json", "--rate", "unlimited")  # fmt: skip
    env = cli_env(XQUIK_API_KEY=sb.api_key)
    # The size limit is per process: coverage's own data file would hit it too.
    limited = {k: v for k, v in env.items() if not k.startswith("COVERAGE_PROCESS")}
    full = subprocess.run(argv, env=limited, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          preexec_fn=_limit_file_size(20 * 300))  # fmt: skip
    assert full.returncode == 4, full.stderr[-2000:]
    assert '"results_write_failed"' in full.stderr
    assert "Traceback" not in full.stderr
    first = read_results_lenient(results)
    assert 0 < len(first) < 60
    again = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr[-2000:]
    records = read_results_lenient(results)
    done = Counter(
        r["account_id"] for r in records if r["outcome"] in {"disconnected", "already_gone"}
    )
    assert done == Counter({str(i): 1 for i in range(1, 61)})
    assert deletes_by_account(sb).most_common(1)[0][1] <= 2  # a lost record's one resend


def read_results_lenient(path: Path) -> list[dict[str, Any]]:
    """Whole records only (a torn line from the failed write is skipped, as resume does)."""
    out = []
    for line in path.read_text().split("\n"):
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


async def test_a_username_done_in_the_log_is_done_on_a_rerun(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """`,user3` (username only): the rerun skips it before any lookup, so a handle-based
    offboarding list comes back clean (exit 0, report clean), in any case and with @."""
    from tests.conftest import settings_for
    from worker.cli.report import main as report
    from worker.cli.run import run_async

    jobs = tmp_path / "jobs.csv"
    jobs.write_text("account_id,username\n,user3\n,User4\n")
    first = await run_async(settings_for(sandbox, jobs, tmp_path))
    assert first.exit_code() == 0
    again = tmp_path / "again.csv"
    again.write_text("account_id,username\n,@USER3\n,user4\n")
    second = await run_async(settings_for(sandbox, again, tmp_path))
    assert second.exit_code() == 0
    assert second.skipped_done == 2
    assert second.sent.get("GET", 0) == 0  # no lookup at all
    assert report(str(tmp_path / "results.jsonl"), as_json=True) == 0


def test_a_closed_stderr_never_stops_the_work(sandbox_process: Any, tmp_path: Path) -> None:
    """`run … 2>&1 | head -1`: the logs' pipe closes at once; every job is still done and
    recorded, and the run ends as if nothing happened."""
    sb = sandbox_process("--accounts", "40", "--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 41)])
    argv = run_argv(jobs, sb, "--state-dir", "none", "--log-format", "json", "--rate", "unlimited")
    line = " ".join(f"'{a}'" for a in argv)
    script = f"{line} 2>&1 | head -c 10 >/dev/null; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(
        ["bash", "-c", script],
        env=cli_env(XQUIK_API_KEY=sb.api_key), cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0
    records = read_results(tmp_path / "jobs.txt.results.jsonl")
    assert sorted(int(r["account_id"]) for r in records) == list(range(1, 41))
    assert sb.stats()["accounts"] == 0


def test_a_silent_stdin_lets_a_line_through_and_a_signal_end_the_run(
    sandbox_process: Any, tmp_path: Path
) -> None:
    """A producer that writes one line and then stays silent: the line is sent while stdin is
    still open (not when a batch fills), and SIGTERM ends the run within the grace (130)."""
    import signal

    sb = sandbox_process("--delete-limit", "unlimited")
    argv = run_argv("-", sb, "--state-dir", "none", "--grace", "2", "--no-precheck",
                    "--results", str(tmp_path / "r.jsonl"))  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=cli_env(XQUIK_API_KEY=sb.api_key),
                            cwd=ROOT)  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(b"7\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 20
    while sb.stats()["received"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sb.stats()["received"] == 1  # sent while the producer is still there
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 130
    proc.stdin.close()
    assert [r["account_id"] for r in read_results(tmp_path / "r.jsonl")] == ["7"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--rate-margin", "1e308"), "--rate-margin"),
        (("--timeout", "0"), "--timeout"),
        (("--rate", "1/1e308s"), "--rate"),
    ],
)
def test_absurd_numbers_are_usage_errors(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    """Numbers that would overflow a deadline or mean 'never': exit 2 naming the flag."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    done = run_cli("run", str(jobs), "--sandbox", *args)
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("content", [b"xq_abc\r\ndef0123456789", b"\x00\xff\xfe binary", b""])
def test_a_bad_key_file_is_a_message_not_a_traceback(tmp_path: Path, content: bytes) -> None:
    """CR/LF inside the key, a binary file, an empty one: exit 2, the content never shown."""
    key = tmp_path / "key"
    key.write_bytes(content)
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    done = run_cli("run", str(jobs), "--api-key-file", str(key))
    assert done.returncode == 2
    assert "--api-key-file" in done.stderr
    assert "Traceback" not in done.stderr
    assert "def0123456789" not in done.stderr


def test_a_metrics_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    """Exit 2 naming --metrics-port, before any request."""
    import socket

    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli("run", str(jobs), "--sandbox", "--metrics-port", str(port))
    assert done.returncode == 2
    assert f"--metrics-port {port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "jobs.txt.results.jsonl").read_text()


def test_report_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`report big.jsonl | head -1`: no BrokenPipeError traceback."""
    log = tmp_path / "r.jsonl"
    record = {
        "ts": "2026-01-01T00:00:00.000Z",
        "run_id": "r",
        "outcome": "failed",
        "op": "disconnect",
    }
    log.write_text("".join(json.dumps({**record, "account_id": str(i), "error": f"e{i}"}) + "\n"
                           for i in range(3000)))  # fmt: skip
    done = subprocess.run(
        ["bash", "-c", f"'{sys.executable}' -m worker report '{log}' | head -1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=cli_env(),
    )  # fmt: skip
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert "BrokenPipe" not in done.stderr


def test_the_sandbox_never_prints_a_key_it_did_not_make(tmp_path: Path) -> None:
    """XQUIK_API_KEY in the environment (the README's first Use line exports it): the sandbox
    ignores it and prints only its own throwaway key."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env(XQUIK_API_KEY=KEY), cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    assert ready["api_key"].startswith("xq_")
    no_key_in(json.dumps(ready), out, err)


def test_an_internal_error_is_one_line_and_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A bug outside any job (here: in `report`, raised as an ExceptionGroup): one line on
    stderr naming it, exit 70, no traceback."""
    import worker.cli.report as report_module
    from worker.cli import main

    def broken(path: str, **kwargs: object) -> int:
        raise ExceptionGroup("boom", [RuntimeError("unexpected state")])

    monkeypatch.setattr(report_module, "main", broken)
    monkeypatch.setattr("worker.logs._format", None)  # as in a fresh `report` process
    assert main(["report", str(tmp_path / "r.jsonl")]) == 70
    err = capsys.readouterr().err
    assert "internal error (RuntimeError: unexpected state)" in err
    assert "Traceback" not in err


def test_a_bad_log_format_in_the_environment_is_refused(tmp_path: Path) -> None:
    """XQUIK_LOG_FORMAT=yaml is not accepted in silence: exit 2 naming the variable."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    done = run_cli("run", str(jobs), "--sandbox", env=cli_env(XQUIK_LOG_FORMAT="yaml"))
    assert done.returncode == 2
    assert "XQUIK_LOG_FORMAT (environment): 'yaml' is not json or console" in done.stderr


def test_report_over_hand_edited_lines_names_them_and_never_crashes(tmp_path: Path) -> None:
    """Lines that parse as JSON but are not records (a time that is not one, a number for a
    run id, an array) are reported unreadable, in the text report and the HTML page alike."""
    good = (
        '{"ts": "2026-11-29T00:00:00Z", "run_id": "a", "source": "x", "account_id": "1", '
        '"op": "disconnect", "outcome": "disconnected", "http_status": 200}'
    )
    log = tmp_path / "r.jsonl"
    log.write_text(
        "\n".join(
            [
                good,
                '{"ts": "yesterday", "run_id": "a", "outcome": "disconnected"}',
                '{"ts": "2026-11-29T00:00:00Z", "run_id": 7, "outcome": "disconnected"}',
                '["ts", "run_id", "outcome"]',
            ]
        )
        + "\n"
    )
    proc = run_cli("report", str(log), "--html", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    assert "unreadable lines (torn by a crash?): [2, 3, 4]" in proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "1 records, 1 accounts done" in proc.stdout
    assert 'data-card="accounts done"><b>1</b>' in (tmp_path / "r.html").read_text()
