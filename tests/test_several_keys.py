"""Several API keys (--keys DIR) against a sandbox serving several Xquik accounts, in real
processes: a cooling key holds up no other, a revoked key stops only its tenant, nothing is
ever sent with another tenant's key, a rotated key needs no restart, and in queue mode a
rejected tenant's jobs become dead letters that `dead requeue` sends once the key is fixed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio

from tests.conftest import (
    FAST,
    ROOT,
    SandboxProcess,
    cli_env,
    read_results,
    run_argv,
    run_cli,
    write_jobs,
)
from tests.redis_server import RedisServer
from worker import Summary, run_async
from worker.logs import configure

BOGUS = "xq_" + "0" * 64


def jobs_for(path: Path, tenants: dict[str, int]) -> Path:
    """Each tenant's jobs one after another, in the order given (the worst order for
    head-of-line blocking: the first tenant's jobs come first)."""
    with path.open("w") as f:
        for tenant, count in tenants.items():
            for i in range(1, count + 1):
                f.write(json.dumps({"account_id": f"{tenant}-{i}", "tenant": tenant}) + "\n")
    return path


def spend(sb: SandboxProcess, tenant: str, n: int) -> None:
    """Another client of that Xquik account spends n of its DELETE window."""
    url = f"{sb.url}/_sandbox/consume?tier=delete&n={n}&tenant={tenant}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10):
        pass


def tenant_sandbox(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path, *args: str
) -> tuple[SandboxProcess, Path]:
    keys = tmp_path / "keys"
    sb = sandbox_process("--accounts", "3", "--tenants", "3", "--keys-out", str(keys), *args)
    return sb, keys


def test_a_cooling_key_and_a_revoked_key_hold_up_no_other_tenant(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """t1's window was spent by another client (its first DELETE meets a 60 s cooldown), t2's
    key is revoked, t3 is fine. t3 finishes at its full budget in the first window although
    t1's 20 jobs come first in the file (and t1 alone learns a lower limit); t2's 20 jobs are
    `failed: unauthenticated` after at most a worker's worth of 401s; t1 is still cooling
    when the run is stopped (no record, a rerun sends them). The sandbox's ledger: not one
    request for an account of another tenant than the key's."""
    sb, keys = tenant_sandbox(sandbox_process, tmp_path, "--delete-limit", "20/60s")
    (keys / "t2").write_text(BOGUS + "\n")
    spend(sb, "t1", 20)
    jobs = jobs_for(tmp_path / "jobs.jsonl", {"t1": 20, "t2": 20, "t3": 20})
    argv = run_argv(jobs, sb, "--keys", str(keys), "--rate", "auto:20/60s")
    argv += ["--concurrency", "4", "--state-dir", str(tmp_path / "state")]
    argv += ["--log-format", "json", "--grace", "1"]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=cli_env(XQUIK_API_KEY=sb.api_key),
    )
    results = tmp_path / "jobs.jsonl.results.jsonl"
    started = time.monotonic()
    deadline = started + 30
    while time.monotonic() < deadline:
        done = Counter(r.get("tenant") for r in read_results(results)) if results.exists() else {}
        if done.get("t3", 0) == 20 and done.get("t2", 0) == 20:
            break
        time.sleep(0.05)
    finished_in = time.monotonic() - started
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err  # stopped while t1 cools down: resumable
    records = read_results(results)
    by = Counter((r["tenant"], r["outcome"]) for r in records)
    assert by[("t3", "disconnected")] == 20
    assert by[("t2", "failed")] == 20
    assert by[("t1", "disconnected")] == 0  # still cooling: nothing sent past the 429s
    assert finished_in < 20  # t3 and t2 were never held up by t1's 60 s cooldown
    assert all(r["error"].startswith("unauthenticated") for r in records if r["tenant"] == "t2")
    assert all(r["http_status"] == 401 for r in records if r["tenant"] == "t2")
    stats = sb.stats()
    assert stats["cross_tenant"] == 0
    assert stats["tenants"]["t3"]["deleted_accounts"] == 20
    assert stats["tenants"]["t1"]["deleted_accounts"] == 0
    log = sb.requests()
    t3_deletes = [t for m, p, s, t in log if m == "DELETE" and "/t3-" in p and s == 200]
    assert max(t3_deletes) - min(t3_deletes) < 5  # all 20 in the first window: full budget
    t1_429 = sum(1 for m, p, s, _ in log if m == "DELETE" and "/t1-" in p and s == 429)
    assert 1 <= t1_429 <= 4  # at most one per worker, then the tenant is parked
    assert stats["by_status"].get("DELETE 401", 0) + stats["by_status"].get("GET 401", 0) <= 4
    summary = next(
        json.loads(line) for line in err.splitlines() if '"event": "run_summary"' in line
    )
    assert summary["tenants"]["t3"] == {"disconnected": 20}
    assert summary["tenants"]["t2"] == {"failed": 20}
    assert summary["not_finished"] == 20  # t1's, parked in its queue: a rerun sends them
    limits = summary["tenant_limits"]  # each Xquik account learns its own limit
    assert limits["t1"]["limit"] == 1  # its 429 came with nothing of ours accepted
    assert limits["t1"]["learned"] is True
    assert limits["t3"]["limit"] == 20
    assert limits["t3"]["learned"] is False
    report = run_cli("report", str(results), "--json")
    assert json.loads(report.stdout)["tenants"] == {
        "t2": {"failed": 20},
        "t3": {"disconnected": 20},
    }


