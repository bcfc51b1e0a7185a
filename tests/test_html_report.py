"""The HTML report as a person sees it: rendered by headless Chromium from a file with the
network off; the DOM read back (`--dump-dom`, after the page's script ran) is checked against
the log: one bar per server window with its count, one audit row per record; hostile text stays
text; and a screenshot is taken. CI installs Chromium (.ci/run); elsewhere the test needs it
on PATH, and fails rather than skips when XQUIK_REQUIRE_CHROMIUM is set."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import read_results, run_against, run_cli, write_jobs
from worker.budget.rate import Rate
from worker.sandbox import Sandbox

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("XQUIK_REQUIRE_CHROMIUM"),
    reason="Chromium is not installed here (CI installs it and sets XQUIK_REQUIRE_CHROMIUM)",
)
OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None, "XQUIK_REQUIRE_CHROMIUM is set but chromium is not on PATH"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--user-data-dir=" + str(Path(os.environ.get("TMPDIR", "/tmp")) / f"chr-{os.getpid()}"),
         *OFFLINE, *args],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def server_windows(records: list[dict[str, object]], w: float) -> list[int]:
    """DELETEs per fixed window, each opened by the first DELETE after the last one ended."""
    times = sorted(
        datetime.fromisoformat(str(r["ts"]).replace("Z", "+00:00")).timestamp()
        for r in records
        if r.get("http_status") and not r.get("checked") and r["op"] != "check"
    )
    counts: list[int] = []
    end = -math.inf
    for t in times:
        if t >= end:
            counts.append(0)
            end = t + w
        counts[-1] += 1
    return counts


async def test_the_page_in_a_real_browser(sandbox_factory: object, tmp_path: Path) -> None:
    sandbox: Sandbox = await sandbox_factory(  # type: ignore[operator]
        accounts=40, delete_limit=(8, 1.0), read_limit=(None, 1.0)
    )
    del sandbox.state.store.accounts["40"]
    lines = [f'{{"account_id": "{i}"}}' for i in range(1, 41)]
    lines += ['{"account_id": "<img src=x onerror=alert(1)>"}', '{"job_id": "<b>x</b>"}']
    jobs = write_jobs(tmp_path / "jobs.jsonl", lines)
    await run_against(sandbox, jobs, tmp_path, rate=Rate(8, 1.0), concurrency=4)
    results = tmp_path / "results.jsonl"
    records = read_results(results)
    page = tmp_path / "report.html"
    proc = run_cli("report", str(results), "--html", str(page), "--rate", "8/1s")
    assert proc.returncode == 0, proc.stderr
    assert "http://" not in page.read_text()
    assert "https://" not in page.read_text()

    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    html = dom.stdout
    assert 'data-ready="1"' in html  # the page's own script ran
    bars = [
        int(n)
        for n in re.findall(r'<rect class="bar[^"]*" data-window="\d+" data-count="(\d+)"', html)
    ]
    assert bars == server_windows(records, 1.0)
    assert max(bars) <= 8
    assert 'id="limit-line" data-limit="8"' in html
    audit = html[html.index('<table id="audit">') :]
    rows = re.findall(r"<tr><td class=\"t\">", audit)
    disconnects = [r for r in records if r["op"] == "disconnect"]
    assert len(rows) == len(disconnects) == 42
    assert f"{len(disconnects)} of {len(disconnects)} rows" in html
    for r in disconnects:
        if r["outcome"] == "disconnected":
            assert f"<td>{r['x_username']}</td>" in audit
    assert "<img" not in html
    assert "&lt;img src=x" in html
    assert "<b>x</b>" not in html
    assert re.search(r'data-card="not connected at start"><b>1</b>', html)

    shot = tmp_path / "report.png"
    proc_shot = chromium("--window-size=1200,1500", f"--screenshot={shot}", page.as_uri())
    assert proc_shot.returncode == 0, proc_shot.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000


def test_the_page_breaks_a_several_keys_log_down_by_tenant(tmp_path: Path) -> None:
    """A --keys run's log: the page (as Chromium renders it) has a row per tenant with its
    counts; the same id under two tenants is two accounts."""
    rows = []
    for tenant, account, outcome in (
        ("brand-a", "42", "disconnected"), ("brand-a", "43", "failed"),
        ("client-x", "42", "disconnected"), (None, "7", "already_gone"),
    ):  # fmt: skip
        record = {
            "ts": "2026-11-29T10:00:00.000Z", "run_id": "r1", "source": "j:1",
            "account_id": account, "op": "disconnect", "outcome": outcome, "http_status": 200,
            "tenant": tenant, "error": "x" if outcome == "failed" else None,
        }  # fmt: skip
        rows.append(json.dumps(record))
    log = tmp_path / "r.jsonl"
    log.write_text("\n".join(rows) + "\n")
    page = tmp_path / "report.html"
    assert run_cli("report", str(log), "--html", str(page)).returncode == 1  # 43 failed
    dom = chromium("--dump-dom", page.as_uri()).stdout
    table = dom[dom.index('<table id="tenants">') :]
    table = table[: table.index("</table>")]
    cells = [re.sub("<[^>]+>", "", row).strip() for row in table.split("<tr>")[2:]]
    assert cells == ["(default key)0100", "brand-a1010", "client-x1000"]
    assert "3 accounts done" in dom


def test_each_tenant_has_its_own_windows_in_the_chart(tmp_path: Path) -> None:
    """Two tenants, each spending its whole window (3 per 60 s) at the same moment: the chart
    shows a window of 3 for each, none over the limit line; their sum (6) against one limit
    would read as a violation that never happened."""
    rows = []
    for tenant in ("brand-a", "client-x"):
        for i in range(3):
            record = {
                "ts": f"2026-11-29T10:00:0{i}.000Z", "run_id": "r1", "source": f"j:{i}",
                "account_id": f"{tenant}-{i}", "op": "disconnect", "outcome": "disconnected",
                "http_status": 200, "tenant": tenant,
            }  # fmt: skip
            rows.append(json.dumps(record))
    log = tmp_path / "r.jsonl"
    log.write_text("\n".join(rows) + "\n")
    page = tmp_path / "report.html"
    done = run_cli("report", str(log), "--html", str(page), "--rate", "3/60s")
    assert done.returncode == 0, done.stderr
    dom = chromium("--dump-dom", page.as_uri()).stdout
    bars = re.findall(r'<rect class="(bar[^"]*)"[^>]*data-count="(\d+)"', dom)
    assert sorted(int(n) for _, n in bars) == [3, 3]
    assert all(cls == "bar" for cls, _ in bars)
    assert "of brand-a" in dom
    assert "of client-x" in dom
    assert "window of each tenant" in dom
