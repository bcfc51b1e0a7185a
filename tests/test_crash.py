"""Crash safety with real processes and signals: kill -9 and rerun, SIGTERM drains, a second
signal stops at once, torn result lines, and the report over several runs."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import (
    ROOT,
    SandboxProcess,
    cli_env,
    done_line,
    read_results,
    run_argv,
    run_cli,
    write_jobs,
)


def start_run(jobs: Path, sb: SandboxProcess, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    with (tmp_path / "stderr.log").open("a") as err:
        return subprocess.Popen(
            run_argv(
                jobs, sb, "--state-dir", str(tmp_path / "state"), "--rate", "unlimited", *args
            ),
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            cwd=ROOT,
            env=cli_env(XQUIK_API_KEY=sb.api_key),
        )


def wait_for_records(results: Path, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if results.exists() and results.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} records after {timeout} s")


def deletes_by_account(sb: SandboxProcess) -> Counter[str]:
    stats = sb.stats()
    return Counter(stats["deleted_accounts"])


def test_sigkill_halfway_then_rerun_completes_with_one_done_record_each(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """kill -9 mid-run, rerun: every account deleted, exactly one done record per account
    across both runs, and no DELETE resent for an account already recorded done."""
    sb = sandbox_process(
        "--accounts", "300", "--delete-limit", "unlimited", "--slow", "1", "--slow-seconds", "0.03"
    )
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 301)])
    results = tmp_path / "jobs.txt.results.jsonl"
    # The first run reads its jobs from a pipe we hold open: it cannot finish on its own
    # before the kill, however fast this machine is (no race), and has work in flight.
    with (tmp_path / "stderr.log").open("a") as err:
        argv = run_argv("-", sb, "--state-dir", str(tmp_path / "state"), "--rate", "unlimited",
                        "--concurrency", "4", "--results", str(results), "--yes")  # fmt: skip
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=err, text=True, cwd=ROOT,
                                env=cli_env(XQUIK_API_KEY=sb.api_key))  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write("".join(f"{i}\n" for i in range(1, 171)))
    proc.stdin.flush()
    wait_for_records(results, 150)
    proc.kill()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    proc.stdin.close()
    first = read_results(results)
    assert 150 <= len(first) <= 170
    done_first = {r["account_id"] for r in first}

    proc = start_run(jobs, sb, tmp_path, "--concurrency", "4")
    assert proc.wait(timeout=60) == 0
    records = read_results(results)
    done = Counter(
        r["account_id"] for r in records if r["outcome"] in {"disconnected", "already_gone"}
    )
    assert done == Counter({str(i): 1 for i in range(1, 301)})
    assert sb.stats()["accounts"] == 0
    # The rerun sent nothing for accounts recorded done: one DELETE each in the server's log.
    requests = _delete_paths(sb)
    assert all(requests[f"/api/v1/x/accounts/{a}"] == 1 for a in done_first)
    summary = _summary(tmp_path)
    assert summary["skipped_done"] == len(done_first)


def _delete_paths(sb: SandboxProcess) -> Counter[str]:
    import urllib.request

    with urllib.request.urlopen(f"{sb.url}/_sandbox/requests", timeout=10) as resp:
        log = json.loads(resp.read())
    return Counter(path for method, path, _, _ in log if method == "DELETE")


def _summary(tmp_path: Path) -> dict[str, Any]:
    lines = (tmp_path / "stderr.log").read_text().splitlines()
    summaries = [json.loads(line) for line in lines if '"run_summary"' in line]
    return summaries[-1]  # type: ignore[no-any-return]


def test_sigterm_drains_in_flight_exits_130_then_rerun_finishes(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """SIGTERM: stop reading, record what is in flight, exit 130 within the grace period;
    every account the server deleted has its record; a rerun completes the rest."""
    sb = sandbox_process(
        "--accounts", "200", "--delete-limit", "unlimited", "--slow", "1", "--slow-seconds", "0.15"
    )
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 201)])
    results = tmp_path / "jobs.txt.results.jsonl"
    proc = start_run(jobs, sb, tmp_path, "--concurrency", "8", "--grace", "10")
    wait_for_records(results, 40)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 130
    assert time.monotonic() - sent < 10
    recorded = {r["account_id"] for r in read_results(results)}
    assert set(sb.stats()["deleted_accounts"]) == recorded
    assert len(recorded) < 200
    assert _summary(tmp_path)["stopped"] == "signal"

    proc = start_run(jobs, sb, tmp_path, "--concurrency", "8")
    assert proc.wait(timeout=60) == 0
    assert sb.stats()["accounts"] == 0
    assert len(read_results(results)) == 200


def test_second_signal_stops_at_once(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """With answers taking 20 s and a 30 s grace, a second SIGINT ends the run right away."""
    sb = sandbox_process(
        "--accounts", "20", "--delete-limit", "unlimited", "--slow", "1", "--slow-seconds", "20"
    )
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 21)])
    proc = start_run(jobs, sb, tmp_path, "--concurrency", "2", "--grace", "30", "--no-precheck")
    deadline = time.monotonic() + 20
    while sb.stats()["received"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert proc.poll() is None  # still in its grace period
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert time.monotonic() - started < 3
    summary = _summary(tmp_path)
    assert summary["records"] == 0
    assert summary["not_finished"] >= 2


def test_torn_last_line_is_reported_and_not_fatal(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """A log cut mid-line by a crash is read anyway; the torn line is reported; new records
    start on a line of their own."""
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "3"])
    results = tmp_path / "jobs.txt.results.jsonl"
    good = done_line("1", sb.api_key, sb.base_url)
    results.write_text(good + '{"ts": "2026-11-28T17:00:01.000Z", "run_id": "o')
    proc = start_run(jobs, sb, tmp_path)
    assert proc.wait(timeout=30) == 0
    log = (tmp_path / "stderr.log").read_text()
    torn = [json.loads(line) for line in log.splitlines() if "results_unreadable_lines" in line]
    assert torn[0]["lines"] == [2]
    lines = results.read_text().splitlines()
    assert len(lines) == 4
    assert {json.loads(line)["account_id"] for line in lines[2:]} == {"2", "3"}
    assert sb.stats()["deleted_accounts"] == ["2", "3"]

    report = run_cli("report", str(results), "--json")
    assert report.returncode == 0
    data = json.loads(report.stdout)
    assert data["unreadable_lines"] == [2]
    assert data["accounts_done"] == 3


def test_fresh_ignores_earlier_records_but_keeps_them(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """--fresh resends everything (404 → already_gone) and appends; nothing is truncated."""
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    assert start_run(jobs, sb, tmp_path).wait(timeout=30) == 0
    assert start_run(jobs, sb, tmp_path, "--fresh").wait(timeout=30) == 0
    outcomes = [r["outcome"] for r in read_results(tmp_path / "jobs.txt.results.jsonl")]
    assert sorted(outcomes) == ["already_gone", "already_gone", "disconnected", "disconnected"]


def test_report_groups_outstanding_failures(tmp_path: Path) -> None:
    """report: failures not done since, grouped by error; exit 1 while any remain."""
    results = tmp_path / "r.jsonl"
    rows = [
        ("a", "1", "failed", "forbidden"),
        ("a", "2", "failed", "forbidden"),
        ("a", "3", "failed", "retries_exhausted after 5 attempts: timeout"),
        ("a", "4", "disconnected", None),
        ("b", "1", "already_gone", None),
    ]
    results.write_text(
        "".join(
            json.dumps(
                {
                    "ts": f"2026-11-28T17:0{i}:00.000Z",
                    "run_id": run,
                    "source": f"j:{i}",
                    "account_id": acc,
                    "op": "disconnect",
                    "outcome": out,
                    "error": err,
                }
            )
            + "\n"
            for i, (run, acc, out, err) in enumerate(rows)
        )
    )
    proc = run_cli("report", str(results), "--json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["failed_outstanding"] == {
        "forbidden": ["2"],
        "retries_exhausted after 5 attempts: timeout": ["3"],
    }
    assert [r["run_id"] for r in data["runs"]] == ["a", "b"]
    text = run_cli("report", str(results))
    assert "1 x forbidden" in text.stdout
    assert run_cli("report", str(tmp_path / "missing.jsonl")).returncode == 2
