"""The command line: parses, validates, delegates, returns an exit code. Imports stay light so
`--version` and `--help` start fast; each command imports what it needs when it runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from worker import __version__

EXIT_USAGE = 2


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"XQUIK_{name}", default)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def rate(text: str) -> Any:
    from worker.settings import Rate

    try:
        return Rate.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def probability(text: str) -> float:
    value = seconds(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is a probability: 0 to 1")
    return value


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 2 with the flag named, as argparse does
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="jobs file (.jsonl, .csv, .txt), - for stdin, or redis://… (queue mode)",
    )
    p.add_argument(
        "--results",
        metavar="PATH",
        default=_env("RESULTS"),
        help="result log, appended (default: <jobs file>.results.jsonl, "
        "or results.jsonl for stdin)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="ignore earlier records; by default accounts already done are skipped",
    )
    p.add_argument(
        "--concurrency",
        type=positive_int,
        default=_env("CONCURRENCY", "4"),
        metavar="N",
        help="requests in flight at most (default 4)",
    )
    p.add_argument(
        "--rate",
        type=rate,
        default=_env("RATE", "15/60s"),
        metavar="N/PERIOD",
        help="DELETE budget for the key: 15/60s, 60/1m, 200/1s or unlimited (default 15/60s)",
    )
    p.add_argument(
        "--rate-margin",
        type=seconds,
        default=_env("RATE_MARGIN"),
        metavar="S",
        help="seconds added to each window for latency jitter "
        "(default: window/120, between 0.05 and 1)",
    )
    p.add_argument(
        "--max-cooldown",
        type=seconds,
        default=_env("MAX_COOLDOWN", "900"),
        metavar="S",
        help="cap on a single Retry-After wait (default 900)",
    )
    p.add_argument(
        "--state-dir",
        default=_env("STATE_DIR"),
        metavar="DIR",
        help="where the budget's recent send times persist (default: user cache dir)",
    )
    p.add_argument(
        "--grace",
        type=seconds,
        default=_env("GRACE", "30"),
        metavar="S",
        help="on SIGINT/SIGTERM, seconds given to in-flight requests (default 30)",
    )
    p.add_argument(
        "--delete-monitors",
        action="store_true",
        help="also delete the account monitors that track each disconnected user",
    )
    p.add_argument("--dry-run", action="store_true", help="GET each account instead of deleting it")
    p.add_argument("--limit", type=positive_int, metavar="N", help="handle at most N jobs")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on for a TTY)",
    )


def _api_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that talks to the API."""
    p.add_argument(
        "--base-url",
        default=_env("BASE_URL"),
        metavar="URL",
        help="API base URL (default https://xquik.com/api/v1; env XQUIK_BASE_URL)",
    )
    p.add_argument(
        "--api-key-file",
        default=_env("API_KEY_FILE"),
        metavar="PATH",
        help="file holding the API key (default: env XQUIK_API_KEY)",
    )
    p.add_argument(
        "--read-rate",
        type=rate,
        default=_env("READ_RATE", "60/1s"),
        metavar="N/PERIOD",
        help="budget for GETs (default 60/1s)",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=_env("TIMEOUT", "30"),
        metavar="S",
        help="per request (default 30)",
    )
    p.add_argument(
        "--max-attempts",
        type=positive_int,
        default=_env("MAX_ATTEMPTS", "5"),
        metavar="N",
        help="attempts per request, the first included (default 5)",
    )
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="run against the built-in sandbox API, in-process (no key needed)",
    )
    p.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=_env("LOG_FORMAT"),
        help="logs on stderr (default: console on a TTY, else json)",
    )


def _plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--usernames",
        metavar="FILE",
        help="handles to disconnect, one per line, @ optional, any case",
    )
    p.add_argument(
        "--health", metavar="LIST", help="comma-separated health states, e.g. needsReauth,suspended"
    )
    p.add_argument("--status", metavar="LIST", help="comma-separated statuses, e.g. active")
    p.add_argument("--created-before", metavar="DATE", help="connected before this ISO date")
    p.add_argument("--all", action="store_true", help="every connected account (explicitly)")
    p.add_argument(
        "--with-monitors",
        action="store_true",
        help="jobs also delete the account monitors tracking each user; lists them",
    )
    p.add_argument(
        "--format",
        choices=("jsonl", "table"),
        default="jsonl",
        help="jsonl jobs for `run -` (default), or a table for a person",
    )
    p.add_argument("--out", metavar="FILE", help="write the jobs here instead of stdout")


def _queue_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-port",
        type=int,
        default=_env("METRICS_PORT"),
        metavar="N",
        help="serve Prometheus metrics on /metrics and health on /healthz",
    )
    q = p.add_argument_group("queue mode (SOURCE is redis://HOST:PORT/DB or rediss://…)")
    q.add_argument(
        "--stream",
        default=_env("STREAM", "xquik:disconnect"),
        help="stream of jobs (default xquik:disconnect); results go to "
        "<stream>:results, dead letters to <stream>:dead",
    )
    q.add_argument(
        "--group",
        default=_env("GROUP", "xquik-disconnect"),
        help="consumer group, created if missing (default xquik-disconnect)",
    )
    q.add_argument(
        "--consumer", default=_env("CONSUMER"), help="consumer name (default: host name and pid)"
    )
    q.add_argument(
        "--claim-idle",
        type=seconds,
        default=_env("CLAIM_IDLE", "60"),
        metavar="S",
        help="take over messages another consumer left pending this long (default 60)",
    )
    q.add_argument(
        "--max-deliveries",
        type=positive_int,
        default=_env("MAX_DELIVERIES", "5"),
        metavar="N",
        help="dead-letter a message delivered more often (default 5)",
    )
    q.add_argument(
        "--drain",
        action="store_true",
        help="exit once the stream and this consumer's pending entries are empty",
    )


