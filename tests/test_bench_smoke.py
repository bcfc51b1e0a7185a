"""Each benchmark runs at tiny sizes in the suite, so the scripts cannot rot."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize(
    "script", ["resume", "budget", "overhead", "memory", "startup", "queue_mode", "learn"]
)
def test_benchmark_smoke(script: str) -> None:
    """The benchmark finishes and prints its table."""
    proc = subprocess.run(
        [sys.executable, f"bench/{script}.py", "--smoke"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| " in proc.stdout
    assert "ratio" in proc.stdout
