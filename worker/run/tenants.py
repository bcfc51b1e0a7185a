"""Several API keys in one run or one queue (`--keys DIR`): a tenant per key.

Each tenant has its own `api.Session` (its key, its budgets, its directory), built the first
time one of its jobs comes; tenants of one Xquik account (`NAME@ACCOUNT`) share one budget.
`Tenants` is the runner's handler: each job goes to its tenant's Operations, and its records
carry the tenant's name (`ring.Ring` is the runner's scheduler across tenants).

A 401 stops only its tenant: its later jobs are recorded `failed: unauthenticated` without a
request (a rerun, or `dead requeue --error unauthenticated`, sends them once the key is fixed).
Only when every key is rejected does the run stop as a whole; it exits 3 when every key that
had jobs was rejected, else 1. A key file that
changes is read again (a rotated key needs no restart) and lifts its tenant's rejection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import anyio

from worker.api.call import Fatal
from worker.api.keys import tenant_keys
from worker.errors import AuthError, ConfigError
from worker.logs import get_logger
from worker.models import Invalid, Job, Result
from worker.run.claims import Claims
from worker.run.operations import invalid_record

log = get_logger()

# A tenant's key file: its key, and the Xquik account whose budget it shares (`NAME@ACCOUNT`;
# None: a budget of its own).
TenantKey = tuple[str, str | None]

DEFAULT = ""  # the tenant of jobs that name none: the default key (XQUIK_API_KEY)
REJECTED = "unauthenticated: the key was rejected earlier in this run (401); nothing sent"


class TenantOps(Protocol):
    """What a tenant needs of `worker.run.operations.Operations`."""

    @property
    def key_id(self) -> str | None: ...

    async def handle(self, job: Job) -> list[Result]: ...
    def invalid(self, item: Invalid) -> Result: ...
    def duplicate(self, job: Job) -> Result: ...
    def internal_error(self, job: Job, name: str) -> Result: ...
    def failed(self, job: Job, error: str, http_status: int | None = None) -> Result: ...
    def rotate(self, api_key: str) -> None: ...
    def close(self) -> None: ...


class Tenant:
    __slots__ = (
        "account", "in_ring", "key", "name", "ops", "parked_until", "queue", "rejected", "used",
    )  # fmt: skip

    def __init__(self, name: str, key: str | None, account: str | None = None) -> None:
        self.name = name
        self.key = key  # None: no such key (any more)
        self.account = account  # the budget's group; None: the key's own budget
        self.ops: TenantOps | None = None
        self.rejected = False
        self.used = False  # a job of it was handled: counts for "every key rejected"
        self.queue: deque[Job] = deque()
        self.in_ring = False
        self.parked_until = float("-inf")


class Tenants:
    """The runner's handler with several keys. `make_ops(name, key, account)` builds a
    tenant's Operations (its Session) the first time it is needed; `on_all_rejected` is called once
    every key in use has been rejected."""

    def __init__(
        self,
        keys: Mapping[str, TenantKey],
        *,
        run_id: str,
        make_ops: Callable[[str, str, str | None], TenantOps],
        on_all_rejected: Callable[[Fatal], None],
        claims: Claims | None = None,
    ) -> None:
        self.run_id = run_id
        self.claims = claims or Claims()
        self._make_ops = make_ops
        self._on_all_rejected = on_all_rejected
        self.tenants: dict[str, Tenant] = {
            name: Tenant(name, key, account) for name, (key, account) in keys.items()
        }

    # The keys --------------------------------------------------------------------------------
    def update_keys(self, keys: Mapping[str, TenantKey]) -> None:
        """The key files as read again: new tenants appear (in their account's budget), a
        changed key replaces the old one in its session (and lifts its rejection), a removed
        file ends its tenant. A tenant that has sent keeps its budget until the next run."""
        for name, (key, account) in keys.items():
            tenant = self.tenants.get(name)
            if tenant is None:
                self.tenants[name] = Tenant(name, key, account)
                log.info("tenant_added", tenant=name)
                continue
            if tenant.account != account:
                if tenant.ops is None:
                    tenant.account = account
                else:
                    log.warning("tenant_account_changed", tenant=name, applies="next run")
            if tenant.key != key:
                tenant.key = key
                tenant.rejected = False
                if tenant.ops is not None:
                    tenant.ops.rotate(key)
                log.info("tenant_key_changed", tenant=name)
        for name, tenant in self.tenants.items():
            if name != DEFAULT and name not in keys and tenant.key is not None:
                tenant.key = None
                log.warning("tenant_removed", tenant=name)

    async def watch(self, directory: Path, every: float) -> None:
        """Runs until cancelled: read the key files again every `every` seconds; a rotated key
        needs no restart. A directory caught half-updated (or broken) keeps the keys held."""
        while True:
            await anyio.sleep(every)
            try:
                keys = await anyio.to_thread.run_sync(tenant_keys, directory)
            except ConfigError as exc:
                log.warning("keys_unreadable", error=str(exc))
                continue
            self.update_keys(keys)

    def tenant(self, job: Job) -> Tenant | None:
        """The tenant of a job; None when it names no known key."""
        tenant = self.tenants.get(job.tenant or DEFAULT)
        return tenant if tenant is not None and tenant.key is not None else None

    def _ops(self, tenant: Tenant) -> TenantOps:
        if tenant.ops is None:
            assert tenant.key is not None
            tenant.ops = self._make_ops(tenant.name, tenant.key, tenant.account)
        return tenant.ops

    def fatal(self, name: str, exc: Fatal) -> None:
        """A tenant's key was rejected (or, for TLS, the API cannot be trusted at all)."""
        tenant = self.tenants[name]
        if not isinstance(exc, AuthError):
            self._on_all_rejected(exc)  # a certificate is not a key's problem: stop
            return
        if not tenant.rejected:
            tenant.rejected = True
            log.error("api_key_rejected", tenant=name or None, http_status=exc.status)
        if all(t.rejected for t in self.tenants.values() if t.key is not None):
            self._on_all_rejected(exc)  # no key left that could send: stop the run

    def every_used_key_rejected(self) -> bool:
        """At the end: every key that had jobs was rejected (the run's exit code is 3)."""
        used = [t for t in self.tenants.values() if t.used]
        return bool(used) and all(t.rejected for t in used)

    # The handler -------------------------------------------------------------------------------
    async def handle(self, job: Job) -> list[Result]:
        tenant = self.tenant(job)
        if tenant is None:
            return [self.unknown(job)]
        tenant.used = True
        ops = self._ops(tenant)
        if tenant.rejected:
            return [ops.failed(job, REJECTED, http_status=401)]
        return await ops.handle(job)

    def unknown(self, job: Job) -> Result:
        name = job.tenant or DEFAULT
        error = f"unknown tenant {name}" if name else "no tenant named, and no default key"
        invalid = Invalid(job.source, error, job.job_id, account_id=job.account_id, tenant=name)
        return self.invalid(invalid)

    def invalid(self, item: Invalid) -> Result:
        return invalid_record(item, run_id=self.run_id)

    def duplicate(self, job: Job) -> Result:
        tenant = self.tenant(job)
        if tenant is None:
            return self.unknown(job)
        return self._ops(tenant).duplicate(job)

    def internal_error(self, job: Job, name: str) -> Result:
        tenant = self.tenant(job)
        if tenant is None:
            return self.unknown(job)
        return self._ops(tenant).internal_error(job, name)

    def close(self) -> None:
        for tenant in self.tenants.values():
            if tenant.ops is not None:
                tenant.ops.close()


__all__ = ["DEFAULT", "REJECTED", "Tenant", "TenantKey", "TenantOps", "Tenants"]
