"""Keeps secrets out of every text the worker writes: logs, results, error messages."""

from __future__ import annotations

MASK = "[REDACTED]"
_secrets: set[str] = set()


def register(secret: str) -> None:
    if len(secret) >= 8:  # shorter strings would mask innocent text
        _secrets.add(secret)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
