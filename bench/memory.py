"""Peak memory of a run over 10k, 100k and 1M jobs: it must stay flat (at most 20 MB more at 1M
than at 10k). Rate unlimited; the sandbox has no accounts, so every job is a quick 404 (a GET:
the precheck).

    python bench/memory.py            # 10k, 100k, 1M jobs (about 5 minutes: 1.1M requests)
    python bench/memory.py --smoke    # 1k, 5k
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SandboxProc, headline, table, timed


def peak_mb(jobs: int, tmp: Path) -> tuple[float, float]:
    """The run's own peak RSS (GNU time, or a /proc poll) and its wall seconds."""
    ids = tmp / f"{jobs}.txt"
    with ids.open("w") as f:
        for i in range(jobs):
            f.write(f"acct_{i:09d}\n")
    sb = SandboxProc(0, "--delete-limit", "unlimited", "--read-limit", "unlimited")
    try:
        argv = [sys.executable, "-m", "worker", "run", str(ids), "--base-url", sb.base_url,
                "--rate", "unlimited", "--read-rate", "unlimited", "--concurrency", "16",
                "--results", str(tmp / f"{jobs}.results.jsonl"), "--state-dir", str(tmp),
                "--log-format", "json", "--no-progress"]  # fmt: skip
        done = timed(argv, env={"XQUIK_API_KEY": sb.api_key, "PATH": "/usr/bin:/bin"})
    finally:
        sb.stop()
    ids.unlink()
    (tmp / f"{jobs}.results.jsonl").unlink()
    return done.peak_mb, done.wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    sizes = [1_000, 5_000] if args.smoke else [10_000, 100_000, 1_000_000]
    rows, base = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            rss, seconds = peak_mb(n, Path(tmp))
            base = base or rss
            rows.append(
                [
                    f"{n:,}",
                    f"{rss:.1f}",
                    f"{rss - base:+.1f}",
                    f"{rss / base:.3f}",
                    f"{n / seconds:,.0f}",
                ]
            )
    print("## Peak memory of a run (`bench/memory.py`)\n")
    print(table(["jobs", "peak RSS MB", f"vs {sizes[0]:,} MB", "ratio", "jobs/s"], rows))
    print(f"\ntarget: at most +20 MB from {sizes[0]:,} to {sizes[-1]:,} jobs.")
    grown = float(rows[-1][2])
    headline(
        f"memory: peak RSS {rows[0][1]} MB at {sizes[0]:,} jobs, {rows[-1][1]} MB at "
        f"{sizes[-1]:,} ({grown:+.1f} MB; target <= +20 MB: {'met' if grown <= 20 else 'NOT met'})."
    )


if __name__ == "__main__":
    main()
