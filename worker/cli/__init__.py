"""The command line: parse, delegate to the command's module, return an exit code. Imports stay
light (argparse and the value types) so `--version` and `--help` start fast; each command
imports what it needs when it runs. Options are declared in `parser`; a command's code is in
the module named after it, with a `main(args) -> int`."""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from worker.cli.parser import build_parser
from worker.cli.say import fail
from worker.errors import ExitCode

COMMANDS = {
    "run": "worker.cli.run",
    "plan": "worker.cli.plan",
    "enqueue": "worker.cli.enqueue",
    "report": "worker.cli.report",
    "monitors": "worker.cli.monitors",
    "verify": "worker.cli.verify",
    "queue": "worker.cli.queue",
    "dead": "worker.cli.dead",
    "budget": "worker.cli.budget",
    "completion": "worker.cli.completion",
    "sandbox": "worker.cli.sandbox",
}


# What a command loads before it starts (its event loop imports the rest as it goes): loaded
# with the collector off, as the command's module.
PRELOAD = {"run": ("worker.run.options", "worker.run.assemble", "worker.outputs.standard")}


def console() -> int:
    """The `xquik-disconnect` program: `main` as the whole process, then an exit that does
    not walk every object the run left behind (the interpreter's last collection: ~25 ms of
    a 1-job run)."""
    code = main(whole_process=True)
    gc.freeze()
    return code


def main(argv: Sequence[str] | None = None, *, whole_process: bool = False) -> int:
    _limit_core_dumps()
    args = build_parser().parse_args(argv)
    try:
        command = _load(args.command, freeze=whole_process)
        code: int = command.main(args)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED  # a signal before our own handlers were in place
    except BrokenPipeError:
        # The reader went away (`report | head`): nothing more to say, and nothing to say it
        # to; point stdout at /dev/null so the interpreter's last flush cannot fail either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.OK
    except Exception as exc:
        return internal_error(args.command, exc)
    return code


def _load(name: str, *, freeze: bool) -> Any:
    """The command's module and what it needs first, imported with the garbage collector off:
    importing builds ~100,000 objects, none of them garbage, and the collections they set off
    cost a 1-job run 20-50 ms. `freeze` (the whole process): they are then frozen, so no
    collection in a long run walks them again."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        import worker.logs

        worker.logs.route_stdlib = True  # asyncio's and libraries' warnings: masked, formatted
        command = importlib.import_module(COMMANDS[name])
        for module in PRELOAD.get(name, ()):
            importlib.import_module(module)
    finally:
        if freeze:
            gc.freeze()
        if collecting:
            gc.enable()
    return command


def _limit_core_dumps() -> None:
    """No core file: it would hold the API key and every record in memory."""
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def internal_error(command: str, exc: BaseException) -> int:
    """No traceback ever reaches a user's terminal: one line here, the traceback in the log
    at debug level (the result log was flushed and closed on the way out)."""
    from worker.logs import configure, configured_format, get_logger

    if configured_format() is None:  # a command that logs nothing itself (report): no
        configure(level="info")  # structlog defaults, which print debug tracebacks
    leaf = exc
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    log = get_logger()
    with contextlib.suppress(Exception):
        log.error("internal_error", error=f"{type(leaf).__name__}: {leaf}")
        log.debug("internal_error_traceback", exc_info=exc)
    return fail(
        command,
        f"internal error ({type(leaf).__name__}: {leaf}); the result log is flushed, rerun "
        "to resume, and please report it with the log at debug level",
        ExitCode.SOFTWARE,
    )


__all__ = ["COMMANDS", "build_parser", "internal_error", "main"]
