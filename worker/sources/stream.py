"""Queue mode: jobs from a Redis stream through a consumer group, at least once.

A message is acknowledged only after its record is durably written: fsynced in the result log
and added to `<stream>:results` by one atomic Lua script with the XACK (and, for a job that
failed for good or was invalid, with its XADD to `<stream>:dead`). Messages a dead consumer
left pending longer than --claim-idle are taken over with XAUTOCLAIM; one delivered more than
--max-deliveries times goes to the dead-letter stream instead of being tried again. A job we
could not finish (stopped, cancelled, key rejected) stays pending for another consumer.
The job stream is trimmed only by --retain (`trim`), never by MAXLEN: that would delete
pending payloads.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

import anyio

from worker.errors import ConfigError
from worker.logs import get_logger
from worker.models import DONE, Invalid, Job, Outcome, Result, dead_letter_code
from worker.redis_conn import (
    ScriptBatch,
    connect,
    redis_retrying,
    script_batch,
    wrong_type,
)
from worker.redis_keys import stream_keys
from worker.settings import QueueConfig
from worker.sources.base import Item
from worker.sources.parse import build_job

log = get_logger()
FIELDS = ("account_id", "username", "job_id", "delete_monitors", "tenant")
RECORDED_FOR = 7 * 86400  # seconds a settled message id is remembered (redeliveries come sooner)

# Settles one message, atomically and at most once: its record goes to <stream>:results (and,
# failed for good, its fields to <stream>:dead) only if no consumer recorded this message id
# before, however often it was delivered (a Redis outage longer than --claim-idle, a takeover);
# then it is acked either way.
# KEYS: results, dead, stream, recorded. ARGV: group, message id, record ('' for none), dead
# letter fields and values...
SETTLE = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[4]))
if ARGV[3] ~= '' and redis.call('ZADD', KEYS[4], 'NX', now, ARGV[2]) == 1 then
  redis.call('XADD', KEYS[1], '*', 'message_id', ARGV[2], 'record', ARGV[3])
  if #ARGV > 4 then
    redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
  end
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
return 1
"""


