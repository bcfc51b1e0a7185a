"""The result log, written: one JSON line per handled job, appended whole, fsynced at least
every second and at exit, locked for the whole run."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import Protocol

from worker.errors import ConfigError
from worker.failpoint import armed, failpoint
from worker.files import open_private
from worker.models import Result, encode
from worker.results.chain import after_torn, last_head, link


class ResultSink(Protocol):
    def write(self, result: Result) -> None:
        """Append one record; OSError when it could not be written (disk full, I/O error)."""

    def sync(self) -> None:
        """Make what was written durable; OSError when it could not."""

    def close(self) -> None: ...


class LogInUse(ConfigError):
    """Another run holds the result log."""


class FileSink:
    """Appends records with one write(2) each (O_APPEND), so a crash can tear at most the last
    line; fsyncs when asked (the runner's ticker) and on close.

    `open()` checks everything before the first request (ConfigError: exit 2): the log must be
    a regular file (created if missing) that we can write, must not be the jobs source, and no
    other run may hold it: an exclusive flock is held for the whole run, so two runs on one log
    can never both send the same jobs."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._dirty = False
        self._torn = _ends_torn(fd)  # a crashed run's last line: finish it before ours
        self._head = last_head(fd)  # the chain our first record follows

    @property
    def head(self) -> str:
        """The chain of the last record written (or found): what `report --check --head`
        confirms later."""
        return self._head

    @classmethod
    def open(cls, path: Path, *, source_stat: os.stat_result | None = None) -> FileSink:
        where = f"result log {path}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # 0600 (it names the users removed), and never through a planted symlink.
            fd = open_private(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK)
        except IsADirectoryError:
            raise ConfigError(f"{where} is a directory") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(f"{where} is a symbolic link: give the file itself") from None
            raise ConfigError(f"{where} cannot be opened for writing: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            kernel = path.resolve().parts[1:2] in (("proc",), ("sys",), ("dev",))
            if kernel or not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{where} is not a regular file (a device, FIFO or socket)")
            os.set_blocking(fd, True)
            if source_stat is not None and (info.st_dev, info.st_ino) == (
                source_stat.st_dev,
                source_stat.st_ino,
            ):
                raise ConfigError(
                    f"{where} is the jobs source itself: it would read its own records"
                )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(info)
                by = f"by pid {holder}" if holder else "by another run"
                raise LogInUse(
                    f"{where} is in use {by}: wait for it, or pass --wait-lock"
                ) from None
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    @classmethod
    async def open_waiting(
        cls, path: Path, *, source_stat: os.stat_result | None = None, poll: float = 0.2
    ) -> FileSink:
        """`--wait-lock`: like open(), but wait (cancellably) while another run holds it."""
        import anyio

        from worker.logs import get_logger

        told = False
        while True:
            try:
                return cls.open(path, source_stat=source_stat)
            except LogInUse as exc:
                if not told:
                    get_logger().info("waiting_for_lock", reason=str(exc))
                    told = True
            await anyio.sleep(poll)

    def _write_all(self, data: bytes) -> None:
        if armed("torn_write"):  # the crash tests: kill -9 with half a line written
            os.write(self._fd, data[: len(data) // 2])
            failpoint("torn_write")
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except OSError:
                # Part of the line may be on disk: the next record must start a line of its own.
                self._torn = self._torn or len(view) < len(data)
                raise
        self._dirty = True

    def write(self, result: Result) -> None:
        record = result.to_dict()
        if self._torn:  # a line of ours cut short: if only its newline is missing, it links
            self._head = after_torn(self._fd, self._head)
        chain = record["chain"] = link(self._head, record)
        line = (encode(record) + "\n").encode()
        if self._torn:
            line = b"\n" + line
        self._write_all(line)
        self._torn = False
        self._head = chain  # only once the whole line is written: a torn one is not linked

    def sync(self) -> None:
        """fsync if anything was written since the last one. Safe from a worker thread while
        the loop writes: the flag is cleared before the fsync, so a record written meanwhile
        leaves it set for the next one."""
        if self._dirty:
            self._dirty = False
            try:
                os.fsync(self._fd)
            except OSError:
                self._dirty = True
                raise

    def close(self) -> None:
        if self._fd >= 0:
            try:
                with contextlib.suppress(OSError):  # the runner has reported a failed sync
                    self.sync()
            finally:
                os.close(self._fd)  # also releases the lock
                self._fd = -1


def _ends_torn(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _lock_holder(info: os.stat_result) -> int | None:
    """The pid holding a flock on this file, from /proc/locks (Linux); None elsewhere."""
    inode = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == inode:
                    return int(fields[4])
    except (OSError, ValueError):
        return None
    return None
