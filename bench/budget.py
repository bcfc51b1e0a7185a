"""Budget use against a fixed-window server: ours vs what people use instead.

Each strategy disconnects the same number of accounts against a fresh sandbox whose DELETE
limit is N per W seconds (fixed window from the first request, like Xquik's), and we count
the 429s it caused, the jobs that failed, the share of the windows' slots it used, and its
time against the ideal (ceil(jobs/N) - 1) windows. Baselines send each job once (a 429 is a
failed job, as in a plain script): aiolimiter's AsyncLimiter(N, W), starts evenly spaced W/N
apart, and no limiter at all, each with the same concurrency.

    python bench/budget.py            # N=20, W=2 s, 200 jobs (about a minute)
    python bench/budget.py --smoke    # N=5, W=0.5 s, 20 jobs
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path

import aiohttp
from aiolimiter import AsyncLimiter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import headline, table
from worker import run_async
from worker.budget.rate import Rate
from worker.logs import configure
from worker.sandbox import Sandbox, SandboxConfig

CONCURRENCY = 8
Gate = Callable[[], AbstractAsyncContextManager[object]]


async def ours(sb: Sandbox, jobs: int, n: int, w: float, tmp: Path) -> None:
    path = tmp / "jobs.txt"
    path.write_text("".join(f"{i}\n" for i in range(1, jobs + 1)))
    await run_async(
        path,
        results=tmp / "results.jsonl",
        base_url=sb.base_url,
        api_key=sb.api_key,
        rate=Rate(n, w),
        read_rate="unlimited",
        concurrency=CONCURRENCY,
        state_dir=tmp / "state",
        progress=False,
    )


async def _plain(
    sb: Sandbox, jobs: int, before: Callable[[int], Awaitable[None]], gate: Gate
) -> None:
    # A bounded loop: the semaphore is taken before each task is created, so at most
    # CONCURRENCY tasks exist at once (as in ours), not one task per job up front.
    sem = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession(headers={"x-api-key": sb.api_key}) as session:

        async def one(i: int) -> None:
            try:
                await before(i)
                url = f"{sb.base_url}/x/accounts/{i}"
                async with gate(), session.delete(url) as resp:
                    await resp.read()
            finally:
                sem.release()

        tasks: set[asyncio.Task[None]] = set()
        for i in range(1, jobs + 1):
            await sem.acquire()
            task = asyncio.ensure_future(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


async def aiolimiter_baseline(sb: Sandbox, jobs: int, n: int, w: float, tmp: Path) -> None:
    limiter = AsyncLimiter(n, w)

    async def nothing(i: int) -> None:
        return None

    await _plain(sb, jobs, nothing, lambda: limiter)


async def evenly_spaced(sb: Sandbox, jobs: int, n: int, w: float, tmp: Path) -> None:
    start = time.monotonic()

    async def wait_turn(i: int) -> None:
        await asyncio.sleep(max(0.0, start + (i - 1) * w / n - time.monotonic()))

    await _plain(sb, jobs, wait_turn, nullcontext)


async def no_limiter(sb: Sandbox, jobs: int, n: int, w: float, tmp: Path) -> None:
    async def nothing(i: int) -> None:
        return None

    await _plain(sb, jobs, nothing, nullcontext)


STRATEGIES = {
    "xquik-disconnect (held slots)": ours,
    "aiolimiter AsyncLimiter(N, W)": aiolimiter_baseline,
    "evenly spaced, W/N apart": evenly_spaced,
    "no limiter": no_limiter,
}


async def measure(name: str, jobs: int, n: int, w: float) -> list[str]:
    config = SandboxConfig(accounts=jobs, delete_limit=(n, w), read_limit=(None, 1.0))
    async with Sandbox(config) as sb:
        with tempfile.TemporaryDirectory() as tmp:
            await STRATEGIES[name](sb, jobs, n, w, Path(tmp))
        log = [(t, s) for t, m, _, s in sb.state.stats.log if m == "DELETE"]
    times = [t for t, _ in log]
    span = max(times) - min(times)
    done = jobs - len(sb.state.store.accounts)
    windows = max(1, math.ceil(span / w + 1e-9))
    ideal = (math.ceil(jobs / n) - 1) * w
    return [
        name,
        str(sb.state.stats.rate_limited),
        str(jobs - done),
        f"{done / (n * windows):.0%}",
        f"{span:.2f}",
        f"{span / ideal:.3f}" if ideal else "-",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    n, w, jobs = (5, 0.5, 20) if args.smoke else (20, 2.0, 200)
    configure("json", level="error")
    rows = [asyncio.run(measure(name, jobs, n, w)) for name in STRATEGIES]
    print(
        f"## Budget use, {jobs} jobs against a fixed window of {n} per {w:g} s "
        f"(`bench/budget.py`)\n"
    )
    print(
        table(
            [
                "strategy",
                "429s",
                "jobs failed",
                "window budget used",
                "DELETE span s",
                "time vs ideal (ratio)",
            ],
            rows,
        )
    )
    print(
        f"\nideal: (ceil({jobs}/{n}) - 1) x {w:g} s; budget used: jobs done / (N x windows "
        "spanned). Ours retries and waits out 429s; baselines send once."
    )
    cells = {row[0]: row for row in rows}
    ours, limiter = cells["xquik-disconnect (held slots)"], cells["aiolimiter AsyncLimiter(N, W)"]
    headline(
        f"the rate budget, {jobs} jobs at {n} per {w:g} s: {ours[1]} 429s and {ours[3]} of "
        f"the window budget used; aiolimiter's AsyncLimiter(N, W) {limiter[1]} 429s."
    )


if __name__ == "__main__":
    main()
