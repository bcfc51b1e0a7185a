"""Logging: structlog events on stderr, JSON off a TTY, with secrets masked in every field.

structlog probes for rich when it is imported (its console renderer formats tracebacks with
it), and rich brings pygments: a tenth of a second at every start for a renderer that JSON
logs never use and our console logs never need (no traceback reaches a terminal). So structlog
is imported here with that probe (and colorama's, off Windows) answered "not installed"; rich
stays importable for the progress bar, which imports it itself on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Literal, TextIO, cast

from worker.redact import printable, redact


def _import_structlog() -> Any:
    if "structlog" in sys.modules:
        return sys.modules["structlog"]
    # colorama (and the ctypes it loads: ~5 ms) only colours a Windows console; elsewhere
    # structlog writes ANSI colours itself.
    probed = ("rich", "better_exceptions") + (() if sys.platform == "win32" else ("colorama",))
    hidden = [name for name in probed if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import rich` -> ImportError
    try:
        import structlog
    finally:
        for name in hidden:
            del sys.modules[name]
    return structlog


if TYPE_CHECKING:
    import structlog
else:
    structlog = _import_structlog()

from structlog.typing import EventDict, WrappedLogger  # noqa: E402  (after the probe above)

LogFormat = Literal["json", "console"]


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return value


def mask_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Runs after exceptions are rendered, so tracebacks are masked too."""
    return {k: _mask(v) for k, v in event_dict.items()}


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


def printable_values(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Console logs only (JSON escapes them already): a server's text in an event (an error
    message, a Redis reply) cannot reach the terminal as control characters."""
    return {k: _printable(v) for k, v in event_dict.items()}


class Guarded:
    """A log stream whose failures are not the run's: a closed stderr (`2>&-`, `2>&1 | head`),
    a full disk under a redirected log. Lines that cannot be written are dropped; the work goes
    on and the result log keeps every record."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self.broken = stream is None

    def write(self, text: str) -> int:
        if not self.broken and self._stream is not None:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken and self._stream is not None:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self.broken = True

    def isatty(self) -> bool:
        try:
            return self._stream is not None and self._stream.isatty()
        except (OSError, ValueError):
            return False


_format: LogFormat | None = None  # as configured; None until configure() ran
# The command line owns its process: Python's own logging goes through ours there. A library
# caller's logging stays the caller's.
route_stdlib = False


def configured_format() -> LogFormat | None:
    """json or console once the logs are configured (errors then take the same format)."""
    return _format


def configure(
    fmt: LogFormat | None = None, *, level: str = "info", stream: TextIO | None = None
) -> None:
    global _format
    out = Guarded(stream or sys.stderr)
    if fmt is None:
        fmt = "console" if out.isatty() else "json"
    _format = fmt
    colors = out.isatty() and not os.environ.get("NO_COLOR")
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=colors)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_secrets,
            *([printable_values] if fmt == "console" else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    if route_stdlib:
        _route_stdlib_logging()


class ToStructlog(logging.Handler):
    """Python's own logging (asyncio's "Task exception was never retrieved", a library's
    warning, `warnings` captured) through our processors: masked, in the run's format."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            get_logger().log(record.levelno, "python_log", logger=record.name, message=message)
        except Exception:  # a log line must never break the run
            self.handleError(record)


def _route_stdlib_logging() -> None:
    root = logging.getLogger()
    root.handlers[:] = [ToStructlog()]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)


def configure_for_library(fmt: str | None, level: str | None) -> None:
    """A run started from Python: configure the logs when asked (`log_format`, `log_level`)
    or when the caller has not configured structlog itself (its defaults print debug events
    in colour to stdout); else leave the caller's configuration alone."""
    if fmt is not None and fmt not in ("json", "console"):
        from worker.errors import OptionError

        raise OptionError("log_format", f"--log-format: {fmt!r} is not json or console")
    if level is not None and level.lower() not in ("debug", "info", "warning", "error"):
        from worker.errors import OptionError

        raise OptionError("log_level", f"--log-level: {level!r} is not a level")
    if fmt is None and level is None and structlog.is_configured():
        return
    configure(cast("LogFormat | None", fmt), level=(level or "info").lower())


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("xquik")  # type: ignore[no-any-return]
