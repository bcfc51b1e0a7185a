"""Helpers shared by the benchmarks: run a Python snippet in a child process and read back its
wall time and peak RSS, so every figure is measured the same way in the same run."""

from __future__ import annotations

import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

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
    """This process's own peak RSS (VmHWM: ru_maxrss would carry over a large parent's)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# The snippet a measured Python child ends with: its own peak RSS, as JSON on the last line.
HWM = (
    "import re as _re\n"
    "_hwm = int(_re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) / 1024\n"
)

GNU_TIME = "/usr/bin/time"


class Timed(NamedTuple):
    wall: float  # seconds
    cpu: float  # user + system seconds
    peak_mb: float  # the process's own peak RSS
    code: int


def timed(
    argv: list[str], *, env: dict[str, str] | None = None, stdin: Path | None = None
) -> Timed:
    """Run one process; its wall time, CPU and peak RSS. The peak is GNU time's (%M, from
    wait4 of a small parent: a child of this interpreter would inherit its peak at fork), else
    a /proc poll of the child's VmHWM every 10 ms."""
    gnu = Path(GNU_TIME).exists()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out, contextlib.ExitStack() as stack:
        wrapped = [GNU_TIME, "-o", out.name, "-f", "%e %U %S %M", *argv] if gnu else argv
        feed = stack.enter_context(stdin.open("rb")) if stdin is not None else subprocess.DEVNULL
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.Popen(
            wrapped, cwd=ROOT, env=env, stdin=feed, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        peak = 0.0
        while proc.poll() is None:
            if not gnu:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    status = Path(f"/proc/{proc.pid}/status").read_text()
                    peak = max(peak, int(status.split("VmHWM:")[1].split()[0]) / 1024)
            time.sleep(0.005)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if gnu:
            fields = out.read().split()[-4:]
            peak = int(fields[3]) / 1024
    return Timed(wall, cpu, peak, proc.returncode)


def headline(text: str) -> None:
    """The line `make bench` copies into README's benchmark section."""
    print(f"\nheadline: {text}")


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """median (min-max) of a measure's rounds."""
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


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
