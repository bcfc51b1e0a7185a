"""The worker as a library: its public members, a run from Python that ends as the command
line's would, options checked before anything is sent, and imports that stay light."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import worker
from tests.conftest import ROOT, SandboxProcess, cli_env, run_argv, write_jobs
from worker.cli import COMMANDS, build_parser
from worker.cli.run import NOT_OPTIONS
from worker.run.options import RunOptions

HEAVY = ("aiohttp", "anyio", "redis", "rich", "pygments", "structlog", "prometheus_client")


def test_the_public_members() -> None:
    """What `import worker` offers is exactly this (a change to it is a change of the API)."""
    assert sorted(worker.__all__) == [
        "ConfigError",
        "ExitCode",
        "OptionError",
        "Stop",
        "Summary",
        "__version__",
        "run",
        "run_async",
    ]
    for name in worker.__all__:
        assert getattr(worker, name) is not None
    assert callable(worker.run)
    assert callable(worker.run_async)
    assert issubclass(worker.OptionError, worker.ConfigError)


def test_every_run_option_is_a_keyword_and_every_keyword_an_option() -> None:
    """The keywords of `worker.run` are `run`'s long options with `_` for `-` (its shortcuts
    -q and -v aside), plus what only Python can pass: the key itself, the timers."""
    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr,index]
    flags = {
        action.dest
        for action in run._actions
        if action.option_strings and action.dest not in NOT_OPTIONS | {"help"}
    }
    assert "source" not in flags
    keywords = set(RunOptions.__annotations__)
    assert keywords - flags == {"api_key", "intervals"}
    assert flags - keywords == set()
    for action in run._actions:
        if action.dest in keywords:
            assert "--" + action.dest.replace("_", "-") in action.option_strings


def modules_after(code: str) -> list[str]:
    """The heavy modules loaded by `code` in a fresh interpreter."""
    probe = f"""
import contextlib, io, sys
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    {code}
print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=cli_env()
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().replace("'", '"'))  # type: ignore[no-any-return]


def test_importing_the_package_loads_no_network_redis_or_terminal_library() -> None:
    assert modules_after("import worker") == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--version"],
        ["--help"],
        *([command, "--help"] for command in COMMANDS),
        ["queue", "status", "--help"],
        ["dead", "list", "--help"],
    ],
)
def test_help_and_version_load_nothing_heavy(argv: list[str]) -> None:
    """`--version` and every command's `--help` load neither aiohttp, anyio, redis, rich,
    pygments nor even structlog: they start as fast as argparse does."""
    assert modules_after(f"from worker.cli import main; main({argv!r})") == []


def run_summary(stderr: str) -> dict[str, object]:
    event: dict[str, object]
    [event] = [
        json.loads(line)
        for line in stderr.splitlines()
        if line.startswith("{") and '"run_summary"' in line
    ]
    return event


def test_a_run_from_python_ends_as_the_command_lines(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """`worker.run(jobs, …)` disconnects a jobs file and returns the summary that the
    command line, run on the same jobs against an identical sandbox, prints and exits with."""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "2", "999", "bad id!", "@user3"])
    ours, theirs = sandbox_process(), sandbox_process()
    summary = worker.run(
        jobs,
        base_url=ours.base_url,
        api_key=ours.api_key,
        results=tmp_path / "py.jsonl",
        state_dir=tmp_path / "state-py",
        rate="unlimited",
        progress=False,
        log_format="json",
    )
    assert summary.outcomes == {"disconnected": 3, "already_gone": 1, "duplicate": 1, "invalid": 1}
    assert summary.exit_code == worker.ExitCode.FAILED  # the invalid line
    assert sorted(ours.stats()["deleted_accounts"]) == ["1", "2", "3"]
    argv = run_argv(jobs, theirs, "--results", str(tmp_path / "cli.jsonl"), "--rate", "unlimited")
    argv += ["--state-dir", str(tmp_path / "state-cli"), "--log-format", "json"]
    cli = subprocess.run(
        argv, capture_output=True, text=True, cwd=ROOT, env=cli_env(XQUIK_API_KEY=theirs.api_key)
    )
    event = run_summary(cli.stderr)
    assert cli.returncode == summary.exit_code
    mine = summary.as_event()
    for field in ("outcomes", "records", "requests", "not_connected_at_start", "exit_code"):
        assert event[field] == mine[field], field


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 100_000}, "concurrency"),
        ({"rate": "lots"}, "rate"),
        ({"relearn": "soon"}, "relearn"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"limit": True}, "limit"),
        ({"base_url": "http://example.com/api/v1"}, "base_url"),
        ({"delete_monitors": "some"}, "delete_monitors"),
        ({"notify": "http://example.com/hook"}, "notify"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_a_bad_option_raises_the_documented_error_and_sends_nothing(
    sandbox_process: Callable[..., SandboxProcess],
    tmp_path: Path,
    options: dict[str, object],
    option: str,
) -> None:
    sb = sandbox_process()
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    given: dict[str, object] = {"base_url": sb.base_url, "api_key": sb.api_key, **options}
    with pytest.raises(worker.OptionError) as caught:
        worker.run(jobs, results=tmp_path / "r.jsonl", **given)  # type: ignore[arg-type]
    assert caught.value.option == option
    assert sb.requests() == []
    assert not (tmp_path / "r.jsonl").exists()


def test_no_key_is_an_option_error_naming_the_key(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.txt", ["1"])
    with pytest.raises(worker.OptionError) as caught:
        worker.run(jobs, results=tmp_path / "r.jsonl")
    assert caught.value.option == "api_key"
    assert "XQUIK_API_KEY" in str(caught.value)


def test_the_command_line_is_a_thin_client() -> None:
    """`cli/run.py` only turns flags into keywords and a summary into an exit code."""
    source = (ROOT / "worker" / "cli" / "run.py").read_text()
    assert len(source.splitlines()) < 150
    assert "import worker" in source
    namespace = argparse.Namespace(command="run", source="x", rate=None, fresh=False, quiet=True)
    from worker.cli.run import options

    assert options(namespace) == {"log_level": "warning"}
