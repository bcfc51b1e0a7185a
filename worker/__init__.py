"""xquik-disconnect-worker: disconnect many X accounts from Xquik within the API's rate limit.

From Python (the command line calls the same function)::

    import worker
    summary = worker.run("accounts.csv", rate="auto", concurrency=4, results="out.jsonl")
    summary = await worker.run_async(source, **options)          # from a running event loop
    summary.exit_code, summary.outcomes   # the numbers `xquik-disconnect run` prints

Keyword names are `run`'s long options with `_` for `-` (`dry_run=True`, `max_attempts=3`,
`delete_monitors="all"`); values as on the command line (`rate="15/60s"`) or as values
(`relearn=3600.0`). The key: `api_key=` (from a secret store), else `api_key_file=`, else the
environment's XQUIK_API_KEY. An invalid option raises `OptionError` (its `option` names it)
before anything is read or sent; another configuration problem (a result log held by another
run, Redis unreachable) raises `ConfigError`. Logs are structlog events: configured (JSON on
stderr) only when the caller has not configured structlog, or passes `log_format`.

Importing this package loads no network, Redis or terminal library: they come with the run.
The engine is `worker.run` the package (`from worker.run.assemble import …`); the name
`worker.run` here is the function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import worker.run as _engine  # noqa: F401  (binds the package first; `run` below is the function)
from worker._version import __version__
from worker.errors import ConfigError, ExitCode, OptionError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from worker.run.options import PathLike, RunOptions
    from worker.run.summary import Stop, Summary

__all__ = [
    "ConfigError",
    "ExitCode",
    "OptionError",
    "Stop",
    "Summary",
    "__version__",
    "run",
    "run_async",
]


def __getattr__(name: str) -> object:
    """`Summary` and `Stop`, imported when first asked for (`--version` never does)."""
    if name in ("Summary", "Stop"):
        from worker.run import summary

        return getattr(summary, name)
    raise AttributeError(f"module 'worker' has no attribute {name!r}")


def run(source: PathLike | None = None, /, **options: Unpack[RunOptions]) -> Summary:
    """Run to the end, blocking (it starts its own event loop): the summary of the run."""
    import anyio

    async def main() -> Summary:
        return await run_async(source, **options)

    return anyio.run(main)


async def run_async(
    source: PathLike | None = None,
    /,
    *,
    handle_signals: bool = True,
    **options: Unpack[RunOptions],
) -> Summary:
    """The same, awaited in a running asyncio event loop (aiohttp, and so the run, needs asyncio).
    `handle_signals`: stop gracefully on SIGINT, SIGTERM and SIGHUP (in the main thread only;
    pass False where the caller handles its own signals)."""
    from worker.logs import configure_for_library
    from worker.outputs.standard import StandardOutputs
    from worker.run.assemble import run as assembled
    from worker.run.options import settings

    configure_for_library(options.get("log_format"), options.get("log_level"))
    ready = settings(source, **options)
    return await assembled(ready, StandardOutputs(ready), handle_signals=handle_signals)
