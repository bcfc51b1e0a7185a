"""The sandbox API: the documented Xquik endpoints this project uses, served from memory.

Order per request, as a real gateway would: count it, authenticate (401), rate-limit per tier
(429 with Retry-After and retryAfter), inject a fault if one is drawn, then do the work.
`/_sandbox/*` is the test harness's control panel (no auth, loopback only).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from worker.sandbox.faults import Fault, FaultConfig, FaultPlan
from worker.sandbox.limits import FixedWindow
from worker.sandbox.store import Store

CONTRACT_HEADER = "xquik-api-contract"
ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>bad gateway</body></html>"


@dataclass
class Stats:
    received: int = 0  # counted on arrival, before any answer
    by_status: Counter[str] = field(default_factory=Counter)  # "DELETE 200"
    rate_limited: int = 0
    cross_tenant: int = 0  # requests for an account of another tenant than the key's
    faults: Counter[str] = field(default_factory=Counter)
    # (monotonic time, method, raw path, status) of the latest requests, for tests to inspect.
    log: deque[tuple[float, str, str, int]] = field(default_factory=lambda: deque(maxlen=200_000))

    def as_dict(self) -> dict[str, Any]:
        return {
            "cross_tenant": self.cross_tenant,
            "received": self.received,
            "by_status": dict(self.by_status),
            "rate_limited": self.rate_limited,
            "faults": dict(self.faults),
            "requests": len(self.log),
        }


@dataclass
class Tenancy:
    name: str
    store: Store
    limits: dict[str, FixedWindow]


@dataclass
class SandboxState:
    store: Store
    keys: set[str]
    limits: dict[str, FixedWindow]  # tier ("read", "write", "delete") -> window
    faults: FaultPlan
    stats: Stats = field(default_factory=Stats)
    # Other Xquik accounts (`--tenants`), by API key: each its own data and its own windows.
    # A key sees only its own account's connections; asking for another's answers 404, and
    # the ledger counts it (a client that sent a job with the wrong key).
    tenants: dict[str, Tenancy] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # account id -> tenant name
    clock: Any = time.monotonic
    # Each request waits a random 0..ingress_jitter seconds before its tier's limiter counts
    # it: the way in is slow and uneven (a busy proxy, a congested network), as a client that
    # guesses a latency margin cannot afford.
    ingress_jitter: float = 0.0
    list_limit: int | None = None
    accounts_page_cap: int = 10_000
    monitor_deletion_s: float = 0.0
    rng: random.Random = field(default_factory=random.Random)


_INJECTED_ERRORS = {
    Fault.ERROR_403: (403, "forbidden"),
    Fault.ERROR_409: (409, "conflict"),
    Fault.ERROR_422: (422, "invalid_input"),
    Fault.ERROR_500: (500, "internal_error"),
    Fault.ERROR_502: (502, "internal_error"),
    Fault.ERROR_503: (503, "internal_error"),
}

STATE: web.AppKey[SandboxState] = web.AppKey("state", SandboxState)


def _tier(method: str) -> str:
    return {"GET": "read", "HEAD": "read", "DELETE": "delete"}.get(method, "write")


def category(status: int) -> str:
    """The opt-in error contract's `type`: a category, as the SDK's models list them."""
    if status >= 500:
        return "api_error"
    return {
        401: "authentication_error",
        402: "billing_error",
        403: "permission_error",
        424: "dependency_error",
        429: "rate_limit_error",
    }.get(status, "invalid_request_error")


def _error(
    request: web.Request, status: int, code: str, message: str, **extra: Any
) -> web.Response:
    if request.headers.get(CONTRACT_HEADER) == "2026-04-29":
        kind = category(status)
        body: dict[str, Any] = {"error": {"type": kind, "code": code, "message": message}}
    else:
        body = {"error": code, "message": message}
    body.update(extra)
    return web.json_response(body, status=status)


@web.middleware
async def gateway(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[STATE]
    if request.path.startswith("/_sandbox/"):
        response: web.StreamResponse = await handler(request)
        return response
    status = 0
    state.stats.received += 1
    try:
        response = await _gate(request, handler, state)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        state.stats.log.append((state.clock(), request.method, request.raw_path, status))
        state.stats.by_status[f"{request.method} {status}"] += 1


def _key(request: web.Request) -> str | None:
    """x-api-key, or `Authorization: Bearer` (accepted by the newer docs and the SDK)."""
    key = request.headers.get("x-api-key")
    if key is None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    return key


async def _gate(request: web.Request, handler: Any, state: SandboxState) -> web.StreamResponse:
    if _key(request) not in state.keys:
        return _error(request, 401, "unauthenticated", "Missing or invalid API key.")
    failed = getattr(request.match_info, "http_exception", None)
    if isinstance(failed, web.HTTPException):  # no such route or method: the JSON envelope
        if failed.status == 405:
            return _error(request, 405, "method_not_allowed", "Method not allowed.")
        return _error(request, 404, "not_found", "No such endpoint.")
    if "id" in request.match_info and not ID.fullmatch(request.match_info["id"]):
        return _error(request, 400, "invalid_id", "The id is not valid.")
    if state.ingress_jitter > 0:
        await asyncio.sleep(state.rng.uniform(0, state.ingress_jitter))
    tenancy = state.tenants.get(_key(request) or "")
    if tenancy is not None:
        request["tenancy"] = tenancy
    limits = tenancy.limits if tenancy is not None else state.limits
    wait = limits[_tier(request.method)].hit(state.clock())
    if wait is not None:
        state.stats.rate_limited += 1
        seconds = int(FixedWindow.retry_after_header(wait))
        response = _error(
            request,
            429,
            "rate_limit_exceeded",
            "Too many requests. Try again later.",
            retryAfter=seconds,
        )
        response.headers["Retry-After"] = str(seconds)
        return response
    fault = state.faults.draw()
    if fault is not None:
        state.stats.faults[fault.value] += 1
    if fault is not None and fault in _INJECTED_ERRORS:
        status, code = _INJECTED_ERRORS[fault]
        return _error(request, status, code, "Injected fault.")
    if fault is Fault.HTML_502:
        return web.Response(status=502, text=HTML_502, content_type="text/html")
    if fault is Fault.RESET:
        _drop(request)
    if fault is Fault.SLOW:
        await asyncio.sleep(state.faults.slow_seconds)
    response = await handler(request)
    if fault is Fault.LOST:
        _drop(request)  # the work is done, the answer never arrives
    return response  # type: ignore[no-any-return]


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError


# The API ---------------------------------------------------------------------------------
def _page(
    request: web.Request, items: list[dict[str, Any]], *, default: int, cap: int = 200
) -> tuple[list[dict[str, Any]], dict[str, Any]] | web.Response:
    """Cursor pagination as the API does it: `limit` (1..cap), `cursor` (the previous
    `nextCursor`, opaque); the answer says `hasMore` and, if so, `nextCursor`."""
    try:
        limit = int(request.query.get("limit", default))
        start = int(request.query.get("cursor") or request.query.get("after") or "0", 36)
    except ValueError:
        return _error(request, 400, "invalid_input", "Bad limit or cursor.")
    if not 1 <= limit <= max(cap, default) or start < 0:
        return _error(request, 400, "invalid_input", f"limit must be 1 to {cap}.")
    page = items[start : start + limit]
    more = start + limit < len(items)
    extra: dict[str, Any] = {"hasMore": more}
    if more:
        extra["nextCursor"] = _cursor(start + limit)
    return page, extra


def _cursor(n: int) -> str:
    digits = ""
    while True:
        n, r = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
        if n == 0:
            return digits


async def list_accounts(request: web.Request) -> web.Response:
    """Every account up to the cap without pagination parameters (the live API: 10,000), else
    cursor pages; `list_limit` cuts the listing short (a harness fault)."""
    state = request.app[STATE]
    accounts = list(_store(request).accounts.values())[: state.list_limit]
    paged = "limit" in request.query or "cursor" in request.query
    if not paged and len(accounts) <= state.accounts_page_cap:
        return web.json_response({"accounts": accounts})
    result = _page(request, accounts, default=50 if paged else state.accounts_page_cap, cap=100)
    if isinstance(result, web.Response):
        return result
    page, extra = result
    return web.json_response({"accounts": page, **extra})


def _store(request: web.Request) -> Store:
    tenancy = request.get("tenancy")
    return tenancy.store if tenancy is not None else request.app[STATE].store


def _not_found(request: web.Request, account_id: str) -> web.Response:
    """404, as the API answers for another account's connection; the ledger notes it."""
    state = request.app[STATE]
    tenancy = request.get("tenancy")
    owner = state.owners.get(account_id)
    if owner is not None and owner != (tenancy.name if tenancy is not None else ""):
        state.stats.cross_tenant += 1
    return _error(request, 404, "not_found", "Account not found.")


