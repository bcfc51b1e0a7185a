"""The budget's recent send times on disk, shared by every run on this machine that uses the
same key: a restarted or back-to-back run cannot burst past the server's window, and neither
can two runs at once (a manual run beside a cron run). A small JSON file per (API key, base
URL, tier); each decision reads it, decides and writes it back under an exclusive lock."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from worker.errors import ConfigError
from worker.logs import get_logger

if TYPE_CHECKING:
    from worker.budget.window import SlidingWindowBudget

log = get_logger()


def default_state_dir() -> Path:
    import platformdirs  # only when a budget is persisted

    return Path(platformdirs.user_cache_dir("xquik-disconnect"))


class StateFile:
    __slots__ = ("_failed", "_lock_fd", "path")

    def __init__(self, directory: Path, fingerprint: str, tier: str) -> None:
        self.path = directory / f"budget-{fingerprint}-{tier}.json"
        self._failed = False
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(
                directory / f"budget-{fingerprint}-{tier}.lock", os.O_RDWR | os.O_CREAT, 0o600
            )
            probe = directory / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"--state-dir {directory}: cannot keep the budget's state there "
                f"({exc.strerror}); fix it, or pass --state-dir none to run without it"
            ) from None

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _read(self, span: float) -> tuple[list[tuple[str, float]], float | None]:
        """Every run's held slots (id, until) and the cooldown, in wall-clock seconds."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if "slots" in data:
                slots = [(str(s), float(u)) for s, u in data["slots"]]
            else:  # 0.1's file: send times, each held for a span after it
                slots = [(f"legacy.{i}", float(t) + span) for i, t in enumerate(data["sends"])]
            until = data.get("cooldown_until")
            return slots, float(until) if until is not None else None
        except FileNotFoundError:
            return [], None
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            return [], None  # an unreadable state file is no worse than none

    def _write(self, budget: SlidingWindowBudget) -> None:
        slots, cooldown = budget.snapshot()
        data = json.dumps(
            {"slots": [[s, round(u, 4)] for s, u in slots], "cooldown_until": cooldown}
        )
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, self.path)

    def load_into(self, budget: SlidingWindowBudget) -> int:
        """Restore the recent sends into `budget`; returns how many are still in its window."""
        with self.exchange(budget, write=False):
            pass
        return budget.sends_in_span()

    @contextmanager
    def exchange(self, budget: SlidingWindowBudget, *, write: bool = True) -> Iterator[None]:
        """Under the lock: every run's recent sends into `budget`, then (after the caller
        decided) `budget`'s back out. A state dir that fails mid-run (disk full) is logged
        once; the in-memory budget still holds for this run."""
        if self._failed or self._lock_fd < 0:
            yield
            return
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError:
            yield
            return
        try:
            slots, cooldown = self._read(budget.span)
            budget.restore(slots, cooldown)
            yield
            if write:
                try:
                    self._write(budget)
                except OSError as exc:
                    self._failed = True
                    log.warning("state_file_unavailable", file=str(self.path), error=exc.strerror)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
