"""Who was removed, by which key, and the ids that were not connected when the run began."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.conftest import read_results, run_against, run_cli, write_jobs
from worker.api.session import Session
from worker.budget.rate import UNLIMITED
from worker.models import Job
from worker.run.operations import Operations
from worker.sandbox import Sandbox
from worker.settings import ApiSettings, Secret


async def test_records_say_who_was_removed_and_by_which_key(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Each disconnect record carries the account as listed just before its removal (X user,
    health, status) and every record the key's id; the key itself appears nowhere."""
    accounts = {k: dict(v) for k, v in sandbox.state.store.accounts.items()}
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        ['{"account_id": "1"}', '{"username": "@USER2"}', '{"account_id": "3"}', "{broken"],
    )
    summary = await run_against(sandbox, jobs, tmp_path)
    assert summary.exit_code == 1  # the broken line
    records = read_results(tmp_path / "results.jsonl")
    key_id = hashlib.sha256(sandbox.api_key.encode()).hexdigest()[:12]
    assert {r["key_id"] for r in records} == {key_id}
    done = {r["account_id"]: r for r in records if r["outcome"] == "disconnected"}
    assert set(done) == {"1", "2", "3"}
    for account_id, record in done.items():
        account = accounts[account_id]
        assert record["x_username"] == account["xUsername"]
        assert record["x_user_id"] == account["xUserId"]
        assert record["health"] == account["health"]
        assert record["status"] == account["status"]
        assert "seen_connected" not in record
    text = (tmp_path / "results.jsonl").read_text()
    assert sandbox.api_key not in text


async def test_an_id_not_connected_at_the_start_is_told_apart(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A mistyped id: already_gone with checked and seen_connected false, counted apart in
    the summary and in `report`; an account removed while the run went on (listed, then 404)
    is seen_connected true. --strict-missing fails the mistyped one: not_connected, exit 1."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "99999", "2"])
    summary = await run_against(sandbox, jobs, tmp_path)
    assert summary.exit_code == 0
    assert summary.not_connected == 1
    [typo] = [r for r in read_results(tmp_path / "results.jsonl") if r["account_id"] == "99999"]
    assert (typo["outcome"], typo["checked"], typo["seen_connected"]) == (
        "already_gone", True, False,
    )  # fmt: skip
    assert typo["x_username"] is None
    report = run_cli("report", str(tmp_path / "results.jsonl"))
    assert "not connected when the run began: 1" in report.stdout
    assert "99999" in report.stdout
    as_json = json.loads(run_cli("report", str(tmp_path / "results.jsonl"), "--json").stdout)
    assert as_json["not_connected_at_start"] == ["99999"]

    strict = write_jobs(tmp_path / "strict.txt", ["99998", "4"])
    summary = await run_against(
        sandbox, strict, tmp_path, strict_missing=True, results=tmp_path / "strict.jsonl"
    )
    assert summary.exit_code == 1
    records = {r["account_id"]: r for r in read_results(tmp_path / "strict.jsonl")}
    assert records["99998"]["outcome"] == "failed"
    assert records["99998"]["error"].startswith("not_connected")
    assert records["99998"]["seen_connected"] is False
    assert records["4"]["outcome"] == "disconnected"


async def test_removed_during_the_run_is_seen_connected(sandbox: Sandbox, tmp_path: Path) -> None:
    """Listed when the run began, gone by its DELETE (someone else removed it): already_gone
    with seen_connected true and the account's X user: not a typo."""
    account = dict(sandbox.state.store.accounts["5"])
    api = ApiSettings(
        sandbox.base_url, Secret(sandbox.api_key), rate=UNLIMITED, read_rate=UNLIMITED
    )
    async with Session(api, on_fatal=lambda exc: None) as session:
        ops = Operations(session, run_id="r")
        assert await session.directory.listed("5") is not None  # the run's listing
        del sandbox.state.store.accounts["5"]  # removed by someone else meanwhile
        [record] = await ops.handle(Job(source="jobs.txt:1", account_id="5"))
    assert record.outcome == "already_gone"
    assert record.seen_connected is True
    assert record.checked is False
    assert record.x_username == account["xUsername"]


async def test_records_and_jobs_match_their_schemas(sandbox: Sandbox, tmp_path: Path) -> None:
    """jobs/result.schema.json describes the records a real run writes (every outcome and op
    this run produces), and jobs/job.schema.json the example jobs."""
    import jsonschema

    root = Path(__file__).resolve().parent.parent / "jobs"
    schema = json.loads((root / "result.schema.json").read_text())
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            '{"account_id": "1", "job_id": "a", "delete_monitors": true}',
            '{"account_id": "1"}',
            '{"account_id": "99999"}',
            '{"username": "nobody_here"}',
            "{broken",
        ],
    )
    await run_against(sandbox, jobs, tmp_path)
    records = read_results(tmp_path / "results.jsonl")
    assert {r["outcome"] for r in records} >= {
        "disconnected", "duplicate", "already_gone", "failed", "invalid", "deleted",
    }  # fmt: skip
    for record in records:
        jsonschema.validate(record, schema)
    job_schema = json.loads((root / "job.schema.json").read_text())
    for line in (root / "example.jsonl").read_text().splitlines()[:8]:
        job = json.loads(line)
        if isinstance(job, dict) and "nothing" not in job:
            jsonschema.validate(job, job_schema)
