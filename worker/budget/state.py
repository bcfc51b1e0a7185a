"""The budget's held slots, cooldown and learned limit on disk, shared by every run on this
machine that uses the same key: a restarted or back-to-back run cannot burst past the server's
window, and neither can two runs at once (a manual run beside a cron run).

One file per (API key, base URL, tier), a log of JSON lines, each a change: slots held until a
wall-clock time (`slots`), slots given back (`drop`), the cooldown, the learned limit. Each
decision takes the lock, reads what other runs appended since it last looked, decides and
appends its own change: O(1) per send however many slots are held (rewriting the whole state
after every send made a large finite rate quadratic). When the log has grown to several times
the state it describes, it is rewritten as one line (a new file, renamed over the old: readers
notice the new inode and read it whole). Every change is written before the request is sent,
so a crash loses nothing a restart needs."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.errors import ConfigError
from worker.files import check_private_dir, open_private, write_atomically
from worker.logs import get_logger

if TYPE_CHECKING:
    from worker.budget.local import LocalBudget

log = get_logger()

COMPACT_BYTES = 64 * 1024  # never rewrite a log smaller than this
_WRITABLE: set[Path] = set()  # state directories this process has written a file in


def default_state_dir() -> Path:
    import platformdirs  # only when a budget is persisted

    return Path(platformdirs.user_cache_dir("xquik-disconnect"))


class StateFile:
    __slots__ = (
        "_cooldown",
        "_failed",
        "_fd",
        "_learned_at",
        "_lock_fd",
        "_pos",
        "_tail_ok",
        "path",
    )

    def __init__(self, directory: Path, fingerprint: str, tier: str) -> None:
        self.path = directory / f"budget-{fingerprint}-{tier}.json"
        self._failed = False
        self._fd = -1
        self._pos = 0
        self._tail_ok = True  # the log ends with a newline (a crash mid-write may leave none)
        self._cooldown: float | None = None  # the last cooldown and finding we wrote
        self._learned_at: float | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            if directory not in _WRITABLE:  # once per directory (1,000 keys: 1,000 budgets)
                # Ours, and nobody else's to plant a file in; writable (a probe with a name
                # nobody can guess: a planted `.probe-<pid>` link truncated its target).
                check_private_dir(directory, "--state-dir")
                fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe-")
                os.close(fd)
                os.unlink(probe)
                _WRITABLE.add(directory)
            lock = directory / f"budget-{fingerprint}-{tier}.lock"
            self._lock_fd = open_private(lock, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise ConfigError(
                f"--state-dir {directory}: cannot keep the budget's state there "
                f"({exc.strerror}); fix it, or pass --state-dir none to run without it"
            ) from None

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1

    def _open(self) -> int:
        """The size of the current log, open at our position; -1 if there is none yet. One
        fstat when nothing changed: a log another run rewrote (renamed over ours) or removed
        has no link left, and the path is opened again, read from its start."""
        if self._fd >= 0:
            st = os.fstat(self._fd)
            if st.st_nlink > 0:
                return st.st_size
            self._forget()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW)
        except FileNotFoundError:
            return -1
        return os.fstat(self._fd).st_size

    def _forget(self) -> None:
        """Close the log: the next look reads it from its start."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._pos, self._tail_ok = 0, True

    def _read_into(self, budget: LocalBudget) -> None:
        """What was appended since we last looked, into `budget`."""
        size = self._open()
        if size <= self._pos:
            return
        data = os.pread(self._fd, size - self._pos, self._pos)
        self._pos = size
        self._tail_ok = data.endswith(b"\n")
        for line in data.split(b"\n"):
            if line.strip():
                _apply(line, budget)

    def _append(self, budget: LocalBudget) -> None:
        held, dropped = budget.changes()
        change: dict[str, Any] = {}
        if held:
            change["slots"] = [[s, round(u, 4), 1] if a else [s, round(u, 4)] for s, u, a in held]
        if dropped:
            change["drop"] = dropped
        cooldown = budget.cooldown_wall()
        if cooldown is not None and cooldown != self._cooldown:
            change["cooldown_until"] = round(cooldown, 4)
            self._cooldown = cooldown
        learned = budget.learner.learned if budget.learner is not None else None
        if learned is not None and learned.at != self._learned_at:
            change["learned"] = {"limit": learned.limit, "at": learned.at, "cap": learned.cap}
            self._learned_at = learned.at
        if not change:
            return
        if (
            self._fd >= 0
            and self._pos > COMPACT_BYTES
            and self._pos > 8 * 64 * (budget.sends_in_span() + 4)
        ):
            self._rewrite(budget)
            return
        line = json.dumps(change, separators=(",", ":")).encode() + b"\n"
        if not self._tail_ok:
            line = b"\n" + line  # end a line torn by a crash; it is skipped as unreadable
        if self._fd < 0:
            self._fd = open_private(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        os.write(self._fd, line)
        self._pos += len(line)
        self._tail_ok = True

    def _rewrite(self, budget: LocalBudget) -> None:
        """The whole state as one line, in a new file renamed over the log."""
        learned = budget.learner.learned if budget.learner is not None else None
        state: dict[str, Any] = {
            "slots": [
                [s, round(u, 4), 1] if a else [s, round(u, 4)] for s, u, a in budget.entries()
            ],
            "cooldown_until": budget.cooldown_wall(),
        }
        if learned is not None:
            state["learned"] = {"limit": learned.limit, "at": learned.at, "cap": learned.cap}
        write_atomically(self.path, json.dumps(state, separators=(",", ":")).encode() + b"\n")
        self._pos = max(self._open(), 0)

    def rewrite(self, budget: LocalBudget) -> None:
        """The whole state as `budget` holds it now (every run's, read first), under the lock:
        what the budget forgot (a learned limit) is gone from the file too."""
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            learner = budget.learner
            keep = learner.learned if learner is not None else None
            self._forget()
            self._read_into(budget)  # every run's slots and cooldown (and the old finding)
            if learner is not None:
                learner.learned = keep  # the budget's finding wins over the file's
            self._rewrite(budget)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def load_into(self, budget: LocalBudget) -> int:
        """Restore the held slots into `budget` (the whole log, read from its start);
        returns how many are still held."""
        self._forget()
        with self.exchange(budget, write=False):
            pass
        return budget.sends_in_span()

    @contextmanager
    def exchange(self, budget: LocalBudget, *, write: bool = True) -> Iterator[None]:
        """Under the lock: every run's changes into `budget`, then (after the caller decided)
        `budget`'s own out. A state dir that fails mid-run (disk full) is logged once; the
        in-memory budget still holds for this run."""
        if self._failed or self._lock_fd < 0:
            yield
            return
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError:
            yield
            return
        try:
            with suppress(OSError):  # an unreadable state file is no worse than none
                self._read_into(budget)
            yield
            if write:
                try:
                    self._append(budget)
                except OSError as exc:
                    self._failed = True
                    log.warning("state_file_unavailable", file=str(self.path), error=exc.strerror)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


def _apply(line: bytes, budget: LocalBudget) -> None:
    """One line of the log into `budget`; an unreadable line (a torn write, another format) is
    skipped: it is no worse than no state."""
    from worker.budget.local import Learned

    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            return
        _limits(data.get("learned"))
        slots: list[tuple[str, float, bool]] = []
        if "sends" in data:  # 0.1's file: send times, each held for a span after it
            slots = [
                (f"legacy.{i}", float(t) + budget.span, False) for i, t in enumerate(data["sends"])
            ]
        for entry in data.get("slots", ()):
            slots.append((str(entry[0]), float(entry[1]), len(entry) > 2 and bool(entry[2])))
        dropped = [str(s) for s in data.get("drop", ())]
        until = data.get("cooldown_until")
        found = data.get("learned")
        learned = (
            Learned(
                int(found["limit"]),
                float(found["at"]),
                int(found["cap"] if "cap" in found else found["limit"]),
            )
            if isinstance(found, dict)
            else None
        )
        budget.merge(slots, dropped, float(until) if until is not None else None, learned)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError):
        return


def _limits(found: object) -> None:
    """A learned limit that cannot be a count (1e999, Infinity): warn, then the line's
    parsing fails and it is skipped (exit 70 on every run, before)."""
    if isinstance(found, dict):
        for name in ("limit", "cap"):
            value = found.get(name)
            if isinstance(value, float) and not (1 <= value <= 1e9):
                log.warning("state_value_ignored", field=f"learned.{name}", value=str(value))
                raise ValueError(name)
