"""A rerun over a result log with nothing left to do: the whole process, from start to exit.

For logs of 10k, 100k and 1M records (written by the worker's own sink: 80 % disconnected,
20 % already_gone, every record stamped with the key and the API), `xquik-disconnect run
JOBS --results LOG` where every job is done already, against a script that json-parses
every line of the log into a set of done ids and then reads the jobs file against it (the
yardstick: the least a rerun must do). Both are whole processes, interpreter start-up
included, in interleaved rounds; the API's address has nothing listening, so a request sent
would fail the run. Peak RSS is each process's own (GNU time).

    python bench/resume.py            # 10k, 100k, 1M; 3 rounds
    python bench/resume.py --smoke    # 1k, 5k; 1 round
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Timed, headline, spread, table, timed

KEY = "xq_" + "5" * 64
BASE = "http://127.0.0.1:9/api/v1"  # the discard port: nothing answers

PARSE_ALL = """
import json, sys
log, jobs, origin, key_id = sys.argv[1:]
done = set()
with open(log, "rb") as f:
    for line in f:
        r = json.loads(line)
        if (r["outcome"] in ("disconnected", "already_gone") and r["origin"] == origin
                and r["key_id"] == key_id):
            done.add(r["account_id"])
with open(jobs) as f:
    left = sum(1 for line in f if line.strip() not in done)
print(len(done), left)
"""


def write_log(log: Path, jobs: Path, n: int) -> None:
    from worker.models import Op, Outcome, Result
    from worker.results.sink import FileSink

    rng = random.Random(n)
    sink = FileSink.open(log)
    key_id = hashlib.sha256(KEY.encode()).hexdigest()[:12]
    for i in range(1, n + 1):
        outcome = Outcome.DISCONNECTED if rng.random() < 0.8 else Outcome.ALREADY_GONE
        sink.write(
            Result(
                run_id="5c1f0e9a2b7d",
                source=f"jobs.txt:{i}",
                account_id=str(i),
                outcome=outcome,
                op=Op.DISCONNECT,
                http_status=200,
                attempts=1,
                elapsed_ms=312,
                x_username=f"user{i}",
                x_user_id=str(10**9 + i),
                key_id=key_id,
                origin="http://127.0.0.1:9",
            )
        )
    sink.close()
    jobs.write_text("".join(f"{i}\n" for i in range(1, n + 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    sizes = [1_000, 5_000] if args.smoke else [10_000, 100_000, 1_000_000]
    rounds = 1 if args.smoke else 3
    key_id = hashlib.sha256(KEY.encode()).hexdigest()[:12]
    rows, ratios = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            log, jobs = Path(tmp) / f"{n}.jsonl", Path(tmp) / f"{n}.txt"
            write_log(log, jobs, n)
            ours_argv = [sys.executable, "-m", "worker", "run", str(jobs), "--results",
                         str(log), "--base-url", BASE, "--state-dir", "none",
                         "--log-format", "json"]  # fmt: skip
            base_argv = [sys.executable, "-c", PARSE_ALL, str(log), str(jobs),
                         "http://127.0.0.1:9", key_id]  # fmt: skip
            ours: list[Timed] = []
            base: list[Timed] = []
            for _ in range(rounds):
                ours.append(timed(ours_argv, env={"XQUIK_API_KEY": KEY, "PATH": "/usr/bin:/bin"}))
                base.append(timed(base_argv))
            assert all(t.code == 0 for t in ours + base), (ours, base)
            pairs = [o.wall / b.wall for o, b in zip(ours, base, strict=True)]
            ratios[n] = statistics.median(pairs)
            rows.append([
                f"{n:,}",
                spread([t.wall for t in ours]), spread([t.wall for t in base]),
                spread(pairs) + "x",
                spread([t.peak_mb for t in ours], "{:.0f}"),
                spread([t.peak_mb for t in base], "{:.0f}"),
            ])  # fmt: skip
            log.unlink()
            jobs.unlink()
    print(
        "## A rerun with nothing left to do, whole process, median (min-max) of "
        f"{rounds} interleaved rounds (`bench/resume.py`)\n"
    )
    print(table(["records", "ours s", "parse-all script s", "time ratio", "ours peak MB",
                 "script peak MB"], rows))  # fmt: skip
    top = max(ratios)
    print(
        f"\nratio < 1: ours is faster. Target at {top:,} records: <= 1.0x the script; "
        f"measured {ratios[top]:.2f}x: {'met' if ratios[top] <= 1.0 else 'NOT met'}."
    )
    headline(
        f"a rerun over {top:,} done records with nothing left to do, whole process: "
        f"{rows[-1][3]} the time of a json.loads-every-line script (target <= 1.0x: "
        f"{'met' if ratios[top] <= 1.0 else 'NOT met'}), peak {rows[-1][4]} MB against "
        f"{rows[-1][5]}."
    )


if __name__ == "__main__":
    main()
