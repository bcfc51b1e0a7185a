"""Past one Redis, on real servers from the same redis-server binary as the other tests: a
3-master Redis Cluster (slots assigned, nodes met) and a Sentinel-managed primary with
replicas, whose primary is killed mid-run. What must hold there is what holds on one Redis:
one record per job, none lost, none twice, no 429 of ours."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster
from redis.crc import key_slot

from tests.conftest import ROOT, SandboxProcess, cli_env, read_results, run_argv, run_cli
from tests.redis_server import RedisClusterServers, RedisServer, SentinelServers
from worker.errors import OptionError
from worker.redact import redact
from worker.redis_conn import address, check_url, parse_sentinel, protect, visible_password
from worker.redis_keys import BudgetKeys, StreamKeys, has_tag

STREAM = "xquik:disconnect"
DONE = {"disconnected", "already_gone"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path / "cluster")
    servers.start()
    yield servers
    servers.stop()


def cluster_client(servers: RedisClusterServers) -> Any:
    return redis.cluster.RedisCluster(
        host="127.0.0.1", port=servers.nodes[0].port, decode_responses=True
    )


def wait_for(check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_consumer_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way (a consumer waiting for a replica that never comes) leaves
    no process behind."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def consumer(
    url: str, sb: SandboxProcess, tmp: Path, name: str, *args: str
) -> subprocess.Popen[str]:
    argv = run_argv(url, sb, "--consumer", name, "--results", str(tmp / f"{name}.jsonl"))
    argv += ["--log-format", "json", "--state-dir", str(tmp / "state"), *args]
    with (tmp / f"{name}.log").open("a") as err:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            cwd=ROOT,
            env={**cli_env(), "XQUIK_API_KEY": sb.api_key},
        )
    _started.append(proc)
    return proc


def pending(client: Any) -> int:
    return int(client.xpending(STREAM, "xquik-disconnect")["pending"])


def records(client: Any, key: str) -> list[dict[str, Any]]:
    return [json.loads(fields["record"]) for _, fields in client.xrange(key)]


def test_key_names_share_a_slot_on_a_cluster_and_stay_as_they_were_on_one_redis() -> None:
    one = StreamKeys.of("jobs")
    assert (one.stream, one.results, one.dead, one.recorded, one.enqueued) == (
        "jobs", "jobs:results", "jobs:dead", "jobs:recorded", "jobs:enqueued",
    )  # fmt: skip
    on_cluster = StreamKeys.of("jobs", cluster=True)
    assert on_cluster.stream == "jobs"
    assert on_cluster.results == "{jobs}:results"
    slot = key_slot
    assert {slot(k.encode()) for k in (on_cluster.stream, on_cluster.results, on_cluster.dead,
            on_cluster.recorded, on_cluster.enqueued)} == {slot(b"jobs")}  # fmt: skip
    tagged = StreamKeys.of("jobs{eu}", cluster=True)  # the user's own tag is kept
    assert tagged.results == "jobs{eu}:results"
    assert has_tag("jobs{eu}")
    assert not has_tag("a{}b")
    budget = BudgetKeys.of("abc", "delete", cluster=True)
    assert budget.slots == "{xquik:budget:abc:delete}:slots"
    assert BudgetKeys.of("abc", "delete").slots == "xquik:budget:abc:delete:slots"
    assert len({slot(k.encode()) for k in (budget.slots, budget.cooldown, budget.learned,
                budget.accepted)}) == 1  # fmt: skip


def test_sentinel_urls_are_parsed_checked_and_their_passwords_kept_secret() -> None:
    url = "rediss+sentinel://:passw%40rd-1@s1:26379,s2,[::1]:26380/mymaster/2?sentinel_password=s3ntinel-pw"
    parsed = parse_sentinel(url)
    assert parsed.tls
    assert parsed.password == "passw@rd-1"
    assert parsed.service == "mymaster"
    assert parsed.hosts == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert parsed.db == 2
    assert visible_password(url)
    assert "passw" not in address(url)
    assert address(url) == "sentinel mymaster@s1:26379,s2:26379,::1:26380/2"
    assert check_url(url, "redis") == url
    protect(url)
    assert redact("the password passw@rd-1 (passw%40rd-1), the sentinels' s3ntinel-pw") == (
        "the password [REDACTED] ([REDACTED]), the sentinels' [REDACTED]"
    )
    bad_urls: list[tuple[str, str]] = [
        ("redis+sentinel://s1:26379", "no service name"),
        ("redis+sentinel://s1:99999/m", "bad port"),
        ("redis+sentinel://s1/m/x", "/SERVICE[/DB]"),
        ("rediss+sentinel://s1/m?ssl_cert_reqs=none", "--insecure-redis-tls"),
    ]
    for bad, says in bad_urls:
        with pytest.raises(OptionError, match=re.escape(says)):
            check_url(bad, "redis")
    nobody = "redis+sentinel://:passw%40rd-1@127.0.0.1:1/mymaster/0"
    gone = run_cli("queue", "status", "--redis", nobody, "--redis-connect-timeout", "1")
    assert gone.returncode == 2
    assert gone.stderr.count("\n") == 1  # one line, naming the service, no password
    assert "MasterNotFoundError: No master found for 'mymaster'" in gone.stderr
    assert "sentinel mymaster@127.0.0.1:1/0" in gone.stderr
    assert "passw" not in gone.stderr


def test_a_cluster_runs_enqueue_two_consumers_a_takeover_dead_letters_and_status(
    cluster: RedisClusterServers, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """The same flags and a redis:// URL of any node: enqueue (twice: each job once), two
    consumers sharing one budget at the sandbox's limit, one killed with SIGKILL and its jobs
    taken over, an invalid message dead-lettered and requeued, `queue status`, `--retain`."""
    sb = sandbox_process("--accounts", "120", "--delete-limit", "20/1s")
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("".join(f"{i}\n" for i in range(1, 121)))
    url = cluster.nodes[1].url  # any node
    for _ in range(2):
        done = run_cli("enqueue", str(jobs), "--redis", url)
        assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("enqueued 0 jobs"), done.stdout  # the second time
    assert "120 were there from an earlier run" in done.stdout
    r = cluster_client(cluster)
    r.xadd(STREAM, {"account_id": "a/b"})  # invalid: a dead letter
    args = ("--rate", "20/1s", "--rate-margin", "0.3", "--claim-idle", "1", "--drain")
    procs = [consumer(url, sb, tmp_path, f"w{i}", *args, "--retain", "1h") for i in range(2)]
    keys = StreamKeys.of(STREAM, cluster=True)
    wait_for(lambda: r.exists(keys.results) and r.xlen(keys.results) >= 40)
    procs[0].kill()
    assert procs[0].wait(timeout=10) == -signal.SIGKILL
    left = r.xpending_range(STREAM, "xquik-disconnect", "-", "+", 1000, consumername="w0")
    assert procs[1].wait(timeout=120) == 1  # the invalid message
    log = (tmp_path / "w1.log").read_text()
    assert "CROSSSLOT" not in log
    assert "MOVED" not in log
    got = records(r, keys.results)
    done_ids = Counter(x["account_id"] for x in got if x["outcome"] in DONE)
    assert done_ids == Counter({str(i): 1 for i in range(1, 121)})
    assert [x["outcome"] for x in got if x["outcome"] not in DONE] == ["invalid"]
    assert sb.stats()["rate_limited"] == 0
    assert sb.stats()["accounts"] == 0
    if left:  # w0 died holding jobs: w1 took them over
        assert "job_reclaimed" in log
    everything = set(r.keys(target_nodes=redis.cluster.RedisCluster.ALL_NODES))
    assert {keys.results, keys.dead, keys.recorded, keys.enqueued, STREAM} <= everything
    assert all(k.startswith(("{xquik:", STREAM, "xquik:listing:")) for k in everything), everything
    # The shared listing: one key, one slot; the accounts disconnected marked gone in it.
    [listing] = [k for k in everything if k.startswith("xquik:listing:")]
    assert sum(f.startswith("gone:") for f in r.hkeys(listing)) >= 100

    status = run_cli("queue", "status", "--redis", url, "--json")
    assert status.returncode == 1, status.stderr  # a dead letter
    said = json.loads(status.stdout)
    assert (said["results"], said["dead_total"], said["pending"]) == (121, 1, 0)
    assert said["budgets"]
    assert said["budgets"][0]["key"]
    listed = run_cli("dead", "list", "--redis", url)
    assert listed.returncode == 0, listed.stderr
    assert "a/b" in listed.stdout
    requeued = run_cli("dead", "requeue", "--all", "--redis", url)
    assert requeued.returncode == 0, requeued.stderr
    assert "requeued 1 dead letters" in requeued.stderr
    assert r.xlen(keys.dead) == 0
    r.close()


def test_a_file_run_shares_its_budget_in_a_cluster(
    cluster: RedisClusterServers, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """--budget on a cluster node's URL: the budget's keys under its own hash tag; two file
    runs at once stay under the limit; `budget status --budget` reads it back."""
    sb = sandbox_process("--accounts", "60", "--delete-limit", "15/1s")
    env = {**cli_env(), "XQUIK_API_KEY": sb.api_key}
    runs = []
    for half in range(2):
        jobs = tmp_path / f"jobs{half}.txt"
        jobs.write_text("".join(f"{i}\n" for i in range(1 + 30 * half, 31 + 30 * half)))
        argv = run_argv(jobs, sb, "--budget", cluster.url, "--rate", "15/1s", "--yes")
        argv += ["--rate-margin", "0.3", "--state-dir", "none"]
        runs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, cwd=ROOT, env=env))  # fmt: skip
    r = cluster_client(cluster)
    seen: set[str] = set()  # the delete budget's slots, looked for while the runs send
    while any(proc.poll() is None for proc in runs):
        seen.update(r.scan_iter(match="{xquik:budget:*:delete}:slots",
                                target_nodes=redis.cluster.RedisCluster.ALL_NODES))  # fmt: skip
        time.sleep(0.05)
    for proc in runs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert sb.stats()["rate_limited"] == 0
    assert sb.stats()["accounts"] == 0
    for half in range(2):
        assert len(read_results(tmp_path / f"jobs{half}.txt.results.jsonl")) == 30
    shown = run_cli("budget", "status", "--budget", cluster.url, "--json", "--base-url",
                    sb.base_url, env=env)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    delete = next(row for row in rows if row["tier"] == "delete")
    assert seen == {BudgetKeys.at(delete["redis_key"], cluster=True).slots}  # one, its own tag
    r.close()


def test_several_keys_share_a_cluster_each_budget_in_a_slot_of_its_own(
    cluster: RedisClusterServers, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """--keys on a cluster: two tenants' jobs through one consumer, each key's budget under
    its own hash tag, no request with another tenant's key."""
    keys = tmp_path / "keys"
    sb = sandbox_process("--accounts", "1", "--tenants", "2", "--tenant-accounts", "10",
                         "--keys-out", str(keys), "--delete-limit", "10/1s")  # fmt: skip
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"account_id": f"t{t}-{i}", "tenant": f"t{t}"}) + "\n"
                            for t in (1, 2) for i in range(1, 11)))  # fmt: skip
    assert run_cli("enqueue", str(jobs), "--redis", cluster.url).returncode == 0
    argv = run_argv(cluster.url, sb, "--keys", str(keys), "--rate", "10/1s", "--drain")
    argv += ["--results", str(tmp_path / "r.jsonl"), "--state-dir", str(tmp_path / "state")]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=cli_env(),
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = read_results(tmp_path / "r.jsonl")
    assert sorted(r["account_id"] for r in got) == sorted(
        f"t{t}-{i}" for t in (1, 2) for i in range(1, 11)
    )
    assert sb.stats()["cross_tenant"] == 0
    assert sb.stats()["rate_limited"] == 0
    r = cluster_client(cluster)
    slots = list(r.scan_iter(match="{xquik:budget:*:delete}:slots",
                             target_nodes=redis.cluster.RedisCluster.ALL_NODES))  # fmt: skip
    r.close()
    assert len(slots) == 2  # one per key


