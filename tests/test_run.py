"""Whole runs in-process against the sandbox: faults, 401, 429, dry run, canary batches."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import SandboxFactory, options_for, read_results, run_against, write_jobs
from worker import run_async
from worker.budget.rate import Rate
from worker.logs import configure
from worker.results.prior import read_prior
from worker.sandbox import Sandbox
from worker.settings import Secret

SAFE_PATH = re.compile(r"/api/v1/x/accounts(/[A-Za-z0-9_-]{1,128})?")


def mixed_jobs(path: Path) -> tuple[Path, set[str]]:
    """Valid ids, unknown ids, duplicates, usernames, malformed and path-injection lines."""
    lines = [f'{{"account_id": "{i}", "job_id": "j{i}"}}' for i in range(1, 41)]
    lines += [f'{{"account_id": "{i}"}}' for i in (900, 901, 902)]  # never existed
    lines += [f'{{"account_id": "{i}", "job_id": "again"}}' for i in (1, 2, 3)]  # duplicates
    lines += [f'{{"username": "@User{i}"}}' for i in (41, 42, 43)]
    lines += [
        '{"account_id": "../monitors/7"}',
        '{"account_id": "1 OR 1=1"}',
        '{"account_id": "a/b"}',
        "{broken",
        '{"nothing": true}',
        '"x' + "y" * 5000 + '"',
    ]
    existing = {str(i) for i in range(1, 44)}
    return write_jobs(path, lines), existing


async def test_faulty_api_every_line_one_record_every_account_deleted(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """With 503s, resets, lost answers and HTML 502s: one record per line, every existing
    account deleted, lost answers end as already_gone, only safe paths requested, key hidden."""
    sandbox: Sandbox = await sandbox_factory(
        delete_limit=(None, 60.0),
        read_limit=(None, 1.0),
        faults={"fail_503": 0.10, "reset": 0.05, "lose": 0.03, "html_502": 0.03, "seed": 7},
    )
    jobs, existing = mixed_jobs(tmp_path / "jobs.jsonl")
    logs = io.StringIO()
    configure("json", stream=logs)
    summary = await run_against(sandbox, jobs, tmp_path, max_attempts=10)

    records = read_results(tmp_path / "results.jsonl")
    sources = Counter(r["source"] for r in records)
    assert sorted(sources) == sorted(f"{jobs}:{n}" for n in range(1, 56))
    assert set(sources.values()) == {1}
    outcomes = Counter(r["outcome"] for r in records)
    assert set(outcomes) == {"disconnected", "already_gone", "duplicate", "invalid"}
    assert (outcomes["duplicate"], outcomes["invalid"]) == (3, 6)
    assert outcomes["disconnected"] > 0
    assert outcomes["disconnected"] + outcomes["already_gone"] == 46
    assert not existing & set(sandbox.state.store.accounts)
    stats = sandbox.state.stats
    assert stats.faults["lose"] > 0
    assert stats.faults["reset"] > 0
    gone_existing = [
        r for r in records if r["outcome"] == "already_gone" and r["account_id"] in existing
    ]
    # Only a lost answer turns an existing account into already_gone (the resend sees 404).
    assert len(gone_existing) <= stats.faults["lose"]
    assert all(SAFE_PATH.fullmatch(path) for _, _, path, _ in stats.log)
    everything = (tmp_path / "results.jsonl").read_text() + logs.getvalue()
    assert sandbox.api_key not in everything
    assert summary.exit_code == 1  # invalid lines
    assert summary.records == 55


async def test_401_stops_the_run_after_at_most_concurrency_requests(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A rejected key: no new requests, exit 3, the unsent jobs get no record."""
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 51)])
    settings = options_for(sandbox, tmp_path, concurrency=4, api_key=Secret("xq_" + "f" * 64))
    summary = await run_async(jobs, **settings)
    assert summary.exit_code == 3
    assert 1 <= len(sandbox.state.stats.log) <= 4
    records = read_results(tmp_path / "results.jsonl")
    assert len(records) == len(sandbox.state.stats.log)
    assert {(r["outcome"], r["http_status"]) for r in records} == {("failed", 401)}
    assert len(sandbox.state.store.accounts) == 50


