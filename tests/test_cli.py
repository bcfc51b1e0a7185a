"""The command line as users meet it: real processes, exit codes, messages that name the
problem, nothing sent on a usage error, and the key kept out of every output."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, SandboxProcess, cli_env, read_results, run_cli, write_jobs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0/5s"], "--rate"),
        (["--rate", "fast"], "--rate"),
        (["--rate", "auto:unlimited"], "the ceiling of auto is N/PERIOD"),
        (["--rate", "auto:0/60s"], "--rate"),
        (["--relearn", "0"], "--relearn"),
        (["--relearn", "soon"], "--relearn: 'soon' is not a duration"),
        (["--read-rate", "10/0s"], "--read-rate"),
        (["--concurrency", "0"], "--concurrency"),
        (["--max-attempts", "zero"], "--max-attempts"),
        (["--timeout", "-1"], "--timeout"),
        (["--base-url", "http://example.com/api/v1"], "--base-url"),
        (["--base-url", "ftp://127.0.0.1/"], "--base-url"),
        (["--api-key-file", "/nonexistent/key"], "--api-key-file"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_exit_2_and_send_nothing(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path, args: list[str], message: str
) -> None:
    """Each bad flag exits 2 naming the flag, and the API sees no request at all."""
    sb = sandbox_process()
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    env = cli_env(XQUIK_API_KEY=sb.api_key, XQUIK_BASE_URL=sb.base_url)
    proc = run_cli("run", str(jobs), *args, env=env)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert sb.stats()["requests"] == 0
    assert not (tmp_path / "jobs.txt.results.jsonl").exists()


def test_missing_jobs_file_and_missing_key(tmp_path: Path) -> None:
    """A missing file and a missing key are usage errors with a clear message."""
    proc = run_cli("run", str(tmp_path / "nope.jsonl"), env=cli_env(XQUIK_API_KEY="xq_1234567890"))
    assert proc.returncode == 2
    assert "nope.jsonl" in proc.stderr
    assert "not found" in proc.stderr
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    proc = run_cli("run", str(jobs))
    assert proc.returncode == 2
    assert "XQUIK_API_KEY" in proc.stderr


@pytest.mark.parametrize(
    ("name", "value", "flag"),
    [
        ("XQUIK_RATE", "lots", "--rate"),
        ("XQUIK_LIMIT", "0", "--limit"),
        ("XQUIK_METRICS_PORT", "70000", "--metrics-port"),
        ("XQUIK_GRACE", "-3", "--grace"),
    ],
)
def test_bad_environment_value_is_a_usage_error(
    tmp_path: Path, name: str, value: str, flag: str
) -> None:
    """Environment variables are validated like the flags they mirror."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    proc = run_cli("run", str(jobs), "--sandbox", env=cli_env(**{name: value}))
    assert proc.returncode == 2
    assert flag in proc.stderr
    assert not (tmp_path / "jobs.txt.sandbox.results.jsonl").exists()


def test_sandbox_run_of_the_example(tmp_path: Path) -> None:
    """`run --sandbox` over jobs/example.jsonl: one record per line, exit 1 for its bad lines."""
    results = tmp_path / "r.jsonl"
    proc = run_cli("run", "jobs/example.jsonl", "--sandbox", "--results", str(results))
    assert proc.returncode == 1, proc.stderr
    records = read_results(results)
    lines = (ROOT / "jobs/example.jsonl").read_text().splitlines()
    assert len(records) == len(lines)
    summary = [json.loads(line) for line in proc.stderr.splitlines() if "run_summary" in line]
    assert summary[0]["records"] == len(lines)
    assert summary[0]["outcomes"]["invalid"] == 2


