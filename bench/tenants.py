"""Many keys: 1,000 tenants on the sandbox, each with its own short window, in one run (file
mode) and in one queue (1, 2 and 4 consumers).

The sandbox serves one Xquik account per tenant (`sandbox --tenants K --keys-out DIR`), each
with its own accounts and its own fixed window of N DELETEs per W s. The jobs file holds every
tenant's jobs grouped by tenant (the worst order for head-of-line blocking). From the sandbox's
own log: aggregate DELETEs per second over the DELETE span, 429s, and each tenant's finish time
(its last DELETE): the spread between the fastest and the slowest tenant. The target is 0.9 of
the smaller of the sum of the budgets and this client's ceiling on this machine, measured in
the same run: each case runs first against a sandbox without a limit (the same keys, jobs,
mode, consumers and read-ahead, each budget at 1,000,000 per window), then with the limit.

    python bench/tenants.py           # 1,000 tenants x 20 jobs, 5 per 1 s each
    python bench/tenants.py --smoke   # 50 tenants x 10 jobs, 5 per 1 s each
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, SandboxProc, table
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


def wait_rss(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Exit code and peak RSS (MB) of one child."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


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
        started = time.perf_counter()
        procs = [
            subprocess.Popen(a, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            for a in argv
        ]  # fmt: skip
        ends = [wait_rss(p) for p in procs]
        wall = time.perf_counter() - started
        out = measure(sb, tenants * per, w)
    finally:
        sb.stop()
        if server is not None:
            server.stop()
    out["wall"] = wall
    out["rss"] = max(rss for _, rss in ends)
    out["codes"] = sorted({code for code, _ in ends})
    return out


def one_key(jobs: int, tmp: Path) -> float:
    """For reference: this client's DELETEs per second with one key (file mode, its budget at
    --rate 1000000/1s: keeping the books of every send, never waiting)."""
    sb = SandboxProc(jobs, "--delete-limit", "unlimited", "--read-limit", "unlimited")
    ids = tmp / "ids.txt"
    ids.write_text("".join(f"{i}\n" for i in range(1, jobs + 1)))
    try:
        subprocess.run(
            [sys.executable, "-m", "worker", "run", str(ids), "--base-url", sb.base_url,
             "--rate", "1000000/1s", "--read-rate", "unlimited", "--concurrency",
             str(CONCURRENCY), "--log-format", "json", "--state-dir", str(tmp / "state"),
             "--results", str(tmp / "ceiling.jsonl")],
            cwd=ROOT, env={"XQUIK_API_KEY": sb.api_key, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        return float(measure(sb, jobs, 1.0)["rate"])
    finally:
        sb.stop()


def ideal_span(tenants: int, per: int, n: int, w: float, top: float) -> float:
    """The DELETE span a perfect client needs at `top` sends per second: each tenant's jobs
    take ceil(per/n) fixed windows, the first at once; within a window the tenants' n sends
    each go out at `top` at best (the last tenant's window opens that much later); and never
    faster than `top` over all the jobs."""
    return max((math.ceil(per / n) - 1) * w + tenants * min(n, per) / top, tenants * per / top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    tenants, per, n, w = (50, 10, 5, 1.0) if args.smoke else (1000, 20, 5, 1.0)
    # Jobs grouped by tenant with the default --read-ahead (10,000): tenants past the first
    # 10,000 jobs join the rotation as room frees up; one file row reads everything ahead.
    # Mixed rows: one job of each tenant in turn. Queue consumers read as they need.
    everything = ("--read-ahead", str(tenants * per))
    cases: list[tuple[str, int, tuple[str, ...], bool]] = [
        ("file", 1, (), False), ("file", 1, everything, False), ("file", 1, (), True),
        ("queue", 1, (), False), ("queue", 1, (), True), ("queue", 2, (), False),
        ("queue", 2, (), True), ("queue", 4, (), False), ("queue", 4, (), True),
    ]  # fmt: skip
    if args.smoke:
        cases = [case for case in cases if case[1] < 4]
    jobs = tenants * per
    with tempfile.TemporaryDirectory() as tmp:
        single = one_key(jobs, Path(tmp))
    budgets = tenants * n / w
    rows = []
    for mode, k, extra, mixed in cases:
        # This run's ceiling first (the same run without a limit), then the run itself.
        with tempfile.TemporaryDirectory() as tmp:
            top = run_case(
                mode, k, tenants, per, n, w, Path(tmp), extra, unlimited=True, mixed=mixed
            )
        with tempfile.TemporaryDirectory() as tmp:
            m = run_case(mode, k, tenants, per, n, w, Path(tmp), extra, mixed=mixed)
        ideal = ideal_span(tenants, per, n, w, top["rate"])
        label = mode if mode == "file" else f"queue x{k}"
        rows.append(
            [
                label + (f" --read-ahead {extra[1]}" if extra else ""),
                "mixed" if mixed else "grouped",
                f"{m['done']:,}/{jobs:,}",
                f"{top['rate']:,.0f}",
                f"{m['span']:.2f}",
                f"{ideal:.2f}",
                f"{ideal / m['span']:.0%}",
                f"{m['rate']:,.0f}",
                str(m["429s"]),
                f"{m['spread_windows']:.1f}",
                str(m["cross"]),
                f"{m['rss']:.0f}",
                f"{m['wall']:.1f}",
                "ok" if m["codes"] == top["codes"] == [0] else f"{m['codes']} {top['codes']}",
            ]
        )
    print(
        f"## Many keys: {tenants:,} tenants x {per} jobs, {n} per {w:g} s each "
        "(`bench/tenants.py`)\n"
    )
    print(
        table(
            ["run", "jobs", "done", "ceiling /s", "DELETE span s", "ideal s", "efficiency",
             "DELETEs/s", "429s", "finish spread (windows)", "cross-tenant", "peak RSS MB",
             "wall s", "exit"],
            rows,
        )
    )  # fmt: skip
    print(
        f"\nceiling: this run's own DELETEs per second on this machine, measured just before "
        f"it: the same keys, jobs, mode, consumers and read-ahead against a sandbox without a "
        f"limit, each budget at 1,000,000 per window (keeping the books of every send, never "
        f"waiting). ideal: the DELETE span of a perfect client with that ceiling: every tenant "
        f"at its full budget ({budgets:,.0f}/s summed), (ceil({per}/{n}) - 1) x {w:g} s, "
        f"plus one window's {tenants * min(n, per):,} sends at the ceiling; or all {jobs:,} "
        f"jobs at the ceiling if longer (the ceiling below the budgets' sum). "
        f"efficiency: ideal over measured. For reference, one key in file mode reaches "
        f"{single:,.0f}/s here. Targets: >= 90 %, 0 429s, finish spread <= 2 windows, "
        "0 cross-tenant requests."
    )


if __name__ == "__main__":
    main()