async def test_429_holds_every_request_until_retry_after(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Another client spent the window: after the 429 nothing is sent before Retry-After."""
    sandbox: Sandbox = await sandbox_factory(delete_limit=(5, 2.0))
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 13)])
    sandbox.state.limits["delete"].consume(sandbox.state.clock(), 5)
    settings = options_for(sandbox, tmp_path, concurrency=1, rate=Rate(100, 1.0))
    summary = await run_async(jobs, **settings)
    assert summary.exit_code == 0
    log = list(sandbox.state.stats.log)
    rejected = [(t, i) for i, (t, _, _, status) in enumerate(log) if status == 429]
    assert rejected
    for t, i in rejected:
        retry_after = 2.0  # the sandbox's window; Retry-After is its ceiling in seconds
        later = [t2 for t2, *_ in log[i + 1 :]]
        assert all(t2 >= t + retry_after - 1.0 for t2 in later[:1])
        assert all(t2 - t >= 0.999 for t2 in later), "a request was sent during the cooldown"
    assert (
        len(
            {
                r["account_id"]
                for r in read_results(tmp_path / "results.jsonl")
                if r["outcome"] == "disconnected"
            }
        )
        == 12
    )


async def test_dry_run_sends_no_delete(sandbox: Sandbox, tmp_path: Path) -> None:
    """--dry-run GETs each account: exists / missing, and the sandbox saw no DELETE."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "404404", "@user3"])
    summary = await run_against(sandbox, jobs, tmp_path, dry_run=True)
    assert summary.exit_code == 0
    outcomes = {r["account_id"]: r["outcome"] for r in read_results(tmp_path / "results.jsonl")}
    assert outcomes == {"1": "exists", "2": "exists", "404404": "missing", "3": "exists"}
    assert {r["op"] for r in read_results(tmp_path / "results.jsonl")} == {"check"}
    assert not any(method == "DELETE" for _, method, _, _ in sandbox.state.stats.log)
    # A check is never taken for a deletion: a real run afterwards skips nothing.
    from worker.results.report import build

    report = build(tmp_path / "results.jsonl")
    assert report.checks == {"exists": 3, "missing": 1}
    assert report.done == set()
    assert read_prior(tmp_path / "results.jsonl").done == set()
    assert len(sandbox.state.store.accounts) == 50


async def test_limit_handles_only_the_first_n_jobs(sandbox: Sandbox, tmp_path: Path) -> None:
    """--limit 3: a canary batch of three DELETEs, the rest untouched."""
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 11)])
    await run_against(sandbox, jobs, tmp_path, limit=3)
    records = read_results(tmp_path / "results.jsonl")
    assert sorted(r["account_id"] for r in records) == ["1", "2", "3"]
    assert len(sandbox.state.store.accounts) == 47


async def test_unknown_username_is_failed_not_dropped(sandbox: Sandbox, tmp_path: Path) -> None:
    """A handle that no connection has is recorded failed: unknown_username."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["@nobody_here", "@user9"])
    summary = await run_against(sandbox, jobs, tmp_path)
    records = {r["username"]: r for r in read_results(tmp_path / "results.jsonl")}
    assert records["nobody_here"]["outcome"] == "failed"
    assert records["nobody_here"]["error"] == "unknown_username"
    assert records["user9"]["outcome"] == "disconnected"
    assert records["user9"]["account_id"] == "9"
    assert summary.exit_code == 1


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("fail_403", 403, "forbidden"),
        ("fail_409", 409, "conflict"),
        ("fail_422", 422, "invalid_input"),
    ],
)
async def test_permanent_error_fails_without_retry(
    sandbox_factory: SandboxFactory, tmp_path: Path, fault: str, status: int, code: str
) -> None:
    """403, 409, 422: failed after exactly one attempt, the API's code recorded, one request."""
    sandbox: Sandbox = await sandbox_factory(delete_limit=(None, 60.0), faults={fault: 1.0})
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    summary = await run_against(sandbox, jobs, tmp_path, max_attempts=5, no_precheck=True)
    [record] = read_results(tmp_path / "results.jsonl")
    assert (record["outcome"], record["attempts"], record["http_status"]) == ("failed", 1, status)
    assert record["error"].startswith(code)
    assert sandbox.state.stats.by_status == {f"DELETE {status}": 1}
    assert summary.retries == 0
    assert summary.exit_code == 1


