"""Listings that span pages: every monitor of a disconnected user goes, however many pages of
monitors the key has; a monitor in background deletion is recorded pending and never deleted
twice; an account past the listing's first page is found; a page that fails fails the
listing (never a short list read as complete)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import (
    SandboxFactory,
    cli_env,
    options_for,
    read_results,
    run_against,
    run_cli,
    write_jobs,
)
from tests.hostile_servers import Server
from worker import run_async
from worker.api.client import XquikClient
from worker.api.directory import names
from worker.errors import ApiError
from worker.sandbox import Sandbox
from worker.sandbox.store import Store


async def test_450_monitors_on_three_pages(sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    """20 accounts; 450 monitors (pages of 200, 200, 50): 15 for each of users 1..10 (whose
    accounts the run disconnects), the rest for users 11..20 and for X users that were never
    connected; plus keyword monitors that do and do not name users 1..10. After
    `--delete-monitors=all`: no monitor of users 1..10 remains (account or keyword), all the
    others do, no monitor got two DELETEs, and records say pending (deleted in the background)."""
    store = Store()
    for i in range(1, 21):
        store.add_account(str(i), f"user{i}")
    for i in range(1, 11):
        for _ in range(15):
            store.add_monitor(f"user{i}", store.accounts[str(i)]["xUserId"])
    for n in range(300):
        name = f"user{11 + n % 10}" if n % 2 else f"stranger{n}"
        store.add_monitor(name)
    assert len(store.monitors) == 450
    # Keyword monitors that do and do not name the disconnected users (deleted with =all).
    naming = {store.add_keyword_monitor(f"from:user{i} launch")["id"] for i in range(1, 11)}
    others = {store.add_keyword_monitor(q)["id"] for q in ("from:user11", "user1", "-from:user2")}
    theirs = {
        k for k, m in store.monitors.items() if m["username"] in {f"user{i}" for i in range(1, 11)}
    }
    sandbox: Sandbox = await sandbox_factory(
        store=store, delete_limit=(None, 60.0), read_limit=(None, 1.0), monitor_deletion_s=0.5
    )
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 11)])
    settings = options_for(sandbox, tmp_path, delete_monitors="all", concurrency=8)
    summary = await run_async(jobs, **settings)
    assert summary.exit_code == 0
    left = set(sandbox.state.store.monitors) - set(sandbox.state.store.deleting)
    kw_left = set(sandbox.state.store.keyword_monitors) - set(sandbox.state.store.deleting)
    assert kw_left == others
    assert naming <= set(sandbox.state.store.delete_requests)
    assert left.isdisjoint(theirs)
    assert len(left) == 450 - len(theirs) == 300
    assert set(sandbox.state.store.delete_requests) == theirs | naming
    assert max(sandbox.state.store.delete_requests.values()) == 1  # none deleted twice
    monitor_records = [
        r for r in read_results(tmp_path / "results.jsonl")
        if r["op"] == "delete_monitor" and r["monitor_kind"] == "account"
    ]  # fmt: skip
    assert len(monitor_records) == 150
    assert all(r["outcome"] == "deleted" and r["pending"] is True for r in monitor_records)
    pages = [
        p for _, m, p, _ in sandbox.state.stats.log
        if m == "GET" and "/monitors" in p and "/keywords" not in p
    ]  # fmt: skip
    assert len(pages) == 3  # one listing, three pages, for the whole run
    assert Counter("cursor=" in p for p in pages) == Counter({False: 1, True: 2})


async def test_an_account_past_the_first_page_is_found(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """More accounts than the API answers at once: the listing follows nextCursor, so a
    username job for the last account resolves and an id there is not taken for gone."""
    sandbox: Sandbox = await sandbox_factory(
        accounts=250, delete_limit=(None, 60.0), read_limit=(None, 1.0), accounts_page_cap=100
    )
    jobs = write_jobs(tmp_path / "jobs.jsonl", ['{"username": "USER250"}', '{"account_id": "240"}'])
    summary = await run_against(sandbox, jobs, tmp_path)
    assert summary.exit_code == 0
    records = {r["account_id"]: r for r in read_results(tmp_path / "results.jsonl")}
    assert records["250"]["outcome"] == "disconnected"
    assert records["240"]["outcome"] == "disconnected"
    assert records["240"]["x_username"] == "user240"  # from the listing's third page
    gets = [p for _, m, p, _ in sandbox.state.stats.log if m == "GET"]
    assert sum("/x/accounts" in p and "/x/accounts/" not in p for p in gets) == 3


@pytest.mark.parametrize(
    ("second", "error"),
    [
        ((500, {"error": "internal_error"}), "internal_error"),
        ((200, {"accounts": [{"id": "2"}], "hasMore": True, "nextCursor": "p2"}), "nextCursor"),
        ((200, {"oops": []}), "malformed_answer"),
    ],
)
async def test_a_page_that_fails_fails_the_listing(
    second: tuple[int, dict[str, object]], error: str
) -> None:
    """Page 1 is fine; page 2 answers 500, repeats its cursor (a loop), or has no list: the
    listing raises, never returns page 1 as if it were all."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if "cursor" not in request.query:
            return web.json_response(
                {"accounts": [{"id": "1"}], "hasMore": True, "nextCursor": "p2"}
            )
        status, body = second
        return web.json_response(body, status=status)

    server = Server(handle)
    async with server, XquikClient(base_url=f"{server.url}", api_key="xq_" + "a" * 32) as client:
        with pytest.raises(ApiError, match=error):
            await client.list_accounts()
    assert [p for _, p, _ in server.seen] == ["/x/accounts", "/x/accounts?cursor=p2&limit=100"]


