"""`--rate auto`: the server's live limit learned, against a fixed-window sandbox.

1. The sandbox at 12 per 4 s, `--rate auto:40/4s`, concurrency 4, 300 jobs: where the 429s fall
   (all in the first window? at most --concurrency?), the share of the true budget used after
   the first window, then a second run (100 jobs, same state dir): its 429s and its limit.
2. A true limit equal to the ceiling (40 per 4 s, `auto:40/4s`): 429s and budget used.
3. 1,000 accounts with a live limit of 60 per 60 s, `--rate auto` against the old default
   `15/60s`, time scaled down 100x (60 per 0.6 s) so that it runs in a minute; reported both as
   measured and scaled back to 60 s windows. At this scale a loopback round trip per window is
   about 100 times its share at 60 s, so the scaled-back times are slightly pessimistic.

Budget used = DELETEs the server accepted per window it was open, over its limit, counted from
the sandbox's own log (fixed windows opened by the first request after the last one ended),
the first and the last (partial) window left out. Time vs ideal = the span from the first to
the last DELETE over the (ceil(accepted / true limit) - 1) windows the true limit needs at best.

    python bench/learn.py            # about 4 minutes
    python bench/learn.py --smoke    # scenario 1 and 3 at small sizes
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import headline, table
from worker import run_async
from worker.budget.rate import Rate
from worker.logs import configure
from worker.run.summary import Summary, limit_words
from worker.sandbox import Sandbox, SandboxConfig

CONCURRENCY = 4


async def run(
    sb: Sandbox, ids: range, rate: Rate, state: Path, results: Path
) -> tuple[Summary, float]:
    path = results.with_suffix(".jobs.txt")
    path.write_text("".join(f"{i}\n" for i in ids))
    started = time.monotonic()
    summary = await run_async(
        path,
        results=results,
        base_url=sb.base_url,
        api_key=sb.api_key,
        rate=rate,
        read_rate="unlimited",
        concurrency=CONCURRENCY,
        state_dir=state,
        progress=False,
    )
    return summary, time.monotonic() - started


def windows(log: list[tuple[float, int]], w: float) -> list[list[int]]:
    """The server's fixed windows over (arrival, status), each opened by the first request
    after the last one ended."""
    out: list[list[int]] = []
    end = -math.inf
    for t, status in log:
        if t >= end:
            out.append([])
            end = t + w
        out[-1].append(status)
    return out


def deletes(sb: Sandbox, since: int = 0) -> list[tuple[float, int]]:
    return [(t, s) for t, m, _, s in list(sb.state.stats.log)[since:] if m == "DELETE"]


async def learn(jobs: int, second: int, true: int, ceiling: int, w: float) -> list[list[str]]:
    rows = []
    config = SandboxConfig(accounts=jobs + second, delete_limit=(true, w), read_limit=(None, 1.0))
    async with Sandbox(config) as sb:
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp) / "state"
            auto = Rate(ceiling, w, auto=True)
            summary, _ = await run(sb, range(1, jobs + 1), auto, state, Path(tmp) / "1.jsonl")
            log = deletes(sb)
            rows.append(describe(f"run 1: {jobs} jobs", log, summary, true, w))
            if second:
                mark = len(sb.state.stats.log)
                ids = range(jobs + 1, jobs + second + 1)
                summary, _ = await run(sb, ids, auto, state, Path(tmp) / "2.jsonl")
                rows.append(describe(f"run 2: {second} jobs", deletes(sb, mark), summary, true, w))
    return rows


def describe(
    label: str, log: list[tuple[float, int]], summary: Summary, true: int, w: float
) -> list[str]:
    rejected = [t for t, s in log if s == 429]
    first = log[0][0]
    full = windows(log, w)
    # The budget used after the first window: accepted per window over the true limit,
    # the last (partial) window left out.
    steady = full[1:-1]
    used = sum(ws.count(200) for ws in steady) / (true * len(steady)) if steady else math.nan
    accepted = sum(1 for _, s in log if s == 200)
    ideal = (math.ceil(accepted / true) - 1) * w  # the windows the true limit needs at best
    span = log[-1][0] - first
    return [
        label,
        str(len(rejected)),
        "yes" if all(t < first + w for t in rejected) else "NO",
        f"{used:.1%}" if used == used else "-",
        f"{span / ideal:.3f}" if ideal else "-",
        limit_words(summary.rate),
    ]


async def thousand(jobs: int, scale: float) -> list[list[str]]:
    rows = []
    w = 60.0 / scale
    for label, rate in (("--rate auto", Rate(60, w, auto=True)), ("--rate 15/60s", Rate(15, w))):
        config = SandboxConfig(accounts=jobs, delete_limit=(60, w), read_limit=(None, 1.0))
        async with Sandbox(config) as sb:
            with tempfile.TemporaryDirectory() as tmp:
                tmpd = Path(tmp)
                summary, elapsed = await run(sb, range(1, jobs + 1), rate, tmpd / "s", tmpd / "r")
            assert summary.outcomes.get("disconnected") == jobs, summary.outcomes
            rows.append(
                [
                    label,
                    f"{elapsed:.1f} s",
                    f"{elapsed * scale / 60:.1f} min",
                    str(sb.state.stats.rate_limited),
                ]
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    configure("json", level="error")
    if args.smoke:
        learned = anyio.run(learn, 40, 12, 6, 20, 0.5)
        ceiling: list[list[str]] = []
        big = anyio.run(thousand, 100, 600.0)
    else:
        learned = anyio.run(learn, 300, 100, 12, 40, 4.0)
        ceiling = anyio.run(learn, 300, 0, 40, 40, 4.0)
    headers = [
        "run",
        "429s",
        "all in the first window",
        "budget used after it",
        "time vs ideal",
        "limit",
    ]
    print("## The live limit learned (`bench/learn.py`)\n")
    if not args.smoke:
        print("True limit 12 per 4 s, `--rate auto:40/4s`, concurrency 4:\n")
    print(table(headers, learned))
    if ceiling:
        print("\nTrue limit equal to the ceiling, 40 per 4 s, `--rate auto:40/4s`:\n")
        print(table(headers, ceiling))
    if not args.smoke:
        big = anyio.run(thousand, 1000, 100.0)
    n, scale = (100, 600.0) if args.smoke else (1000, 100.0)
    print(
        f"\n{n:,} accounts, live limit 60 per 60 s, time scaled down (60 per {60 / scale:g} s):\n"
    )
    print(table(["rate", "measured", "at 60 s windows", "429s"], big))
    auto_s = float(big[0][1].split()[0])
    old_s = float(big[1][1].split()[0])
    print(f"\nratio, `auto` / old default time: {auto_s / old_s:.2f}x (ideal 0.25x)")
    ideal_min = (math.ceil(n / 60) - 1) * 60 / 60
    headline(
        f"the live limit learned with --rate auto: {n:,} accounts at a live 60 per 60 s take "
        f"{big[0][2]} at real windows (a perfect client: {ideal_min:.0f} min), {big[0][3]} 429s."
    )


if __name__ == "__main__":
    main()
