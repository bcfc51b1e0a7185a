"""Dead letters that can be dealt with, on a real redis-server: list by code, requeue exactly the
chosen ones (back on the stream with requeued_from, out of :dead, never twice), purge old ones."""

from __future__ import annotations

import json
from typing import Any

import redis

from tests.conftest import cli_env, run_cli
from tests.redis_server import RedisServer

STREAM = "xquik:disconnect"


def test_list_requeue_purge(redis_server: RedisServer) -> None:
    r: Any = redis.Redis.from_url(redis_server.url)  # sync types: unions of awaitables
    old = r.xadd(f"{STREAM}:dead", {"account_id": "99", "reason": "invalid: x"}, id="1000-0")
    ids = []
    for i, reason in enumerate(["forbidden: a", "forbidden: b", "retries_exhausted after 5",
                                "forbidden: c", "retries_exhausted after 5"]):  # fmt: skip
        ids.append(
            r.xadd(
                f"{STREAM}:dead",
                {"account_id": str(i + 1), "job_id": f"j{i + 1}", "message_id": f"{i}-0",
                 "reason": reason},
            ).decode()
        )  # fmt: skip
    env = cli_env(XQUIK_REDIS_URL=redis_server.url)

    listed = run_cli("dead", "list", "--error", "forbidden", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [d["job"]["account_id"] for d in letters] == ["1", "2", "4"]
    assert letters[0]["reason"] == "forbidden: a"
    assert "message_id" not in letters[0]["job"]

    moved = run_cli("dead", "requeue", "--id", ids[0], ids[2], ids[4], env=env)
    assert moved.returncode == 0, moved.stderr
    assert "requeued 3" in moved.stderr
    back = r.xrange(STREAM)
    assert sorted(f[b"account_id"].decode() for _, f in back) == ["1", "3", "5"]
    assert {f[b"requeued_from"].decode() for _, f in back} == {ids[0], ids[2], ids[4]}
    assert all(b"reason" not in f and b"message_id" not in f for _, f in back)
    from worker.models import Job
    from worker.sources.stream import parse_message

    eid, fields = back[0]
    job = parse_message(STREAM, eid.decode(), {k.decode(): v.decode() for k, v in fields.items()})
    assert isinstance(job, Job)  # a consumer takes a requeued job as any other
    assert job.job_id == "j1"
    left = sorted(f[b"account_id"].decode() for _, f in r.xrange(f"{STREAM}:dead"))
    assert left == ["2", "4", "99"]
    again = run_cli("dead", "requeue", "--id", ids[0], env=env)  # already requeued: never twice
    assert "requeued 0" in again.stderr
    assert r.xlen(STREAM) == 3

    assert run_cli("dead", "requeue", env=env).returncode == 2  # which ones? say it
    purged = run_cli("dead", "purge", "--older-than", "30d", env=env)
    assert purged.returncode == 0
    assert "purged 1" in purged.stderr
    assert old.decode() not in {e.decode() for e, _ in r.xrange(f"{STREAM}:dead")}
    assert r.xlen(f"{STREAM}:dead") == 2
    r.close()


def test_dead_letters_carry_a_code_of_a_fixed_set() -> None:
    """Dead letters got the first word of a sentence as their code ("no" for "no account_id
    or username"): the code is one of invalid, failed:<error>, max_deliveries, rejected_key."""
    from worker.models import Outcome, Result, dead_letter_code

    def letter(outcome: Outcome, error: str, status: int | None = None) -> str:
        return dead_letter_code(
            Result(run_id="r", source="s", outcome=outcome, error=error, http_status=status)
        )

    assert letter(Outcome.INVALID, "no account_id or username") == "invalid"
    assert letter(Outcome.FAILED, "forbidden: Injected fault.", 403) == "failed:forbidden"
    assert letter(Outcome.FAILED, "retries_exhausted after 5 attempts: x") == (
        "failed:retries_exhausted"
    )
    assert letter(Outcome.FAILED, "unauthenticated: bad key", 401) == "rejected_key"
    assert letter(Outcome.FAILED, "delivered 6 times (more than --max-deliveries 5)") == (
        "max_deliveries"
    )
    assert letter(Outcome.FAILED, "Some Sentence here") == "failed:error"
