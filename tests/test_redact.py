"""Secrets masked in every text the worker writes, with thousands of keys registered."""

from __future__ import annotations

import re
import secrets

from worker.redact import MASK, redact, register


def test_every_one_of_a_thousand_keys_is_masked_and_the_pattern_is_built_once() -> None:
    """--keys with 1,000 tenants registers 1,000 keys at start: each is masked (with or
    without its xq_ prefix, any case) and the alternation is compiled once, when next needed,
    not once per key (that was quadratic: 10 s and 500 MB of cached patterns)."""
    keys = [f"xq_{secrets.token_hex(16)}" for _ in range(1000)]
    before = len(re._cache)  # type: ignore[attr-defined]
    for key in keys:
        register(key)
    text = f"first {keys[0]} last {keys[-1][3:].upper()} middle {keys[500]}"
    masked = redact(text)
    assert keys[0] not in masked
    assert keys[-1][3:].upper() not in masked
    assert keys[500] not in masked
    assert masked.count(MASK) == 3
    assert len(re._cache) <= before + 2  # type: ignore[attr-defined]
    assert redact("nothing secret here") == "nothing secret here"


def test_a_url_password_is_masked() -> None:
    assert redact("redis://:hunter2pass@redis:6379/0") == "redis://***@redis:6379/0"
