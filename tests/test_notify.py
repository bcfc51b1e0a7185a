"""--notify: one POST of the summary per run, however it ends (done, exit 3, exit 130), to a
local receiver; a receiver that fails never changes the exit code; the URL is never logged."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SandboxProcess, cli_env, run_cli, write_jobs
from tests.test_crash import start_run, wait_for_records

TOKEN = "T0KEN/B1234567/secretwebhookpart"


class Receiver:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[dict[str, Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append(self.path)
                receiver.posts.append(json.loads(body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/{TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def run(sb: SandboxProcess, jobs: Path, tmp: Path, *args: str, key: str | None = None) -> Any:
    return run_cli(
        "run", str(jobs), "--base-url", sb.base_url, "--state-dir", str(tmp / "s"),
        "--rate", "unlimited", "--log-format", "json", *args,
        env=cli_env(XQUIK_API_KEY=key or sb.api_key),
    )  # fmt: skip


def test_one_post_with_the_summary_and_the_url_never_logged(
    sandbox_process: Callable[..., SandboxProcess], receiver: Receiver, tmp_path: Path
) -> None:
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "99999"])
    proc = run(sb, jobs, tmp_path, "--notify", receiver.url)
    assert proc.returncode == 0, proc.stderr
    [post] = receiver.posts
    assert receiver.paths == [f"/services/{TOKEN}"]
    assert post["summary"]["exit_code"] == 0
    assert post["summary"]["outcomes"] == {"already_gone": 1, "disconnected": 2}
    assert "finished" in post["text"]
    assert "2 disconnected" in post["text"]
    assert "Not connected when the run began: 1" in post["text"]
    assert "secretwebhookpart" not in proc.stderr
    assert '"notified"' in proc.stderr


def test_a_rejected_key_is_notified_with_exit_3(
    sandbox_process: Callable[..., SandboxProcess], receiver: Receiver, tmp_path: Path
) -> None:
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    proc = run(sb, jobs, tmp_path, "--notify", receiver.url, key="xq_" + "0" * 32)
    assert proc.returncode == 3, proc.stderr
    [post] = receiver.posts
    assert post["summary"]["exit_code"] == 3
    assert "API key was rejected" in post["text"]


def test_a_signal_is_notified_with_exit_130(
    sandbox_process: Callable[..., SandboxProcess], receiver: Receiver, tmp_path: Path
) -> None:
    sb = sandbox_process(
        "--accounts", "200", "--delete-limit", "unlimited", "--slow", "1", "--slow-seconds", "0.1"
    )
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 201)])
    proc = start_run(jobs, sb, tmp_path, "--notify", receiver.url, "--grace", "5")
    wait_for_records(tmp_path / "jobs.txt.results.jsonl", 10)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    [post] = receiver.posts
    assert post["summary"]["exit_code"] == 130
    assert post["summary"]["stopped"] == "signal"


def test_a_failing_receiver_never_changes_the_exit_code(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """500 every time: retried, then given up within 10 s; logged; exit code 0 still. A bad
    --notify URL is refused before anything is sent."""
    failing = Receiver(status=500)
    try:
        sb = sandbox_process("--delete-limit", "unlimited")
        jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
        proc = run(sb, jobs, tmp_path, "--notify", failing.url)
        assert proc.returncode == 0, proc.stderr
        assert 2 <= len(failing.posts) <= 4
        assert '"notify_failed"' in proc.stderr
        assert "secretwebhookpart" not in proc.stderr
    finally:
        failing.close()
    proc = run(sb, jobs, tmp_path, "--notify", "http://hooks.example.com/services/abcdefgh123")
    assert proc.returncode == 2
    assert "--notify" in proc.stderr
    assert "abcdefgh123" not in proc.stderr
