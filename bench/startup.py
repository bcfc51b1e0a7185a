"""Start-up time: `xquik-disconnect --version` against `python -c pass` (target: under 0.3 s
extra). Scheduled runs start often; heavy imports (aiohttp for --version, rich, redis) must
load only when used.

    python bench/startup.py           # 20 runs each, median
    python bench/startup.py --smoke   # 3 runs each
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


def median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    runs = 3 if args.smoke else 20
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "xquik-disconnect --version": [str(SCRIPT), "--version"],
        "xquik-disconnect run --help": [str(SCRIPT), "run", "--help"],
        "python -c 'import aiohttp'": [sys.executable, "-c", "import aiohttp"],
    }
    results = {name: median_seconds(cmd, runs) for name, cmd in cases.items()}
    base = results["python -c pass"]
    rows = [
        [name, f"{t * 1000:.0f}", f"{(t - base) * 1000:+.0f}", f"{t / base:.2f}"]
        for name, t in results.items()
    ]
    print(f"## Start-up, median of {runs} (`bench/startup.py`)\n")
    print(table(["command", "ms", "extra ms", "ratio"], rows))
    print("\ntarget: --version under 300 ms more than python -c pass.")


if __name__ == "__main__":
    main()
