"""Where jobs come from: `base` (the JobSource protocol), `parse` (one line to a job), `file`
(jobs files and stdin), `stream` (Redis Streams: a stream is just another source). Nothing
heavy is imported here."""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.settings import QueueConfig
    from worker.sources.base import JobSource


def open_source(
    source: str,
    *,
    queue: QueueConfig | None = None,
    redis: Any | None = None,
    done: Container[str] | None = None,
    fair: bool = False,
) -> JobSource:
    """The source a run names: a jobs file, `-` for stdin, or (with `queue`) a Redis stream
    read through `redis`. `done`: the job keys earlier runs did, which a file's plain id
    lines are dropped for before a job is built. `fair` (several keys): a regular file's
    tenants are read in turns, however the file is ordered (`fair`)."""
    if queue is not None:
        from worker.sources.stream import RedisSource

        return RedisSource(queue, redis=redis)
    from worker.sources.file import FileSource

    return FileSource(None if source == "-" else Path(source), done=done, fair=fair)


__all__ = ["open_source"]
