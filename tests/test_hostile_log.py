"""The result log and the budget's state, tried as a careless user would: two runs on one log,
a log that cannot be used, a state dir that cannot be written, a full disk, a closed stderr.
Real processes, real files."""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    ROOT,
    cli_env,
    done_line,
    read_results,
    run_argv,
    run_cli,
    write_jobs,
)
from worker.sandbox import Sandbox


def deletes_by_account(sb: Any) -> Counter[str]:
    log = sb.requests()
    return Counter(path.rsplit("/", 1)[1] for method, path, _, _ in log if method == "DELETE")


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def read_results_lenient(path: Path) -> list[dict[str, Any]]:
    """Whole records only (a torn line from the failed write is skipped, as resume does)."""
    out = []
    for line in path.read_text().split("\n"):
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def test_a_second_run_on_the_same_log_exits_2_at_once(sandbox_process: Any, tmp_path: Path) -> None:
    """Two runs on one result log (a cron run still going when the next starts): the second
    exits 2 naming the first's pid and sends nothing; every account is deleted once."""
    sb = sandbox_process("--accounts", "12", "--delete-limit", "unlimited", "--slow", "1",
                         "--slow-seconds", "1")  # fmt: skip
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 13)])
    env = cli_env(XQUIK_API_KEY=sb.api_key)
    argv = [*run_argv(jobs, sb, "--state-dir", str(tmp_path / "s"), "--concurrency", "2")]
    first = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 20
    while sb.stats()["received"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    # The second run goes to a server of its own: what it sends there, it sent at all.
    other = sandbox_process("--accounts", "12", "--delete-limit", "unlimited")
    argv2 = run_argv(jobs, other, "--state-dir", str(tmp_path / "s"), "--concurrency", "2")
    second = subprocess.run(argv2, env=cli_env(XQUIK_API_KEY=other.api_key), cwd=ROOT,
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert first.poll() is None  # still running: the two overlapped
    assert second.returncode == 2, second.stderr
    assert f"in use by pid {first.pid}" in second.stderr
    first.communicate(timeout=60)
    assert first.returncode == 0
    assert deletes_by_account(sb) == Counter({str(i): 1 for i in range(1, 13)})
    assert other.stats()["received"] == 0  # refused before any request, not only any DELETE
    records = read_results(tmp_path / "jobs.txt.results.jsonl")
    assert len(records) == 12


def test_wait_lock_runs_after_the_holder(sandbox_process: Any, tmp_path: Path) -> None:
    """--wait-lock: the second run waits for the first, then skips everything it did."""
    sb = sandbox_process("--accounts", "6", "--delete-limit", "unlimited", "--slow", "1",
                         "--slow-seconds", "1")  # fmt: skip
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 7)])
    env = cli_env(XQUIK_API_KEY=sb.api_key)
    argv = run_argv(jobs, sb, "--state-dir", str(tmp_path / "s"), "--log-format", "json",
                    "--concurrency", "1")  # fmt: skip
    first = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while sb.stats()["received"] == 0:
        time.sleep(0.05)
    second = subprocess.run([*argv, "--wait-lock"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert first.wait(timeout=30) == 0
    assert second.returncode == 0
    assert '"waiting_for_lock"' in second.stderr
    assert '"skipping_done": 6' in second.stderr
    assert deletes_by_account(sb) == Counter({str(i): 1 for i in range(1, 7)})


def test_two_runs_with_two_logs_share_one_budget(sandbox_process: Any, tmp_path: Path) -> None:
    """A manual run beside a cron run on one key, different logs: together no 429 and never
    more than N DELETEs in any window, because they share the state file's window."""
    sb = sandbox_process("--accounts", "40", "--delete-limit", "10/2s")
    env = cli_env(XQUIK_API_KEY=sb.api_key)
    procs = []
    for name, ids in (("a", range(1, 21)), ("b", range(21, 41))):
        jobs = write_jobs(tmp_path / f"{name}.txt", [str(i) for i in ids])
        argv = run_argv(jobs, sb, "--state-dir", str(tmp_path / "shared"), "--rate", "10/2s",
                        "--rate-margin", "0.3")  # fmt: skip
        procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))  # fmt: skip
    assert [p.wait(timeout=90) for p in procs] == [0, 0]
    assert sb.stats()["rate_limited"] == 0
    assert sb.stats()["accounts"] == 0
    times = sorted(t for method, _, status, t in sb.requests() if method == "DELETE")
    assert len(times) == 40
    assert all(times[i + 10] - times[i] >= 2.0 for i in range(len(times) - 10))


