"""The learned limit counts every send the budget knows, from every run in the server's window,
and `budget status|forget` shows and resets what was learned, from a state file and from a
real redis-server."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, SandboxProcess, cli_env, run_argv, run_cli, write_jobs
from tests.redis_server import RedisServer

RATE = "auto:60/60s"


def argv_for(sb: SandboxProcess, jobs: Path, tmp: Path, *args: str) -> list[str]:
    results = str(tmp / f"{jobs.stem}.jsonl")
    return run_argv(jobs, sb, "--state-dir", str(tmp / "state"), "--rate", RATE, "--results",
                    results, "--log-format", "json", *args)  # fmt: skip


def run(sb: SandboxProcess, jobs: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv_for(sb, jobs, tmp, *args), capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=cli_env(XQUIK_API_KEY=sb.api_key))  # fmt: skip


def status(sb: SandboxProcess, tmp: Path, *args: str) -> list[dict[str, Any]]:
    done = run_cli("budget", "status", "--base-url", sb.base_url, "--rate", RATE,
                   "--json", *args, env=cli_env(XQUIK_API_KEY=sb.api_key))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def until_learned(argv: list[str], sb: SandboxProcess, tmp: Path) -> int:
    """Run `argv` until it learns a limit (a 429), then stop it (it would wait out the
    cooldown): the limit it learned, already in the budget's state."""
    log = tmp / "learning.log"
    with log.open("w") as err:
        proc = subprocess.Popen(argv, stderr=err, stdout=subprocess.DEVNULL, cwd=ROOT,
                                env=cli_env(XQUIK_API_KEY=sb.api_key))  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and '"rate_learned"' not in log.read_text():
            time.sleep(0.05)
        proc.terminate()
        proc.wait(timeout=60)
    learned = [json.loads(x) for x in log.read_text().splitlines() if '"rate_learned"' in x]
    assert learned, log.read_text()
    return int(learned[-1]["limit"])


def test_a_canary_after_small_runs_learns_what_the_server_accepted(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """A new user's start: three 3-job runs, then a `--limit 20` canary in the same server
    window of 15 per 60 s. The canary meets a 429 and learns 15 (9 of them from the earlier
    runs, which the state file knows), not its own 6 (it learned those and kept them for a
    day); `budget status` shows it; `budget forget` puts the ceiling back."""
    sb = sandbox_process("--accounts", "90", "--delete-limit", "15/60s")
    started = time.monotonic()
    for n in range(3):
        small = write_jobs(tmp_path / f"small{n}.txt", [str(3 * n + i) for i in (1, 2, 3)])
        done = run(sb, small, tmp_path)
        assert done.returncode == 0, done.stderr
    canary = write_jobs(tmp_path / "canary.txt", [str(i) for i in range(10, 40)])
    learned = until_learned(argv_for(sb, canary, tmp_path, "--limit", "20"), sb, tmp_path)
    assert time.monotonic() - started < 60  # all in the server's first window
    assert learned == 15
    [delete, _] = status(sb, tmp_path, "--state-dir", str(tmp_path / "state"))
    assert (delete["tier"], delete["limit"], delete["learned"]) == ("delete", 15, True)
    assert delete["learned_at"]
    forgot = run_cli("budget", "forget", "--base-url", sb.base_url, "--rate", "auto:60/20s",
                     "--state-dir", str(tmp_path / "state"),
                     env=cli_env(XQUIK_API_KEY=sb.api_key))  # fmt: skip
    assert forgot.returncode == 0, forgot.stderr
    assert "forgot 1 learned limit" in forgot.stderr
    [delete, _] = status(sb, tmp_path, "--state-dir", str(tmp_path / "state"))
    assert (delete["limit"], delete["learned"]) == (60, False)


def test_budget_status_and_forget_in_redis(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """The same for a budget kept in Redis (--budget): a 429 there is learned by every
    worker; status shows the limit, when, the slots held; forget deletes the finding."""
    sb = sandbox_process("--accounts", "30", "--delete-limit", "5/60s")
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 8)])
    assert (
        until_learned(argv_for(sb, jobs, tmp_path, "--budget", redis_server.url), sb, tmp_path) == 5
    )
    [delete, read] = status(sb, tmp_path, "--budget", redis_server.url)
    assert (delete["limit"], delete["learned"]) == (5, True)
    assert delete["slots_held"] >= 1
    assert read["tier"] == "read"
    forgot = run_cli("budget", "forget", "--base-url", sb.base_url, "--budget", redis_server.url,
                     env=cli_env(XQUIK_API_KEY=sb.api_key))  # fmt: skip
    assert forgot.returncode == 0, forgot.stderr
    [delete, _] = status(sb, tmp_path, "--budget", redis_server.url)
    assert delete["learned"] is False
    assert delete["limit"] == 60