async def test_transient_error_exhausts_retries(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Retries exhausted: failed, with the attempts made and the last error named."""
    sandbox: Sandbox = await sandbox_factory(delete_limit=(None, 60.0), faults={"fail_500": 1.0})
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    summary = await run_against(sandbox, jobs, tmp_path, max_attempts=3)
    [record] = read_results(tmp_path / "results.jsonl")
    assert record["outcome"] == "failed"
    assert record["attempts"] == 3
    assert record["http_status"] == 500
    assert record["error"].startswith("retries_exhausted after 3 attempts: internal_error")
    assert summary.exit_code == 1


async def test_no_delete_is_spent_on_an_account_already_gone(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """1,000 jobs of which 500 are gone already: exactly 500 DELETEs reach the server; the
    gone ones are already_gone with checked: true, confirmed by a GET each, no DELETE."""
    sandbox: Sandbox = await sandbox_factory(
        accounts=1000, delete_limit=(None, 60.0), read_limit=(None, 1.0)
    )
    for i in range(1, 1001, 2):
        del sandbox.state.store.accounts[str(i)]
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 1001)])
    summary = await run_against(sandbox, jobs, tmp_path, concurrency=8)
    assert summary.exit_code == 0
    deletes = [p for _, m, p, _ in sandbox.state.stats.log if m == "DELETE"]
    assert len(deletes) == 500
    records = read_results(tmp_path / "results.jsonl")
    gone = [r for r in records if r["outcome"] == "already_gone"]
    assert len(gone) == 500
    assert all(r["checked"] and int(r["account_id"]) % 2 == 1 for r in gone)
    assert all(not r["checked"] for r in records if r["outcome"] == "disconnected")
    assert sandbox.state.store.accounts == {}


async def test_a_listing_cut_short_never_makes_a_wrong_already_gone(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """The listing shows only 5 of 20 live accounts: the other 15 are confirmed live by their
    GET and disconnected, never recorded already_gone."""
    sandbox: Sandbox = await sandbox_factory(
        accounts=20, delete_limit=(None, 60.0), read_limit=(None, 1.0), list_limit=5
    )
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 21)])
    summary = await run_against(sandbox, jobs, tmp_path)
    assert summary.exit_code == 0
    records = read_results(tmp_path / "results.jsonl")
    assert {r["outcome"] for r in records} == {"disconnected"}
    assert sandbox.state.store.accounts == {}


async def test_no_precheck_sends_every_delete(sandbox: Sandbox, tmp_path: Path) -> None:
    """--no-precheck: no listing, no GET; a gone id costs a DELETE and its 404."""
    del sandbox.state.store.accounts["1"]
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    await run_against(sandbox, jobs, tmp_path, no_precheck=True)
    methods = [m for _, m, _, _ in sandbox.state.stats.log]
    assert methods == ["DELETE", "DELETE"]
    records = read_results(tmp_path / "results.jsonl")
    assert {r["account_id"]: (r["outcome"], r["checked"]) for r in records} == {
        "1": ("already_gone", False),
        "2": ("disconnected", False),
    }


async def test_an_id_that_belongs_to_another_user_is_never_deleted(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A misaligned CSV: the job names account 5 and @user6. The listing says 5 is @user5: no
    DELETE, `failed` with account_mismatch naming both; case does not matter (5 and @USER5
    is 5); with --no-precheck and in a dry run alike."""
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        ['{"account_id": "5", "username": "user6"}', '{"account_id": "7", "username": "USER7"}'],
    )
    for options in ({}, {"no_precheck": True}, {"dry_run": True}):
        results = tmp_path / f"r{len(options)}{sorted(options)}.jsonl"
        summary = await run_against(sandbox, jobs, tmp_path, results=results, **options)
        assert summary.exit_code == 1
        records = {r["account_id"]: r for r in read_results(results)}
        assert records["5"]["outcome"] == "failed"
        assert records["5"]["error"].startswith("account_mismatch: account 5 is @user5")
        assert "@user6" in records["5"]["error"]
        assert records["5"]["x_username"] == "user5"
        assert "5" in sandbox.state.store.accounts
        assert not any(m == "DELETE" and p.endswith("/5") for _, m, p, _ in sandbox.state.stats.log)
    assert "7" not in sandbox.state.store.accounts


async def test_a_listed_name_that_is_no_handle_does_not_lose_its_job(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """`plan --all | run -` writes the listed username beside the id: one the server lists
    that is not a valid handle (spaces, punctuation) no longer makes the job invalid."""
    sandbox.state.store.add_account("60", "weird name!")
    jobs = write_jobs(tmp_path / "jobs.jsonl", ['{"account_id": "60", "username": "weird name!"}'])
    summary = await run_against(sandbox, jobs, tmp_path)
    assert summary.exit_code == 0
    [record] = read_results(tmp_path / "results.jsonl")
    assert (record["outcome"], record["username"]) == ("disconnected", "weird name!")
    only_name = write_jobs(tmp_path / "name.jsonl", ['{"username": "weird name!"}'])
    summary = await run_against(sandbox, only_name, tmp_path, results=tmp_path / "n.jsonl")
    assert summary.outcomes == {"invalid": 1}  # a name alone must be a handle


async def test_report_draws_the_limit_the_log_recorded(sandbox: Sandbox, tmp_path: Path) -> None:
    """Records carry the DELETE limit in force (`delete_limit`); `report` without --rate
    reads its windows and limit line from it (it drew 15/60s whatever the run's limit)."""
    from tests.conftest import run_cli

    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "3"])
    assert (await run_against(sandbox, jobs, tmp_path, rate="20/3s")).exit_code == 0
    records = read_results(tmp_path / "results.jsonl")
    assert {r["delete_limit"] for r in records} == {"20/3s"}
    report = run_cli("report", str(tmp_path / "results.jsonl"), "--json", "--html",
                     str(tmp_path / "r.html"))  # fmt: skip
    assert json.loads(report.stdout)["window_s"] == 3.0
    assert 'data-limit="20"' in (tmp_path / "r.html").read_text()
