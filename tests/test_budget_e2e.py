"""The budget against the sandbox's fixed window: the whole budget used, never tripped, not
even by back-to-back runs, and a foreign client's spending handled with one cooldown."""

from __future__ import annotations

import subprocess
import sys
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
    run_argv,
    write_jobs,
)
from worker import run_async
from worker.budget.rate import Rate
from worker.sandbox import Sandbox


async def test_short_window_200_jobs_zero_429_all_done(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """20 per 2 s, 200 jobs, end to end: no 429 and every account gone. The pace is proven on
    a fake clock (test_limiter) and measured in bench/budget.py; here δ is 0.5 s so that a
    loaded machine's latency cannot make the check flake."""
    sandbox: Sandbox = await sandbox_factory(accounts=200, delete_limit=(20, 2.0))
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 201)])
    settings = options_for(sandbox, tmp_path, rate=Rate(20, 2.0), rate_margin=0.5, concurrency=8)
    summary = await run_async(jobs, **settings)
    assert summary.exit_code == 0
    log = [t for t, method, _, _ in sandbox.state.stats.log if method == "DELETE"]
    assert sandbox.state.stats.rate_limited == 0
    assert len(log) == 200
    assert sandbox.state.store.accounts == {}


def run_process(sb: SandboxProcess, jobs: Path, tmp_path: Path, *args: str) -> int:
    return subprocess.run(
        run_argv(jobs, sb, "--state-dir", str(tmp_path / "state"), *args),
        env=cli_env(XQUIK_API_KEY=sb.api_key),
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    ).returncode


def test_back_to_back_runs_within_one_window_cause_no_429(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Run 1 spends the window; run 2 (a new process) starts at once and still waits for it,
    because the send times persist in the state directory."""
    sb = sandbox_process("--accounts", "20", "--delete-limit", "10/3s")
    first = write_jobs(tmp_path / "a.txt", [str(i) for i in range(1, 11)])
    second = write_jobs(tmp_path / "b.txt", [str(i) for i in range(11, 21)])
    assert run_process(sb, first, tmp_path, "--rate", "10/3s") == 0
    assert run_process(sb, second, tmp_path, "--rate", "10/3s") == 0
    stats = sb.stats()
    assert stats["rate_limited"] == 0
    assert stats["accounts"] == 0


def test_without_state_back_to_back_runs_would_trip(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """The control: with a fresh state dir per run, the second run bursts into a 429."""
    sb = sandbox_process("--accounts", "20", "--delete-limit", "10/3s")
    first = write_jobs(tmp_path / "a.txt", [str(i) for i in range(1, 11)])
    second = write_jobs(tmp_path / "b.txt", [str(i) for i in range(11, 21)])
    assert run_process(sb, first, tmp_path / "one", "--rate", "10/3s") == 0
    assert run_process(sb, second, tmp_path / "two", "--rate", "10/3s") == 0
    assert sb.stats()["rate_limited"] >= 1
    assert sb.stats()["accounts"] == 0  # and still finishes, through the cooldown


async def test_foreign_spending_one_cooldown_at_most_concurrency_429s(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Another client spends the window: we get 429s only from what was already in flight
    (at most --concurrency per cooldown), pause everything, and finish every job."""
    sandbox: Sandbox = await sandbox_factory(accounts=40, delete_limit=(10, 2.0))
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 41)])
    sandbox.state.limits["delete"].consume(sandbox.state.clock(), 10)
    settings = options_for(sandbox, tmp_path, rate=Rate(10, 2.0), concurrency=4)
    summary = await run_async(jobs, **settings)
    assert summary.exit_code == 0
    log = list(sandbox.state.stats.log)
    rejected = [t for t, _, _, status in log if status == 429]
    assert 1 <= len(rejected) <= 4
    assert max(rejected) - min(rejected) < 0.5  # one burst, one cooldown
    outcomes = {r["outcome"] for r in read_results(tmp_path / "results.jsonl")}
    assert outcomes == {"disconnected"}


def test_no_429_under_ingress_jitter_and_a_busy_cpu(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """The server counts each request up to 500 ms after it was sent (a random delay on the
    way in), and a busy loop competes for the CPU: with no margin at all, no 429, every
    account gone, because a slot is held until a span after its answer."""
    sb = sandbox_process("--accounts", "60", "--delete-limit", "10/1s", "--ingress-jitter-ms",
                         "500", "--seed", "7")  # fmt: skip
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 61)])
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 120\n"
                             "while time.time() < end: pass"])  # fmt: skip
    try:
        code = run_process(sb, jobs, tmp_path, "--rate", "10/1s", "--concurrency", "8")
    finally:
        busy.kill()
        busy.wait()
    assert code == 0
    assert sb.stats()["rate_limited"] == 0
    assert sb.stats()["accounts"] == 0


async def test_auto_rate_learns_the_live_limit_and_the_next_run_starts_at_it(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """The sandbox at 12 per 1 s, `--rate auto:40/1s`, concurrency 4, 120 jobs: every 429 of
    the run falls in its first window and there are at most 4; the summary says the limit was
    learned. A second run on the same state dir starts at the learned 12: no 429 at all."""
    sandbox: Sandbox = await sandbox_factory(accounts=240, delete_limit=(12, 1.0))
    auto = Rate(40, 1.0, auto=True)
    first = write_jobs(tmp_path / "first.txt", [str(i) for i in range(1, 121)])
    summary = await run_against(sandbox, first, tmp_path, rate=auto, concurrency=4)
    assert summary.exit_code == 0
    deletes = [
        (t, status) for t, method, _, status in sandbox.state.stats.log if method == "DELETE"
    ]
    rejected = [t for t, status in deletes if status == 429]
    assert 1 <= len(rejected) <= 4
    assert all(t < deletes[0][0] + 1.0 for t in rejected)
    assert summary.rate == {
        "limit": 12, "window_s": 1.0, "mode": "auto", "learned": True, "ceiling": 40
    }  # fmt: skip
    assert len([s for _, s in deletes if s == 200]) == 120

    before = len(deletes)
    second = write_jobs(tmp_path / "second.txt", [str(i) for i in range(121, 241)])
    again = options_for(
        sandbox, tmp_path, rate=auto, concurrency=4, results=tmp_path / "second.jsonl"
    )
    summary = await run_async(second, **again)
    assert summary.exit_code == 0
    later = [s for t, method, _, s in sandbox.state.stats.log if method == "DELETE"][before:]
    assert later.count(429) == 0
    assert later.count(200) == 120
    assert summary.rate["limit"] == 12
    assert sandbox.state.store.accounts == {}
