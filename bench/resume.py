"""How long a rerun takes to read its result log, and how much memory that costs.

For logs of 10k, 100k and 1M records (70% disconnected, 10% already_gone, 10% failed, 10%
invalid/duplicate), times `read_prior` (what `run` does before sending anything) against a
baseline that json-parses every line, each in a fresh process, and prints the ratios.

    python bench/resume.py            # 10k, 100k, 1M
    python bench/resume.py --smoke    # 1k, 5k: seconds, for the test suite
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import measure, table

OURS = """
import json, sys, time
from pathlib import Path
from worker.results.prior import read_prior
t = time.perf_counter(); prior = read_prior(Path(sys.argv[1])); s = time.perf_counter() - t
import resource
print(json.dumps({"seconds": s, "done": len(prior.done),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

NAIVE = """
import json, sys, time
t = time.perf_counter(); done = set()
with open(sys.argv[1], "rb") as f:
    for line in f:
        r = json.loads(line)
        if r["outcome"] in ("disconnected", "already_gone"): done.add(r["account_id"])
s = time.perf_counter() - t
import resource
print(json.dumps({"seconds": s, "done": len(done),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

OUTCOMES = ["disconnected"] * 7 + ["already_gone", "failed", "invalid"]


def write_log(path: Path, n: int) -> None:
    rng = random.Random(n)
    with path.open("w") as f:
        for i in range(n):
            outcome = rng.choice(OUTCOMES)
            f.write(
                json.dumps(
                    {
                        "ts": "2026-11-28T17:00:00.123Z",
                        "run_id": "5c1f0e9a2b7d",
                        "source": f"jobs.csv:{i + 2}",
                        "job_id": None,
                        "account_id": str(i),
                        "username": f"user{i}",
                        "op": "disconnect",
                        "outcome": outcome,
                        "http_status": {"failed": 503, "invalid": None}.get(outcome, 200),
                        "error": None,
                        "attempts": 1,
                        "elapsed_ms": 312,
                    }
                )
                + "\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    sizes = [1_000, 5_000] if args.smoke else [10_000, 100_000, 1_000_000]
    baseline = measure(
        "import json, resource; print(json.dumps({'rss_mb': "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            log = Path(tmp) / f"{n}.jsonl"
            write_log(log, n)
            ours, naive = measure(OURS, str(log)), measure(NAIVE, str(log))
            assert ours["done"] == naive["done"], (ours, naive)
            rows.append(
                [
                    f"{n:,}",
                    f"{ours['done']:,.0f}",
                    f"{ours['seconds']:.2f}",
                    f"{naive['seconds']:.2f}",
                    f"{ours['seconds'] / naive['seconds']:.2f}",
                    f"{ours['rss_mb'] - baseline['rss_mb']:.1f}",
                    f"{naive['rss_mb'] - baseline['rss_mb']:.1f}",
                ]
            )
            log.unlink()
    print("## Reading a result log before a rerun (`bench/resume.py`)\n")
    print(
        table(
            ["records", "done", "ours s", "parse-all s", "time ratio", "ours MB", "parse-all MB"],
            rows,
        )
    )
    print("\nMB: peak RSS above a bare interpreter; ratio < 1: ours is faster.")


if __name__ == "__main__":
    main()
