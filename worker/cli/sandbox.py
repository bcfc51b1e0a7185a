"""`xquik-disconnect sandbox`: serve the sandbox until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path

import anyio

from worker.api.keys import read_key_file
from worker.api.urls import is_loopback
from worker.cli.say import fail
from worker.errors import ConfigError, ExitCode
from worker.files import write_atomically
from worker.sandbox import FaultConfig, Sandbox, SandboxConfig


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    faults = FaultConfig(
        fail_403=args.fail_403,
        fail_409=args.fail_409,
        fail_422=args.fail_422,
        fail_500=args.fail_500,
        fail_502=args.fail_502,
        fail_503=args.fail_503,
        html_502=args.html_502,
        reset=args.reset,
        slow=args.slow,
        lose=args.lose,
        slow_seconds=args.slow_seconds,
        seed=args.seed,
    )
    # Never the user's XQUIK_API_KEY: the sandbox makes its own throwaway key and prints only
    # that one; a key of the caller's choosing comes from a file and is never printed.
    key = read_key_file(args.api_key_file) if args.api_key_file else ""
    return SandboxConfig(
        accounts=args.accounts,
        seed=args.seed,
        delete_limit=(args.delete_limit.limit, args.delete_limit.period),
        read_limit=(args.read_limit.limit, args.read_limit.period),
        faults=faults,
        ingress_jitter_ms=args.ingress_jitter_ms,
        list_limit=args.list_limit,
        accounts_page_cap=args.accounts_page_cap,
        monitor_deletion_s=args.monitor_deletion_s,
        keys={key} if key else set(),
        tenants=args.tenants,
        tenant_accounts=args.tenant_accounts,
        host=args.host,
        port=args.port,
    )


def main(args: argparse.Namespace) -> int:
    if not is_loopback(args.host):
        return fail("sandbox", "--host must be a loopback address")
    try:
        config = config_from_args(args)
    except (ValueError, ConfigError) as exc:
        return fail("sandbox", exc)
    if args.keys_out and not config.tenants:
        return fail("sandbox", "--keys-out needs --tenants K")
    try:
        anyio.run(_serve, config, Path(args.keys_out) if args.keys_out else None)
    except OSError as exc:  # the port is taken, or not ours to bind
        return fail(
            "sandbox",
            f"--port {args.port} on {args.host}: {exc.strerror or exc} (--port 0 picks a free one)",
        )
    return ExitCode.OK


def write_keys(directory: Path, keys: dict[str, str]) -> None:
    """One file per tenant, named after it, holding its key (mode 0600): a --keys directory."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, key in keys.items():
        write_atomically(directory / name, (key + "\n").encode())


async def _serve(config: SandboxConfig, keys_out: Path | None = None) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with Sandbox(config) as sandbox:
            if keys_out is not None:
                write_keys(keys_out, sandbox.tenant_keys)
            # A key the sandbox made is a throwaway, printed so scripts and tests can use it;
            # one it was given is never printed.
            made = not config.keys
            ready = {
                "event": "sandbox_ready",
                "base_url": sandbox.base_url,
                "api_key": sandbox.api_key if made else None,
                "accounts": config.accounts,
                "tenants": config.tenants,
                "keys_out": str(keys_out) if keys_out is not None else None,
            }
            print(json.dumps(ready), flush=True)
            async for _ in signals:
                break
