"""Look before you leap, driven in a real pseudo-terminal: the preview and the question come
before any DELETE; `n` sends none, `y` runs; --yes and a pipe as stdin never ask; a jobs
source that cannot be read twice (a FIFO, `<(…)`) is refused rather than read by the preview;
the count is of the accounts still connected."""

from __future__ import annotations

import contextlib
import os
import pty
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, SandboxProcess, cli_env, done_line, run_argv, write_jobs

PROMPT = b"[y/N]"


def in_a_terminal(
    argv: list[str], env: dict[str, str], answer: bytes | None, timeout: float = 60
) -> tuple[int, bytes]:
    """Run `argv` with stdin, stdout and stderr on a pty; type `answer` at the prompt."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, close_fds=True
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    answered = False
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal: it has exited
                break
            if not chunk:
                break
            seen += chunk
            if answer is not None and not answered and PROMPT in seen:
                os.write(master, answer + b"\n")
                answered = True
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), seen
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_no_sends_nothing_and_yes_runs(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """20 accounts, 2 of them done earlier, one invalid line: the preview counts 18 to
    disconnect and the invalid line, names the limit, and asks. `n`: exit 130, the sandbox saw
    no request at all. `y`: the 18 are disconnected."""
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", [*(str(i) for i in range(1, 21)), "bad id!"])
    results = tmp_path / "results.jsonl"
    results.write_text("".join(done_line(str(i), sb.api_key, sb.base_url) for i in (1, 2)))
    env = cli_env(XQUIK_API_KEY=sb.api_key, TERM="dumb")
    argv = run_argv(jobs, sb, "--results", str(results), "--state-dir", str(tmp_path / "s"))
    code, seen = in_a_terminal(argv, env, b"n")
    text = seen.decode("utf-8", "replace")
    assert code == 130, text
    assert "disconnect 18 accounts" in text
    assert "skipped, done by an earlier run: 2" in text
    assert "invalid lines, recorded and skipped: 1" in text
    assert "DELETE limit:" in text
    assert "Disconnect 18 accounts? [y/N]" in text
    assert not [r for r in sb.requests() if r[0] == "DELETE"]  # the listing only: a GET
    code, seen = in_a_terminal(argv, env, b"y")
    assert code == 1, seen.decode("utf-8", "replace")  # the invalid line makes it 1
    assert sb.stats()["by_status"].get("DELETE 200") == 18


def test_yes_a_pipe_and_a_small_run_never_ask(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """--yes on a terminal, stdin not a terminal, and a run under --confirm-over: no prompt."""
    sb = sandbox_process("--delete-limit", "unlimited")
    env = cli_env(XQUIK_API_KEY=sb.api_key, TERM="dumb")
    many = write_jobs(tmp_path / "many.txt", [str(i) for i in range(1, 16)])
    state = ("--state-dir", str(tmp_path / "s"))
    code, seen = in_a_terminal(
        run_argv(many, sb, "--yes", "--results", str(tmp_path / "a.jsonl"), *state), env, None
    )
    assert code == 0, seen.decode("utf-8", "replace")
    assert PROMPT not in seen
    few = write_jobs(tmp_path / "few.txt", [str(i) for i in range(16, 26)])
    code, seen = in_a_terminal(
        run_argv(few, sb, "--results", str(tmp_path / "b.jsonl"), *state), env, None
    )
    assert code == 0, seen.decode("utf-8", "replace")
    assert PROMPT not in seen  # 10 accounts: not over --confirm-over 10
    more = write_jobs(tmp_path / "more.txt", [str(i) for i in range(26, 41)])
    proc = subprocess.run(
        run_argv(more, sb, "--results", str(tmp_path / "c.jsonl"), *state),
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[y/N]" not in proc.stderr
    assert sb.stats()["by_status"].get("DELETE 200") == 40


def test_no_color_on_a_terminal_means_plain_log_lines(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """NO_COLOR=1 at a terminal: the console log lines carry no ANSI colour codes (with it
    unset they do), as rich's own output drops its colours."""
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    argv = run_argv(
        jobs, sb, "--log-format", "console", "--no-progress", "--state-dir", str(tmp_path / "s")
    )
    lines = {}
    for no_color in ("1", None):
        env = cli_env(XQUIK_API_KEY=sb.api_key, TERM="xterm-256color")
        if no_color:
            env["NO_COLOR"] = no_color
        code, seen = in_a_terminal(
            [*argv, "--results", str(tmp_path / f"r{no_color}.jsonl")], env, None
        )
        assert code == 0, seen.decode("utf-8", "replace")
        [line] = [x for x in seen.split(b"\n") if b"run_started" in x]
        lines[no_color] = line
    assert b"\x1b[" not in lines["1"]
    assert b"\x1b[" in lines[None]


def feed_fifo(path: Path, lines: list[str]) -> threading.Thread:
    """A named pipe at `path` whose writer sends `lines` once a reader opens it."""
    os.mkfifo(path)

    def write() -> None:
        with contextlib.suppress(OSError), path.open("w") as fifo:
            fifo.write("".join(f"{line}\n" for line in lines))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def test_a_fifo_of_jobs_is_refused_at_a_terminal_and_runs_with_yes(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """`run <(seq 21 40)` at a terminal: the preview would read every job and leave the run
    nothing (it then exited 0 with no record; a named FIFO hung). Refused: exit 2 naming
    --yes, no request at all. With --yes the same FIFO gives its 20 records."""
    sb = sandbox_process("--delete-limit", "unlimited")
    env = cli_env(XQUIK_API_KEY=sb.api_key, TERM="dumb")
    state = ("--state-dir", str(tmp_path / "s"))
    fifo = tmp_path / "jobs.fifo"
    feed_fifo(fifo, [str(i) for i in range(21, 41)])
    argv = run_argv(fifo, sb, "--results", str(tmp_path / "a.jsonl"), *state)
    code, seen = in_a_terminal(argv, env, b"y", timeout=30)
    text = seen.decode("utf-8", "replace")
    assert code == 2, text
    assert "--yes" in text
    assert PROMPT not in seen
    assert sb.requests() == []
    with contextlib.suppress(OSError):  # release the writer still waiting for a reader
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    fifo.unlink()
    feed_fifo(fifo, [str(i) for i in range(21, 41)])
    code, seen = in_a_terminal([*argv, "--yes"], env, None, timeout=30)
    assert code == 0, seen.decode("utf-8", "replace")
    assert sb.stats()["by_status"].get("DELETE 200") == 20
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 20


def test_the_question_counts_the_accounts_still_connected(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """19 jobs of which 15 were disconnected by someone else: the question is about the 4
    still connected, and says that 15 are gone (no DELETE for them)."""
    sb = sandbox_process("--delete-limit", "unlimited")
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 20)])
    env = cli_env(XQUIK_API_KEY=sb.api_key, TERM="dumb")
    first = write_jobs(tmp_path / "first.txt", [str(i) for i in range(1, 16)])
    other = run_argv(first, sb, "--yes", "--results", str(tmp_path / "other.jsonl"))
    subprocess.run([*other, "--state-dir", str(tmp_path / "s")], env=env, cwd=ROOT, check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    argv = run_argv(jobs, sb, "--results", str(tmp_path / "r.jsonl"), "--confirm-over", "2")
    code, seen = in_a_terminal([*argv, "--state-dir", str(tmp_path / "s")], env, b"n")
    text = seen.decode("utf-8", "replace")
    assert code == 130, text
    assert "will disconnect 4 accounts" in text
    assert "of the 19 accounts in the jobs, 15 are no longer connected" in text
    assert "Disconnect 4 accounts? [y/N]" in text
