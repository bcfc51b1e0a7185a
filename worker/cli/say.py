"""What the command line says on stderr: one line, secrets masked; an error names the command
and returns the exit code. Once the logs are JSON, an error is a JSON event too (one format
per run, for log shippers). A closed stderr is not an error of the run."""

from __future__ import annotations

import contextlib
import sys

from worker.errors import ExitCode
from worker.redact import redact


def say(text: str) -> None:
    """A line on stderr, secrets masked; nothing when stderr is closed or gone."""
    stream = sys.stderr
    if stream is None:
        return
    with contextlib.suppress(BrokenPipeError, ValueError, OSError):
        print(redact(text), file=stream, flush=True)


def fail(command: str, message: object, code: ExitCode = ExitCode.USAGE) -> ExitCode:
    """One line on stderr naming the command; returns `code`."""
    logs = sys.modules.get("worker.logs")  # configured only if imported: --help never is
    if logs is not None and logs.configured_format() == "json":
        logs.get_logger().error("error", command=command, message=str(message), exit_code=int(code))
        return code
    say(f"xquik-disconnect {command}: error: {message}")
    return code


__all__ = ["fail", "say"]
