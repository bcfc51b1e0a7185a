"""A server that is not our sandbox, tried as a hostile one would be: redirects, answers that
trickle or flood, a certificate that cannot be verified, our own limit lifted. Real processes,
servers on loopback."""

from __future__ import annotations

import json
import ssl
import sys
import time
from pathlib import Path

import anyio
import pytest
import trustme

from tests.conftest import (
    ROOT,
    SandboxFactory,
    cli_env,
    read_results,
    write_jobs,
)
from tests.hostile_servers import Server, answer, flood, redirect, trickle
from worker.budget.local import LocalBudget
from worker.budget.state import StateFile
from worker.sandbox import Sandbox

KEY = "xq_" + "ab12" * 16


async def run_worker(
    jobs: Path, base: str, tmp_path: Path, *args: str, key: str = KEY, timeout: float = 60
) -> tuple[int, str, str]:
    argv = [
        sys.executable, "-m", "worker", "run", str(jobs), "--base-url", f"{base}/api/v1",
        "--results", str(tmp_path / "results.jsonl"), "--state-dir", str(tmp_path / "state"),
        *args,
    ]  # fmt: skip
    with anyio.fail_after(timeout):
        done = await anyio.run_process(argv, env=cli_env(XQUIK_API_KEY=key), cwd=ROOT, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def no_key_in(*texts: str) -> None:
    for text in texts:
        assert KEY not in text
        assert KEY[3:].upper() not in text.upper()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("same_port", [True, False])
async def test_a_redirect_is_never_followed_and_never_a_success(
    tmp_path: Path, status: int, same_port: bool
) -> None:
    """A 3xx to another port (or another path of the same server): the key goes nowhere else,
    nothing else is asked, and the job is failed with where it pointed (no query, no key)."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    async with Server(answer(200, {"success": True})) as elsewhere:
        target = lambda: f"{elsewhere.url}/api/v1/x/accounts/1?token=secret"  # noqa: E731
        async with Server(redirect(status, target)) as origin:
            if same_port:
                origin.handler = redirect(status, lambda: "/somewhere/else?token=secret")
            code, out, err = await run_worker(
                jobs, origin.url, tmp_path, "--rate", "unlimited", "--no-precheck"
            )
    assert code == 1
    assert elsewhere.seen == []
    assert [m for m, _, _ in origin.seen] == ["DELETE", "DELETE"]
    records = read_results(tmp_path / "results.jsonl")
    assert {r["outcome"] for r in records} == {"failed"}
    where = origin.url if same_port else elsewhere.url
    expected = f"unexpected_redirect: {status} to {where}"
    assert {r["error"] for r in records} == {expected}
    assert all(r["attempts"] == 1 for r in records)
    no_key_in(out, err, (tmp_path / "results.jsonl").read_text())
    assert "secret" not in (tmp_path / "results.jsonl").read_text()


async def test_a_trickling_answer_is_timed_out_as_a_whole(tmp_path: Path) -> None:
    """One byte every 0.2 s never ends an answer: --timeout 1 bounds the whole attempt, so
    the run ends (failed, retries exhausted) instead of hanging for ever."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "3"])
    async with Server(trickle(0.2)) as slow:
        started = time.monotonic()
        code, _, _ = await run_worker(
            jobs, slow.url, tmp_path, "--timeout", "1", "--max-attempts", "2", "--rate",
            "unlimited", "--concurrency", "3", "--no-precheck",
        )  # fmt: skip
        took = time.monotonic() - started
    assert code == 1
    records = read_results(tmp_path / "results.jsonl")
    assert len(records) == 3
    assert all("timeout" in r["error"] for r in records)
    assert took < 30  # 2 attempts of 1 s and a backoff each; a hang would hit the 60 s cap


async def test_a_flood_of_a_body_is_read_only_up_to_a_bound(tmp_path: Path) -> None:
    """A 100 MB answer to a DELETE: the worker reads a bounded prefix and its memory stays
    small (the 200 itself still counts: the DELETE was answered with success)."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    sent: list[int] = []
    async with Server(flood(100, sent)) as big:
        argv = [str(jobs), "--base-url", f"{big.url}/api/v1", "--rate", "unlimited",
                "--no-precheck", "--results", str(tmp_path / "results.jsonl"),
                "--state-dir", str(tmp_path / "state"), "--log-format", "json"]  # fmt: skip
        probe = (
            "import re\n"
            "from worker.cli import main\n"
            f"code = main(['run', *{argv!r}])\n"
            # VmHWM: this process's own peak (ru_maxrss would carry a large parent's over exec)
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]\n"
            "print(code, int(hwm) // 1024)\n"
        )
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [sys.executable, "-c", probe], env=cli_env(XQUIK_API_KEY=KEY), cwd=ROOT, check=False
            )
    code, rss_mb = (int(x) for x in done.stdout.split())
    assert code == 0, done.stderr
    assert [r["outcome"] for r in read_results(tmp_path / "results.jsonl")] == ["disconnected"] * 2
    assert len(sent) == 2
    assert max(sent) < 50, sent  # hung up long before the 100 MB
    assert rss_mb < 100, rss_mb  # not a body's worth of memory


async def test_a_certificate_that_cannot_be_verified_stops_the_run(tmp_path: Path) -> None:
    """Self-signed https: one attempt, no retries, the run stops (exit 2) naming the host, and
    the failed handshakes do not stay counted in the persisted budget."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 11)])
    async with Server(answer(200, {"success": True}), ssl_context=context) as tls:
        code, _, err = await run_worker(
            jobs, tls.url, tmp_path, "--rate", "15/60s", "--concurrency", "2",
            "--log-format", "json",
        )  # fmt: skip
    assert code == 2
    assert tls.seen == []  # no request ever reached it
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    [stop] = [e for e in events if e["event"] == "tls_verification_failed"]
    assert f"127.0.0.1:{tls.port}" in stop["error"]
    records = read_results(tmp_path / "results.jsonl")
    assert 1 <= len(records) <= 2  # at most what was in flight
    assert all(r["error"].startswith("tls_verification_failed") for r in records)
    states = list((tmp_path / "state").glob("budget-*.json"))
    assert states  # the precheck's listing (read tier) tried, at least
    for state in states:  # every slot taken was given back: none is held
        fingerprint, tier = state.stem.removeprefix("budget-").rsplit("-", 1)
        held = StateFile(state.parent, fingerprint, tier).load_into(LocalBudget(1, 60.0))
        assert held == 0, state.read_text()


async def test_unlimited_lifts_our_limit_never_the_servers(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """--rate unlimited against a server at 30/1s: after the first burst of 429s the key waits
    out each Retry-After, so every job is done and 429s come only at each window's edge."""
    sandbox: Sandbox = await sandbox_factory(accounts=120, delete_limit=(30, 1.0))
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 121)])
    code, _, err = await run_worker(
        jobs, sandbox.url, tmp_path, "--rate", "unlimited", "--concurrency", "4",
        key=sandbox.api_key,
    )  # fmt: skip
    assert code == 0, err
    assert sandbox.state.store.accounts == {}
    # At most what was in flight when each window filled: 4 windows, 4 workers.
    assert sandbox.state.stats.rate_limited <= 4 * 4