def _sandbox_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="0 picks a free port (default 8787)")
    p.add_argument(
        "--accounts",
        type=int,
        default=50,
        metavar="N",
        help="generated accounts, ids 1..N (default 50)",
    )
    p.add_argument("--seed", type=int, default=0, help="for accounts and faults (default 0)")
    p.add_argument("--delete-limit", type=rate, default="15/60s", metavar="N/PERIOD")
    p.add_argument("--read-limit", type=rate, default="60/1s", metavar="N/PERIOD")
    for name, help_text in (
        ("fail-500", "500 internal_error"),
        ("fail-502", "502 JSON"),
        ("fail-503", "503"),
        ("html-502", "502 with an HTML body"),
        ("reset", "connection reset, nothing done"),
        ("slow", "answer after --slow-seconds"),
        ("lose", "delete done, answer lost"),
    ):
        p.add_argument(
            f"--{name}",
            type=probability,
            default=0.0,
            metavar="P",
            help=f"probability of: {help_text}",
        )
    p.add_argument("--slow-seconds", type=seconds, default=2.0, metavar="S")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="xquik-disconnect",
        description="Disconnect many X accounts from Xquik within the API's rate limit.",
        epilog="Exit codes: 0 all done, 1 some job failed or invalid, 2 usage error, "
        "3 API key rejected, 130 interrupted (rerun to resume).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = sub.add_parser(
        "run",
        help="disconnect the accounts in SOURCE (the main job)",
        description="Disconnect the accounts listed in SOURCE.",
    )
    _run_options(run)
    _api_options(run)
    _queue_options(run)
    enqueue = sub.add_parser(
        "enqueue",
        help="push a jobs file onto a Redis stream",
        description="Validate a jobs file and XADD each valid job to the "
        "stream; invalid lines are reported, not enqueued (exit 1).",
    )
    enqueue.add_argument("jobs", metavar="JOBS", help="jobs file (.jsonl, .csv, .txt) or -")
    enqueue.add_argument(
        "--redis",
        required=True,
        metavar="URL",
        default=_env("REDIS_URL"),
        help="redis://HOST:PORT/DB or rediss://…",
    )
    enqueue.add_argument(
        "--stream",
        default=_env("STREAM", "xquik:disconnect"),
        help="stream name (default xquik:disconnect)",
    )
    plan = sub.add_parser(
        "plan",
        help="list connected accounts and write jobs (JSONL) to stdout",
        description="Select connected accounts by filters (all must match) "
        "and write them as jobs. Scheduled cleanup: plan ... | run -",
    )
    _plan_options(plan)
    _api_options(plan)
    sandbox = sub.add_parser(
        "sandbox",
        help="serve a local stand-in for the Xquik API",
        description="Serve the Xquik endpoints this tool uses, from memory, "
        "on loopback. Prints one JSON line with base_url and api_key.",
    )
    _sandbox_options(sandbox)
    report = sub.add_parser(
        "report",
        help="summarise a result log",
        description="Summarise a result log: outcomes, runs, failures not "
        "done since (grouped by error). Exit 1 if any are outstanding.",
    )
    report.add_argument("results", metavar="RESULTS", help="a result log (.jsonl)")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _run,
        "sandbox": _sandbox,
        "report": _report,
        "plan": _plan,
        "enqueue": _enqueue,
    }
    return commands[args.command](args)


def _run(args: argparse.Namespace) -> int:
    from worker.errors import ConfigError
    from worker.run import execute, settings_from_args

    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"xquik-disconnect run: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return execute(settings, log_format=args.log_format)


def _enqueue(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    import anyio

    from worker.queue import enqueue

    if urlsplit(args.redis).scheme not in {"redis", "rediss", "unix"}:
        print(
            f"xquik-disconnect enqueue: error: --redis {args.redis!r} is not a redis:// URL",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.jobs != "-" and not os.path.isfile(args.jobs):
        print(
            f"xquik-disconnect enqueue: error: jobs file {args.jobs!r} not found", file=sys.stderr
        )
        return EXIT_USAGE
    added, invalid = anyio.run(partial(enqueue, args.jobs, url=args.redis, stream=args.stream))
    for item in invalid:
        print(f"{item.source}: {item.error}", file=sys.stderr)
    print(
        f"enqueued {added} jobs to {args.stream}"
        + (f"; {len(invalid)} invalid lines not enqueued" if invalid else "")
    )
    return 1 if invalid else 0


def _plan(args: argparse.Namespace) -> int:
    from worker.plan_cmd import main as plan

    return plan(args)


def _report(args: argparse.Namespace) -> int:
    from worker.report import main as report

    return report(args.results, as_json=args.json)


def _sandbox(args: argparse.Namespace) -> int:
    from worker.sandbox.cli import serve

    return serve(args)
