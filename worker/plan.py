"""`xquik-disconnect plan`: list connected accounts, select some, write them as jobs.

Filters combine (all must match). Without any filter it refuses: disconnecting every account
must be asked for with --all. Handles in --usernames that match no account are reported on
stderr and make the exit code 1."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from worker.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Filters:
    usernames: frozenset[str] | None = None  # lower case, without @
    health: frozenset[str] | None = None
    status: frozenset[str] | None = None
    created_before: datetime | None = None
    everything: bool = False

    def empty(self) -> bool:
        return (self.usernames, self.health, self.status, self.created_before) == (None,) * 4

    def match(self, account: dict[str, Any]) -> bool:
        if self.usernames is not None and _name(account) not in self.usernames:
            return False
        if self.health is not None and account.get("health") not in self.health:
            return False
        if self.status is not None and account.get("status") not in self.status:
            return False
        if self.created_before is not None:
            created = parse_when(str(account.get("createdAt", "")))
            if created is None or created >= self.created_before:
                return False
        return True


def _name(account: dict[str, Any]) -> str:
    return str(account.get("xUsername", "")).lower()


def parse_when(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def read_usernames(path: Path) -> frozenset[str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise ConfigError(f"--usernames {path}: {exc.strerror}") from exc
    names = set()
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            names.add(text.removeprefix("@").lower())
    return frozenset(names)


def select(
    accounts: list[dict[str, Any]], filters: Filters
) -> tuple[list[dict[str, Any]], list[str]]:
    """The accounts to disconnect, and the requested handles that matched no account."""
    chosen = [a for a in accounts if a.get("id") and filters.match(a)]
    missing: list[str] = []
    if filters.usernames is not None:
        known = {_name(a) for a in accounts}
        missing = sorted(filters.usernames - known)
    return chosen, missing


def monitors_by_account(
    accounts: list[dict[str, Any]], monitors: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Which monitors each account's disconnect would remove (X user id, else username)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for account in accounts:
        xid, name = str(account.get("xUserId") or ""), _name(account)
        out[str(account["id"])] = [
            m
            for m in monitors
            if (xid and str(m.get("xUserId") or "") == xid)
            or (name and str(m.get("username") or "").lower() == name)
        ]
    return out


def write_jobs(
    chosen: list[dict[str, Any]],
    out: TextIO,
    *,
    fmt: str,
    monitors: dict[str, list[dict[str, Any]]] | None,
) -> None:
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{len(chosen)} accounts to disconnect", title_justify="left")
        for column in ("account_id", "username", "health", "status", "created"):
            table.add_column(column)
        if monitors is not None:
            table.add_column("monitors that would go")
        for a in chosen:
            row = [
                str(a["id"]),
                "@" + str(a.get("xUsername", "")),
                str(a.get("health", "")),
                str(a.get("status", "")),
                str(a.get("createdAt", ""))[:10],
            ]
            if monitors is not None:
                row.append(", ".join(str(m["id"]) for m in monitors[str(a["id"])]) or "-")
            table.add_row(*row)
        Console(file=out, width=120).print(table)
        return
    for a in chosen:
        job: dict[str, Any] = {"account_id": str(a["id"]), "username": a.get("xUsername")}
        if monitors is not None:
            job["delete_monitors"] = True
            job["monitors"] = [str(m["id"]) for m in monitors[str(a["id"])]]
        out.write(json.dumps(job) + "\n")


def report_missing(missing: list[str]) -> None:
    for name in missing:
        print(
            f"xquik-disconnect plan: @{name}: no connected account has this username",
            file=sys.stderr,
        )