async def get_account(request: web.Request) -> web.Response:
    account = _store(request).accounts.get(request.match_info["id"])
    if account is None:
        return _not_found(request, request.match_info["id"])
    return web.json_response(account)


async def delete_account(request: web.Request) -> web.Response:
    store = _store(request)
    account_id = request.match_info["id"]
    account = store.accounts.pop(account_id, None)
    if account is None:
        return _not_found(request, account_id)
    store.deleted_accounts.add(account_id)
    store.removed[account_id] = account
    return web.json_response({"success": True})


def _monitors(request: web.Request, kind: str = "account") -> dict[str, dict[str, Any]]:
    """The monitors still listed: a deleted one stays until its background deletion ends."""
    store = _store(request)
    now = request.app[STATE].clock()
    for monitor_id, until in list(store.deleting.items()):
        if until <= now:
            del store.deleting[monitor_id]
            store.monitors.pop(monitor_id, None)
            store.keyword_monitors.pop(monitor_id, None)
    return store.keyword_monitors if kind == "keyword" else store.monitors


async def list_monitors(request: web.Request) -> web.Response:
    """Account monitors, cursor-paginated (limit 1..200, default 200), as the SDK models."""
    monitors = list(_monitors(request).values())
    result = _page(request, monitors, default=200)
    if isinstance(result, web.Response):
        return result
    page, extra = result
    return web.json_response({"monitors": page, "total": len(page), **extra})


