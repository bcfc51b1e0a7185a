"""Keeps secrets out of every text the worker writes: logs, results, error messages; and
control characters out of the text it prints for a person (`printable`).

A registered key is masked in any case and with or without its `xq_` prefix; a URL's userinfo
(`redis://:password@host`, `https://user:pass@host`) is masked wherever a URL appears."""

from __future__ import annotations

import re

MASK = "[REDACTED]"
# The userinfo of a URL: everything up to the last `@` before the path, so a password that
# holds an `@` is masked whole, whatever its length.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s]*@")
# Anything shaped like an Xquik key is masked even before a key is registered (a key typed
# where an argument was expected must not come back in the error).
_KEY_SHAPE = re.compile(r"(?i)\bxq_[a-z0-9]{16,}")
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


_stale = False  # secrets were registered since the pattern was built


def register(secret: str) -> None:
    """Mask `secret` from now on. The pattern is built when next needed, not here: a run with
    thousands of keys (--keys) registers them all at once, and rebuilding an alternation of
    every key at each one was quadratic (10 s and 500 MB of cached patterns for 1,000)."""
    global _stale
    forms = {secret}
    if secret[:3].lower() == "xq_":
        forms.add(secret[3:])
    forms = {f for f in forms if len(f) >= 8}  # shorter strings would mask innocent text
    if forms <= _secrets:
        return
    _secrets.update(forms)
    _stale = True


def _current() -> re.Pattern[str] | None:
    global _pattern, _stale
    if _stale:
        alternatives = "|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True))
        # Compiled directly, never through re's cache (which would keep every version).
        _pattern = re.compile(alternatives, re.IGNORECASE)
        _stale = False
    return _pattern


def redact(text: str) -> str:
    pattern = _current()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "xq_" in text or "XQ_" in text:
        text = _KEY_SHAPE.sub(MASK, text)
    if "://" in text:
        text = _URL_USERINFO.sub(r"\1***@", text)
    return text


# Control characters (C0 but newline and tab, DEL, C1): a server's or a log's text printed for
# a person must not move the cursor, clear the screen or retitle the window.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with every control character but newline and tab shown as an escape (`\\x1b`)."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
