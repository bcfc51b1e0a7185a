"""The command line, tried as a careless or hostile user would: inputs nobody planned for,
flags and environment values that go wrong, keys where they do not belong. Real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    ROOT,
    cli_env,
    read_results,
    run_argv,
    run_cli,
    write_jobs,
)

KEY = "xq_" + "ab12" * 16


def no_key_in(*texts: str) -> None:
    for text in texts:
        assert KEY not in text
        assert KEY[3:].upper() not in text.upper()


def test_a_utf16_jobs_file_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """Exit 2 naming the encoding problem; no sandbox, no request."""
    jobs = tmp_path / "jobs.csv"
    jobs.write_bytes("account_id\n1\n".encode("utf-16"))
    done = run_cli("run", str(jobs), "--sandbox")
    assert done.returncode == 2
    assert "not UTF-8 text" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "jobs.csv.sandbox.results.jsonl").exists()


def test_a_stray_carriage_return_in_a_csv_finishes_with_one_record_per_line(tmp_path: Path) -> None:
    """The 0.1 crash, end to end: 14 rows (the sandbox's burst), row 8 with a \r inside,
    every row recorded once, the bad one invalid and named."""
    rows = [f"{i},user{i}" for i in range(1, 15)]
    rows[7] = "8,\ruser8"
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("account_id,username\n" + "\n".join(rows) + "\n")
    done = run_cli("run", str(jobs), "--sandbox", "--log-format", "json")
    assert done.returncode == 1  # the invalid line
    records = read_results(tmp_path / "jobs.csv.sandbox.results.jsonl")
    assert sorted(int(r["source"].rsplit(":", 1)[1]) for r in records) == list(range(2, 16))
    [bad] = [r for r in records if r["outcome"] == "invalid"]
    assert bad["source"].endswith(":9")
    assert {r["outcome"] for r in records} == {"invalid", "disconnected"}
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [("--api-key", KEY), (f"--api-key={KEY}",), ("--api-key-fil", KEY), ("--api",)],
)
def test_the_key_is_never_a_flag_and_never_echoed(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A key typed as a flag (or an abbreviation of one) exits 2 without echoing it."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    done = run_cli("run", str(jobs), *args)
    assert done.returncode == 2
    no_key_in(done.stdout, done.stderr)
    if args[0].startswith("--api-key") and args[0] != "--api-key-fil":
        assert "the key is never a flag" in done.stderr


def test_an_environment_value_names_its_variable(tmp_path: Path) -> None:
    """XQUIK_RATE=abc: the error names XQUIK_RATE (environment), not --rate."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    done = run_cli("run", str(jobs), "--sandbox", env=cli_env(XQUIK_RATE="abc"))
    assert done.returncode == 2
    assert "XQUIK_RATE (environment): 'abc' is not N/PERIOD" in done.stderr
    assert "argument --rate" not in done.stderr


def test_the_api_key_can_come_from_stdin(sandbox_process: Any, tmp_path: Path) -> None:
    """--api-key-file - reads the key from stdin (as docker login --password-stdin does), and
    is refused when stdin is the jobs source too."""
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    argv = ("run", str(jobs), "--base-url", sb.base_url, "--api-key-file", "-")
    done = run_cli(*argv, "--state-dir", str(tmp_path), stdin=sb.api_key + "\n")
    assert done.returncode == 0, done.stderr
    both = run_cli("run", "-", "--base-url", sb.base_url, "--api-key-file", "-", stdin="1\n")
    assert both.returncode == 2
    assert "stdin" in both.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:hunter2@example.com/api/v1", "http://***@example.com/api/v1"),
        ("ftp://user:hunter2@127.0.0.1/", "ftp://***@127.0.0.1/"),
        ("http://127.0.0.1:99999/api/v1", "port"),
    ],
)
def test_a_bad_base_url_is_refused_without_its_password(
    tmp_path: Path, url: str, shown: str
) -> None:
    """Exit 2, one line, userinfo masked; a bad port is a message, not a traceback."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    for command in (("run", str(jobs)), ("plan", "--all")):
        done = run_cli(*command, "--base-url", url, env=cli_env(XQUIK_API_KEY=KEY))
        assert done.returncode == 2
        assert "hunter2" not in done.stderr
        assert shown in done.stderr
        assert "Traceback" not in done.stderr


def test_a_silent_stdin_lets_a_line_through_and_a_signal_end_the_run(
    sandbox_process: Any, tmp_path: Path
) -> None:
    """A producer that writes one line and then stays silent: the line is sent while stdin is
    still open (not when a batch fills), and SIGTERM ends the run within the grace (130)."""
    import signal

    sb = sandbox_process("--delete-limit", "unlimited")
    argv = run_argv("-", sb, "--state-dir", "none", "--grace", "2", "--no-precheck",
                    "--results", str(tmp_path / "r.jsonl"))  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=cli_env(XQUIK_API_KEY=sb.api_key),
                            cwd=ROOT)  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(b"7\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 20
    while sb.stats()["received"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sb.stats()["received"] == 1  # sent while the producer is still there
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 130
    proc.stdin.close()
    assert [r["account_id"] for r in read_results(tmp_path / "r.jsonl")] == ["7"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--rate-margin", "1e308"), "--rate-margin"),
        (("--timeout", "0"), "--timeout"),
        (("--rate", "1/1e308s"), "--rate"),
    ],
)
def test_absurd_numbers_are_usage_errors(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    """Numbers that would overflow a deadline or mean 'never': exit 2 naming the flag."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    done = run_cli("run", str(jobs), "--sandbox", *args)
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("content", [b"xq_abc\r\ndef0123456789", b"\x00\xff\xfe binary", b""])
def test_a_bad_key_file_is_a_message_not_a_traceback(tmp_path: Path, content: bytes) -> None:
    """CR/LF inside the key, a binary file, an empty one: exit 2, the content never shown."""
    key = tmp_path / "key"
    key.write_bytes(content)
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    done = run_cli("run", str(jobs), "--api-key-file", str(key))
    assert done.returncode == 2
    assert "--api-key-file" in done.stderr
    assert "Traceback" not in done.stderr
    assert "def0123456789" not in done.stderr


