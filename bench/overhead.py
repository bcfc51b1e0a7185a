"""Overhead per job: ours against a minimal hand-written aiohttp loop (the Python floor),
`xargs -P 16 curl -X DELETE` (what people script) and the sandbox's own ceiling (wrk).

Every strategy deletes fresh accounts on a zero-latency sandbox in its own process, 16
requests in flight; the worker on its default path (`--rate auto`: a held slot and a state
file entry for every send) and with `--rate unlimited`, the minimal loop as the yardstick,
in interleaved rounds. Reported: jobs/s, the client's CPU seconds per 1,000 jobs and its peak
RSS (GNU time), and the ratios to the minimal loop of the same round.

    python bench/overhead.py           # 20,000 jobs (curl: 2,000)
    python bench/overhead.py --smoke   # 500 jobs (curl: 100)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SandboxProc, Timed, headline, spread, table, timed

CONCURRENCY = 16

# A bounded loop: the semaphore is taken before each task is created and given back when the
# task ends, so at most 16 tasks exist at any moment (taking and giving it back at once, as
# 0.1's baseline did, never waits while a permit is free: it created every task up front).
MINIMAL = """
import asyncio, json, sys, aiohttp
async def main(base, key, jobs, out):
    sem = asyncio.Semaphore(16)
    with open(out, "a") as log, open(jobs) as f:
        async with aiohttp.ClientSession(headers={"x-api-key": key}) as s:
            async def one(i):
                try:
                    async with s.delete(f"{base}/x/accounts/{i}") as r:
                        await r.read()
                        log.write(json.dumps({"account_id": i, "status": r.status}) + "\\n")
                finally:
                    sem.release()
            tasks = set()
            for line in f:
                await sem.acquire()
                t = asyncio.ensure_future(one(line.strip())); tasks.add(t)
                t.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
asyncio.run(main(*sys.argv[1:]))
"""


ROUNDS = 3

LABELS = {
    "ours": "xquik-disconnect, default path (--rate auto: budget + state file per send)",
    "ours_unlimited": "xquik-disconnect --rate unlimited",
    "minimal": "minimal aiohttp + Semaphore loop (the yardstick)",
}


def run_one(name: str, jobs: int, tmp: Path) -> Timed:
    """One strategy on fresh accounts of its own sandbox process (its CPU is not counted)."""
    ids = tmp / "jobs.txt"
    ids.write_text("".join(f"{i}\n" for i in range(1, jobs + 1)))
    for old in tmp.glob("*.jsonl"):
        old.unlink()
    for old in tmp.glob("budget-*"):
        old.unlink()
    sb = SandboxProc(jobs, "--delete-limit", "unlimited", "--read-limit", "unlimited")
    try:
        if name == "minimal":
            argv = [sys.executable, "-c", MINIMAL, sb.base_url, sb.api_key, str(ids),
                    str(tmp / "minimal.jsonl")]  # fmt: skip
            return timed(argv)
        if name == "curl":
            (tmp / "h").write_text(f"x-api-key: {sb.api_key}\n")
            cmd = (
                f"xargs -P {CONCURRENCY} -I{{}} curl -s -o /dev/null -X DELETE "
                f"-H @{tmp / 'h'} {sb.base_url}/x/accounts/{{}} < {ids}"
            )
            return timed(["sh", "-c", cmd])
        # The default path is --rate auto; its ceiling is raised so that this zero-latency
        # sandbox never makes it wait: every send still takes a held slot and goes to the
        # state file, as at 60 per 60 s.
        rate = "unlimited" if name == "ours_unlimited" else "auto:1000000/60s"
        argv = [sys.executable, "-m", "worker", "run", str(ids), "--base-url", sb.base_url,
                "--rate", rate, "--read-rate", "unlimited", "--concurrency", str(CONCURRENCY),
                "--log-format", "json", "--results", str(tmp / f"{name}.jsonl"),
                "--state-dir", str(tmp)]  # fmt: skip
        return timed(argv, env={"XQUIK_API_KEY": sb.api_key, "PATH": "/usr/bin:/bin"})
    finally:
        sb.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    n, n_curl = (500, 100) if args.smoke else (20_000, 2_000)
    rounds = 1 if args.smoke else ROUNDS
    runs: dict[str, list[Timed]] = {name: [] for name in LABELS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):  # interleaved: a busy moment falls on all of them alike
            for name in LABELS:
                done = run_one(name, n, Path(tmp))
                assert done.code == 0, (name, done)
                runs[name].append(done)
        curl = run_one("curl", n_curl, Path(tmp)) if shutil.which("curl") else None
    rows = []
    for name, label in LABELS.items():
        rows.append([
            label,
            spread([n / t.wall for t in runs[name]], "{:,.0f}"),
            spread([t.cpu / n * 1000 for t in runs[name]]),
            spread([t.peak_mb for t in runs[name]], "{:.0f}"),
        ])  # fmt: skip
    if curl is not None:
        label = f"xargs -P {CONCURRENCY} curl -X DELETE ({n_curl:,} jobs, once)"
        rows.append([label, f"{n_curl / curl.wall:,.0f}", f"{curl.cpu / n_curl * 1000:.2f}", "-"])
    print(
        f"## Overhead per job, {n:,} jobs, zero-latency sandbox, median (min-max) of {rounds} "
        "interleaved rounds (`bench/overhead.py`)\n"
    )
    print(table(["client", "jobs/s", "client CPU s per 1,000 jobs", "peak RSS MB"], rows))
    minimal = runs["minimal"]
    print("\nratios to the minimal loop of the same round, median (min-max):\n")
    ratio_rows = []
    targets = {"ours": ("<= 1.25x", ">= 0.8x"), "ours_unlimited": ("<= 1.2x", "-")}
    for name in ("ours", "ours_unlimited"):
        cpu = [o.cpu / m.cpu for o, m in zip(runs[name], minimal, strict=True)]
        speed = [m.wall / o.wall for o, m in zip(runs[name], minimal, strict=True)]
        cpu_target, speed_target = targets[name]
        ratio_rows.append([
            LABELS[name].split(" (")[0] if name == "ours" else LABELS[name],
            spread(cpu) + "x", cpu_target, "met" if statistics.median(cpu) <= float(
                cpu_target.split()[1].rstrip("x")) else "NOT met",
            spread(speed) + "x", speed_target,
            "-" if speed_target == "-" else (
                "met" if statistics.median(speed) >= 0.8 else "NOT met"),
        ])  # fmt: skip
    print(table(["client", "CPU per job", "target", "", "throughput", "target", ""], ratio_rows))
    default, unlimited = ratio_rows
    headline(
        f"overhead per job against a minimal aiohttp loop, {n:,} jobs: on the default path "
        f"CPU {default[1]} (target <= 1.25x: {default[3]}), throughput {default[4]} (target "
        f">= 0.8x: {default[6]}); with --rate unlimited CPU {unlimited[1]} (target <= 1.2x: "
        f"{unlimited[3]})."
    )
    if curl is not None:
        ours_speed = statistics.median([n / t.wall for t in runs["ours"]])
        print(f"\nours (default path) / xargs+curl throughput: "
              f"{ours_speed / (n_curl / curl.wall):.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
