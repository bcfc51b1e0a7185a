"""Values from text: seconds, durations, counts, ports. Pure functions raising ValueError with a
message that names the text; the command line adds the flag (or environment variable), the
Python API the keyword."""

from __future__ import annotations

import re

MAX_SECONDS = 10_000_000.0  # about 116 days: longer is a typo, and would overflow deadlines
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|min|h|d)?\s*")


def whole(text: str, *, least: int = 0, most: int | None = None) -> int:
    """A whole number from `least` up to `most`."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < least:
        raise ValueError(f"{text!r} must be {'0 or more' if least == 0 else f'at least {least}'}")
    if most is not None and value > most:
        raise ValueError(f"{text!r} must be at most {most:,}")
    return value


def replica_count(text: str) -> int:
    """--min-replicas: 0 (do not wait) up to 100 replicas."""
    return whole(text, least=0, most=100)


def seconds(text: str) -> float:
    """Seconds, 0 to MAX_SECONDS."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_SECONDS:
        raise ValueError(f"{text!r} must be between 0 and {MAX_SECONDS:g}")
    return value


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be more than 0")
    return value


def duration(text: str) -> float:
    """`24h`, `30m`, `90s`, `1d` or plain seconds; more than 0."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration, e.g. 24h, 30m, 90s")
    value = float(match[1]) * UNITS[match[2]]
    if not 0 < value <= MAX_SECONDS:
        raise ValueError(f"{text!r} must be more than 0 and at most 100d")
    return value


def retention(text: str) -> float | None:
    """A duration, or `forever` (None: never trim)."""
    if text.strip().lower() == "forever":
        return None
    return duration(text)


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"{text!r} is not within 0..65535")
    return value


def probability(text: str) -> float:
    value = seconds(text)
    if value > 1:
        raise ValueError(f"{text!r} is a probability: 0 to 1")
    return value


def chain_head(text: str) -> str:
    """A result log's chain head: 64 hex digits (any case)."""
    head = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", head):
        raise ValueError(f"{text[:80]!r} is not a chain head (64 hex digits, as a run reported)")
    return head


__all__ = [
    "MAX_SECONDS",
    "UNITS",
    "chain_head",
    "duration",
    "port",
    "positive_seconds",
    "probability",
    "retention",
    "seconds",
    "whole",
]