@pytest.mark.parametrize(
    ("query", "user", "match"),
    [
        ("from:acme", "acme", True),
        ("FROM:Acme", "@ACME", True),
        ("to:acme", "acme", True),
        ("@acme launch", "acme", True),
        ("(from:acme OR from:other)", "acme", True),
        ("launch from:acme,", "acme", True),
        ("from:acme2", "acme", False),
        ("from:acm", "acme", False),
        ("acme", "acme", False),
        ("#acme", "acme", False),
        ("-from:acme", "acme", False),
        ("from:acme", "", False),
        ("from:acme", None, False),
    ],
)
def test_which_keyword_monitors_name_a_user(query: str, user: str | None, match: bool) -> None:
    """The one matching rule for keyword monitors: whole tokens from:/to:/@, any case."""
    assert names(query, user) is match


async def test_delete_monitors_all_takes_the_keyword_monitors_naming_the_user(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """--delete-monitors=all: the keyword monitors whose query names a disconnected user go
    (recorded monitor_kind keyword), the others stay; plain --delete-monitors leaves every
    keyword monitor alone."""
    store = Store()
    for i in range(1, 11):
        store.add_account(str(i), f"user{i}")
    queries = {
        "from:user1": True, "@User2 launch": True, "to:user3 OR from:someone": True,
        "(from:user5)": True, "user4": False, "from:user10": False, "-from:user5": False,
        "from:user6": False,
    }  # fmt: skip
    ids = {store.add_keyword_monitor(q)["id"]: q for q in queries}
    sandbox: Sandbox = await sandbox_factory(
        store=store, delete_limit=(None, 60.0), read_limit=(None, 1.0)
    )
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "3", "4", "5"])
    settings = options_for(sandbox, tmp_path, delete_monitors="all")
    assert (await run_async(jobs, **settings)).exit_code == 0
    gone = {ids[k] for k in sandbox.state.store.delete_requests if k in ids}
    assert gone == {q for q, match in queries.items() if match}
    records = [r for r in read_results(tmp_path / "results.jsonl") if r["op"] == "delete_monitor"]
    assert {r["monitor_id"] for r in records if r["monitor_kind"] == "keyword"} == {
        k for k, q in ids.items() if queries[q]
    }

    plain = write_jobs(tmp_path / "plain.txt", ["6", "7"])
    before = dict(sandbox.state.store.delete_requests)
    settings = options_for(
        sandbox, tmp_path, delete_monitors=True, results=tmp_path / "plain.jsonl"
    )
    assert (await run_async(plain, **settings)).exit_code == 0
    assert {k for k in sandbox.state.store.delete_requests if k.startswith("k")} == {
        k for k in before if k.startswith("k")
    }  # from:user6 stays: keyword monitors are only for =all


