"""`xquik-disconnect run`: the flags as keywords of `worker.run`, its summary as the exit code.
Everything else (checking the options, assembling and running, the outputs) is below."""

from __future__ import annotations

import argparse
from typing import Any

from worker.cli.parser import log_level
from worker.cli.say import fail
from worker.errors import ConfigError

# Flags that are not options of `worker.run`: shortcuts of --log-level, and the refused key.
NOT_OPTIONS = frozenset({"command", "source", "quiet", "verbose", "api_key"})


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given (or taken from the environment) as keywords of `worker.run`; a flag
    left unset is left out, so the library's default applies."""
    given = {
        name: value
        for name, value in vars(args).items()
        if name not in NOT_OPTIONS and value is not None and value is not False
    }
    given["log_level"] = log_level(args)
    return given


def main(args: argparse.Namespace) -> int:
    import worker

    try:
        summary = worker.run(args.source, **options(args))
    except ConfigError as exc:
        return fail("run", exc)
    return summary.exit_code


__all__ = ["main", "options"]