def test_a_metrics_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    """Exit 2 naming --metrics-port, before any request."""
    import socket

    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli("run", str(jobs), "--sandbox", "--metrics-port", str(port))
    assert done.returncode == 2
    assert f"--metrics-port {port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "jobs.txt.sandbox.results.jsonl").read_text()


def test_the_sandbox_never_prints_a_key_it_did_not_make(tmp_path: Path) -> None:
    """XQUIK_API_KEY in the environment (the README's first Use line exports it): the sandbox
    ignores it and prints only its own throwaway key."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env(XQUIK_API_KEY=KEY), cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    assert ready["api_key"].startswith("xq_")
    no_key_in(json.dumps(ready), out, err)


def test_an_internal_error_is_one_line_and_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A bug outside any job (here: in `report`, raised as an ExceptionGroup): one line on
    stderr naming it, exit 70, no traceback."""
    import worker.cli.report as report_module
    from worker.cli import main

    def broken(path: str, **kwargs: object) -> int:
        raise ExceptionGroup("boom", [RuntimeError("unexpected state")])

    monkeypatch.setattr(report_module, "main", broken)
    monkeypatch.setattr("worker.logs._format", None)  # as in a fresh `report` process
    assert main(["report", str(tmp_path / "r.jsonl")]) == 70
    err = capsys.readouterr().err
    assert "internal error (RuntimeError: unexpected state)" in err
    assert "Traceback" not in err


def test_a_bad_log_format_in_the_environment_is_refused(tmp_path: Path) -> None:
    """XQUIK_LOG_FORMAT=yaml is not accepted in silence: exit 2 naming the variable."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    done = run_cli("run", str(jobs), "--sandbox", env=cli_env(XQUIK_LOG_FORMAT="yaml"))
    assert done.returncode == 2
    assert "XQUIK_LOG_FORMAT (environment): 'yaml' is not json or console" in done.stderr
