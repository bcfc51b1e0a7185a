"""Helpers shared by the benchmarks: run a Python snippet in a child process and read back its
wall time and peak RSS, so every figure is measured the same way in the same run."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def measure(code: str, *args: str) -> dict[str, float]:
    """Run `code` in a fresh interpreter; return seconds (as it reports) and peak RSS in MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=ROOT
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    result.setdefault("seconds", wall)
    result["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, rule, *body])


class SandboxProc:
    """`xquik-disconnect sandbox` in its own process, so its CPU is not the client's. With
    `keys_out`, its tenants' keys are written there (a --keys directory)."""

    def __init__(self, accounts: int, *args: str, keys_out: Path | None = None) -> None:
        argv = [sys.executable, "-m", "worker", "sandbox", "--port", "0"]
        argv += ["--accounts", str(accounts), *args]
        if keys_out is not None:
            argv += ["--keys-out", str(keys_out)]
        self.keys = keys_out
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        self.base_url, self.api_key = ready["base_url"], ready["api_key"]

    def control(self, name: str) -> Any:
        """GET /_sandbox/NAME (requests, stats)."""
        url = self.base_url.removesuffix("/api/v1") + f"/_sandbox/{name}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=10)
