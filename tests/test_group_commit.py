"""Group commit in queue mode, with real processes on a real redis-server: a consumer killed
with SIGKILL between writing records and their fsync, or between the fsync and the ack, has
acked nothing; a consumer that takes over finishes every job, and every message ends with
exactly one record in <stream>:results."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SandboxProcess, cli_env, read_results
from tests.redis_server import RedisServer
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


def test_hiredis_parses_replies() -> None:
    """The C reply parser is installed and is what a consumer's connections use
    (redis[hiredis]): a third of a consumer's CPU went to redis-py's pure-Python parser."""
    from redis.asyncio.connection import Connection

    assert type(Connection()._parser).__name__ == "_AsyncHiredisParser"
