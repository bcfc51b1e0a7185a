"""Shared fixtures: an in-process sandbox on loopback, settings for runs against it, a fake
clock for the budget, and helpers that start real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import worker
from tests.fakes import FakeClock
from worker.logs import configure
from worker.sandbox import FaultConfig, Sandbox, SandboxConfig
from worker.settings import Intervals

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _json_logs() -> Iterator[None]:
    configure("json")
    yield
    structlog.contextvars.clear_contextvars()


SandboxFactory = Callable[..., Any]


@pytest.fixture
async def sandbox_factory() -> AsyncIterator[SandboxFactory]:
    """Start sandboxes with any config; all are stopped at the end of the test."""
    started: list[Sandbox] = []

    async def start(**kwargs: Any) -> Sandbox:
        faults = kwargs.pop("faults", None)
        store = kwargs.pop("store", None)
        config = SandboxConfig(faults=FaultConfig(**faults) if faults else FaultConfig(), **kwargs)
        sandbox = Sandbox(config, store=store)
        await sandbox.start()
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        await sandbox.stop()


@pytest.fixture
async def sandbox(sandbox_factory: SandboxFactory) -> Sandbox:
    """The default sandbox: 50 accounts, deletes unlimited so tests are not rate-bound."""
    return await sandbox_factory(delete_limit=(None, 60.0), read_limit=(None, 1.0))  # type: ignore[no-any-return]


# Timers shortened so that no test waits a fixed time for one (retries back off in ms).
FAST = Intervals(key_poll=0.05, progress=0.05, textfile=0.05, backoff_base=0.01, backoff_cap=0.05)


def options_for(sandbox: Sandbox, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Keywords of `worker.run` for a run against `sandbox`, results and state in tmp_path:
    no limit of our own (the sandbox's decides), short timeouts and retries."""
    options: dict[str, Any] = {
        "results": tmp_path / "results.jsonl",
        "base_url": sandbox.base_url,
        "api_key": sandbox.api_key,
        "rate": "unlimited",
        "read_rate": "unlimited",
        "concurrency": 4,
        "max_attempts": 5,
        "timeout": 5.0,
        "max_cooldown": 30.0,
        "grace": 5.0,
        "state_dir": tmp_path / "state",
        "progress": False,
        "intervals": FAST,
    }
    options.update(overrides)
    return options


async def run_against(
    sandbox: Sandbox, source: Path | str, tmp_path: Path, **overrides: Any
) -> worker.Summary:
    """`worker.run_async(source)` against `sandbox` (see `options_for`)."""
    return await worker.run_async(source, **options_for(sandbox, tmp_path, **overrides))


def done_line(account_id: str, api_key: str, base_url: str, **fields: Any) -> str:
    """A result-log line that says `account_id` was disconnected by an earlier run with this
    key against this API (the stamp a rerun needs to count it as done)."""
    import hashlib

    from worker.api.urls import origin_of

    record = {
        "ts": "2026-11-28T00:00:00.000Z",
        "run_id": "earlier",
        "source": "x",
        "account_id": account_id,
        "op": "disconnect",
        "outcome": "disconnected",
        "http_status": 200,
        "key_id": hashlib.sha256(api_key.encode()).hexdigest()[:12],
        "origin": origin_of(base_url),
        **fields,
    }
    return json.dumps(record) + "\n"


def write_jobs(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XQUIK_")}
    env.update(extra)
    return env


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        cwd=cwd or ROOT,
        timeout=timeout,
        input=stdin,
        check=False,
    )


def run_argv(source: str | Path, sb: SandboxProcess, *args: str) -> list[str]:
    """`python -m worker run SOURCE` against a sandbox process, plus `args`."""
    return [sys.executable, "-m", "worker", "run", str(source), "--base-url", sb.base_url, *args]


class SandboxProcess:
    """`xquik-disconnect sandbox` as a real process."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "sandbox", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        self.base_url: str = ready["base_url"]
        self.api_key: str = ready["api_key"]
        self.url = self.base_url.removesuffix("/api/v1")

    def stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/_sandbox/stats", timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def requests(self) -> list[tuple[str, str, int, float]]:
        """Every request the sandbox answered: (method, raw path, status, monotonic time)."""
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/_sandbox/requests", timeout=10) as resp:
            return [(m, p, s, t) for m, p, s, t in json.loads(resp.read())]

    def get(self, path: str) -> Any:
        """GET an API path with the sandbox's key, e.g. "/x/accounts"."""
        import urllib.request

        request = urllib.request.Request(self.base_url + path, headers={"x-api-key": self.api_key})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=10)


@pytest.fixture
def sandbox_process() -> Iterator[Callable[..., SandboxProcess]]:
    procs: list[SandboxProcess] = []

    def start(*args: str) -> SandboxProcess:
        proc = SandboxProcess(*args)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A fresh redis-server on a free loopback port, persistence off."""
    from tests.redis_server import RedisServer

    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    yield server
    server.stop()
