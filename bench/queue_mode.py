"""Queue mode: throughput against two minimal consumers, and one DELETE budget shared by 1, 2
and 4 worker processes in Redis.

Throughput: the same jobs on a fresh stream and a fresh zero-latency sandbox (its own
process, rate unlimited), drained by K consumer processes of each kind, 16 DELETEs in flight
each: ours (`run redis://… --drain --rate unlimited`), and a minimal redis-py XREADGROUP
consumer doing DELETE + a JSONL line + XADD to :results and XACK in one MULTI per message,
without fsync (non-durable) and with an fsync of its log before each ack (durable, the
guarantee ours keeps). Wall time from start to the last process's exit; CPU of all consumer
processes (not Redis, not the sandbox).

Budget: each case enqueues the same jobs, starts K workers against a sandbox with a fixed
window of N per W s, and measures from the sandbox's own log: 429s, and the DELETE span
against the ideal (ceil(jobs/N) - 1) windows.

    python bench/queue_mode.py           # 10,000 jobs, 3 rounds; 200 jobs at 20 per 1 s
    python bench/queue_mode.py --smoke   # 600 jobs; 30 jobs at 10 per 0.5 s
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, SandboxProc, headline, spread, table
from tests.redis_server import RedisClusterServers, RedisServer
from worker.redis_keys import StreamKeys

CONCURRENCY = 16

# The minimal peer: one process, XREADGROUP 100 at a time, at most 16 DELETEs in flight (a
# bounded loop: the semaphore is taken before a task is created), one MULTI per message.
PEER = """
import asyncio, json, os, sys, aiohttp, redis.asyncio as aioredis
async def main(base, key, url, name, out, durable, cluster="0"):
    on_cluster = cluster == "1"  # a cluster's client; the keys in one slot, as ours are
    r = aioredis.RedisCluster.from_url(url) if on_cluster else aioredis.from_url(url)
    q = "{q}" if on_cluster else "q"
    sem = asyncio.Semaphore(16)
    fsync = durable == "1"
    with open(out, "a") as log:
        async with aiohttp.ClientSession(headers={"x-api-key": key}) as s:
            async def one(mid, fields):
                try:
                    i = fields[b"account_id"].decode()
                    async with s.delete(f"{base}/x/accounts/{i}") as resp:
                        await resp.read()
                        line = json.dumps({"account_id": i, "status": resp.status})
                    log.write(line + "\\n")
                    if fsync:
                        log.flush(); os.fsync(log.fileno())
                    async with r.pipeline(transaction=not on_cluster) as p:
                        p.xadd(q + ":results", {"message_id": mid, "record": line})
                        p.xack(q, "g", mid)
                        await p.execute()
                finally:
                    sem.release()
            tasks = set()
            while True:
                answer = await r.xreadgroup("g", name, {q: ">"}, count=100)
                if not answer or not answer[0][1]:
                    break
                for mid, fields in answer[0][1]:
                    await sem.acquire()
                    t = asyncio.ensure_future(one(mid, fields)); tasks.add(t)
                    t.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
    await r.aclose()