def test_every_key_rejected_exits_3_and_an_unknown_tenant_is_invalid(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb, keys = tenant_sandbox(sandbox_process, tmp_path)
    for name in ("t1", "t2", "t3"):
        (keys / name).write_text(BOGUS + "\n")
    jobs = jobs_for(tmp_path / "jobs.jsonl", {"t1": 3, "t2": 3})
    with jobs.open("a") as f:
        f.write('{"account_id": "t3-1", "tenant": "t9"}\n')
    proc = run_cli(
        *run_argv(jobs, sb, "--keys", str(keys), "--state-dir", str(tmp_path))[3:],
        env=cli_env(),
    )
    assert proc.returncode == 3, proc.stderr
    records = read_results(tmp_path / "jobs.jsonl.results.jsonl")
    unknown = [r for r in records if r["outcome"] == "invalid"]
    assert [r["error"] for r in unknown] == ["unknown tenant t9"]
    assert sb.stats()["cross_tenant"] == 0


def test_bad_keys_directories_exit_2_before_anything_is_sent(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb, keys = tenant_sandbox(sandbox_process, tmp_path)
    jobs = jobs_for(tmp_path / "jobs.jsonl", {"t1": 1})
    cases: list[tuple[str, Callable[[Path], Any]]] = [
        ("is not a tenant name", lambda d: (d / "bad name").write_text(BOGUS)),
        ("expected one API key", lambda d: (d / "t9").write_text("not a key\n")),
        ("no key file in it", lambda d: None),
        ("t2: not a regular file", lambda d: os.mkfifo(d / "t2")),  # would block the read
    ]
    for n, (expected, make) in enumerate(cases):
        directory = tmp_path / f"keys-{n}"
        directory.mkdir()
        make(directory)
        proc = run_cli(*run_argv(jobs, sb, "--keys", str(directory))[3:])
        assert proc.returncode == 2, expected
        assert expected in proc.stderr
        assert "not a key" not in proc.stderr  # a key file's content is never echoed
    missing = run_cli(*run_argv(jobs, sb, "--keys", str(tmp_path / "nope"))[3:])
    assert missing.returncode == 2
    assert sb.stats()["received"] == 0
    del keys


async def test_a_rotated_key_file_is_used_without_a_restart(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Queue mode: t1's key file holds a revoked key. Its jobs become dead letters with the
    reason `unauthenticated`, t3's go on. The file gets the right key: the running consumer
    reads it at its next look (shortened here), later t1 jobs are sent, and `dead requeue
    --error unauthenticated` brings back the first ones; in the end every t1 account is gone."""
    sb, keys = tenant_sandbox(sandbox_process, tmp_path, "--delete-limit", "unlimited")
    good = (keys / "t1").read_text()
    (keys / "t1").write_text(BOGUS + "\n")
    jobs = jobs_for(tmp_path / "first.jsonl", {"t1": 5, "t3": 5})
    assert run_cli("enqueue", str(jobs), "--redis", redis_server.url).returncode == 0
    before = run_cli("queue", "status", "--redis", redis_server.url, "--json")
    assert json.loads(before.stdout)["waiting_by_tenant"] == {"t1": 5, "t3": 5}
    logs = io.StringIO()
    configure("json", stream=logs)
    async with consumer(sb, redis_server, tmp_path, keys, "unlimited", claim_idle=2.0) as results:
        await eventually(lambda: len(read_results(results)) >= 10)
        await eventually(lambda: len(dead_letters(redis_server)) == 5)  # settled after
        letters = dead_letters(redis_server)
        assert all(d["reason"].startswith("unauthenticated") for d in letters)
        assert {d["error"] for d in letters} == {"rejected_key"}  # a code of the fixed set
        assert {d["job"]["tenant"] for d in letters} == {"t1"}
        status = run_cli("queue", "status", "--redis", redis_server.url, "--json")
        assert json.loads(status.stdout)["dead_by_tenant"] == {"t1": 5}
        (keys / "t1").write_text(good)  # the rotation
        await eventually(lambda: "tenant_key_changed" in logs.getvalue())
        later = tmp_path / "later.jsonl"
        later.write_text(
            "".join(f'{{"account_id": "t1-{i}", "tenant": "t1"}}\n' for i in (6, 7, 8))
        )
        assert run_cli("enqueue", str(later), "--redis", redis_server.url).returncode == 0
        again = run_cli("dead", "requeue", "--error", "unauthenticated", "--redis",
                        redis_server.url)  # fmt: skip
        assert again.returncode == 0, again.stderr
        await eventually(lambda: sb.stats()["tenants"]["t1"]["deleted_accounts"] == 8)
    assert BOGUS not in logs.getvalue()
    assert good.strip() not in logs.getvalue()
    assert sb.stats()["cross_tenant"] == 0


def test_a_file_grouped_by_tenant_starts_every_tenant_in_the_first_window(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """8 tenants' jobs, grouped (t1's 6 first), 3 per 2 s each, a read-ahead of 8 jobs, and
    lines of 2 KB (a chunk of the file holds 32): read in file order, t7 and t8 would wait
    for the first chunk's tenants to be nearly done. Read in turns, every tenant sends in
    the first window; each job one record, no 429."""
    keys = tmp_path / "keys"
    sb = sandbox_process(
        "--accounts", "1", "--tenants", "8", "--tenant-accounts", "6", "--keys-out", str(keys),
        "--delete-limit", "3/2s",
    )  # fmt: skip
    jobs = tmp_path / "jobs.jsonl"
    with jobs.open("w") as f:
        for t in range(1, 9):
            for i in range(1, 7):
                job = {"account_id": f"t{t}-{i}", "tenant": f"t{t}", "note": "x" * 2000}
                f.write(json.dumps(job) + "\n")
    done = subprocess.run(
        run_argv(jobs, sb, "--keys", str(keys), "--rate", "3/2s", "--read-ahead", "8",
                 "--results", str(tmp_path / "r.jsonl"), "--state-dir", str(tmp_path / "s")),
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=cli_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    deletes = [(p.rsplit("/", 1)[1], s, at) for m, p, s, at in sb.requests() if m == "DELETE"]
    assert sorted(s for _, s, _ in deletes) == [200] * 48
    start = min(at for _, _, at in deletes)
    first: dict[str, float] = {}
    for account, _, at in sorted(deletes, key=lambda d: d[2]):
        first.setdefault(account.split("-")[0], at - start)
    assert len(first) == 8
    assert max(first.values()) < 1.0, first  # every tenant in the first window
    assert len(read_results(tmp_path / "r.jsonl")) == 48
    assert sb.stats()["cross_tenant"] == 0


def test_a_stream_whose_head_is_one_cooling_key_still_feeds_the_others(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Queue mode, reading as it needs: the stream's first 600 jobs are t1's, whose window
    another client spent (a 60 s cooldown from its first DELETE); t3's 20 come after. The
    consumer reads past t1's jobs and finishes t3's within seconds; t1 sends no more than
    its 429s."""
    sb, keys = tenant_sandbox(sandbox_process, tmp_path, "--delete-limit", "20/60s")
    spend(sb, "t1", 20)
    jobs = jobs_for(tmp_path / "jobs.jsonl", {"t1": 600, "t3": 20})
    assert run_cli("enqueue", str(jobs), "--redis", redis_server.url).returncode == 0
    argv = run_argv(redis_server.url, sb, "--keys", str(keys), "--rate", "20/60s")
    argv += ["--concurrency", "4", "--state-dir", str(tmp_path / "state")]
    argv += ["--results", str(tmp_path / "r.jsonl"), "--log-format", "json"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=cli_env(),
    )  # fmt: skip
    try:
        started = time.monotonic()
        wait_for(lambda: sum(r["tenant"] == "t3" for r in read_results(tmp_path / "r.jsonl")) == 20)
        assert time.monotonic() - started < 20
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert sb.stats()["tenants"]["t3"]["deleted_accounts"] == 20
    t1 = [s for m, p, s, _ in sb.requests() if m == "DELETE" and "/t1-" in p]
    assert 1 <= len(t1) <= 4
    assert set(t1) == {429}
    assert sb.stats()["cross_tenant"] == 0


def test_a_consumer_that_starts_later_gets_its_share_of_a_backlog(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Queue mode: 16 tenants' 800 jobs wait in the stream, grouped by tenant; each answer
    takes 30 ms and a consumer sends 4 at a time. A consumer reads more only as its work runs
    short, so a second one started later (as an autoscaler adds one) still finds most of the
    backlog and does a fair part of it, instead of the first holding every job in its
    read-ahead (10,000) while the second has nothing to do."""
    keys = tmp_path / "keys"
    sb = sandbox_process(
        "--accounts", "1", "--tenants", "16", "--tenant-accounts", "50", "--keys-out",
        str(keys), "--delete-limit", "unlimited", "--slow", "1", "--slow-seconds", "0.03",
    )  # fmt: skip
    jobs = jobs_for(tmp_path / "jobs.jsonl", {f"t{i}": 50 for i in range(1, 17)})
    assert run_cli("enqueue", str(jobs), "--redis", redis_server.url).returncode == 0

    def consumer(name: str) -> subprocess.Popen[str]:
        argv = run_argv(redis_server.url, sb, "--keys", str(keys), "--rate", "unlimited")
        argv += ["--concurrency", "4", "--drain", "--consumer", name, "--log-format", "json"]
        argv += ["--state-dir", str(tmp_path / "state"), "--results", str(tmp_path / name)]
        return subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env=cli_env(),
        )  # fmt: skip

    first = consumer("a")
    wait_for(lambda: (tmp_path / "a").exists() and len(read_results(tmp_path / "a")) >= 20)
    second = consumer("b")
    for proc in (first, second):
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    a, b = read_results(tmp_path / "a"), read_results(tmp_path / "b")
    assert len({r["account_id"] for r in a + b}) == len(a) + len(b) == 800
    assert len(b) >= 200, (len(a), len(b))  # a fair part; all of it would be ~400
    assert sb.stats()["cross_tenant"] == 0


async def test_a_key_file_added_while_running_shares_its_accounts_budget(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """A consumer runs with `t1@grp`; t1's 5 jobs spend the account's window (5 per 60 s).
    Then a file `late@grp` holding a key of the same account appears: its jobs wait for
    grp's window like t1's would, instead of getting a budget of their own and meeting the
    server's 429s."""
    sb, keys = tenant_sandbox(
        sandbox_process, tmp_path, "--tenant-accounts", "10", "--delete-limit", "5/60s"
    )
    key = (keys / "t1").read_text()
    (keys / "t1").rename(keys / "t1@grp")
    first = jobs_for(tmp_path / "first.jsonl", {"t1": 5})
    assert run_cli("enqueue", str(first), "--redis", redis_server.url).returncode == 0
    logs = io.StringIO()
    configure("json", stream=logs)
    async with consumer(sb, redis_server, tmp_path, keys, "5/60s") as results:
        await eventually(lambda: len(read_results(results)) == 5)
        (keys / "late@grp").write_text(key)
        await eventually(lambda: "tenant_added" in logs.getvalue())
        later = tmp_path / "later.jsonl"
        later.write_text(
            "".join(f'{{"account_id": "t1-{i}", "tenant": "late"}}\n' for i in range(6, 11))
        )
        assert run_cli("enqueue", str(later), "--redis", redis_server.url).returncode == 0
        # late's jobs are taken by the consumer and wait for grp's budget (its window is
        # full for another minute): a moment is enough for any of them to be sent wrongly.
        await eventually(lambda: pending(redis_server) == 5)
        await anyio.sleep(0.5)
    statuses = Counter(s for m, _, s, _ in sb.requests() if m == "DELETE")
    assert statuses == {200: 5}  # late's jobs wait for grp's next window: no 429
    assert sb.stats()["cross_tenant"] == 0


def test_plan_for_a_tenant_writes_jobs_that_name_it(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """`plan --tenant t2 --keys DIR` lists t2's accounts with t2's key (only those: each key
    sees its own account's connections) and every job names t2, ready for `run --keys`."""
    sb, keys = tenant_sandbox(sandbox_process, tmp_path)
    plan = run_cli(
        "plan", "--all", "--tenant", "t2", "--keys", str(keys), "--base-url", sb.base_url
    )
    assert plan.returncode == 0, plan.stderr
    jobs = [json.loads(line) for line in plan.stdout.splitlines()]
    assert len(jobs) == 20
    assert {j["tenant"] for j in jobs} == {"t2"}
    assert all(j["account_id"].startswith("t2-") for j in jobs)
    unknown = run_cli("plan", "--all", "--tenant", "t9", "--keys", str(keys), "--base-url",
                      sb.base_url)  # fmt: skip
    assert unknown.returncode == 2
    assert "no key file for it" in unknown.stderr


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError("timed out")


@contextlib.asynccontextmanager
async def consumer(
    sb: SandboxProcess,
    server: RedisServer,
    tmp_path: Path,
    keys: Path,
    rate: str,
    **options: Any,
) -> AsyncIterator[Path]:
    """A queue consumer with --keys, in this process (its key directory is looked at every
    50 ms), stopped by a real SIGTERM at the end of the block; yields its result log."""
    results = tmp_path / "r.jsonl"
    summaries: list[Summary] = []

    async def run() -> None:
        summaries.append(
            await run_async(
                server.url,
                keys=keys,
                base_url=sb.base_url,
                rate=rate,
                state_dir=tmp_path / "state",
                results=results,
                progress=False,
                intervals=FAST,
                **options,
            )
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        try:
            yield results
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # its handler: stop within the grace
    assert [s.exit_code for s in summaries] == [0]  # a consumer stopped by a signal


async def eventually(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Wait (on the event loop) until `condition` holds."""
    with anyio.fail_after(timeout):
        while True:
            with contextlib.suppress(OSError, ValueError):
                if condition():
                    return
            await anyio.sleep(0.05)


def dead_letters(server: RedisServer) -> list[dict[str, Any]]:
    dead = run_cli("dead", "list", "--redis", server.url, "--json")
    return [json.loads(line) for line in dead.stdout.splitlines()]


def pending(server: RedisServer) -> int:
    status = run_cli("queue", "status", "--redis", server.url, "--json")
    return int(json.loads(status.stdout)["pending"])


def test_a_rerun_skips_what_each_tenant_has_done(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """The result log remembers done accounts per tenant: a rerun sends nothing for them
    (the same id under another tenant is another account)."""
    sb, keys = tenant_sandbox(sandbox_process, tmp_path, "--delete-limit", "unlimited")
    jobs = jobs_for(tmp_path / "jobs.jsonl", {"t1": 3, "t2": 3})
    args = [*run_argv(jobs, sb, "--keys", str(keys), "--rate", "unlimited")[3:]]
    args += ["--state-dir", str(tmp_path / "state"), "--log-format", "json"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    sent = sb.stats()["received"]
    with jobs.open("a") as f:
        f.write('{"account_id": "t3-1", "tenant": "t3"}\n')
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    summary = next(
        json.loads(line) for line in again.stderr.splitlines() if '"run_summary"' in line
    )
    assert summary["skipped_done"] == 6
    assert summary["outcomes"] == {"disconnected": 1}
    assert sb.stats()["by_status"]["DELETE 200"] == 7
    assert sb.stats()["received"] - sent <= 2  # t3's listing and its one DELETE


def test_metrics_carry_a_tenant_label(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """--keys: jobs, requests and answers are counted per tenant (the textfile parses with
    prometheus-client's own parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    sb, keys = tenant_sandbox(sandbox_process, tmp_path, "--delete-limit", "unlimited")
    (keys / "t2").write_text(BOGUS + "\n")
    jobs = jobs_for(tmp_path / "jobs.jsonl", {"t1": 4, "t2": 2})
    prom = tmp_path / "xquik.prom"
    args = run_argv(jobs, sb, "--keys", str(keys), "--rate", "unlimited")[3:]
    args += ["--state-dir", str(tmp_path / "state"), "--metrics-textfile", str(prom)]
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stderr  # t2's jobs failed; t1 did not: not every key
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(prom.read_text())
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("xquik_jobs_total", op="disconnect", outcome="disconnected", tenant="t1") == 4
    assert value("xquik_jobs_total", op="disconnect", outcome="failed", tenant="t2") == 2
    assert value("xquik_requests_total", method="DELETE", tenant="t1") == 4
    assert value("xquik_responses_total", method="GET", status="401", tenant="t2") >= 1


def test_a_tenant_job_is_never_sent_with_the_key_of_a_run_without_keys(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """A job naming a tenant in a run with one key (no --keys) is invalid, naming its line;
    the run's key is not used for it. The other jobs go on."""
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        ['{"account_id": "1", "tenant": "client-x"}', '{"account_id": "2"}'],
    )
    proc = run_cli(
        *run_argv(jobs, sb, "--rate", "unlimited", "--state-dir", str(tmp_path))[3:],
        env=cli_env(XQUIK_API_KEY=sb.api_key),
    )
    assert proc.returncode == 1, proc.stderr
    records = read_results(tmp_path / "jobs.jsonl.results.jsonl")
    by_id = {r["account_id"]: r for r in records}
    assert by_id["1"]["outcome"] == "invalid"
    assert by_id["1"]["error"] == "unknown tenant client-x (this run has no --keys)"
    assert by_id["1"]["source"].endswith("jobs.jsonl:1")
    assert by_id["2"]["outcome"] == "disconnected"
    deleted = sb.stats()["deleted_accounts"]
    assert deleted == ["2"]


def test_the_cross_tenant_ledger_counts_a_request_with_another_tenants_key(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """The positive control for every `cross_tenant == 0` above: a DELETE and a GET for t2's
    account sent with t1's valid key are 404s to the client and counted by the sandbox; the
    same requests with t2's own key are not counted."""
    sb, keys = tenant_sandbox(sandbox_process, tmp_path)

    def send(method: str, account: str, tenant: str) -> int:
        key = (keys / tenant).read_text().strip()
        request = urllib.request.Request(
            f"{sb.base_url}/x/accounts/{account}", method=method, headers={"x-api-key": key}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert sb.stats()["cross_tenant"] == 0
    assert send("DELETE", "t2-1", "t1") == 404
    assert send("GET", "t2-2", "t1") == 404
    assert sb.stats()["cross_tenant"] == 2
    assert send("GET", "t2-1", "t2") == 200  # untouched by t1's attempt
    assert send("DELETE", "t2-1", "t2") == 200
    assert send("DELETE", "t9-1", "t1") == 404  # nobody's account: not another tenant's
    assert sb.stats()["cross_tenant"] == 2
