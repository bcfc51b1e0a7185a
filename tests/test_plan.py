"""Planning from the API, username jobs, and removing the monitors a disconnect leaves behind."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.conftest import (
    ROOT,
    SandboxFactory,
    SandboxProcess,
    cli_env,
    options_for,
    read_results,
    run_against,
    run_cli,
    write_jobs,
)
from tests.redis_server import RedisServer
from worker import run_async
from worker.budget.rate import Rate
from worker.sandbox import Sandbox


def plan(sb: SandboxProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("plan", *args, env=cli_env(XQUIK_API_KEY=sb.api_key, XQUIK_BASE_URL=sb.base_url))


def test_plan_by_usernames_reports_the_unknown_one(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Mixed case, with and without @: the right ids; the unknown handle on stderr; exit 1."""
    sb = sandbox_process()
    names = tmp_path / "names.txt"
    names.write_text("@USER3\nuser7\n# a comment\n\n@User12\n@ghost_account\n")
    proc = plan(sb, "--usernames", str(names))
    assert proc.returncode == 1
    jobs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(j["account_id"] for j in jobs) == ["12", "3", "7"]
    assert "@ghost_account" in proc.stderr


def test_plan_by_health_selects_only_those_states(
    sandbox_process: Callable[..., SandboxProcess],
) -> None:
    """--health needsReauth,suspended: exactly the accounts in those states."""
    sb = sandbox_process()
    accounts = sb.get("/x/accounts")["accounts"]
    expected = sorted(a["id"] for a in accounts if a["health"] in {"needsReauth", "suspended"})
    assert expected  # the seeded sandbox has some
    proc = plan(sb, "--health", "needsReauth,suspended")
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(line)["account_id"] for line in proc.stdout.splitlines()) == expected


def test_plan_combines_filters_and_shows_a_table(
    sandbox_process: Callable[..., SandboxProcess],
) -> None:
    """Filters combine with AND; --format table is for people; --created-before is a date."""
    sb = sandbox_process()
    accounts = sb.get("/x/accounts")["accounts"]
    expected = [a for a in accounts if a["health"] == "healthy" and a["createdAt"] < "2026-01-08"]
    proc = plan(sb, "--health", "healthy", "--created-before", "2026-01-08", "--format", "table")
    assert proc.returncode == 0
    assert f"{len(expected)} accounts to disconnect" in proc.stdout
    for account in expected:
        assert f"@{account['xUsername']} " in proc.stdout


def test_plan_refuses_without_a_filter(sandbox_process: Callable[..., SandboxProcess]) -> None:
    """No filter: exit 2 and nothing requested; --all is the explicit way."""
    sb = sandbox_process()
    proc = plan(sb)
    assert proc.returncode == 2
    assert "--all" in proc.stderr
    assert sb.stats()["requests"] == 0
    everything = plan(sb, "--all")
    assert len(everything.stdout.splitlines()) == 50


def test_plan_piped_into_run(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Scheduled cleanup end to end: plan --health … | run -."""
    sb = sandbox_process("--delete-limit", "100/1s")
    env = cli_env(
        XQUIK_API_KEY=sb.api_key, XQUIK_BASE_URL=sb.base_url, XQUIK_STATE_DIR=str(tmp_path)
    )
    targets = {a["id"] for a in sb.get("/x/accounts")["accounts"] if a["health"] == "suspended"}
    assert 0 < len(targets) < 50  # some to remove, some to keep: both halves are checked
    pipeline = (
        f"{sys.executable} -m worker plan --health suspended | "
        f"{sys.executable} -m worker run - --results {tmp_path / 'r.jsonl'}"
    )
    proc = subprocess.run(
        pipeline,
        shell=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    left = {a["id"] for a in sb.get("/x/accounts")["accounts"]}
    assert not targets & left
    assert len(left) == 50 - len(targets)
    assert {r["account_id"] for r in read_results(tmp_path / "r.jsonl")} == targets


async def test_delete_monitors_removes_only_the_disconnected_users_monitors(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """--delete-monitors: no monitor left for any disconnected user, the others untouched,
    one record per monitor, and the DELETE budget covers both kinds (zero 429s)."""
    sandbox: Sandbox = await sandbox_factory(accounts=30, delete_limit=(10, 1.0))
    store = sandbox.state.store
    extra = store.add_monitor("USER2")  # matched by username only (no X user id)
    by_user = Counter(m["username"] for m in store.monitors.values())
    targets = ["1", "2", "3", "4", "5", "6", "7", "8", "@user9", "@user10"]
    jobs = write_jobs(tmp_path / "jobs.txt", targets)
    others_before = {
        k: v
        for k, v in store.monitors.items()
        if v["username"] not in {f"user{i}" for i in range(1, 11)}
    }
    settings = options_for(sandbox, tmp_path, rate=Rate(10, 1.0), delete_monitors=True)
    summary = await run_async(jobs, **settings)
    assert summary.exit_code == 0
    gone_users = {f"user{i}" for i in range(1, 11)}
    assert not [m for m in store.monitors.values() if m["username"] in gone_users]
    assert dict(store.monitors) == others_before
    records = read_results(tmp_path / "results.jsonl")
    monitor_records = [r for r in records if r["op"] == "delete_monitor"]
    expected = sum(n for user, n in by_user.items() if user in gone_users)
    assert expected >= 2
    assert len(monitor_records) == expected
    assert extra["id"] in {r["monitor_id"] for r in monitor_records}
    assert {r["outcome"] for r in monitor_records} == {"deleted"}
    assert sandbox.state.stats.rate_limited == 0
    assert summary.monitors["deleted"] == expected


async def test_job_level_delete_monitors_flag(sandbox: Sandbox, tmp_path: Path) -> None:
    """ "delete_monitors": true on one job removes that user's monitors only."""
    store = sandbox.state.store
    store.add_monitor("user5", store.accounts["5"]["xUserId"])
    store.add_monitor("user6", store.accounts["6"]["xUserId"])
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        ['{"account_id": "5", "delete_monitors": true}', '{"account_id": "6"}'],
    )
    await run_against(sandbox, jobs, tmp_path)
    users = {m["username"] for m in store.monitors.values()}
    assert "user5" not in users
    assert "user6" in users


