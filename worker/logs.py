"""Logging: structlog events on stderr, JSON off a TTY, with secrets masked in every field."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from worker.redact import redact

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


class Guarded:
    """A log stream whose failures are not the run's: a closed stderr (`2>&1 | head`), a full
    disk under a redirected log. Lines that cannot be written are dropped; the work goes on
    and the result log keeps every record."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self.broken = True

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False


_format: LogFormat | None = None  # as configured; None until configure() ran


def configured_format() -> LogFormat | None:
    """json or console once the logs are configured (errors then take the same format)."""
    return _format


def configure(
    fmt: LogFormat | None = None, *, level: str = "info", stream: TextIO | None = None
) -> None:
    global _format
    stream = stream or sys.stderr
    if fmt is None:
        fmt = "console" if stream.isatty() else "json"
    _format = fmt
    colors = stream.isatty() and not os.environ.get("NO_COLOR")
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
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(Guarded(stream)),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("xquik")  # type: ignore[no-any-return]