@pytest.mark.parametrize("name", ["example.csv", "example.txt"])
def test_every_example_format_runs(tmp_path: Path, name: str) -> None:
    """The CSV and text examples run clean against the sandbox."""
    proc = run_cli("run", f"jobs/{name}", "--sandbox", "--results", str(tmp_path / "r.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert {r["outcome"] for r in read_results(tmp_path / "r.jsonl")} == {"disconnected"}


def test_stdin_source(tmp_path: Path) -> None:
    """`run -` reads stdin; the format is sniffed; results default to ./results.jsonl (a
    sandbox run's to ./sandbox.results.jsonl)."""
    proc = run_cli("run", "-", "--sandbox", stdin="account_id\n1\n2\n", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "results.jsonl").exists()
    records = read_results(tmp_path / "sandbox.results.jsonl")
    assert [(r["source"], r["account_id"]) for r in records] in (
        [("stdin:2", "1"), ("stdin:3", "2")],
        [("stdin:3", "2"), ("stdin:2", "1")],
    )


def test_key_is_never_in_output_or_ps(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """The key comes from a file; it shows up in no log, no result and no process listing."""
    sb = sandbox_process("--delete-limit", "2/2s")
    key_file = tmp_path / "key"
    key_file.write_text(sb.api_key + "\n")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "3", "404", "../x"])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "run",
            str(jobs),
            "--api-key-file",
            str(key_file),
            "--base-url",
            sb.base_url,
            "--state-dir",
            str(tmp_path / "state"),
            "--rate",
            "50/1s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=ROOT,
    )
    time.sleep(0.5)
    cmdline = (Path("/proc") / str(proc.pid) / "cmdline").read_bytes().decode()
    environ = (Path("/proc") / str(proc.pid) / "environ").read_bytes().decode()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    for text in (cmdline, environ, out, err, (tmp_path / "jobs.txt.results.jsonl").read_text()):
        assert sb.api_key not in text
    assert sb.stats()["rate_limited"] >= 1  # the sandbox's window was hit, and survived


def test_help_lists_every_documented_run_option() -> None:
    """--help documents the contract's options."""
    proc = run_cli("run", "--help")
    assert proc.returncode == 0
    for flag in (
        "--results",
        "--fresh",
        "--concurrency",
        "--rate",
        "--read-rate",
        "--rate-margin",
        "--relearn",
        "--max-cooldown",
        "--state-dir",
        "--grace",
        "--max-attempts",
        "--timeout",
        "--base-url",
        "--api-key-file",
        "--dry-run",
        "--limit",
        "--sandbox",
        "--log-format",
        "--progress",
    ):
        assert flag in proc.stdout


def test_version() -> None:
    """--version prints the version the installed distribution declares, which the changelog
    has a section for."""
    from importlib.metadata import version

    proc = run_cli("--version")
    assert proc.returncode == 0
    name, number = proc.stdout.split()
    assert name == "xquik-disconnect"
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[ab]\d+|rc\d+)?", number)
    assert number == version("xquik-disconnect-worker")
    assert f"## [{number}]" in (ROOT / "CHANGELOG.md").read_text()


def test_sandbox_command_stops_on_sigterm() -> None:
    """The standalone sandbox serves until SIGTERM and exits 0."""
    sb = SandboxProcess()
    assert sb.stats()["accounts"] == 50
    sb.proc.send_signal(signal.SIGTERM)
    sb.proc.communicate(timeout=10)
    assert sb.proc.returncode == 0


