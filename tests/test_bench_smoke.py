"""Each benchmark runs at tiny sizes in the suite, so the scripts cannot rot."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def smoke(script: str) -> str:
    """`bench/SCRIPT.py --smoke` in its own process: what it printed (it must exit 0)."""
    proc = subprocess.run(
        [sys.executable, f"bench/{script}.py", "--smoke"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize(
    "script", ["resume", "budget", "overhead", "memory", "startup", "queue_mode", "learn"]
)
def test_benchmark_smoke(script: str) -> None:
    """The benchmark finishes and prints its table."""
    out = smoke(script)
    assert "| " in out
    assert "ratio" in out


def test_tenants_benchmark_smoke() -> None:
    """Many keys at a small size: every case finishes every job with no 429 and no request
    sent with another tenant's key."""
    lines = smoke("tenants").splitlines()
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ")]
    header, body = [c.strip() for c in rows[0]], rows[1:]
    assert len(body) == 6  # the minimal loop and ours (file, 2 consumers), mixed and grouped
    for row in body:
        cells = dict(zip(header, (c.strip() for c in row), strict=True))
        assert cells["done (fewest)"] == "500/500"
        assert cells["429s (all rounds)"] == "0"
        assert cells["cross-tenant"] == "0"
        assert cells["exit"] == "ok"
