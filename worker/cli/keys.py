"""--keys DIR: one API key per file, the file name being the tenant name.

The shape of a Kubernetes Secret mounted as a volume: each key of the Secret is a file, and
the kubelet swaps them atomically through hidden `..data` links, so names starting with `.` are
skipped and symlinks are followed. A file `NAME@ACCOUNT` is tenant NAME, whose key belongs to
the Xquik account ACCOUNT: every tenant of one account shares one budget (the API's limits are
per account, not per key). A plain `NAME` has a budget of its own (keyed by its key's hash).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from worker.cli.config import check_key
from worker.errors import ConfigError
from worker.models import TENANT_PATTERN
from worker.redact import register

MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class KeyFile:
    tenant: str
    account: str | None  # the budget's group (`…@ACCOUNT`); None: a budget of its own
    key: str


def read_keys(directory: Path) -> dict[str, KeyFile]:
    """Every key in `directory`, by tenant. ConfigError names the file (never its content) for
    a name that is not a tenant name, a file that is not one key on one line, two files of one
    tenant, or a directory that cannot be read or holds no key."""
    try:
        entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise ConfigError(f"--keys {directory}: cannot read it ({exc.strerror})") from None
    keys: dict[str, KeyFile] = {}
    for path in entries[: MAX_KEYS + 1]:
        if path.is_dir():
            continue
        if not path.is_file():  # a FIFO would block the read for ever, a device is no key
            raise ConfigError(f"--keys: {path.name}: not a regular file")
        tenant, at, account = path.name.partition("@")
        if not TENANT_PATTERN.fullmatch(tenant) or (at and not TENANT_PATTERN.fullmatch(account)):
            raise ConfigError(
                f"--keys: {path.name!r} is not a tenant name (letters, digits, '.', '_', '-', "
                "up to 64, optionally @ACCOUNT)"
            )
        if tenant in keys:
            raise ConfigError(f"--keys: tenant {tenant!r} has two key files")
        where = f"--keys: {path.name}"
        try:
            raw = path.read_bytes()[:4096]
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read it ({exc.strerror})") from None
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: not a text file") from None
        key = check_key(text, where)
        register(key)
        keys[tenant] = KeyFile(tenant, account or None, key)
    if len(keys) > MAX_KEYS:
        raise ConfigError(f"--keys {directory}: more than {MAX_KEYS:,} keys")
    if not keys:
        raise ConfigError(f"--keys {directory}: no key file in it")
    return keys


def tenant_keys(directory: Path) -> dict[str, tuple[str, str | None]]:
    """`read_keys` as the runner takes them: tenant -> (key, account or None)."""
    return {tenant: (k.key, k.account) for tenant, k in read_keys(directory).items()}


__all__ = ["KeyFile", "read_keys", "tenant_keys"]