def test_plan_keeps_its_read_budget_in_redis_with_budget(
    sandbox_process: Callable[..., SandboxProcess], redis_server: RedisServer, tmp_path: Path
) -> None:
    """`plan --budget redis://…` (the CronJob beside the consumers): its listing takes its slot
    from the key's read budget in that Redis, not from a budget of its own; a --budget that is
    not a Redis URL exits 2 before any request."""
    import redis

    sb = sandbox_process()
    proc = plan(sb, "--all", "--budget", redis_server.url)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == len(sb.get("/x/accounts")["accounts"])
    client = redis.Redis.from_url(redis_server.url)
    [key] = client.keys("xquik:budget:*:read:slots")
    assert client.zcard(key) >= 1
    client.close()
    before = sb.stats()["requests"]
    proc = plan(sb, "--all", "--budget", "http://127.0.0.1:6379")
    assert proc.returncode == 2
    assert "--budget" in proc.stderr
    assert sb.stats()["requests"] == before


def test_usernames_and_report_read_stdin(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """`plan --usernames -` takes the handles from stdin; `report -` takes the log."""
    sb = sandbox_process()
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "plan", "--usernames", "-"],
        input="@user4\nUSER9\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=cli_env(XQUIK_API_KEY=sb.api_key, XQUIK_BASE_URL=sb.base_url),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(line)["account_id"] for line in proc.stdout.splitlines()) == [
        "4", "9",
    ]  # fmt: skip
    log = tmp_path / "r.jsonl"
    log.write_text(
        '{"ts": "2026-11-29T00:00:00Z", "run_id": "a", "source": "x", "account_id": "4", '
        '"op": "disconnect", "outcome": "failed", "error": "forbidden"}\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "report", "-", "--json"],
        input=log.read_text(),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["failed_outstanding"] == {"forbidden": ["4"]}


def test_plan_errors_take_the_log_format(sandbox_process: Callable[..., SandboxProcess]) -> None:
    """With JSON logs, plan's error is a JSON event (one format per run); on the console it is
    one plain line."""
    sb = sandbox_process()
    proc = plan(sb, "--log-format", "json")
    assert proc.returncode == 2
    [event] = [json.loads(line) for line in proc.stderr.splitlines()]
    assert event["event"] == "error"
    assert event["command"] == "plan"
    assert "no filter given" in event["message"]
    proc = plan(sb, "--log-format", "console")
    assert proc.returncode == 2
    assert proc.stderr.startswith("xquik-disconnect plan: error: no filter given")


def test_plan_with_monitors_shows_account_and_keyword_monitors(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """--with-monitors: each job lists the account monitors that would go with it and, apart,
    the keyword monitors whose query names the user (only =all deletes those)."""
    sb = sandbox_process()
    names = tmp_path / "names.txt"
    names.write_text("user3\nuser4\n")
    proc = plan(sb, "--usernames", str(names), "--with-monitors")
    assert proc.returncode == 0, proc.stderr
    jobs = {j["username"]: j for j in map(json.loads, proc.stdout.splitlines())}
    monitors = sb.get("/monitors")["monitors"]
    for user in ("user3", "user4"):
        assert jobs[user]["delete_monitors"] is True
        assert jobs[user]["monitors"] == [m["id"] for m in monitors if m["username"] == user]
    keyword = sb.get("/monitors/keywords")["monitors"]
    assert jobs["user3"]["keyword_monitors"] == [
        m["id"] for m in keyword if "from:user3 " in m["query"] + " "
    ]
    assert jobs["user3"]["keyword_monitors"]  # the sandbox seeds one for user3
    assert jobs["user4"]["keyword_monitors"] == []
    table = plan(sb, "--usernames", str(names), "--with-monitors", "--format", "table")
    assert "keyword monitors" in table.stdout
    assert "from:user3" in table.stdout
