"""Servers that are not our sandbox, on loopback: a redirector, a recorder, a trickler, a
flood, and TLS with a certificate nobody trusts. Each runs in the test's event loop while the
worker runs as a real process."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """`async with Server(handler) as s:` serves every path with `handler` on s.url."""

    def __init__(self, handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.seen: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs, dict(request.headers)))
        return await self.handler(request)

    async def __aenter__(self) -> Server:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def answer(status: int, body: object) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return handle


def redirect(status: int, location: Callable[[], str]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": location()})

    return handle


def trickle(every: float) -> Handler:
    """Headers at once, then one byte every `every` seconds, for ever."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        while True:
            await response.write(b" ")
            await asyncio.sleep(every)

    return handle


def flood(megabytes: int, sent: list[int] | None = None) -> Handler:
    """A 200 whose body is `megabytes` MB of JSON-ish filler, sent as fast as it is read;
    appends to `sent` how many MB each answer got out before the client hung up."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"success": true, "pad": "')
        block = b"x" * (1 << 20)
        done = 0
        try:
            for _ in range(megabytes):
                await response.write(block)
                done += 1
            await response.write(b'"}')
        finally:
            if sent is not None:
                sent.append(done)
        return response

    return handle
