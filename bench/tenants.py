"""Many keys: 1,000 tenants on the sandbox, each with its own short window, in one run (file
mode) and in one queue (2 consumers), against a minimal multi-key loop (the yardstick).

The sandbox serves one Xquik account per tenant (`sandbox --tenants K --keys-out DIR`), each
with its own accounts and its own fixed window of N DELETEs per W s. The jobs file holds every
tenant's jobs grouped by tenant (t1's first: the worst order for head-of-line blocking) or
mixed (one of each tenant in turn, as a pipeline's arrivals). The minimal loop reads the whole
file, groups it by tenant and sends each tenant's jobs N at a time, the next N one window after
the first answer of the last (16 requests in flight over all keys, as ours). From the
sandbox's own log: DELETEs per second over the DELETE span, 429s, requests for another
tenant's account, and the spread of the tenants' finish times (their last DELETE), in
windows. Rounds are interleaved; medians (min-max).

    python bench/tenants.py           # 1,000 tenants x 20 jobs, 5 per 1 s each; 3 rounds
    python bench/tenants.py --smoke   # 50 tenants x 10 jobs; 1 round
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, SandboxProc, headline, spread, table, timed
from tests.redis_server import RedisServer

CONCURRENCY = 16


def sandbox(tmp: Path, *args: str) -> SandboxProc:
    keys = tmp / "keys" if "--tenants" in args else None
    return SandboxProc(1, *args, keys_out=keys)


def jobs_file(path: Path, tenants: int, per: int, *, mixed: bool = False) -> Path:
    """Every tenant's jobs: grouped by tenant (t1's all first: the worst order for
    head-of-line blocking), or `mixed` (one of each tenant in turn, as a pipeline's
    arrivals would be)."""
    order = (
        ((t, i) for i in range(1, per + 1) for t in range(1, tenants + 1))
        if mixed
        else ((t, i) for t in range(1, tenants + 1) for i in range(1, per + 1))
    )
    with path.open("w") as f:
        for t, i in order:
            f.write(json.dumps({"account_id": f"t{t}-{i}", "tenant": f"t{t}"}) + "\n")
    return path


def measure(sb: SandboxProc, jobs: int, window: float) -> dict[str, Any]:
    log = sb.control("requests")
    deletes = [(path, status, t) for method, path, status, t in log if method == "DELETE"]
    times = [t for _, _, t in deletes]
    span = max(times) - min(times)
    finish: dict[str, float] = {}
    for path, status, t in deletes:
        if status in (200, 404):
            tenant = path.rsplit("/", 1)[-1].split("-")[0]
            finish[tenant] = max(finish.get(tenant, 0.0), t)
    done = sum(1 for _, s, _ in deletes if s in (200, 404))
    return {
        "rate": done / span if span else float("inf"),
        "429s": sum(1 for _, s, _ in deletes if s == 429),
        "done": done,
        "spread_windows": (max(finish.values()) - min(finish.values())) / window,
        "cross": sb.control("stats").get("cross_tenant", 0),
        "span": span,
        "jobs": jobs,
    }


def run_case(
    mode: str,
    consumers: int,
    tenants: int,
    per: int,
    n: int,
    w: float,
    tmp: Path,
    extra: tuple[str, ...] = (),
    *,
    unlimited: bool = False,
    mixed: bool = False,
) -> dict[str, Any]:
    """One run. `unlimited`: the same run (keys, jobs, mode, consumers, read-ahead) against a
    sandbox without a limit, each tenant's budget at 1,000,000 per window, so that it keeps
    the books of every send (held slots, the state file or Redis) and never waits: this
    client's ceiling on this machine for this run's shape."""
    server_limit = "unlimited" if unlimited else f"{n}/{w:g}s"
    rate = f"1000000/{w:g}s" if unlimited else f"{n}/{w:g}s"
    sb = sandbox(
        tmp, "--tenants", str(tenants), "--tenant-accounts", str(per),
        "--delete-limit", server_limit, "--read-limit", "unlimited",
    )  # fmt: skip
    jobs = jobs_file(tmp / "jobs.jsonl", tenants, per, mixed=mixed)
    env = {"XQUIK_API_KEY": sb.api_key, "PATH": "/usr/bin:/bin"}
    assert sb.keys is not None
    common = ["--base-url", sb.base_url, "--keys", str(sb.keys), "--rate", rate]
    common += ["--read-rate", "unlimited", "--concurrency", str(CONCURRENCY)]
    common += ["--log-format", "json", "--state-dir", str(tmp / "state"), *extra]
    server = None
    try:
        if mode == "file":
            argv = [[sys.executable, "-m", "worker", "run", str(jobs), *common]]
            argv[0] += ["--results", str(tmp / "r.jsonl")]
        else:
            server = RedisServer(tmp)
            server.start()
            subprocess.run(
                [sys.executable, "-m", "worker", "enqueue", str(jobs), "--redis", server.url],
                check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=env,
            )  # fmt: skip
            run = [sys.executable, "-m", "worker", "run", server.url, *common, "--drain"]
            argv = [
                [*run, "--consumer", f"c{k}", "--results", str(tmp / f"c{k}.jsonl")]
                for k in range(consumers)
            ]
        with ThreadPoolExecutor(len(argv)) as pool:  # side by side, each timed on its own
            ends = list(pool.map(lambda a: timed(a, env=env), argv))
        wall = max(t.wall for t in ends)
        out = measure(sb, tenants * per, w)
    finally:
        sb.stop()
        if server is not None:
            server.stop()
    out["wall"] = wall
    out["rss"] = max(t.peak_mb for t in ends)
    out["codes"] = sorted({t.code for t in ends})
    return out


MINIMAL_KEYS = """
import asyncio, json, os, sys, time, aiohttp
async def main(base, keys_dir, jobs, n, w, out):
    n, w = int(n), float(w)
    keys = {t: open(os.path.join(keys_dir, t)).read().strip() for t in os.listdir(keys_dir)}
    by = {}
    for line in open(jobs):
        job = json.loads(line)
        by.setdefault(job["tenant"], []).append(job["account_id"])
    sem = asyncio.Semaphore(16)
    with open(out, "a") as log:
        async with aiohttp.ClientSession() as s:
            async def one(key, account):
                async with sem:
                    async with s.delete(f"{base}/x/accounts/{account}",
                                        headers={"x-api-key": key}) as r:
                        await r.read()
                        log.write(json.dumps({"account_id": account, "status": r.status}) + "\\n")
                        return time.monotonic()
            async def tenant(name, ids):
                key = keys[name]
                for k in range(0, len(ids), n):
                    answered = await asyncio.gather(*(one(key, a) for a in ids[k:k + n]))
                    if k + n < len(ids):  # the window opened before the first answer
                        await asyncio.sleep(max(0.0, min(answered) + w - time.monotonic()))
            await asyncio.gather(*(tenant(t, ids) for t, ids in by.items()))
