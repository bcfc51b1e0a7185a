"""Where jobs come from: the JobSource protocol, the line parsers, jobs files and stdin, and
Redis Streams (a stream is just another source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.settings import QueueConfig
from worker.sources.base import Item, JobSource
from worker.sources.file import FileSource


def open_source(
    source: str, *, queue: QueueConfig | None = None, redis: Any | None = None
) -> JobSource:
    """The source named on the command line: a jobs file, `-` for stdin, or (with `queue`)
    a Redis stream read through `redis`."""
    if queue is not None:
        from worker.sources.stream import RedisSource

        return RedisSource(queue, redis=redis)
    return FileSource(None if source == "-" else Path(source))


__all__ = ["FileSource", "Item", "JobSource", "open_source"]