@pytest.mark.parametrize(
    ("results", "says"),
    [
        ("{dir}", "is a directory"),
        ("/proc/version", "not a regular file"),
        ("/proc/no-such-dir/r.jsonl", "cannot be opened"),
        ("{jobs}", "is the jobs source itself"),
    ],
)
def test_an_unusable_result_log_exits_2_before_any_request(
    sandbox_process: Any, tmp_path: Path, results: str, says: str
) -> None:
    """Checked before the first request: exit 2 naming the path and why; 0 requests."""
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    path = results.format(dir=tmp_path, jobs=jobs)
    done = subprocess.run(
        run_argv(jobs, sb, "--results", path, "--state-dir", str(tmp_path / "s")),
        env=cli_env(XQUIK_API_KEY=sb.api_key), cwd=ROOT, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert sb.stats()["received"] == 0


def test_stdin_that_is_the_result_log_is_refused(sandbox_process: Any, tmp_path: Path) -> None:
    """`run - < results.jsonl` with stdin's default log: it would read its own appends."""
    sb = sandbox_process("--delete-limit", "unlimited")
    log = tmp_path / "results.jsonl"
    log.write_text('{"account_id": "1"}\n')
    with log.open("rb") as stdin:
        done = subprocess.run(
            run_argv("-", sb, "--state-dir", str(tmp_path / "s")), stdin=stdin,
            env=cli_env(XQUIK_API_KEY=sb.api_key), cwd=tmp_path, capture_output=True,
            text=True, timeout=30,
        )  # fmt: skip
    assert done.returncode == 2
    assert "is the jobs source itself" in done.stderr
    assert sb.stats()["received"] == 0


def test_an_unusable_state_dir_exits_2_and_none_opts_out(
    sandbox_process: Any, tmp_path: Path
) -> None:
    """A state dir under a file: exit 2 naming it, nothing sent; `none` runs and says so."""
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    (tmp_path / "file").write_text("")
    env = cli_env(XQUIK_API_KEY=sb.api_key)
    bad = subprocess.run(run_argv(jobs, sb, "--state-dir", str(tmp_path / "file" / "s")),
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert bad.returncode == 2
    assert "--state-dir" in bad.stderr
    assert sb.stats()["received"] == 0
    ok = subprocess.run(run_argv(jobs, sb, "--state-dir", "none", "--log-format", "json"),
                        env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert ok.returncode == 0
    assert ok.stderr.count('"budget_not_persisted"') == 1


def test_a_full_disk_mid_run_stops_with_exit_4_and_a_rerun_finishes(
    sandbox_process: Any, tmp_path: Path
) -> None:
    """The log stops taking writes after about 20 records (RLIMIT_FSIZE: writes past it fail
    as on a full disk): sending stops, exit 4 with results_write_failed; the rerun, with room
    again, ends with every account done exactly once (unrecorded ones come back
    already_gone)."""
    sb = sandbox_process("--accounts", "60", "--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 61)])
    results = tmp_path / "r.jsonl"
    argv = run_argv(jobs, sb, "--results", str(results), "--state-dir", "none",
                    "--log-format", "json", "--rate", "unlimited")  # fmt: skip
    env = cli_env(XQUIK_API_KEY=sb.api_key)
    # The size limit is per process: coverage's own data file would hit it too.
    limited = {k: v for k, v in env.items() if not k.startswith("COVERAGE_PROCESS")}
    full = subprocess.run(argv, env=limited, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          preexec_fn=_limit_file_size(20 * 300))  # fmt: skip
    assert full.returncode == 4, full.stderr[-2000:]
    assert '"results_write_failed"' in full.stderr
    assert "Traceback" not in full.stderr
    first = read_results_lenient(results)
    assert 0 < len(first) < 60
    again = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr[-2000:]
    records = read_results_lenient(results)
    done = Counter(
        r["account_id"] for r in records if r["outcome"] in {"disconnected", "already_gone"}
    )
    assert done == Counter({str(i): 1 for i in range(1, 61)})
    assert deletes_by_account(sb).most_common(1)[0][1] <= 2  # a lost record's one resend


async def test_a_username_done_in_the_log_is_done_on_a_rerun(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """`,user3` (username only): the rerun skips it before any lookup, so a handle-based
    offboarding list comes back clean (exit 0, report clean), in any case and with @."""
    from tests.conftest import run_against
    from worker.results.report import build

    jobs = tmp_path / "jobs.csv"
    jobs.write_text("account_id,username\n,user3\n,User4\n")
    first = await run_against(sandbox, jobs, tmp_path)
    assert first.exit_code == 0
    again = tmp_path / "again.csv"
    again.write_text("account_id,username\n,@USER3\n,user4\n")
    second = await run_against(sandbox, again, tmp_path)
    assert second.exit_code == 0
    assert second.skipped_done == 2
    assert second.sent.get("GET", 0) == 0  # no lookup at all
    assert build(tmp_path / "results.jsonl").outstanding() == {}


def test_a_closed_stderr_never_stops_the_work(sandbox_process: Any, tmp_path: Path) -> None:
    """`run … 2>&1 | head -1`: the logs' pipe closes at once; every job is still done and
    recorded, and the run ends as if nothing happened."""
    sb = sandbox_process("--accounts", "40", "--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 41)])
    argv = run_argv(jobs, sb, "--state-dir", "none", "--log-format", "json", "--rate", "unlimited")
    line = " ".join(f"'{a}'" for a in argv)
    script = f"{line} 2>&1 | head -c 10 >/dev/null; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(
        ["bash", "-c", script],
        env=cli_env(XQUIK_API_KEY=sb.api_key), cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0
    records = read_results(tmp_path / "jobs.txt.results.jsonl")
    assert sorted(int(r["account_id"]) for r in records) == list(range(1, 41))
    assert sb.stats()["accounts"] == 0


def test_a_sandbox_rehearsal_never_counts_for_the_real_run(
    sandbox_process: Any, tmp_path: Path
) -> None:
    """The README's way in: `run jobs.txt --sandbox`, then the real run. Its records (in its
    own default log, or in the same log when --results names one) count for nothing: the
    real run disconnects every account. So do those of another key, and a hand-written done
    line (listed as not counted)."""
    real = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "3"])
    rehearsal = run_cli("run", str(jobs), "--sandbox", "--state-dir", "none")
    assert rehearsal.returncode == 0, rehearsal.stderr
    assert (tmp_path / "jobs.txt.sandbox.results.jsonl").exists()
    env = cli_env(XQUIK_API_KEY=real.api_key)
    base = ["--base-url", real.base_url, "--state-dir", str(tmp_path / "s"), "--log-format", "json"]
    done = run_cli("run", str(jobs), *base, env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(real.stats()["deleted_accounts"]) == ["1", "2", "3"]

    shared = tmp_path / "shared.jsonl"
    more = write_jobs(tmp_path / "more.txt", ["4", "5", "6", "7"])
    assert run_cli("run", str(more), "--sandbox", "--results", str(shared)).returncode == 0
    other_key = "xq_" + "9" * 64
    with shared.open("a") as log:
        log.write(done_line("6", other_key, real.base_url))  # another key's record
        log.write('{"account_id": "7", "op": "disconnect", "outcome": "disconnected"}\n')
    lines = len(shared.read_text().splitlines())
    done = run_cli("run", str(more), *base, "--results", str(shared), env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(real.stats()["deleted_accounts"]) == ["1", "2", "3", "4", "5", "6", "7"]
    summary = json.loads(next(x for x in done.stderr.splitlines() if "run_summary" in x))
    assert summary["skipped_done"] == 0
    assert summary["outcomes"] == {"disconnected": 4}
    assert f'"lines": [{lines}]' in done.stderr  # the hand-written line, listed unreadable

    again = run_cli("run", str(more), *base, "--results", str(shared), env=env)
    summary = json.loads(next(x for x in again.stderr.splitlines() if "run_summary" in x))
    assert summary["skipped_done"] == 4  # its own records count
    assert summary["requests"] == {}
