"""Crash points for the crash tests: with XQUIK_FAILPOINT=NAME in its environment, the process
kills itself with SIGKILL the first time it reaches `failpoint(NAME)`. A real kill -9, at an
exact place a test cannot otherwise reach (between a write and its fsync, between an fsync and
the ack). Unset, as always outside the tests, it costs one comparison."""

from __future__ import annotations

import os
import signal

_ARMED = os.environ.get("XQUIK_FAILPOINT") or None


def failpoint(name: str) -> None:
    if name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)


def armed(name: str) -> bool:
    """Whether `failpoint(name)` would kill: for a place that must first do half its work."""
    return name == _ARMED


__all__ = ["armed", "failpoint"]