asyncio.run(main(*sys.argv[1:]))
"""


def throughput_case(
    kind: str, consumers: int, jobs: int, tmp: Path, *, cluster: bool = False
) -> tuple[float, float]:
    """Wall seconds and consumer CPU seconds to drain `jobs` with `consumers` processes, on
    one redis-server or (`cluster`) a 3-master Redis Cluster."""
    import redis
    import redis.cluster

    server: RedisServer | RedisClusterServers = (
        RedisClusterServers(tmp / "cluster") if cluster else RedisServer(tmp)
    )
    server.start()
    sb = SandboxProc(jobs, "--delete-limit", "unlimited", "--read-limit", "unlimited")
    try:
        r: Any = (
            redis.cluster.RedisCluster.from_url(server.url)
            if cluster
            else redis.Redis.from_url(server.url)
        )
        stream = ("{q}" if cluster else "q") if kind != "ours" else "xquik:disconnect"
        results_key = (
            StreamKeys.of(stream, cluster=cluster).results
            if kind == "ours"
            else f"{stream}:results"
        )
        group = "g" if kind != "ours" else "xquik-disconnect"
        r.xgroup_create(stream, group, id="0", mkstream=True)
        for start in range(1, jobs + 1, 1000):
            pipe = r.pipeline(transaction=False)
            for i in range(start, min(start + 1000, jobs + 1)):
                pipe.xadd(stream, {"account_id": str(i), "delete_monitors": "false"})
            pipe.execute()
        env = {"XQUIK_API_KEY": sb.api_key, "PATH": "/usr/bin:/bin"}
        if kind == "ours":
            ours = [sys.executable, "-m", "worker", "run", server.url, "--base-url", sb.base_url]
            ours += ["--rate", "unlimited", "--read-rate", "unlimited", "--drain"]
            ours += ["--concurrency", str(CONCURRENCY), "--log-format", "json"]
            argv = [
                [*ours, "--consumer", f"c{k}", "--results", str(tmp / f"c{k}.jsonl")]
                for k in range(consumers)
            ]
        else:
            durable = "1" if kind == "durable" else "0"
            peer = [sys.executable, "-c", PEER, sb.base_url, sb.api_key, server.url]
            argv = [
                [*peer, f"c{k}", str(tmp / f"c{k}.jsonl"), durable, "1" if cluster else "0"]
                for k in range(consumers)
            ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                a, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for a in argv
        ]
        codes = [p.wait(timeout=600) for p in procs]
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        results = r.xlen(results_key)
        pending = r.xpending(stream, group)["pending"]
        r.close()
    finally:
        sb.stop()
        server.stop()
    if set(codes) != {0} or results != jobs or pending:
        raise SystemExit(f"{kind} x{consumers}: exit {codes}, {results} results, {pending} pending")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def throughput(jobs: int, counts: list[int], rounds: int) -> None:
    rows = []
    verdicts = []
    medians: dict[int, tuple[float, float]] = {}
    kinds = ("ours", "plain", "durable")
    for k in counts:
        # Rounds interleave the three kinds, so a noisy neighbour weighs on all of them alike;
        # each figure is the median of its rounds.
        runs: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
        for _ in range(rounds):
            for kind in kinds:
                with tempfile.TemporaryDirectory() as tmp:
                    runs[kind].append(throughput_case(kind, k, jobs, Path(tmp)))
        rate = {kind: statistics.median(jobs / w for w, _ in runs[kind]) for kind in kinds}
        cpu = {kind: statistics.median(c / jobs * 1000 for _, c in runs[kind]) for kind in kinds}
        # Ratios within a round (the same moment of the machine), then their median.
        plain = [p[0] / o[0] for o, p in zip(runs["ours"], runs["plain"], strict=True)]
        durable = [d[0] / o[0] for o, d in zip(runs["ours"], runs["durable"], strict=True)]
        cpus = [o[1] / p[1] for o, p in zip(runs["ours"], runs["plain"], strict=True)]
        rows.append(
            [str(k)]
            + [f"{rate[kind]:,.0f}" for kind in kinds]
            + [f"{cpu[kind]:.2f}" for kind in kinds]
            + [spread(plain) + "x", spread(durable) + "x", spread(cpus) + "x"]
        )
        medians[k] = (statistics.median(plain), statistics.median(durable))
        verdicts.append(
            (medians[k][0] >= 0.9, medians[k][1] >= 1.2, statistics.median(cpus) <= 1.5)
        )
    print(
        f"## Queue mode throughput, {jobs:,} jobs, rate unlimited, zero-latency sandbox, "
        f"median of {rounds} (`bench/queue_mode.py`)\n"
    )
    headers = ["consumers", "ours jobs/s", "minimal jobs/s", "minimal+fsync jobs/s"]
    headers += ["ours CPU s/1k", "minimal CPU s/1k", "minimal+fsync CPU s/1k"]
    headers += ["vs minimal (min-max)", "vs minimal+fsync", "CPU vs minimal"]
    print(table(headers, rows))
    met = [all(v[i] for v in verdicts) for i in range(3)]
    print(
        "\ntargets: >= 0.9x the minimal consumer's throughput "
        f"({'met' if met[0] else 'NOT met'}), >= 1.2x the minimal+fsync one's "
        f"({'met' if met[1] else 'NOT met'}), CPU per job <= 1.5x the minimal one's "
        f"({'met' if met[2] else 'NOT met'}), with every consumer count."
    )
    two = medians.get(2) or next(iter(medians.values()))
    headline(
        f"queue consumers on one key: {two[0]:.2f}x a minimal XREADGROUP consumer's throughput "
        f"with 2 consumers (target >= 0.9x: {'met' if two[0] >= 0.9 else 'NOT met'}), "
        f"{two[1]:.2f}x one that also fsyncs before it acks, as we do."
    )


def cluster_row(jobs: int, consumers: int, rounds: int) -> None:
    """Ours and the minimal consumer (no fsync), each on one redis-server and on a 3-master
    cluster, interleaved: ours against the minimal consumer on the same cluster (the
    yardstick), and what the cluster costs each of the two (information, not a yardstick)."""
    cases = [("ours", False), ("ours", True), ("plain", False), ("plain", True)]
    runs: dict[tuple[str, bool], list[tuple[float, float]]] = {c: [] for c in cases}
    for _ in range(rounds):
        for kind, cluster in cases:
            with tempfile.TemporaryDirectory() as tmp:
                runs[kind, cluster].append(
                    throughput_case(kind, consumers, jobs, Path(tmp), cluster=cluster)
                )

    def ratio(a: tuple[str, bool], b: tuple[str, bool]) -> list[float]:
        return [y[0] / x[0] for x, y in zip(runs[a], runs[b], strict=True)]  # wall b / wall a

    rate = {c: statistics.median(jobs / w for w, _ in runs[c]) for c in cases}
    vs_minimal = ratio(("ours", True), ("plain", True))
    ours_cost = ratio(("ours", True), ("ours", False))
    minimal_cost = ratio(("plain", True), ("plain", False))
    print(
        f"## Queue mode on a Redis Cluster, {jobs:,} jobs, {consumers} consumers, rate "
        f"unlimited, 3 masters on this machine, median of {rounds} (`bench/queue_mode.py`)\n"
    )
    rows = [
        [
            f"{rate['ours', False]:,.0f}", f"{rate['ours', True]:,.0f}",
            f"{rate['plain', False]:,.0f}", f"{rate['plain', True]:,.0f}",
            spread(vs_minimal) + "x", spread(ours_cost) + "x", spread(minimal_cost) + "x",
        ]
    ]  # fmt: skip
    headers = ["ours one Redis jobs/s", "ours cluster jobs/s", "minimal one Redis jobs/s"]
    headers += ["minimal cluster jobs/s", "ours vs minimal on the cluster (ratio)"]
    headers += ["ours cluster vs one Redis", "minimal cluster vs one Redis"]
    print(table(headers, rows))
    median = statistics.median(vs_minimal)
    print(
        "\nThe minimal consumer on the cluster uses redis-py's cluster client and its keys in "
        "one slot (`{q}`, `{q}:results`); its XADD and XACK go in one pipeline, not MULTI."
    )
    headline(
        f"queue consumers on a 3-master Redis Cluster: {median:.2f}x a minimal cluster "
        f"consumer's throughput with {consumers} consumers; the cluster costs ours "
        f"{statistics.median(ours_cost):.2f}x its one-Redis throughput (the minimal one "
        f"{statistics.median(minimal_cost):.2f}x)."
    )


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
    if args.smoke:
        throughput(400, [2], rounds=1)
        print()
        cluster_row(200, 2, rounds=1)
    else:
        throughput(10_000, [1, 2, 4], rounds=3)
        print()
        cluster_row(10_000, 2, rounds=3)
    print()
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
