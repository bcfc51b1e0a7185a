"""Several API keys in one run or one queue (`--keys DIR`): a tenant per key.

Each tenant has its own `api.Session` (its key, its budgets, its directory), built the first
time one of its jobs comes; tenants of one Xquik account (`NAME@ACCOUNT`) share one budget.
`Tenants` is the runner's handler: each job goes to its tenant's Operations, and its records
carry the tenant's name. `Ring` is the runner's scheduler: jobs wait in per-tenant queues, and
workers take them round robin from the tenants whose budget can send now; a tenant whose
budget cannot (a full window, a cooldown) is parked until it can, holding no worker.

A 401 stops only its tenant: its later jobs are recorded `failed: unauthenticated` without a
request (a rerun, or `dead requeue --error unauthenticated`, sends them once the key is fixed).
Only when every key is rejected does the run stop as a whole; it exits 3 when every key that
had jobs was rejected, else 1. A key file that
changes is read again (a rotated key needs no restart) and lifts its tenant's rejection.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from typing import Protocol

from worker.api.call import Fatal
from worker.errors import AuthError
from worker.logs import get_logger
from worker.models import Invalid, Job, Result
from worker.operations import invalid_record
from worker.seen import Claims

log = get_logger()

# A tenant's key file: its key, and the Xquik account whose budget it shares (`NAME@ACCOUNT`;
# None: a budget of its own).
TenantKey = tuple[str, str | None]

DEFAULT = ""  # the tenant of jobs that name none: the default key (XQUIK_API_KEY)
REJECTED = "unauthenticated: the key was rejected earlier in this run (401); nothing sent"


class TenantOps(Protocol):
    """What a tenant needs of `worker.operations.Operations`."""

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
        return self.invalid(Invalid(job.source, error, job.job_id, account_id=job.account_id))

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


class Ring:
    """Per-tenant queues served round robin; a parked tenant is skipped until its time."""

    def __init__(self, tenants: Tenants) -> None:
        self.tenants = tenants
        self.queued = 0
        self._ring: deque[Tenant] = deque()
        self._parked: list[tuple[float, int, Tenant]] = []
        self._seq = itertools.count()

    def put(self, tenant: Tenant, job: Job, now: float) -> None:
        tenant.queue.append(job)
        self.queued += 1
        if not tenant.in_ring and tenant.parked_until <= now:
            self._ring.append(tenant)
            tenant.in_ring = True

    def take(self, now: float) -> Job | None:
        """The next job of the next tenant that may send now, round robin; None if none."""
        while self._parked and self._parked[0][0] <= now:
            _, _, tenant = heapq.heappop(self._parked)
            if tenant.parked_until <= now and tenant.queue and not tenant.in_ring:
                self._ring.append(tenant)
                tenant.in_ring = True
        while self._ring:
            tenant = self._ring.popleft()
            tenant.in_ring = False
            if tenant.parked_until > now or not tenant.queue:
                continue
            job = tenant.queue.popleft()
            self.queued -= 1
            if tenant.queue:
                self._ring.append(tenant)
                tenant.in_ring = True
            return job
        return None

    def park(self, tenant: Tenant, job: Job, until: float) -> None:
        """The job found no slot: back at the head of its tenant's queue, and the tenant out
        of the rotation until `until`."""
        tenant.queue.appendleft(job)
        self.queued += 1
        if until > tenant.parked_until:
            tenant.parked_until = until
            heapq.heappush(self._parked, (until, next(self._seq), tenant))

    def ready(self) -> int:
        """Tenants in the rotation (at most: one parked while in it leaves when its turn
        comes)."""
        return len(self._ring)

    def parked(self) -> int:
        """Tenants waiting for their budget, about (a tenant parked again before its time
        counts twice until then; one whose queue emptied, until it is due)."""
        return len(self._parked)

    def next_ready(self) -> float | None:
        """When the earliest parked tenant may send again (None: none is parked)."""
        while self._parked and not self._parked[0][2].queue:
            heapq.heappop(self._parked)
        return self._parked[0][0] if self._parked else None

    def drain(self) -> list[Job]:
        """Every job still queued (the run is stopping: they get no record)."""
        jobs = [job for tenant in self.tenants.tenants.values() for job in tenant.queue]
        for tenant in self.tenants.tenants.values():
            tenant.queue.clear()
        self.queued = 0
        return jobs


__all__ = ["DEFAULT", "REJECTED", "Ring", "Tenant", "TenantKey", "TenantOps", "Tenants"]