def test_progress_bar_and_summary_table_on_a_tty(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """On a terminal: a progress bar with counts and ETA, then the summary table."""
    import pty

    sb = sandbox_process("--delete-limit", "10/1s")
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 31)])
    env = cli_env(
        COLUMNS="120",
        TERM="xterm",
        XQUIK_API_KEY=sb.api_key,
        XQUIK_BASE_URL=sb.base_url,
        XQUIK_STATE_DIR=str(tmp_path),
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child: the worker, with the pty as its terminal
        os.chdir(ROOT)
        os.execve(
            sys.executable,
            [sys.executable, "-m", "worker", "run", str(jobs), "--rate", "10/1s", "--yes"],
            env,
        )
    chunks = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    screen = b"".join(chunks).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0
    assert "disconnecting" in screen
    assert "30/30" in screen
    assert "ETA" in screen
    assert "run " in screen
    assert "disconnected" in screen
    assert "skipped (done earlier)" in screen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auto", "auto:60/60s"),
        ("AUTO", "auto:60/60s"),
        ("auto:40/4s", "auto:40/4s"),
        ("auto:120/2m", "auto:120/120s"),
        ("15/60s", "15/60s"),
        ("unlimited", "unlimited"),
    ],
)
def test_rate_auto_and_fixed(text: str, expected: str) -> None:
    """`--rate auto` learns under the 60/60s ceiling, `auto:N/PERIOD` under another; a fixed
    rate stays fixed; `--read-rate` knows no auto."""
    from worker.cli.types import delete_rate, rate

    assert str(delete_rate(text)) == expected
    assert delete_rate(text).auto == text.lower().startswith("auto")
    if text.lower().startswith("auto"):
        with pytest.raises(argparse.ArgumentTypeError):
            rate(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86400), ("30m", 1800), ("90", 90), ("1d", 86400), ("0.5h", 1800)]
)
def test_relearn_durations(text: str, seconds: float) -> None:
    from worker.cli.types import duration

    assert duration(text) == seconds


def test_log_level_quiet_and_verbose(tmp_path: Path) -> None:
    """-q leaves warnings only, -v adds debug events, and a bad XQUIK_LOG_LEVEL exits 2
    naming the variable."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "bad id!"])
    base = ["run", str(jobs), "--sandbox", "--log-format", "json", "--no-progress", "--yes"]
    quiet = run_cli(*base, "-q", "--results", str(tmp_path / "q.jsonl"), env=cli_env())
    events = [
        json.loads(line)["level"] for line in quiet.stderr.splitlines() if line.startswith("{")
    ]
    assert events
    assert set(events) <= {"warning", "error"}
    normal = run_cli(*base, "--results", str(tmp_path / "n.jsonl"), env=cli_env())
    assert '"level": "info"' in normal.stderr
    bad = run_cli(*base, env=cli_env(XQUIK_LOG_LEVEL="loud"))
    assert bad.returncode == 2
    assert "XQUIK_LOG_LEVEL" in bad.stderr


@pytest.mark.parametrize("command", ["run", "plan", "enqueue", "report", "monitors", "sandbox"])
def test_every_help_shows_an_example_and_the_environment_twins(command: str) -> None:
    """Each --help ends with examples, and every option that reads XQUIK_<NAME> says so."""
    from worker.cli import build_parser
    from worker.cli.types import ENV_NAMES

    proc = run_cli(command, "--help", env=cli_env(COLUMNS="200"))
    assert proc.returncode == 0
    assert "examples:\n  " in proc.stdout
    assert f"xquik-disconnect {command} " in proc.stdout.split("examples:")[1]
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr,index]
    for action in sub._actions:
        twin = action.dest.upper()
        if action.option_strings and twin in ENV_NAMES and action.help:
            assert f"XQUIK_{twin}" in proc.stdout, action.option_strings


def test_empty_stdin_says_so_and_a_closed_stderr_changes_nothing(tmp_path: Path) -> None:
    """`plan … | run -` whose plan failed looks like an empty stdin: the run says `no jobs
    read from stdin`. With stderr closed (`2>&-`) the run works and exits as it should."""
    empty = run_cli("run", "-", "--sandbox", "--log-format", "json", stdin="", cwd=tmp_path)
    assert empty.returncode == 0
    assert "no jobs read from stdin" in empty.stderr
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "bad id!"])
    closed = subprocess.run(
        ["bash", "-c", f"'{sys.executable}' -m worker run '{jobs}' --sandbox 2>&-"],
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert closed.returncode == 1  # the invalid line, as with stderr open
    assert len(read_results(tmp_path / "jobs.txt.sandbox.results.jsonl")) == 3


def test_a_sandbox_port_in_use_is_exit_2_naming_it() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli("sandbox", "--port", str(port), timeout=30)
    assert done.returncode == 2
    assert f"--port {port}" in done.stderr
    assert "--port 0" in done.stderr
