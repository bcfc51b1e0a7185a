"""`xquik-disconnect sandbox`: serve the sandbox until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import signal

import anyio

from worker.cli.options import fail, is_loopback
from worker.errors import ExitCode
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
    key = os.environ.get("XQUIK_API_KEY", "").strip()
    return SandboxConfig(
        accounts=args.accounts,
        seed=args.seed,
        delete_limit=(args.delete_limit.limit, args.delete_limit.period),
        read_limit=(args.read_limit.limit, args.read_limit.period),
        faults=faults,
        keys={key} if key else set(),
        host=args.host,
        port=args.port,
    )


def serve(args: argparse.Namespace) -> int:
    if not is_loopback(args.host):
        return fail("sandbox", "--host must be a loopback address")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        return fail("sandbox", exc)
    anyio.run(_serve, config)
    return ExitCode.OK


async def _serve(config: SandboxConfig) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with Sandbox(config) as sandbox:
            # The sandbox key is a throwaway, printed so scripts and tests can use it.
            ready = {
                "event": "sandbox_ready",
                "base_url": sandbox.base_url,
                "api_key": sandbox.api_key,
                "accounts": config.accounts,
            }
            print(json.dumps(ready), flush=True)
            async for _ in signals:
                break
