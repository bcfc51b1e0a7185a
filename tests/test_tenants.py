"""The Tenants handler and the Ring scheduler of a run with several keys, in-process: round robin
among ready tenants, parked tenants skipped until their time, unknown tenants recorded, key
files read again carrying their account."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from worker.models import Job
from worker.run.ring import Ring
from worker.run.tenants import Tenants


class _Ops:
    key_id = None

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def handle(self, job: Job) -> list[Any]:
        self.log.append(self.name)
        return []

    def invalid(self, item: Any) -> Any: ...
    def duplicate(self, job: Job) -> Any: ...
    def internal_error(self, job: Job, name: str) -> Any: ...
    def failed(self, job: Job, error: str, http_status: int | None = None) -> Any: ...
    def rotate(self, api_key: str) -> None: ...
    def close(self) -> None: ...


def test_sends_go_round_robin_among_ready_tenants() -> None:
    """A tenant with 1,000 queued jobs does not starve one with 5: takes alternate; a parked
    tenant is skipped until its time and comes back first in its queue order."""
    log: list[str] = []
    tenants = Tenants(
        {"big": ("k1", None), "small": ("k2", None)},
        run_id="r",
        make_ops=lambda name, key, account: _Ops(name, log),
        on_all_rejected=lambda exc: None,
    )
    ring = Ring(tenants)
    for i in range(1000):
        ring.put(tenants.tenants["big"], Job("f", f"b{i}", tenant="big"), 0.0)
    for i in range(5):
        ring.put(tenants.tenants["small"], Job("f", f"s{i}", tenant="small"), 0.0)
    taken = [ring.take(0.0) for _ in range(10)]
    assert [j.tenant for j in taken if j] == ["big", "small"] * 5
    job = ring.take(0.0)
    assert job is not None
    ring.park(tenants.tenants["big"], job, until=5.0)
    assert ring.take(1.0) is None  # small is empty, big is parked
    assert ring.next_ready() == 5.0
    again = ring.take(5.0)
    assert again is job  # back at the head of its queue
    assert ring.queued == 1000 - 6


@pytest.mark.anyio
async def test_unknown_tenant_record_and_stamped_records() -> None:
    log: list[str] = []
    tenants = Tenants(
        {"a": ("k", None)},
        run_id="r",
        make_ops=lambda name, key, account: _Ops(name, log),
        on_all_rejected=lambda exc: None,
    )
    [record] = await tenants.handle(Job("f:1", "42", tenant="zz"))
    assert record.outcome == "invalid"
    assert record.error == "unknown tenant zz"
    assert record.tenant == "zz"  # the tenant the job named, not null
    assert await tenants.handle(Job("f:2", "42", tenant="a")) == []
    assert log == ["a"]
    await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_key_files_read_again_carry_their_account() -> None:
    """A tenant's Operations are built with the account its file names when its first job
    comes, also for a file that appeared or was renamed since the start; one that has sent
    already keeps its budget until the next run."""
    built: list[tuple[str, str, str | None]] = []

    def make(name: str, key: str, account: str | None) -> _Ops:
        built.append((name, key, account))
        return _Ops(name, [])

    tenants = Tenants(
        {"a": ("k1", None), "b": ("k2", None)},
        run_id="r",
        make_ops=make,
        on_all_rejected=lambda exc: None,
    )
    await tenants.handle(Job("f:1", "1", tenant="a"))
    tenants.update_keys({"a": ("k1", "acme"), "b": ("k2", "acme"), "c": ("k3", "acme")})
    await tenants.handle(Job("f:2", "2", tenant="a"))
    await tenants.handle(Job("f:3", "3", tenant="b"))
    await tenants.handle(Job("f:4", "4", tenant="c"))
    assert built == [("a", "k1", None), ("b", "k2", "acme"), ("c", "k3", "acme")]
