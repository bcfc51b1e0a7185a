"""Put one benchmark's output into bench/RESULTS.md, between its markers, dated: so that
`make bench BENCHES=resume` re-measures one path without touching the other sections, and
every section says when and where it was measured. Text outside the markers (the notes on
causes) is kept as written.

    python scripts/bench_results.py NAME OUTPUT_FILE
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["budget", "learn", "overhead", "memory", "startup", "resume", "queue_mode", "tenants"]


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def place(results: str, name: str, body: str) -> str:
    start, end = markers(name)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    block = f"{start}\n{body.strip()}\n\n_Measured {when} on {os.cpu_count()} cores._\n{end}"
    if start in results:
        before, rest = results.split(start, 1)
        return before + block + rest.split(end, 1)[1]
    # A new section: before the first section that comes after it in ORDER, else at the end
    # of the sections (before the notes).
    later = [n for n in ORDER[ORDER.index(name) + 1 :] if markers(n)[0] in results]
    if later:
        anchor = markers(later[0])[0]
        before, rest = results.split(anchor, 1)
        return before + block + "\n\n" + anchor + rest
    present = [n for n in ORDER if markers(n)[1] in results]
    if present:
        anchor = markers(present[-1])[1]
        before, rest = results.split(anchor, 1)
        return before + anchor + "\n\n" + block + rest
    return results.rstrip() + "\n\n" + block + "\n"


def main() -> int:
    name, output = sys.argv[1], Path(sys.argv[2])
    path = ROOT / "bench" / "RESULTS.md"
    current = path.read_text() if path.exists() else "# Benchmark results\n"
    path.write_text(place(current, name, output.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
