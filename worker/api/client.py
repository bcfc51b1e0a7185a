"""The Xquik HTTP client: the one place where aiohttp is used and its errors are translated.

Every real send passes through a client middleware that takes a slot from the budget of its tier
(DELETE or read). That includes the request aiohttp re-sends on its own when a reused keep-alive
connection turns out to be closed (aio-libs/aiohttp#10790): the budget counts what goes out. A
send that provably never left (the connection could not be made) gives its slot back.

Redirects are never followed: the key travels in a header that aiohttp would carry to any
origin, and a 303 would turn a DELETE into a GET whose 200 means nothing. A 3xx is a failure.
Each attempt, from the moment it has its slot to the last byte of the answer, is bounded by
--timeout; answers are read up to a bound, so a hostile server can neither hang nor flood us.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio
from yarl import URL

from worker._version import __version__
from worker.api.classify import Decision, decide, error_body, parse_json, retry_after_seconds
from worker.budget.base import Budget, Unlimited
from worker.errors import (
    ApiError,
    AuthError,
    NetworkError,
    PermanentApiError,
    RateLimited,
    RequestTimeout,
    TlsError,
    TransientApiError,
)
from worker.logs import get_logger

log = get_logger()

MAX_ANSWER = 1 << 20  # bytes of a single answer read at most (the API's are a few hundred)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds, then +Inf
MAX_PAGES = 10_000  # 2,000,000 items: a server that never says "no more" is not followed for ever
MAX_LISTING = 64 << 20  # a listing of 10,000 accounts is a few MB


@dataclass(frozen=True, slots=True)
class Answer:
    """A success (2xx) or, for single resources, a 404."""

    status: int
    body: Any


_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")  # nothing to encode


# The timeout of the request in progress: it starts unset, and its deadline is set when the
# attempt has its budget slot (the wait for the budget is not part of an attempt's bound).
_ATTEMPT: contextvars.ContextVar[asyncio.Timeout] = contextvars.ContextVar("xquik_attempt")


# The client whose request is in progress: with several keys one aiohttp session (one pool
# of connections) serves every key's client, and its middleware meters each request against
# the budgets of the client that sends it.
_CLIENT: contextvars.ContextVar[XquikClient] = contextvars.ContextVar("xquik_client")


class Parkable:
    """A job that must not wait for its key's DELETE budget (a tenant's job, with several
    keys): its first DELETE takes a slot only if one is free now, else NoSlot is raised and
    the job goes back to its tenant's queue, holding no worker. Once a DELETE was answered
    (not 429), the job's later DELETEs (its monitors) wait as usual."""

    __slots__ = ("answered",)

    def __init__(self) -> None:
        self.answered = False


PARKABLE: contextvars.ContextVar[Parkable | None] = contextvars.ContextVar(
    "xquik_parkable", default=None
)


def http_session(*, concurrency: int, timeout: float) -> aiohttp.ClientSession:
    """The aiohttp session of a run: one pool of connections for every key's client."""
    return aiohttp.ClientSession(
        headers={"User-Agent": f"xquik-disconnect/{__version__}"},
        connector=aiohttp.TCPConnector(limit=max(concurrency, 1) + 2),
        # Connecting and silence are bounded here; the whole attempt in `request`.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
        middlewares=(_meter,),
        raise_for_status=False,
    )


