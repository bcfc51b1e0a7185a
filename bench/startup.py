"""Start-up time: `xquik-disconnect --version` and `run --help` against `python -c pass`
(target: within 100 ms of it), and a 1-job run, time to exit, against a minimal one-DELETE
aiohttp script on the same sandbox (target: <= 1.3x). Scheduled runs start often; heavy
imports (aiohttp, anyio, redis, rich, structlog) must load only when a run needs them. The
commands are run in turns (interleaved), so a busy moment of the machine falls on all of
them alike.

    python bench/startup.py           # 10 rounds, median and min-max
    python bench/startup.py --smoke   # 3 rounds
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, SandboxProc, headline, table

ONE_DELETE = """
import asyncio, sys, aiohttp
async def main(base, key, account):
    async with aiohttp.ClientSession(headers={"x-api-key": key}) as s:
        async with s.delete(f"{base}/x/accounts/{account}") as r:
            await r.read()
            print(r.status)
asyncio.run(main(*sys.argv[1:]))
"""

SCRIPT = Path(sys.executable).with_name("xquik-disconnect")
TARGET_MS = 100


def seconds(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=env,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    rounds = 3 if args.smoke else 10
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "xquik-disconnect --version": [str(SCRIPT), "--version"],
        "xquik-disconnect run --help": [str(SCRIPT), "run", "--help"],
        "python -c 'import aiohttp'": [sys.executable, "-c", "import aiohttp"],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    one_job = "xquik-disconnect run (1 job, default options)"
    minimal = "minimal one-DELETE aiohttp script"
    times[one_job], times[minimal] = [], []
    sb = SandboxProc(2 * rounds, "--delete-limit", "unlimited", "--read-limit", "unlimited")
    env = {"XQUIK_API_KEY": sb.api_key, "PATH": "/usr/bin:/bin"}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(rounds):
                for name, cmd in cases.items():
                    times[name].append(seconds(cmd))
                ids = Path(tmp) / f"{r}.txt"
                ids.write_text(f"{2 * r + 1}\n")
                times[one_job].append(seconds(
                    [str(SCRIPT), "run", str(ids), "--base-url", sb.base_url, "--state-dir", tmp],
                    env=env,
                ))  # fmt: skip
                times[minimal].append(seconds(
                    [sys.executable, "-c", ONE_DELETE, sb.base_url, sb.api_key, str(2 * r + 2)]
                ))  # fmt: skip
        deleted = sb.control("stats")["by_status"].get("DELETE 200")
        assert deleted == 2 * rounds, deleted  # every run really deleted its account
    finally:
        sb.stop()
    base = statistics.median(times["python -c pass"])
    rows = []
    for name, spans in times.items():
        median = statistics.median(spans)
        rows.append(
            [
                name,
                f"{median * 1000:.0f} ({min(spans) * 1000:.0f}-{max(spans) * 1000:.0f})",
                f"{(median - base) * 1000:+.0f}",
                f"{median / base:.2f}",
            ]
        )
    print(f"## Start-up, median of {rounds} interleaved rounds (`bench/startup.py`)\n")
    print(table(["command", "ms (min-max)", "extra ms", "ratio to python -c pass"], rows))
    extra = (statistics.median(times["xquik-disconnect --version"]) - base) * 1000
    met = "met" if extra <= TARGET_MS else "NOT met"
    print(f"\ntarget: --version within {TARGET_MS} ms of python -c pass: +{extra:.0f} ms, {met}.")
    pairs = [a / b for a, b in zip(times[one_job], times[minimal], strict=True)]
    ratio = statistics.median(pairs)
    print(
        f"a 1-job run / the minimal one-DELETE script, time to exit: {ratio:.2f}x "
        f"({min(pairs):.2f}-{max(pairs):.2f}); target <= 1.3x: "
        f"{'met' if ratio <= 1.3 else 'NOT met'}."
    )
    headline(
        f"start-up: --version {extra:+.0f} ms over python -c pass; a 1-job run exits in "
        f"{ratio:.2f}x ({min(pairs):.2f}-{max(pairs):.2f}) the time of a minimal one-DELETE "
        f"aiohttp script (target <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'})."
    )


if __name__ == "__main__":
    main()
