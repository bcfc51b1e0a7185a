"""The sandbox API: the documented Xquik endpoints this project uses, served from memory.

Order per request, as a real gateway would: count it, authenticate (401), rate-limit per tier
(429 with Retry-After and retryAfter), inject a fault if one is drawn, then do the work.
`/_sandbox/*` is the test harness's control panel (no auth, loopback only).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from worker.sandbox.faults import Fault, FaultConfig, FaultPlan
from worker.sandbox.limits import FixedWindow
from worker.sandbox.store import Store

CONTRACT_HEADER = "xquik-api-contract"
HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>bad gateway</body></html>"


@dataclass
class Stats:
    received: int = 0  # counted on arrival, before any answer
    by_status: Counter[str] = field(default_factory=Counter)  # "DELETE 200"
    rate_limited: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    # (monotonic time, method, raw path, status) of the latest requests, for tests to inspect.
    log: deque[tuple[float, str, str, int]] = field(default_factory=lambda: deque(maxlen=200_000))

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "by_status": dict(self.by_status),
            "rate_limited": self.rate_limited,
            "faults": dict(self.faults),
            "requests": len(self.log),
        }


@dataclass
class SandboxState:
    store: Store
    keys: set[str]
    limits: dict[str, FixedWindow]  # tier ("read", "write", "delete") -> window
    faults: FaultPlan
    stats: Stats = field(default_factory=Stats)
    clock: Any = time.monotonic
    # Each request waits a random 0..ingress_jitter seconds before its tier's limiter counts
    # it: the way in is slow and uneven (a busy proxy, a congested network), as a client that
    # guesses a latency margin cannot afford.
    ingress_jitter: float = 0.0
    list_limit: int | None = None
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


def _error(
    request: web.Request, status: int, code: str, message: str, **extra: Any
) -> web.Response:
    if request.headers.get(CONTRACT_HEADER) == "2026-04-29":
        body: dict[str, Any] = {"error": {"type": code, "code": code, "message": message}}
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


async def _gate(request: web.Request, handler: Any, state: SandboxState) -> web.StreamResponse:
    if request.headers.get("x-api-key") not in state.keys:
        return _error(request, 401, "unauthenticated", "Missing or invalid API key.")
    if state.ingress_jitter > 0:
        await asyncio.sleep(state.rng.uniform(0, state.ingress_jitter))
    wait = state.limits[_tier(request.method)].hit(state.clock())
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
async def list_accounts(request: web.Request) -> web.Response:
    state = request.app[STATE]
    accounts = list(state.store.accounts.values())
    return web.json_response({"accounts": accounts[: state.list_limit]})


async def get_account(request: web.Request) -> web.Response:
    account = request.app[STATE].store.accounts.get(request.match_info["id"])
    if account is None:
        return _error(request, 404, "not_found", "Account not found.")
    return web.json_response(account)


async def delete_account(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    account_id = request.match_info["id"]
    if store.accounts.pop(account_id, None) is None:
        return _error(request, 404, "not_found", "Account not found.")
    store.deleted_accounts.add(account_id)
    return web.json_response({"success": True})


async def list_monitors(request: web.Request) -> web.Response:
    monitors = list(request.app[STATE].store.monitors.values())[:200]
    return web.json_response({"monitors": monitors, "total": len(monitors)})


async def delete_monitor(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    monitor_id = request.match_info["id"]
    if store.monitors.pop(monitor_id, None) is None:
        return _error(request, 404, "not_found", "Monitor not found.")
    store.deleted_monitors.add(monitor_id)
    return web.json_response({"success": True})


# The control panel ------------------------------------------------------------------------
async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = state.stats.as_dict()
    body["accounts"] = len(state.store.accounts)
    body["monitors"] = len(state.store.monitors)
    body["deleted_accounts"] = sorted(state.store.deleted_accounts)
    body["deleted_monitors"] = sorted(state.store.deleted_monitors)
    return web.json_response(body)


async def requests(request: web.Request) -> web.Response:
    """Every request answered so far: [method, raw path, status, monotonic seconds]."""
    log = request.app[STATE].stats.log
    return web.json_response([[method, path, status, t] for t, method, path, status in log])


async def consume(request: web.Request) -> web.Response:
    """Spend `n` of a tier's window as another client of the same Xquik account would."""
    state = request.app[STATE]
    tier, n = request.query.get("tier", "delete"), int(request.query.get("n", "1"))
    state.limits[tier].consume(state.clock(), n)
    return web.json_response({"tier": tier, "count": state.limits[tier].count})


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
    api.router.add_delete("/monitors/{id}", delete_monitor)
    app.add_subapp(API_PREFIX, api)
    app.router.add_get("/_sandbox/stats", stats)
    app.router.add_get("/_sandbox/requests", requests)
    app.router.add_post("/_sandbox/consume", consume)
    return app


__all__ = ["API_PREFIX", "STATE", "FaultConfig", "SandboxState", "Stats", "make_app"]