TRIM_EVERY = 60.0  # seconds between two retention passes of one consumer


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def trim(redis: Any, stream: str, retain: float) -> dict[str, int]:
    """--retain: drop what no consumer can still need. The job stream below the smallest of
    (now - retain, every group's oldest pending entry, every group's first undelivered entry),
    so a pending or undelivered entry is never trimmed whatever its age; `:results` and `:dead`
    below now - retain. Safe without a lock: deliveries and acks only move those bounds up.
    Returns how many entries each stream lost."""
    now_s, now_us = await redis.time()
    cutoff = (int(now_s * 1000 + now_us // 1000 - retain * 1000), 0)
    bound = cutoff
    if await redis.exists(stream):
        for group in await redis.xinfo_groups(stream):
            name = group["name"]
            last = _id(_text(group["last-delivered-id"]))
            bound = min(bound, (last[0], last[1] + 1))  # the first entry not yet delivered
            if int(group["pending"]):
                summary = await redis.xpending(stream, name)
                if summary and summary.get("min"):
                    bound = min(bound, _id(_text(summary["min"])))
    out = {}
    k = stream_keys(redis, stream)
    for key, upto in ((stream, bound), (k.results, cutoff), (k.dead, cutoff)):
        if upto[0] > 0:
            out[key] = int(await redis.xtrim(key, minid=f"{upto[0]}-{upto[1]}", approximate=False))
    return out


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def message_fields(job: Job) -> dict[str, str]:
    """A job as the fields of a stream message (the fields of a JSONL job, as text)."""
    fields = {
        k: v
        for k, v in (
            ("account_id", job.account_id),
            ("username", job.username),
            ("job_id", job.job_id),
            ("tenant", job.tenant),
        )
        if v is not None
    }
    fields["delete_monitors"] = "true" if job.delete_monitors else "false"
    return fields


def parse_message(stream: str, message_id: str, fields: dict[str, str]) -> Item:
    where = f"{stream}#{message_id}"
    unknown = set(fields) - set(FIELDS)
    if unknown and not set(fields) & {"account_id", "username"}:
        return Invalid(
            where, f"no account_id or username (fields: {sorted(fields)})", receipt=message_id
        )
    item = build_job(
        where,
        account_id=fields.get("account_id"),
        username=fields.get("username"),
        job_id=fields.get("job_id"),
        delete_monitors=fields.get("delete_monitors", ""),
        tenant=fields.get("tenant"),
    )
    if isinstance(item, Invalid):
        return Invalid(
            item.source, item.error, item.job_id, receipt=message_id, account_id=item.account_id
        )
    return dataclasses.replace(item, receipt=message_id)


class RedisSource:
    """A JobSource over a consumer group; use as an async context manager."""

    def __init__(self, config: QueueConfig, *, redis: Any | None = None) -> None:
        self.config = config
        self.name = config.stream
        self.skipped_done = 0  # queue mode never skips by a local log (see `assemble`)
        self.consumer = config.consumer or default_consumer()
        self.redis = redis or connect(config.url)
        self.pending_fields: dict[str, dict[str, str]] = {}  # in progress here, by message id
        self._settle_script = self.redis.register_script(SETTLE)

    async def __aenter__(self) -> RedisSource:
        import redis.exceptions

        async for attempt in redis_retrying(self.redis, deadline=self.config.connect_timeout):
            with attempt:
                try:
                    await self.redis.xgroup_create(
                        self.config.stream, self.config.group, id="0", mkstream=True
                    )
                except redis.exceptions.ResponseError as exc:
                    if wrong_type(exc):
                        raise ConfigError(
                            f"--stream {self.config.stream}: that key holds another Redis "
                            "type, not a stream (name another stream)"
                        ) from None
                    if "BUSYGROUP" not in str(exc):
                        raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.redis.aclose()

    def total(self) -> int | None:
        return None  # a stream has no end

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        async for attempt in redis_retrying(self.redis):
            with attempt:
                return await getattr(self.redis, name)(*args, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _trim(self) -> dict[str, int]:
        assert self.config.retain is not None
        async for attempt in redis_retrying(self.redis):
            with attempt:
                return await trim(self.redis, self.config.stream, self.config.retain)
        raise AssertionError("unreachable")  # pragma: no cover

    async def batches(self) -> AsyncIterator[Sequence[Item]]:
        cfg = self.config
        history = True  # first, what this consumer name already holds (a restart)
        history_from = "0"  # paged: each pending entry is read back once
        next_claim = anyio.current_time()
        while True:
            items: list[Item] = []
            if anyio.current_time() >= next_claim:
                items += await self._claim()
                next_claim = anyio.current_time() + max(cfg.claim_idle / 2, 0.5)
            if not items:
                start = history_from if history else ">"
                block = None if history or cfg.drain else cfg.block_ms
                answer = await self._call(
                    "xreadgroup",
                    cfg.group,
                    self.consumer,
                    {cfg.stream: start},
                    count=cfg.batch,
                    block=block,
                )
                messages = answer[0][1] if answer else []
                if history and not messages:
                    history = False
                    continue
                if history:
                    history_from = _text(messages[-1][0])
                # A message in progress here (claimed, or settling) is never handed out twice.
                items += [
                    self._item(mid, fields)
                    for mid, fields in messages
                    if fields is not None and _text(mid) not in self.pending_fields
                ]
                if history and not items:
                    continue  # all in progress here already: the next page of our own
            if items:
                yield items
            elif cfg.drain:
                # Nothing new: one more takeover pass before calling it drained (a claim takes
                # at most a batch, and the last one may have left idle messages behind).
                if claimed := await self._claim():
                    next_claim = anyio.current_time() + max(cfg.claim_idle / 2, 0.5)
                    yield claimed
                    continue
                log.info("queue_drained", stream=cfg.stream)
                return

    def _item(self, message_id: bytes | str, fields: dict[Any, Any]) -> Item:
        mid = _text(message_id)
        decoded: dict[str, str] = {}
        undecodable: list[str] = []
        for key, value in fields.items():
            name = _readable(key)
            try:
                decoded[name] = _text(value)
            except UnicodeDecodeError:
                # A poison message must not kill the consumer (nor the next one to claim it):
                # it becomes invalid, its raw bytes kept for the dead letter as base64.
                undecodable.append(name)
                decoded[f"{name}_base64"] = base64.b64encode(value).decode()
        self.pending_fields[mid] = decoded
        if undecodable:
            return Invalid(
                f"{self.config.stream}#{mid}",
                f"message field(s) {', '.join(undecodable)} not UTF-8 text",
                receipt=mid,
            )
        return parse_message(self.config.stream, mid, decoded)

    async def _claim(self) -> list[Item]:
        """Take over messages idle longer than --claim-idle; dead-letter the over-delivered."""
        cfg = self.config
        answer = await self._call(
            "xautoclaim",
            cfg.stream,
            cfg.group,
            self.consumer,
            int(cfg.claim_idle * 1000),
            "0-0",
            count=cfg.batch,
        )
        # A message still in progress here (Redis was away longer than --claim-idle, so its
        # idle time grew) is ours already: never handed out twice.
        claimed = [
            (mid, fields)
            for mid, fields in answer[1]
            if fields is not None and _text(mid) not in self.pending_fields
        ]
        if not claimed:
            return []
        ids = [_text(mid) for mid, _ in claimed]
        info = await self._call(
            "xpending_range",
            cfg.stream,
            cfg.group,
            min=ids[0],
            max=ids[-1],
            count=len(ids) * 4,
            consumername=self.consumer,
        )
        deliveries = {_text(p["message_id"]): int(p["times_delivered"]) for p in info}
        items: list[Item] = []
        for mid, fields in claimed:
            item = self._item(mid, fields)
            times = deliveries.get(_text(mid), 1)
            if times > cfg.max_deliveries:
                item = Invalid(
                    item.source,
                    f"delivered {times} times (more than --max-deliveries {cfg.max_deliveries})",
                    item.job_id,
                    receipt=item.receipt,
                    outcome=Outcome.FAILED,
                    account_id=getattr(item, "account_id", None),
                )
            log.info("job_reclaimed", message_id=_text(mid), deliveries=times)
            items.append(item)
        return items

    async def stats(self, redis: Any = None) -> dict[str, float]:
        """For metrics: stream length, the group's pending count and (Redis 7+) its lag,
        asked through `redis` (the metrics server's own client) or ours."""
        cfg = self.config
        redis = redis or self.redis
        length = await redis.xlen(cfg.stream)
        groups = await redis.xinfo_groups(cfg.stream)
        out = {"length": float(length)}
        for group in groups:
            if _text(group["name"]) == cfg.group:
                out["pending"] = float(group["pending"])
                if group.get("lag") is not None:
                    out["lag"] = float(group["lag"])
        return out

    async def keep_alive(self) -> None:
        """Runs until cancelled: every claim_idle/3, reset the idle time of the messages this
        consumer still holds (read ahead, waiting for the budget, in flight), so that live
        work is never taken over as if its consumer had died. XPENDING first, so a message
        another consumer already took is never taken back; JUSTID keeps delivery counts."""
        cfg = self.config
        trimmed_at = float("-inf")
        while True:
            await anyio.sleep(max(cfg.claim_idle / 3, 0.1))
            if cfg.retain is not None and time.monotonic() - trimmed_at >= TRIM_EVERY:
                trimmed_at = time.monotonic()
                dropped = await self._trim()
                if any(dropped.values()):
                    log.info("streams_trimmed", retain_s=cfg.retain, dropped=dropped)
            if not self.pending_fields:
                continue
            mine = await self._call(
                "xpending_range",
                cfg.stream,
                cfg.group,
                min="-",
                max="+",
                count=len(self.pending_fields) + 100,
                consumername=self.consumer,
            )
            ids = [_text(p["message_id"]) for p in mine]
            ids = [i for i in ids if i in self.pending_fields]
            for start in range(0, len(ids), 200):
                await self._call(
                    "xclaim",
                    cfg.stream,
                    cfg.group,
                    self.consumer,
                    0,
                    ids[start : start + 200],
                    justid=True,
                )

    async def settle(self, done: Sequence[tuple[Item, Result | None]]) -> None:
        """Each item's record to `<stream>:results` (and `:dead` for permanent failures), then
        XACK, one atomic script per message, all of them in one pipeline (a crash part way
        leaves each message settled or pending, never half; sent again after a Redis outage,
        a message is still recorded once: the script checks). Not acked: a job whose key was
        rejected (another consumer, with a good key, may do it), unless the consumer serves
        several keys (--keys): then it is a dead letter (`dead requeue --error
        unauthenticated` once the key is fixed)."""
        cfg = self.config
        names = stream_keys(self.redis, cfg.stream)
        keys = [names.results, names.dead, cfg.stream, names.recorded]
        calls: list[list[Any]] = []
        for item, result in done:
            mid = item.receipt
            if result is not None and result.http_status == 401 and not cfg.dead_letter_rejected:
                continue  # one key: stays pending for a consumer whose key is good
            # Still "in progress here" until settled: while Redis is away the message's idle
            # time grows, and our own XAUTOCLAIM must not hand it out a second time.
            fields = self.pending_fields.get(mid, {})
            record = result.to_json() if result is not None else ""
            dead: list[str] = []
            if result is not None and result.outcome not in DONE:
                code = dead_letter_code(result)
                letter = {**fields, "message_id": mid, "code": code, "reason": result.error or ""}
                for k, v in letter.items():
                    dead += [k, v]
            calls.append([cfg.group, mid, record, cfg.retain or RECORDED_FOR, *dead])
        if calls:  # one pipeline (ScriptBatch: a lost script is loaded again, Redis waited for)
            await script_batch(self.redis).call_many(self._settle_script, keys, calls)
        for item, _ in done:
            self.pending_fields.pop(item.receipt, None)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _readable(value: bytes | str) -> str:
    """A field name as text, whatever its bytes."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


# Adds one job to the stream unless an earlier enqueue added it (its idempotency key, within
# the window): an interrupted enqueue run again adds none of the jobs it added already.
# KEYS: stream, enqueued (zset: key -> ms added). ARGV: key, window ms, fields and values...
# Returns 1 (added now) or 0 (there from an earlier run).
ENQUEUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZADD', KEYS[2], 'NX', now, ARGV[1]) == 0 then return 0 end
redis.call('PEXPIRE', KEYS[2], window)
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
return 1
"""


@dataclasses.dataclass(slots=True)
class Enqueued:
    """What an enqueue did: jobs added now, jobs found there from an earlier run (both surely
    on the stream), and the invalid lines (never added)."""

    added: int = 0
    already: int = 0
    invalid: list[Invalid] = dataclasses.field(default_factory=list)
    sending: bool = False  # a batch went out: a failure now leaves some jobs on the stream

    @property
    def on_stream(self) -> int:
        return self.added + self.already


def idempotency_key(origin: str, job: Job) -> str:
    """One job line of one file: its place (the file, the line) and its fields."""
    fields = json.dumps(message_fields(job), sort_keys=True)
    return hashlib.sha256(f"{origin}\0{job.source}\0{fields}".encode()).hexdigest()[:32]


async def enqueue(
    items: AsyncIterator[Sequence[Item]],
    *,
    redis: Any,
    stream: str,
    origin: str,
    window: float = 86400.0,
    done: Enqueued | None = None,
    patience: float | None = None,
) -> Enqueued:
    """Add every valid job, a pipeline of atomic scripts per batch, each job once within
    `window` seconds however often the same file is enqueued (its idempotency key: `origin`,
    the file, with its line and fields). `done` counts as it goes: after a failure it still
    says how many jobs are surely on the stream. Redis going away mid-way (a Sentinel
    failover) is waited out for `patience` seconds (None: for ever) and the batch sent again:
    its jobs already added are recognised by their keys, never added twice."""
    done = done if done is not None else Enqueued()
    script = redis.register_script(ENQUEUE)
    keys = [stream, stream_keys(redis, stream).enqueued]
    # A batch of its own, not the client's: one pipeline per batch of the file, and Redis
    # waited for only as long as `patience` says.
    sender = ScriptBatch(redis, patience=patience)
    async for batch in items:
        calls = []
        for item in batch:
            if isinstance(item, Invalid):
                done.invalid.append(item)
                continue
            fields = [x for kv in message_fields(item).items() for x in kv]
            calls.append([idempotency_key(origin, item), int(window * 1000), *fields])
        if not calls:
            continue
        done.sending = True
        for reply in await sender.call_many(script, keys, calls):
            if int(reply):
                done.added += 1
            else:
                done.already += 1
    return done


__all__ = [
    "Enqueued",
    "RedisSource",
    "enqueue",
    "idempotency_key",
    "message_fields",
    "parse_message",
]
