"""Start-up time: `xquik-disconnect --version` and `run --help` against `python -c pass`
(target: within 100 ms of it). Scheduled runs start often; heavy imports (aiohttp, anyio,
redis, rich, structlog) must load only when a run needs them. The commands are run in turns
(interleaved), so a busy moment of the machine falls on all of them alike.

    python bench/startup.py           # 10 rounds, median and min-max
    python bench/startup.py --smoke   # 3 rounds
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, table

SCRIPT = Path(sys.executable).with_name("xquik-disconnect")
TARGET_MS = 100


def seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
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
    for _ in range(rounds):
        for name, cmd in cases.items():
            times[name].append(seconds(cmd))
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
    print(table(["command", "ms (min-max)", "extra ms", "ratio"], rows))
    extra = (statistics.median(times["xquik-disconnect --version"]) - base) * 1000
    met = "met" if extra <= TARGET_MS else "NOT met"
    print(f"\ntarget: --version within {TARGET_MS} ms of python -c pass: +{extra:.0f} ms, {met}.")


if __name__ == "__main__":
    main()
