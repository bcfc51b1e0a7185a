"""Group commit in queue mode, with real processes on a real redis-server: a consumer killed
with SIGKILL between writing records and their fsync, or between the fsync and the ack, has
acked nothing; a consumer that takes over finishes every job, and every message ends with
exactly one record in <stream>:results."""

from __future__ import annotations

import resource
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SandboxProcess, cli_env, read_results
from tests.redis_server import RedisServer
from tests.test_hostile_log import read_results_lenient
from tests.test_queue import STREAM, client, enqueue_ids, pending, results_stream, worker


@pytest.mark.parametrize("point", ["commit_before_fsync", "commit_before_ack"])
def test_kill_9_inside_the_group_commit_loses_and_doubles_nothing(
    point: str,
    redis_server: RedisServer,
    sandbox_process: Callable[..., SandboxProcess],
    tmp_path: Path,
) -> None:
    sb = sandbox_process("--accounts", "40", "--delete-limit", "unlimited")
    ids = [str(i) for i in range(1, 41)]
    enqueue_ids(redis_server, ids)
    args = ("--rate", "unlimited", "--concurrency", "8", "--drain", "--state-dir", str(tmp_path))
    env = cli_env(XQUIK_FAILPOINT=point)
    victim = worker(redis_server, sb, tmp_path, "a", *args, "--claim-idle", "60", env=env)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    written = read_results(tmp_path / "a.results.jsonl")
    assert written  # records were written before the kill ...
    assert results_stream(redis_server) == []  # ... and not one message was acked
    r = client(redis_server)
    delivered = int(r.xpending(STREAM, "xquik-disconnect")["pending"])
    r.close()
    assert delivered >= len(written)  # every recorded job is still pending, none lost
    if point == "commit_before_ack":
        assert all(rec["outcome"] == "disconnected" for rec in written)
    time.sleep(0.6)  # the victim's messages idle past the rescuer's --claim-idle
    rescuer = worker(redis_server, sb, tmp_path, "b", *args, "--claim-idle", "0.5")
    assert rescuer.wait(timeout=60) == 0
    records = results_stream(redis_server)
    by_message = Counter(rec["account_id"] for rec in records)
    assert by_message == Counter(ids)  # one record per job: nothing lost, nothing doubled
    assert pending(redis_server) == 0
    assert sb.stats()["accounts"] == 0  # every account disconnected
    outcomes = Counter(rec["outcome"] for rec in records)
    # What the victim deleted before dying comes back as already_gone, never twice recorded.
    assert outcomes["disconnected"] + outcomes["already_gone"] == 40


def test_a_result_log_write_failure_in_queue_mode_acks_nothing_unwritten(
    redis_server: RedisServer,
    sandbox_process: Callable[..., SandboxProcess],
    tmp_path: Path,
) -> None:
    """The group committer's failure path: the consumer's result log stops taking writes after
    its first record (RLIMIT_FSIZE: as a full disk). The consumer stops with exit 4; no message
    whose record is not in its log is acked; another consumer then finishes every message
    exactly once."""
    sb = sandbox_process("--accounts", "30", "--delete-limit", "unlimited")
    ids = [str(i) for i in range(1, 31)]
    enqueue_ids(redis_server, ids)
    args = ("--rate", "unlimited", "--concurrency", "8", "--drain", "--state-dir", "none",
            "--log-format", "json")  # fmt: skip
    # The size limit is per process: coverage's own data file would hit it too.
    env = {k: v for k, v in cli_env().items() if not k.startswith("COVERAGE_PROCESS")}

    def one_record_fits() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (700, 700))

    victim = worker(redis_server, sb, tmp_path, "a", *args, "--claim-idle", "60", env=env,
                    preexec_fn=one_record_fits)  # fmt: skip
    assert victim.wait(timeout=60) == 4, (tmp_path / "a.log").read_text()[-2000:]
    # (exit 4: the result log could not be written; its stderr file is under the limit too)
    whole = read_results_lenient(tmp_path / "a.results.jsonl")
    written = Counter(rec["account_id"] for rec in whole)
    acked = Counter(rec["account_id"] for rec in results_stream(redis_server))
    assert len(written) <= 1
    assert not acked - written  # acked only what its log holds: durable before acked
    assert pending(redis_server) > 0  # the rest waits for another consumer
    time.sleep(0.6)  # the victim's messages idle past the rescuer's --claim-idle
    rescuer = worker(redis_server, sb, tmp_path, "b", *args, "--claim-idle", "0.5")
    assert rescuer.wait(timeout=60) == 0, (tmp_path / "b.log").read_text()[-2000:]
    by_message = Counter(rec["account_id"] for rec in results_stream(redis_server))
    assert by_message == Counter(ids)  # one record per job: nothing lost, nothing doubled
    assert pending(redis_server) == 0
    assert sb.stats()["accounts"] == 0


def test_hiredis_parses_replies() -> None:
    """The C reply parser is installed and is what a consumer's connections use
    (redis[hiredis]): a third of a consumer's CPU went to redis-py's pure-Python parser."""
    from redis.asyncio.connection import Connection

    assert type(Connection()._parser).__name__ == "_AsyncHiredisParser"