async def list_keyword_monitors(request: web.Request) -> web.Response:
    monitors = list(_monitors(request, "keyword").values())
    result = _page(request, monitors, default=200)
    if isinstance(result, web.Response):
        return result
    page, extra = result
    return web.json_response({"monitors": page, "total": len(page), **extra})


def _kind(request: web.Request) -> str:
    return "keyword" if "/monitors/keywords/" in request.path else "account"


async def get_monitor(request: web.Request) -> web.Response:
    monitor = _monitors(request, _kind(request)).get(request.match_info["id"])
    if monitor is None:
        return _error(request, 404, "not_found", "Monitor not found.")
    return web.json_response(monitor)


async def delete_monitor(request: web.Request) -> web.Response:
    """The deletion runs in the background: 200 `deletionStatus: deleting` at once, the monitor
    listed until it is gone, then its GET answers 404. Account and keyword monitors alike."""
    state = request.app[STATE]
    store = _store(request)
    monitor_id = request.match_info["id"]
    kind = _kind(request)
    if monitor_id not in _monitors(request, kind):
        return _error(request, 404, "not_found", "Monitor not found.")
    if monitor_id not in store.deleting:
        store.deleted_monitors.add(monitor_id)
        store.delete_requests[monitor_id] = store.delete_requests.get(monitor_id, 0) + 1
        store.deleting[monitor_id] = state.clock() + state.monitor_deletion_s
    else:
        store.delete_requests[monitor_id] += 1
    _monitors(request)
    return web.json_response(
        {
            "success": True,
            "deletionStatus": "deleting",
            "statusUrl": f"{API_PREFIX}/monitors/{'keywords/' if kind == 'keyword' else ''}"
            f"{monitor_id}",
        }
    )


