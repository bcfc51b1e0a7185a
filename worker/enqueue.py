"""`xquik-disconnect enqueue`: validate a jobs file and add each valid job to a stream."""

from __future__ import annotations

from worker.models import Invalid
from worker.redis_conn import connect


async def enqueue(path: str, *, url: str, stream: str) -> tuple[int, list[Invalid]]:
    """XADD every valid job of a jobs file; the invalid ones are returned, not enqueued."""
    from pathlib import Path

    from worker.sources import FileSource

    source = FileSource(None if path == "-" else Path(path))
    redis = connect(url)
    added, invalid = 0, []
    try:
        async for batch in source.batches():
            pipe = redis.pipeline(transaction=False)
            for item in batch:
                if isinstance(item, Invalid):
                    invalid.append(item)
                    continue
                fields = {
                    k: v
                    for k, v in (
                        ("account_id", item.account_id),
                        ("username", item.username),
                        ("job_id", item.job_id),
                    )
                    if v is not None
                }
                fields["delete_monitors"] = "true" if item.delete_monitors else "false"
                pipe.xadd(stream, fields)
                added += 1
            await pipe.execute()
    finally:
        await redis.aclose()
    return added, invalid
