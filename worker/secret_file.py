"""Reading a small secret from a file (an API key, a Redis URL with its password): the one
helper every option that takes a secret file uses."""

from __future__ import annotations

import os
import stat
import sys

from worker.errors import ConfigError

SECRET_BYTES = 4096  # a key, a URL with a password: a secret file is read this far, no further


def read_secret(path: str | os.PathLike[str], where: str) -> str:
    """A small secret file (a key, a URL with a password), `-` for stdin: its text, stripped.
    A FIFO or a device is refused (a read could block for ever, or never end), and at most
    SECRET_BYTES are read however large the file. The message never echoes the path's content
    nor the path given to a key option (it may be the key itself, typed in the wrong place)."""
    try:
        if str(path) == "-":
            raw = sys.stdin.buffer.read(SECRET_BYTES)
        else:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ConfigError(f"{where}: not a regular file (a FIFO, device or socket)")
                raw = os.read(fd, SECRET_BYTES)
            finally:
                os.close(fd)
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a directory") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror})") from None
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not a text file") from None


__all__ = ["SECRET_BYTES", "read_secret"]