async def _meter(
    req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    return await _CLIENT.get()._meter(req, handler)


def origin(url: URL) -> str:
    """scheme://host:port, never userinfo, path or query: what a message may say of a URL."""
    return f"{url.scheme}://{url.host}:{url.port}" if url.host else "(no host)"


class XquikClient:
    """One aiohttp session per run; use as an async context manager."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float = 30.0,
        concurrency: int = 4,
        delete_budget: Budget | None = None,
        read_budget: Budget | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be > 0")
        self._base = base_url.rstrip("/")
        self.api_key = api_key  # replaced when its key file changes (a rotated key)
        self._shared = http
        self._timeout = timeout
        self._concurrency = concurrency
        self.delete_budget: Budget = delete_budget or Unlimited()
        self.read_budget: Budget = read_budget or Unlimited()
        self._session: aiohttp.ClientSession | None = http  # shared: open already
        self.sent: Counter[str] = Counter()  # real sends by method, hidden resends included
        # For metrics and the summary: plain numbers, cheap to keep.
        self.in_flight = 0
        self.rate_limited = 0
        self.refunded = 0
        self.cooldown_s = 0.0
        self.budget_wait_s = 0.0
        # For the metrics: answers by (method, status), and send-to-headers durations by
        # method in fixed buckets (a bisect and two additions per request).
        self.answered: Counter[tuple[str, int]] = Counter()
        self.durations: dict[str, list[int]] = {}
        self.duration_sum: dict[str, float] = {}

    async def __aenter__(self) -> XquikClient:
        self._session = self._shared or http_session(
            concurrency=self._concurrency, timeout=self._timeout
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            if self._shared is None:  # a shared session is closed by its owner
                await self._session.close()
            self._session = None

    def _budget(self, method: str) -> Budget:
        return self.delete_budget if method == "DELETE" else self.read_budget

    async def _meter(
        self, req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        started = time.monotonic()
        budget = self._budget(req.method)
        parkable = PARKABLE.get() if req.method == "DELETE" else None
        if parkable is not None and not parkable.answered:
            slot = await budget.acquire(block=False)
        else:
            slot = await budget.acquire()
        self.budget_wait_s += time.monotonic() - started
        self.sent[req.method] += 1
        attempt = _ATTEMPT.get(None)
        if attempt is not None:
            attempt.reschedule(asyncio.get_running_loop().time() + self._timeout)
        if slot is None:  # a budget without slots (unlimited): nothing to give back
            resp = await handler(req)
            if parkable is not None and resp.status != 429:
                parkable.answered = True
            return resp
        left = True
        status: int | None = None
        sent_at = time.monotonic()
        try:
            resp = await handler(req)
            status = resp.status
            self._observe(req.method, status, time.monotonic() - sent_at)
            if parkable is not None and status != 429:
                parkable.answered = True
            return resp
        except aiohttp.ClientConnectorError:
            # Refused, unreachable, TLS handshake failed: the request never left.
            left = False
            self.refunded += 1
            self.sent[req.method] -= 1
            raise
        finally:
            # The answer's headers came (the server counted the request by then), or the
            # attempt failed, timed out or was cancelled: from now on one span is left to the
            # slot. Shielded, but bounded: a budget in Redis that is away keeps the slot held
            # for its attempt's bound instead (safe, only slower).
            settle = budget.release(slot, status) if left else budget.refund(slot)
            if budget.remote:
                with anyio.move_on_after(2, shield=True):
                    await settle
            else:
                await settle  # never suspends: a cancellation cannot cut it short

    def _observe(self, method: str, status: int, seconds: float) -> None:
        self.answered[(method, status)] += 1
        counts = self.durations.get(method)
        if counts is None:
            counts = self.durations[method] = [0] * (len(DURATION_BUCKETS) + 1)
        counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum[method] = self.duration_sum.get(method, 0.0) + seconds

    def url(self, *segments: str) -> URL:
        # Each id is one percent-encoded path segment: "../x" can never become another path.
        path = "/".join(s if _SAFE_SEGMENT.fullmatch(s) else quote(s, safe="") for s in segments)
        return URL(f"{self._base}/{path}", encoded=True)

    async def request(
        self,
        method: str,
        *segments: str,
        allow_404: bool = True,
        limit: int = MAX_ANSWER,
        query: dict[str, str] | None = None,
    ) -> Answer:
        """Send one request; return 2xx (and 404 if allowed) answers, raise the rest."""
        assert self._session is not None, "use the client as an async context manager"
        url = self.url(*segments)
        if query:
            url = url.with_query(query)
        self.in_flight += 1
        token = None
        me = _CLIENT.set(self)
        try:
            async with asyncio.timeout(None) as attempt:
                token = _ATTEMPT.set(attempt)
                async with self._session.request(
                    method, url, allow_redirects=False, headers={"x-api-key": self.api_key}
                ) as resp:
                    raw = await _read_bounded(resp, limit)
                    status, headers = resp.status, resp.headers
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise RequestTimeout(f"no whole answer within {self._timeout:g} s") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TlsError(f"the certificate of {origin(url)} cannot be verified") from exc
        except aiohttp.ClientSSLError as exc:
            raise TlsError(f"no TLS connection to {origin(url)}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise NetworkError(detail) from exc
        finally:
            self.in_flight -= 1
            _CLIENT.reset(me)
            if token is not None:
                _ATTEMPT.reset(token)
        body = parse_json(raw.decode("utf-8", "replace"))
        decision = decide(status)
        if decision is Decision.SUCCESS or (decision is Decision.GONE and allow_404):
            return Answer(status, body)
        if decision is Decision.REDIRECT:
            where = url.join(URL(headers.get("Location", ""))) if "Location" in headers else None
            target = origin(where) if where is not None else "nowhere"
            raise PermanentApiError(status, "unexpected_redirect", f"{status} to {target}")
        err = error_body(status, body)
        if decision is Decision.RATE_LIMITED:
            # Without a Retry-After, each tier's budget falls back to its own window.
            wait = retry_after_seconds(headers, body)
            self.rate_limited += 1
            applied = await self._budget(method).hold(wait)
            self.cooldown_s += applied
            until = datetime.now(UTC) + timedelta(seconds=applied)
            log.warning(
                "cooldown",
                tier="delete" if method == "DELETE" else "read",
                until=until.isoformat(timespec="seconds"),
                seconds=round(applied, 3),
                retry_after=wait,
                reason=err.code,
            )
            raise RateLimited(status, err.code, err.message, retry_after=wait)
        raise _error_class(decision)(status, err.code, err.message)

    # The endpoints this project uses.
    async def delete_account(self, account_id: str) -> Answer:
        return await self.request("DELETE", "x", "accounts", account_id)

    async def get_account(self, account_id: str) -> Answer:
        return await self.request("GET", "x", "accounts", account_id)

    async def list_accounts(self) -> list[dict[str, Any]]:
        """Every connected account: one answer up to the API's cap (10,000), else its pages
        (100 a page, the maximum)."""
        return await self._pages(("x", "accounts"), "accounts", first=None, size=100)

    async def list_monitors(self) -> list[dict[str, Any]]:
        """Every account monitor, page by page (200 a page, the API's maximum)."""
        return await self._pages(("monitors",), "monitors", first={"limit": "200"}, size=200)

    async def _pages(
        self, segments: tuple[str, ...], field: str, *, first: dict[str, str] | None, size: int
    ) -> list[dict[str, Any]]:
        """A whole cursor-paginated listing (`hasMore`, `nextCursor`). A page that fails fails
        the listing: a list cut short must never read as complete ("not listed" reads as
        "already gone"). Each page is a request of its own, through the read budget."""
        items: list[dict[str, Any]] = []
        query, seen = first, set()
        for _ in range(MAX_PAGES):
            answer = await self.request(
                "GET", *segments, allow_404=False, limit=MAX_LISTING, query=query
            )
            items += _listed(answer, field)
            body = answer.body if isinstance(answer.body, dict) else {}
            cursor = body.get("nextCursor")
            if body.get("hasMore") is not True:
                return items
            if not isinstance(cursor, str) or not cursor or cursor in seen:
                raise TransientApiError(
                    answer.status, "malformed_answer", f"hasMore without a new nextCursor ({field})"
                )
            seen.add(cursor)
            query = {"cursor": cursor, "limit": str(size)}
        raise TransientApiError(200, "malformed_answer", f"more than {MAX_PAGES} pages of {field}")

    async def delete_monitor(self, monitor_id: str) -> Answer:
        return await self.request("DELETE", "monitors", monitor_id)

    async def get_monitor(self, monitor_id: str, *, keyword: bool = False) -> Answer:
        """A monitor (404 once its background deletion is over)."""
        if keyword:
            return await self.request("GET", "monitors", "keywords", monitor_id)
        return await self.request("GET", "monitors", monitor_id)

    async def list_keyword_monitors(self) -> list[dict[str, Any]]:
        """Every keyword monitor, page by page (200 a page)."""
        return await self._pages(
            ("monitors", "keywords"), "monitors", first={"limit": "200"}, size=200
        )

    async def delete_keyword_monitor(self, monitor_id: str) -> Answer:
        return await self.request("DELETE", "monitors", "keywords", monitor_id)


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most `limit` bytes of the answer; the rest is never read (the connection is closed)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await resp.content.read(min(1 << 16, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _listed(answer: Answer, field: str) -> list[dict[str, Any]]:
    """The list in a listing's answer. An answer without it (cut short, a proxy's page) is an
    error to retry, never an empty list: "not listed" would read as "already gone"."""
    items = answer.body.get(field) if isinstance(answer.body, dict) else None
    if not isinstance(items, list):
        raise TransientApiError(answer.status, "malformed_answer", f"no {field!r} list")
    return [item for item in items if isinstance(item, dict)]


def _error_class(decision: Decision) -> type[ApiError]:
    if decision is Decision.AUTH:
        return AuthError
    if decision is Decision.RETRY:
        return TransientApiError
    return PermanentApiError


__all__ = ["PARKABLE", "Answer", "Parkable", "XquikClient", "http_session"]
