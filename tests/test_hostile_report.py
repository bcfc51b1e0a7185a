"""`report` over logs nobody planned for: hand-edited lines, a reader that goes away."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import (
    ROOT,
    cli_env,
    run_cli,
)


def test_report_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`report big.jsonl | head -1`: no BrokenPipeError traceback."""
    log = tmp_path / "r.jsonl"
    record = {
        "ts": "2026-01-01T00:00:00.000Z",
        "run_id": "r",
        "outcome": "failed",
        "op": "disconnect",
    }
    log.write_text("".join(json.dumps({**record, "account_id": str(i), "error": f"e{i}"}) + "\n"
                           for i in range(3000)))  # fmt: skip
    done = subprocess.run(
        ["bash", "-c", f"'{sys.executable}' -m worker report '{log}' | head -1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=cli_env(),
    )  # fmt: skip
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert "BrokenPipe" not in done.stderr


def test_report_over_hand_edited_lines_names_them_and_never_crashes(tmp_path: Path) -> None:
    """Lines that parse as JSON but are not records (a time that is not one, a number for a
    run id, an array) are reported unreadable, in the text report and the HTML page alike."""
    good = (
        '{"ts": "2026-11-29T00:00:00Z", "run_id": "a", "source": "x", "account_id": "1", '
        '"op": "disconnect", "outcome": "disconnected", "http_status": 200}'
    )
    log = tmp_path / "r.jsonl"
    log.write_text(
        "\n".join(
            [
                good,
                '{"ts": "yesterday", "run_id": "a", "outcome": "disconnected"}',
                '{"ts": "2026-11-29T00:00:00Z", "run_id": 7, "outcome": "disconnected"}',
                '["ts", "run_id", "outcome"]',
            ]
        )
        + "\n"
    )
    proc = run_cli("report", str(log), "--html", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    assert "unreadable lines (torn by a crash?): [2, 3, 4]" in proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "1 records, 1 accounts done" in proc.stdout
    assert 'data-card="accounts done"><b>1</b>' in (tmp_path / "r.html").read_text()
