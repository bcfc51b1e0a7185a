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


HOSTILE = "<img src=x onerror=alert(1)>\"'><script>alert(2)</script><!--&amp;"
STRING_FIELDS = (
    "run_id", "source", "job_id", "account_id", "username", "error", "tenant", "key_id",
    "origin", "key_group", "x_username", "x_user_id", "health", "status", "monitor_id",
    "monitor_kind", "new_account_id", "chain", "delete_limit",
)  # fmt: skip


def _page_shape(page: str) -> list[tuple[str, tuple[str, ...]]]:
    """The page's elements in order, each with its attribute names: what a value that broke
    out of its text or attribute would change."""
    from html.parser import HTMLParser

    shape: list[tuple[str, tuple[str, ...]]] = []

    class Shape(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            shape.append((tag, tuple(name for name, _ in attrs)))

        def handle_comment(self, data: str) -> None:
            shape.append(("<!--", ()))

    Shape().feed(page)
    return shape


def test_every_string_field_of_a_record_stays_text_on_the_html_page(tmp_path: Path) -> None:
    """Without a browser: a log whose records carry hostile markup in every string field (a
    disconnect, a failure, a verify and a monitor record) renders a page with exactly the
    elements and attributes of the same log with plain values, and the markup appears only
    escaped."""

    def log_with(value: str, name: str) -> Path:
        rows = []
        for i, (op, outcome) in enumerate(
            (("disconnect", "disconnected"), ("disconnect", "failed"),
             ("disconnect", "already_gone"), ("verify", "reconnected"),
             ("delete_monitor", "disconnected")),
        ):  # fmt: skip
            record: dict[str, object] = {f: f"{value}-{f}-{i}" for f in STRING_FIELDS}
            record.update(ts=f"2026-11-29T10:00:0{i}.000Z", op=op, outcome=outcome,
                          http_status=200, attempts=1, elapsed_ms=5, sandbox=False)  # fmt: skip
            rows.append(json.dumps(record))
        log = tmp_path / f"{name}.jsonl"
        log.write_text("\n".join(rows) + "\n")
        return log

    pages = {}
    for name, value in (("plain", "plain"), ("hostile", HOSTILE)):
        page = tmp_path / f"{name}.html"
        done = run_cli("report", str(log_with(value, name)), "--html", str(page))
        assert done.returncode in (0, 1), done.stderr
        pages[name] = page.read_text()
    hostile = pages["hostile"]
    assert _page_shape(hostile) == _page_shape(pages["plain"])
    assert "<img" not in hostile
    assert "alert(2)</script>" not in hostile
    assert "&lt;img src=x onerror=alert(1)&gt;" in hostile  # shown, as text
    shown = {f for f in STRING_FIELDS if f"plain-{f}-" in pages["plain"]}
    # The page does show these (so the shape comparison is not vacuous for them).
    assert {"account_id", "x_username", "error", "tenant", "run_id"} <= shown, shown
