"""The runner's scheduler with several keys: jobs wait in per-tenant queues, and workers take
them round robin from the tenants whose budget can send now; a tenant whose budget cannot (a
full window, a cooldown) is parked until it can, holding no worker."""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from worker.models import Job
from worker.run.tenants import Tenant, Tenants


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


__all__ = ["Ring"]
