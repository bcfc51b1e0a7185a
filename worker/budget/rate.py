"""A rate: N requests per period, fixed, learned under a ceiling (`auto`), or unlimited; and
the one parser of its text (`15/60s`, `60/1m`, `auto`, `auto:N/PERIOD`, `unlimited`)."""

from __future__ import annotations

import re
from typing import NamedTuple

from worker.values import MAX_SECONDS, UNITS

_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*")


class Rate(NamedTuple):
    """N requests per `period` seconds; `limit` None means unlimited. With `auto`, `limit` is
    the ceiling and the limit in force is learned from the server's 429s. (A named tuple, not
    a dataclass: `--help` must not pay for importing dataclasses.)"""

    limit: int | None
    period: float
    auto: bool = False

    def __str__(self) -> str:
        if self.limit is None:
            return "unlimited"
        fixed = f"{self.limit}/{self.period:g}s"
        return f"auto:{fixed}" if self.auto else fixed


AUTO_CEILING = Rate(60, 60.0, auto=True)  # the newest docs' limit; 15/60 keys learn theirs
UNLIMITED = Rate(None, 1.0)


def parse_rate(text: str, *, allow_auto: bool = False) -> Rate:
    """`15/60s`, `60/1m`, `200/1s`, `unlimited` (and `auto`, `auto:N/PERIOD` where learning is
    allowed); ValueError naming the text otherwise."""
    word = text.strip().lower()
    if word == "unlimited":
        return UNLIMITED
    if allow_auto and word == "auto":
        return AUTO_CEILING
    if allow_auto and word.startswith("auto:"):
        ceiling = parse_rate(text.strip()[5:])
        if ceiling.limit is None:
            raise ValueError(f"{text!r}: the ceiling of auto is N/PERIOD, e.g. auto:60/60s")
        return Rate(ceiling.limit, ceiling.period, auto=True)
    match = _RATE.fullmatch(text)
    if not match:
        also = ", unlimited, auto or auto:N/PERIOD" if allow_auto else " or unlimited"
        raise ValueError(f"{text!r} is not N/PERIOD, e.g. 15/60s, 60/1m, 200/1s{also}")
    count, amount, unit = match.groups()
    if not amount and unit is None:
        raise ValueError(f"{text!r} has no PERIOD, e.g. 15/60s")
    period = float(amount or 1) * UNITS[unit]
    if int(count) < 1 or not 0 < period <= MAX_SECONDS:
        raise ValueError(f"{text!r}: N must be at least 1 and PERIOD within 0..{MAX_SECONDS:g} s")
    return Rate(int(count), period)


__all__ = ["AUTO_CEILING", "UNLIMITED", "Rate", "parse_rate"]