def test_min_replicas_holds_acks_until_a_replica_has_them(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """--min-replicas 1 on a primary with no replica: the jobs are delivered, but no budget
    decision counts (so no DELETE goes out) and no job is acked until a replica holds it; a
    replica started later lets the run finish."""
    primary = RedisServer(tmp_path)
    primary.start()
    replica_dir = tmp_path / "replica"
    replica_dir.mkdir()
    replica = RedisServer(replica_dir, extra=["--replicaof", "127.0.0.1", str(primary.port)])
    try:
        sb = sandbox_process("--accounts", "5", "--delete-limit", "unlimited")
        r = redis.Redis(port=primary.port, decode_responses=True)
        for i in range(1, 6):
            r.xadd(STREAM, {"account_id": str(i)})
        proc = consumer(primary.url, sb, tmp_path, "w", "--drain", "--min-replicas", "1")
        wait_for(lambda: bool(r.xinfo_groups(STREAM)) and pending(r) == 5)
        time.sleep(2)  # two WAIT rounds
        assert proc.poll() is None
        assert sb.stats()["by_status"].get("DELETE 200", 0) == 0
        assert pending(r) == 5
        replica.start()
        assert proc.wait(timeout=60) == 0
        assert r.xpending(STREAM, "xquik-disconnect")["pending"] == 0
        assert r.xlen(f"{STREAM}:results") == 5
        log = (tmp_path / "w.log").read_text()
        assert "redis_replicas_short" in log
        r.close()
    finally:
        replica.stop()
        primary.stop()
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("1\n")
    # enqueue waits for the replica too; Ctrl-C says what is surely there (none of it).
    primary.start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "enqueue", str(jobs), "--redis", primary.url,
             "--min-replicas", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=cli_env(),
        )  # fmt: skip
        time.sleep(3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 130
        assert "interrupted; 0 jobs of this file surely on xquik:disconnect" in err
    finally:
        primary.stop()
    bad = run_cli("run", str(jobs), "--min-replicas", "1", "--sandbox")
    assert bad.returncode == 2
    assert "--min-replicas" in bad.stderr


def test_a_sentinel_failover_mid_run_loses_no_job_and_sends_no_429(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """A primary, two replicas, three sentinels; enqueue and two consumers through a
    redis+sentinel:// URL with --min-replicas 1. The primary is killed (SIGKILL) mid-run
    (after 40 of 120 jobs):
    the sentinels promote a replica, everyone reconnects to it by themselves, and every job
    ends with exactly one record, none lost, none twice, no 429."""
    servers = SentinelServers(tmp_path / "sentinel", replicas=2)
    servers.start()
    try:
        sb = sandbox_process("--accounts", "120", "--delete-limit", "20/1s")
        jobs = tmp_path / "jobs.txt"
        jobs.write_text("".join(f"{i}\n" for i in range(1, 121)))
        enqueued = run_cli("enqueue", str(jobs), "--redis", servers.url, "--min-replicas", "1")
        assert enqueued.returncode == 0, enqueued.stderr
        args = ["--rate", "20/1s", "--rate-margin", "0.3", "--claim-idle", "2", "--drain"]
        args += ["--min-replicas", "1", "--redis-connect-timeout", "60"]
        procs = [consumer(servers.url, sb, tmp_path, f"w{i}", *args) for i in range(2)]

        def results_so_far() -> int:
            try:
                with redis.Redis(port=servers.primary_port()) as r:
                    return int(r.xlen(f"{STREAM}:results"))
            except redis.RedisError:
                return 0

        wait_for(lambda: results_so_far() >= 40)
        old = servers.kill_primary()
        for proc in procs:
            assert proc.wait(timeout=120) == 0, (tmp_path / "w0.log").read_text()[-2000:]
        with redis.Redis(port=servers.primary_port(), decode_responses=True) as r:
            assert servers.primary_port() != old.port
            got = records(r, f"{STREAM}:results")
            assert r.xpending(STREAM, "xquik-disconnect")["pending"] == 0
        assert Counter(x["account_id"] for x in got) == Counter({str(i): 1 for i in range(1, 121)})
        assert {x["outcome"] for x in got} <= DONE
        assert sb.stats()["rate_limited"] == 0
        assert sb.stats()["accounts"] == 0
        logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
        assert "redis_unavailable" in logs  # the failover was seen, and waited out
        assert "redis.asyncio" not in logs  # the error said, not the client's repr

        # The other commands through the same URL, on the promoted primary.
        status = run_cli("queue", "status", "--redis", servers.url, "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["results"] == 120
        again = tmp_path / "again.txt"
        again.write_text("1\n2\n")
        env = {**cli_env(), "XQUIK_API_KEY": sb.api_key}
        file_run = run_cli(*run_argv(again, sb, "--budget", servers.url)[3:], env=env)
        assert file_run.returncode == 0, file_run.stderr
        assert [r["outcome"] for r in read_results(tmp_path / "again.txt.results.jsonl")] == [
            "already_gone", "already_gone",
        ]  # fmt: skip
        with redis.Redis(port=servers.primary_port(), decode_responses=True) as r:
            assert list(r.scan_iter("xquik:budget:*:read:slots"))  # its listing's slot
    finally:
        servers.stop()


def test_an_enqueue_through_a_sentinel_failover_adds_every_job_once(tmp_path: Path) -> None:
    """The primary killed while 20,000 jobs go onto the stream through a redis+sentinel://
    URL with --min-replicas 1: enqueue waits for the promoted replica and goes on by itself;
    the stream then holds every line once (what the old primary had not passed on is sent
    again, what it had is recognised by its idempotency key)."""
    servers = SentinelServers(tmp_path / "sentinel", replicas=2)
    servers.start()
    try:
        jobs = tmp_path / "jobs.txt"
        jobs.write_text("".join(f"acct{i}\n" for i in range(20_000)))
        argv = [sys.executable, "-m", "worker", "enqueue", str(jobs), "--redis", servers.url,
                "--min-replicas", "1", "--redis-connect-timeout", "30"]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT, env=cli_env())  # fmt: skip
        first = servers.primary_port()
        with redis.Redis(port=first) as r:
            wait_for(lambda: bool(r.exists(STREAM)) and r.xlen(STREAM) >= 1_000, 30)
        if proc.poll() is not None:  # pragma: no cover (a machine faster than the kill)
            pytest.fail("the enqueue finished before the primary could be killed")
        servers.kill_primary()
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        assert "redis_unavailable" in err  # it saw the failover, and waited it out
        with redis.Redis(port=servers.primary_port(), decode_responses=True) as r:
            ids = [fields["account_id"] for _, fields in r.xrange(STREAM)]
        assert len(ids) == 20_000
        assert set(ids) == {f"acct{i}" for i in range(20_000)}
        assert out.startswith("enqueued ")
    finally:
        servers.stop()
