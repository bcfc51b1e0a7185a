"""Files the worker writes, in places other users may share (/tmp, a team directory, a mounted
volume): new files are created 0600 (a stricter umask is honoured), a symlink at the final
component is never followed (a planted link cannot make us append to, or truncate, its
victim), and a file written whole is written under an unguessable name in the same directory,
then renamed over the target (readers see the old file or the new one, never half)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from worker.errors import ConfigError

PRIVATE = 0o600


def open_private(path: Path, flags: int) -> int:
    """os.open with O_NOFOLLOW and mode 0600 for a file it creates. ELOOP (the final
    component is a symlink) is an OSError like any other for the caller to report."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE)


def write_atomically(path: Path, data: bytes) -> None:
    """`data` as the whole of `path`: written to a new file with a random name beside it
    (0600), fsynced, then renamed over `path` (which, if a symlink, is replaced, not
    followed)."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise


def check_private_dir(directory: Path, what: str) -> None:
    """A directory we keep state in must be ours (or root's) and not writable by others,
    unless it has the sticky bit (/tmp): else another user could plant or swap our files.
    ConfigError naming `what` and the directory."""
    info = directory.stat()
    owner_ok = info.st_uid in (os.geteuid(), 0)
    others_write = bool(info.st_mode & stat.S_IWOTH)
    sticky = bool(info.st_mode & stat.S_ISVTX)
    if not owner_ok:
        raise ConfigError(
            f"{what} {directory}: owned by another user (uid {info.st_uid}); use a directory "
            "of your own"
        )
    if others_write and not sticky:
        raise ConfigError(
            f"{what} {directory}: writable by other users and not sticky; chmod go-w it, or "
            "use a directory of your own"
        )


__all__ = ["PRIVATE", "check_private_dir", "open_private", "write_atomically"]