# The control panel ------------------------------------------------------------------------
async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = state.stats.as_dict()
    body["accounts"] = len(state.store.accounts)
    body["monitors"] = len(state.store.monitors)
    body["deleted_accounts"] = sorted(state.store.deleted_accounts)
    body["deleted_monitors"] = sorted(state.store.deleted_monitors)
    body["monitor_delete_requests"] = dict(state.store.delete_requests)
    if state.tenants:
        body["tenants"] = {
            t.name: {
                "accounts": len(t.store.accounts),
                "deleted_accounts": len(t.store.deleted_accounts),
                "delete_window_count": t.limits["delete"].count,
            }
            for t in state.tenants.values()
        }
    return web.json_response(body)


async def requests(request: web.Request) -> web.Response:
    """Every request answered so far: [method, raw path, status, monotonic seconds]."""
    log = request.app[STATE].stats.log
    return web.json_response([[method, path, status, t] for t, method, path, status in log])


async def consume(request: web.Request) -> web.Response:
    """Spend `n` of a tier's window as another client of the same Xquik account would."""
    state = request.app[STATE]
    tier, n = request.query.get("tier", "delete"), int(request.query.get("n", "1"))
    limits = state.limits
    if name := request.query.get("tenant"):
        found = [t for t in state.tenants.values() if t.name == name]
        if not found:
            return web.json_response({"error": f"no tenant {name}"}, status=404)
        limits = found[0].limits
    limits[tier].consume(state.clock(), n)
    return web.json_response({"tier": tier, "count": limits[tier].count})


async def add_account(request: web.Request) -> web.Response:
    """Connect an account (`{"id", "xUsername"}`, optional `xUserId`): a server whose text is
    anything, for tests of what reaches a terminal."""
    body = await request.json()
    store = request.app[STATE].store
    account = store.add_account(str(body["id"]), str(body["xUsername"]))
    if "xUserId" in body:
        account["xUserId"] = str(body["xUserId"])
    return web.json_response(account)


async def reconnect(request: web.Request) -> web.Response:
    """`{"account_id": OLD, "new_id": NEW, "tenant": NAME?}`: the X user of a deleted account
    connects again under a new id (same xUserId and xUsername; as the API allows), for the
    tests of `verify` and `plan --offboarded`. 404 when OLD was never deleted here."""
    body = await request.json()
    state = request.app[STATE]
    tenant = body.get("tenant")
    by_name = {t.name: t for t in state.tenants.values()}
    if tenant and str(tenant) not in by_name:
        return web.json_response({"error": "no_such_tenant"}, status=404)
    store = by_name[str(tenant)].store if tenant else state.store
    old = store.removed.get(str(body["account_id"]))
    if old is None:
        return web.json_response({"error": "not_removed"}, status=404)
    account = store.add_account(str(body["new_id"]), str(old["xUsername"]))
    account["xUserId"] = old["xUserId"]
    if tenant:
        state.owners[str(body["new_id"])] = str(tenant)
    return web.json_response(account)


API_PREFIX = "/api/v1"


def make_app(state: SandboxState) -> web.Application:
    app = web.Application(middlewares=[gateway])
    app[STATE] = state
    api = web.Application()
    api[STATE] = state
    api.router.add_get("/x/accounts", list_accounts)
    api.router.add_get("/x/accounts/{id}", get_account)
    api.router.add_delete("/x/accounts/{id}", delete_account)
    api.router.add_get("/monitors", list_monitors)
    api.router.add_get("/monitors/keywords", list_keyword_monitors)
    api.router.add_get("/monitors/keywords/{id}", get_monitor)
    api.router.add_delete("/monitors/keywords/{id}", delete_monitor)
    api.router.add_get("/monitors/{id}", get_monitor)
    api.router.add_delete("/monitors/{id}", delete_monitor)
    app.add_subapp(API_PREFIX, api)
    app.router.add_get("/_sandbox/stats", stats)
    app.router.add_get("/_sandbox/requests", requests)
    app.router.add_post("/_sandbox/consume", consume)
    app.router.add_post("/_sandbox/accounts", add_account)
    app.router.add_post("/_sandbox/reconnect", reconnect)
    return app


__all__ = ["API_PREFIX", "STATE", "FaultConfig", "SandboxState", "Stats", "Tenancy", "make_app"]
