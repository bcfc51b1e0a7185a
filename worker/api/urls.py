"""The one network rule for URLs the worker sends secrets to (the API's base URL, a --notify
webhook): https, plain http only to a loopback host, no credentials in the URL."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "https://xquik.com/api/v1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """An http(s) URL with a host and a valid port; plain http only to loopback hosts.
    ValueError naming the URL otherwise."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has a port that is not a number within 0..65535") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(f"{url!r}: plain http:// is allowed only for loopback hosts; use https://")
    if parts.username or parts.password:
        raise ValueError("the base URL must not carry credentials")
    if port == 0:
        raise ValueError(f"{url!r}: port 0 cannot be reached")
    return url.rstrip("/")


def origin_of(url: str) -> str:
    """scheme://host[:port] of a URL: what a message or a record may say of it (never its
    userinfo, path or query)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


__all__ = ["DEFAULT_BASE_URL", "check_base_url", "is_loopback", "origin_of"]
