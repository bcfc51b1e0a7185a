"""Queue mode: how well 1, 2 and 4 worker processes share one DELETE budget in Redis.

Each case enqueues the same jobs on a fresh stream, starts K `run redis://… --drain` workers
against a sandbox with a fixed window of N per W s, and measures from the sandbox's own log:
429s, and the DELETE span against the ideal (ceil(jobs/N) - 1) windows.

    python bench/queue_mode.py           # 200 jobs, 20 per 1 s; 1, 2 and 4 workers
    python bench/queue_mode.py --smoke   # 30 jobs, 10 per 0.5 s; 1 and 2 workers
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, SandboxProc, table
from tests.redis_server import RedisServer


def run_case(workers: int, jobs: int, n: int, w: float, tmp: Path) -> list[str]:
    server = RedisServer(tmp)
    server.start()
    sb = SandboxProc(jobs, "--delete-limit", f"{n}/{w}s")
    try:
        ids = tmp / "jobs.txt"
        ids.write_text("".join(f"{i}\n" for i in range(1, jobs + 1)))
        subprocess.run(
            [sys.executable, "-m", "worker", "enqueue", str(ids), "--redis", server.url],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        env = {"XQUIK_API_KEY": sb.api_key, "PATH": "/usr/bin:/bin"}
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "worker",
                    "run",
                    server.url,
                    "--base-url",
                    sb.base_url,
                    "--rate",
                    f"{n}/{w}s",
                    "--concurrency",
                    "4",
                    "--drain",
                    "--consumer",
                    f"w{k}",
                    "--results",
                    str(tmp / f"w{k}.jsonl"),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for k in range(workers)
        ]
        codes = [p.wait(timeout=300) for p in procs]
        url = sb.base_url.removesuffix("/api/v1") + "/_sandbox/requests"
        with urllib.request.urlopen(url, timeout=10) as resp:
            log = json.loads(resp.read())
    finally:
        sb.stop()
        server.stop()
    deletes = [(t, status) for method, _, status, t in log if method == "DELETE"]
    times = [t for t, _ in deletes]
    span = max(times) - min(times)
    ideal = (math.ceil(jobs / n) - 1) * w
    done = sum(1 for _, s in deletes if s in (200, 404))
    return [
        str(workers),
        str(sum(1 for _, s in deletes if s == 429)),
        f"{done}/{jobs}",
        f"{span:.2f}",
        f"{ideal / span:.1%}",
        "ok" if set(codes) == {0} else str(codes),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    jobs, n, w, counts = (30, 10, 0.5, [1, 2]) if args.smoke else (200, 20, 1.0, [1, 2, 4])
    rows = []
    for k in counts:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run_case(k, jobs, n, w, Path(tmp)))
    print(f"## Queue mode, {jobs} jobs, shared budget {n} per {w:g} s (`bench/queue_mode.py`)\n")
    print(
        table(
            ["workers", "429s", "done", "DELETE span s", "budget efficiency (ratio)", "exit"], rows
        )
    )
    print(f"\nefficiency: ideal span (ceil({jobs}/{n}) - 1) x {w:g} s over the measured span.")


if __name__ == "__main__":
    main()