asyncio.run(main(*sys.argv[1:]))
"""


def run_minimal(
    tenants: int, per: int, n: int, w: float, tmp: Path, *, mixed: bool
) -> dict[str, Any]:
    sb = sandbox(
        tmp, "--tenants", str(tenants), "--tenant-accounts", str(per),
        "--delete-limit", f"{n}/{w:g}s", "--read-limit", "unlimited",
    )  # fmt: skip
    jobs = jobs_file(tmp / "jobs.jsonl", tenants, per, mixed=mixed)
    assert sb.keys is not None
    try:
        argv = [sys.executable, "-c", MINIMAL_KEYS, sb.base_url, str(sb.keys), str(jobs),
                str(n), str(w), str(tmp / "minimal.jsonl")]  # fmt: skip
        done = timed(argv)
        out = measure(sb, tenants * per, w)
    finally:
        sb.stop()
    out.update(wall=done.wall, rss=done.peak_mb, codes=[done.code], cpu=done.cpu)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    tenants, per, n, w = (50, 10, 5, 1.0) if args.smoke else (1000, 20, 5, 1.0)
    rounds = 1 if args.smoke else 3
    cases: list[tuple[str, int, bool]] = [
        ("file", 1, True), ("file", 1, False), ("queue", 2, True), ("queue", 2, False),
    ]  # fmt: skip
    jobs = tenants * per
    results: dict[tuple[str, int, bool], list[dict[str, Any]]] = {c: [] for c in cases}
    minimal: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(rounds):  # interleaved: each case beside the yardstick of its round
        for mixed in (True, False):
            with tempfile.TemporaryDirectory() as tmp:
                minimal[mixed].append(run_minimal(tenants, per, n, w, Path(tmp), mixed=mixed))
        for mode, k, mixed in cases:
            with tempfile.TemporaryDirectory() as tmp:
                results[(mode, k, mixed)].append(
                    run_case(mode, k, tenants, per, n, w, Path(tmp), mixed=mixed)
                )
    rows = []

    def row(
        label: str, order: str, runs: list[dict[str, Any]], base: list[dict[str, Any]]
    ) -> list[str]:
        ratio = [r["rate"] / b["rate"] for r, b in zip(runs, base, strict=True)]
        return [
            label, order,
            f"{min(r['done'] for r in runs):,}/{jobs:,}",
            spread([r["rate"] for r in runs], "{:,.0f}"),
            "-" if runs is base else spread(ratio) + "x",
            str(sum(r["429s"] for r in runs)),
            spread([r["spread_windows"] for r in runs], "{:.1f}"),
            str(sum(r["cross"] for r in runs)),
            spread([r["rss"] for r in runs], "{:.0f}"),
            "ok" if all(r["codes"] == [0] for r in runs) else str([r["codes"] for r in runs]),
        ]  # fmt: skip

    for mixed in (True, False):
        order = "mixed" if mixed else "grouped"
        rows.append(row("minimal multi-key loop", order, minimal[mixed], minimal[mixed]))
        for mode, k, m in cases:
            if m == mixed:
                label = "ours, file" if mode == "file" else f"ours, queue x{k}"
                rows.append(row(label, order, results[(mode, k, m)], minimal[mixed]))
    print(
        f"## Many keys: {tenants:,} tenants x {per} jobs, {n} per {w:g} s each, median "
        f"(min-max) of {rounds} interleaved rounds (`bench/tenants.py`)\n"
    )
    print(
        table(
            ["client", "jobs", "done (fewest)", "DELETEs/s", "vs minimal",
             "429s (all rounds)", "finish spread (windows)", "cross-tenant", "peak RSS MB",
             "exit"],
            rows,
        )
    )  # fmt: skip
    print(
        "\nDELETEs/s: over the DELETE span (first to last). vs minimal: DELETEs/s over the "
        "minimal loop's of the same round and order. Targets: "
        ">= 0.8x the minimal loop (file mode and 2 consumers), 0 429s, 0 cross-tenant "
        "requests; jobs grouped by tenant, default options: finish spread <= 2 windows."
    )

    def vs(case: tuple[str, int, bool]) -> float:
        runs, base = results[case], minimal[case[2]]
        pairs = zip(runs, base, strict=True)
        return float(statistics.median(r["rate"] / b["rate"] for r, b in pairs))

    worst = min(vs(c) for c in cases)
    grouped = {
        mode: statistics.median(r["spread_windows"] for r in results[(mode, k, False)])
        for mode, k in (("file", 1), ("queue", 2))
    }
    failures = sum(r["429s"] + r["cross"] for c in cases for r in results[c])
    headline(
        f"{tenants:,} keys x {per} jobs at {n} per {w:g} s each: file mode "
        f"{vs(('file', 1, True)):.2f}x / {vs(('file', 1, False)):.2f}x and 2 queue consumers "
        f"{vs(('queue', 2, True)):.2f}x / {vs(('queue', 2, False)):.2f}x the minimal multi-key "
        f"loop's DELETEs/s (jobs mixed / grouped; target >= 0.8x: "
        f"{'met' if worst >= 0.8 else 'NOT met'}); {failures} 429s or cross-tenant requests; "
        f"grouped by tenant they finish {grouped['file']:.1f} (file mode) and "
        f"{grouped['queue']:.1f} (2 queue consumers) windows apart (target <= 2: "
        f"{'met' if max(grouped.values()) <= 2 else 'NOT met'})."
    )


if __name__ == "__main__":
    main()
