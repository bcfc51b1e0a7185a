"""Every rule about API keys: what a key looks like, where one is read from (the environment, a
key file, a `--keys` directory), and the two names a key goes by in records and state files
(`key_id`, `fingerprint`), neither of which reveals it. Every key read is registered with
`redact`, so no output can carry it.

`--keys DIR` has the shape of a Kubernetes Secret mounted as a volume: each key of the Secret is
a file, and the kubelet swaps them atomically through hidden `..data` links, so names starting
with `.` are skipped and symlinks are followed. A file `NAME@ACCOUNT` is tenant NAME, whose key
belongs to the Xquik account ACCOUNT: every tenant of one account shares one budget (the API's
limits are per account, not per key). A plain `NAME` has a budget of its own (keyed by its
key's hash).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from worker.errors import ConfigError
from worker.models import TENANT_PATTERN
from worker.redact import register
from worker.secret_file import read_secret

MAX_KEYS = 100_000
_KEY = re.compile(r"[\x21-\x7e]{8,512}")  # printable ASCII, no spaces, one line


def key_id(api_key: str) -> str:
    """Which key did it, for the records: the first 12 hex digits of its SHA-256. Safe to
    show: it cannot be turned back into the key, and it is the same on every machine."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


def fingerprint(api_key: str, base_url: str) -> str:
    """Names the state of one key on one API without revealing the key."""
    return hashlib.sha256(f"{api_key}\0{base_url}".encode()).hexdigest()[:16]


def check_key(key: str, where: str) -> str:
    """One API key on one line; the message never shows the key or any part of it."""
    if not _KEY.fullmatch(key):
        raise ConfigError(
            f"{where}: expected one API key (xq_…) on one line, in printable ASCII without spaces"
        )
    return key


def read_key_file(path: str | os.PathLike[str], where: str = "--api-key-file") -> str:
    """The key in a file, or on stdin for `-`."""
    key = check_key(read_secret(path, where), where)
    register(key)
    return key


def api_key(
    *,
    given: str | None = None,
    key_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str],
) -> str | None:
    """The key: given directly (the Python API), else from `key_file`, else XQUIK_API_KEY;
    None when there is none. Checked and registered as a secret."""
    if given is not None:
        key = check_key(given.strip(), "api_key")
    elif key_file is not None:
        return read_key_file(key_file)
    else:
        key = env.get("XQUIK_API_KEY", "").strip()
        if not key:
            return None
        check_key(key, "XQUIK_API_KEY (environment)")
    register(key)
    return key


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
        tenant, at, account = path.name.partition("@")
        if not TENANT_PATTERN.fullmatch(tenant) or (at and not TENANT_PATTERN.fullmatch(account)):
            raise ConfigError(
                f"--keys: {path.name!r} is not a tenant name (letters, digits, '.', '_', '-', "
                "up to 64, optionally @ACCOUNT)"
            )
        if tenant in keys:
            raise ConfigError(f"--keys: tenant {tenant!r} has two key files")
        key = read_key_file(path, f"--keys: {path.name}")
        keys[tenant] = KeyFile(tenant, account or None, key)
    if len(keys) > MAX_KEYS:
        raise ConfigError(f"--keys {directory}: more than {MAX_KEYS:,} keys")
    if not keys:
        raise ConfigError(f"--keys {directory}: no key file in it")
    return keys


def tenant_keys(directory: Path) -> dict[str, tuple[str, str | None]]:
    """`read_keys` as the runner takes them: tenant -> (key, account or None)."""
    return {tenant: (k.key, k.account) for tenant, k in read_keys(directory).items()}


__all__ = [
    "KeyFile",
    "api_key",
    "check_key",
    "fingerprint",
    "key_id",
    "read_key_file",
    "read_keys",
    "tenant_keys",
]