async def test_monitors_left_behind_by_an_earlier_run(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """A run without --delete-monitors leaves its users' monitors running. `monitors RESULTS`
    lists exactly those (JSON lines), `--delete` removes them through the DELETE budget and
    appends delete_monitor records to the log; monitors of users never disconnected (still
    connected, or never an account) are untouched; a second `--delete` finds nothing."""
    import anyio

    store = Store()
    for i in range(1, 11):
        store.add_account(str(i), f"user{i}")
        store.add_monitor(f"user{i}", store.accounts[str(i)]["xUserId"])
    store.add_monitor("stranger")  # never a connected account
    store.add_monitor("user3")  # by username only: still tracks user3
    sandbox: Sandbox = await sandbox_factory(
        store=store, delete_limit=(None, 60.0), read_limit=(None, 1.0)
    )
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "3", "4"])
    results = tmp_path / "results.jsonl"
    assert (await run_against(sandbox, jobs, tmp_path)).exit_code == 0
    mine = {
        k
        for k, m in store.monitors.items()
        if m["username"] in {"user1", "user2", "user3", "user4"}
    }
    assert len(mine) == 5

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(
            "monitors", str(results), "--base-url", sandbox.base_url, "--log-format", "json",
            *args,
            env=cli_env(XQUIK_API_KEY=sandbox.api_key, XQUIK_STATE_DIR=str(tmp_path / "s")),
        )  # fmt: skip

    listed = await anyio.to_thread.run_sync(cli)
    assert listed.returncode == 0, listed.stderr
    shown = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {m["monitor_id"] for m in shown} == mine
    assert sandbox.state.store.delete_requests == {}
    deleted = await anyio.to_thread.run_sync(cli, "--delete")
    assert deleted.returncode == 0, deleted.stderr
    assert set(sandbox.state.store.delete_requests) == mine
    records = [r for r in read_results(results) if r["op"] == "delete_monitor"]
    assert {r["monitor_id"] for r in records} == mine
    assert all(
        r["outcome"] == "deleted" and r["source"] == "monitors:results.jsonl" for r in records
    )
    again = await anyio.to_thread.run_sync(cli, "--delete")
    assert again.returncode == 0
    assert again.stdout == ""
    assert len(store.monitors) == 12 - 5  # the other users', the stranger's


async def test_wait_monitors_records_the_final_state(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Monitors stay listed 0.6 s after their DELETE. Without --wait-monitors the record says
    pending; with it, the worker polls each monitor (GET, read tier) until 404 and records
    pending: false, and the monitor is gone from the listing when the run ends."""
    store = Store()
    for i in range(1, 5):
        store.add_account(str(i), f"user{i}")
        store.add_monitor(f"user{i}", store.accounts[str(i)]["xUserId"])
    sandbox: Sandbox = await sandbox_factory(
        store=store, delete_limit=(None, 60.0), read_limit=(None, 1.0), monitor_deletion_s=0.6
    )
    first = write_jobs(tmp_path / "a.txt", ["1", "2"])
    await run_against(sandbox, first, tmp_path, delete_monitors=True)
    records = [r for r in read_results(tmp_path / "results.jsonl") if r["op"] == "delete_monitor"]
    assert [r["pending"] for r in records] == [True, True]

    second = write_jobs(tmp_path / "b.txt", ["3", "4"])
    settings = options_for(sandbox, tmp_path, delete_monitors=True, wait_monitors=10.0,
        results=tmp_path / "waited.jsonl",
    )  # fmt: skip
    assert (await run_async(second, **settings)).exit_code == 0
    records = [r for r in read_results(tmp_path / "waited.jsonl") if r["op"] == "delete_monitor"]
    assert [r["pending"] for r in records] == [False, False]
    polls = [(p, s) for _, m, p, s in sandbox.state.stats.log if m == "GET" and "/monitors/" in p]
    assert {s for _, s in polls} == {200, 404}  # still there, then gone
    assert {r["monitor_id"] for r in records}.isdisjoint(sandbox.state.store.monitors)
