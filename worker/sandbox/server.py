"""Running the sandbox: in-process on a loopback port (`run --sandbox`, tests) or standalone."""

from __future__ import annotations

import asyncio
import asyncio.base_events
import random
import secrets
import time
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

from worker.sandbox.app import API_PREFIX, SandboxState, Tenancy, make_app
from worker.sandbox.faults import FaultConfig, FaultPlan
from worker.sandbox.limits import FixedWindow
from worker.sandbox.store import Store


def new_key() -> str:
    return "xq_" + secrets.token_hex(32)


@dataclass
class SandboxConfig:
    accounts: int = 50
    seed: int = 0
    delete_limit: tuple[int | None, float] = (15, 60.0)
    read_limit: tuple[int | None, float] = (60, 1.0)
    write_limit: tuple[int | None, float] = (30, 60.0)
    faults: FaultConfig = field(default_factory=FaultConfig)
    ingress_jitter_ms: float = 0.0
    list_limit: int | None = None  # GET /x/accounts lists only this many (a listing cut short)
    # GET /x/accounts without limit/cursor answers up to this many, then pages (live: 10,000).
    accounts_page_cap: int = 10_000
    monitor_deletion_s: float = 0.0  # a deleted monitor stays listed this long ("deleting")
    keys: set[str] = field(default_factory=set)
    tenants: int = 0  # other Xquik accounts, each with its own key, data and windows
    tenant_accounts: int = 20  # accounts each of them holds
    host: str = "127.0.0.1"
    port: int = 0


class Sandbox:
    """`async with Sandbox(config) as sb:` serves on `sb.base_url` with key `sb.api_key`."""

    def __init__(self, config: SandboxConfig | None = None, *, store: Store | None = None) -> None:
        self.config = config or SandboxConfig()
        self.api_key = next(iter(self.config.keys), None) or new_key()
        self.state = SandboxState(
            store=store or Store.generate(self.config.accounts, seed=self.config.seed),
            keys=self.config.keys | {self.api_key},
            limits=self._limits(),
            faults=FaultPlan(self.config.faults),
            clock=time.monotonic,
            ingress_jitter=self.config.ingress_jitter_ms / 1000,
            list_limit=self.config.list_limit,
            accounts_page_cap=self.config.accounts_page_cap,
            monitor_deletion_s=self.config.monitor_deletion_s,
            rng=random.Random(self.config.seed),
        )
        # --tenants: keys t1..tK, each another Xquik account (accounts `tK-1`.., monitors,
        # windows of its own). `tenant_keys` maps each tenant's name to its key.
        self.tenant_keys: dict[str, str] = {}
        for k in range(1, self.config.tenants + 1):
            name, key = f"t{k}", new_key()
            store_k = Store.for_tenant(name, self.config.tenant_accounts, seed=self.config.seed)
            self.state.tenants[key] = Tenancy(name, store_k, self._limits())
            self.state.keys.add(key)
            self.tenant_keys[name] = key
            self.state.owners.update(dict.fromkeys(store_k.accounts, name))
        if self.config.tenants:
            self.state.owners.update(dict.fromkeys(self.state.store.accounts, ""))
        self._runner: web.AppRunner | None = None
        self.port = 0

    def _limits(self) -> dict[str, FixedWindow]:
        return {
            "delete": FixedWindow(*self.config.delete_limit),
            "read": FixedWindow(*self.config.read_limit),
            "write": FixedWindow(*self.config.write_limit),
        }

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + API_PREFIX

    async def start(self) -> None:
        # Slow handlers (fault injection) must not hold up a stop for long.
        self._runner = web.AppRunner(
            make_app(self.state), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
