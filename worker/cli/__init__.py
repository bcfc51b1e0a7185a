"""The command line: parses, validates, delegates, returns an exit code. Imports stay light so
`--version` and `--help` start fast; each command imports what it needs when it runs."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from worker import __version__
from worker.cli import options
from worker.errors import ExitCode


class Parser(argparse.ArgumentParser):
    """No abbreviations (`--api-key` must never become `--api-key-file`); errors exit 2
    naming the flag, or the environment variable a bad value came from, secrets masked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        from worker.redact import redact

        with contextlib.suppress(OSError, ValueError):
            self.print_usage(sys.stderr)
        if options.FROM_ENV in message:  # "argument --rate: \0XQUIK_RATE (environment): …"
            message = message[message.index(options.FROM_ENV) + 1 :]
        options.say(f"{self.prog}: error: {redact(message)}")
        self.exit(ExitCode.USAGE)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="xquik-disconnect",
        description="Disconnect many X accounts from Xquik within the API's rate limit.",
        epilog="Exit codes: 0 all done, 1 some job failed or invalid, 2 usage or configuration "
        "error (nothing sent), 3 API key rejected, 4 the result log could not be written "
        "(free space, rerun), 70 internal error, 130 interrupted (rerun to resume).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = sub.add_parser(
        "run",
        help="disconnect the accounts in SOURCE (the main job)",
        description="Disconnect the accounts listed in SOURCE.",
        epilog=_examples(
            "XQUIK_API_KEY=xq_... xquik-disconnect run accounts.csv",
            "xquik-disconnect run jobs.jsonl --limit 20          # a canary batch first",
            "xquik-disconnect run jobs/example.jsonl --sandbox   # no key: the built-in sandbox",
            "xquik-disconnect plan --health suspended | xquik-disconnect run - --yes",
            "xquik-disconnect run redis://127.0.0.1:6379/0       # a queue consumer",
            "xquik-disconnect run jobs.jsonl --keys keys/   # several keys: each job's tenant",
            "XQUIK_REDIS_URL=redis://:pw@redis:6379/0 xquik-disconnect run   # URL not in ps",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.run_options(run)
    options.api_options(run)
    options.queue_options(run)
    enqueue = sub.add_parser(
        "enqueue",
        help="push a jobs file onto a Redis stream",
        description="Validate a jobs file and XADD each valid job to the "
        "stream; invalid lines are reported, not enqueued (exit 1).",
        epilog=_examples(
            "xquik-disconnect enqueue jobs.csv --redis redis://127.0.0.1:6379/0",
            "XQUIK_REDIS_URL=redis://redis:6379/0 xquik-disconnect enqueue - < ids.txt",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    enqueue.add_argument("jobs", metavar="JOBS", help="jobs file (.jsonl, .csv, .txt) or -")
    options.redis_option(enqueue)
    enqueue.add_argument(
        "--stream",
        default=options.env("STREAM", "xquik:disconnect"),
        help="stream name (default xquik:disconnect)",
    )
    enqueue.add_argument(
        "--redis-connect-timeout",
        type=options.positive_seconds,
        default=options.env("REDIS_CONNECT_TIMEOUT", "30"),
        metavar="S",
        help="give up (exit 2) when Redis cannot be reached for S seconds (default 30)",
    )
    options.log_format_option(enqueue)
    plan = sub.add_parser(
        "plan",
        help="list connected accounts and write jobs (JSONL) to stdout",
        description="Select connected accounts by filters (all must match) "
        "and write them as jobs. Scheduled cleanup: plan ... | run -",
        epilog=_examples(
            "xquik-disconnect plan --health needsReauth,suspended > jobs.jsonl",
            "xquik-disconnect plan --usernames handles.txt --with-monitors --format table",
            "xquik-disconnect plan --all --budget redis://redis:6379/0 | xquik-disconnect run -",
            "xquik-disconnect plan --all --tenant client-x --keys keys/ > client-x.jsonl",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.plan_options(plan)
    options.api_options(plan)
    monitors = sub.add_parser(
        "monitors",
        help="the monitors left running for users a result log disconnected",
        description="List (JSON lines on stdout), and with --delete remove, the account "
        "monitors that track users RESULTS records as disconnected (by x_user_id, else "
        "username). Deletions go through the key's DELETE budget and are appended to RESULTS.",
        epilog="examples:\n  xquik-disconnect monitors accounts.csv.results.jsonl\n"
        "  xquik-disconnect monitors accounts.csv.results.jsonl --delete",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from worker.cli.monitors import options as monitors_options

    monitors_options(monitors)
    options.api_options(monitors)
    queue = sub.add_parser(
        "queue",
        help="see a job stream: pending, dead letters, budgets",
        description="Queue-mode operations.",
        epilog=_examples(
            "xquik-disconnect queue status --redis redis://127.0.0.1:6379/0",
            "xquik-disconnect queue status --json || alert 'dead letters'",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from worker.cli.queue import options as queue_options

    queue_options(queue)
    dead = sub.add_parser(
        "dead",
        help="list, requeue or purge a stream's dead letters",
        description="Dead letters (<stream>:dead): list them, requeue jobs onto the stream "
        "(one MULTI each: never lost, never twice), purge old ones.",
        epilog=_examples(
            "xquik-disconnect dead list --redis redis://127.0.0.1:6379/0 --error forbidden",
            "xquik-disconnect dead requeue --error retries_exhausted",
            "xquik-disconnect dead purge --older-than 30d",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from worker.cli.dead import options as dead_options

    dead_options(dead)
    sandbox = sub.add_parser(
        "sandbox",
        help="serve a local stand-in for the Xquik API",
        description="Serve the Xquik endpoints this tool uses, from memory, "
        "on loopback. Prints one JSON line with base_url and api_key.",
        epilog=_examples(
            "xquik-disconnect sandbox --port 8787 --accounts 1000 --delete-limit 15/60s",
            "xquik-disconnect sandbox --fail-500 0.05 --slow 0.1 --ingress-jitter-ms 500",
            "xquik-disconnect sandbox --tenants 3 --keys-out keys/   # 3 more Xquik accounts",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.sandbox_options(sandbox)
    report = sub.add_parser(
        "report",
        help="summarise a result log",
        description="Summarise a result log: outcomes, runs, failures not "
        "done since (grouped by error). Exit 1 if any are outstanding.",
        epilog="examples:\n  xquik-disconnect report jobs.csv.results.jsonl\n"
        "  xquik-disconnect report results.jsonl --html offboarding.html --rate 15/60s\n"
        "  ssh host cat results.jsonl | xquik-disconnect report -",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("results", metavar="RESULTS", help="a result log (.jsonl), - for stdin")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.add_argument(
        "--html",
        metavar="FILE",
        help="also write one self-contained HTML page (no network): summary, a chart of "
        "DELETEs per window against the limit, failures, invalid lines, the audit table",
    )
    report.add_argument(
        "--rate",
        type=options.rate,
        default=options.env("RATE_LINE", "15/60s"),
        metavar="N/PERIOD",
        help="the limit the HTML chart draws, and its window (default 15/60s)",
    )
    for command in sub.choices.values():
        options.name_env_twins(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _run,
        "sandbox": _sandbox,
        "report": _report,
        "plan": _plan,
        "enqueue": _enqueue,
        "monitors": _monitors,
        "queue": _queue,
        "dead": _dead,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED  # a signal before our own handlers were in place
    except BrokenPipeError:
        # The reader went away (`report | head`): nothing more to say, and nothing to say it
        # to; point stdout at /dev/null so the interpreter's last flush cannot fail either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.OK
    except Exception as exc:
        return internal_error(args.command, exc)


def internal_error(command: str, exc: BaseException) -> int:
    """No traceback ever reaches a user's terminal: one line here, the traceback in the log
    at debug level (the result log was flushed and closed on the way out)."""
    from worker.logs import configure, configured_format, get_logger

    if configured_format() is None:  # a command that logs nothing itself (report): no
        configure(level="info")  # structlog defaults, which print debug tracebacks
    leaf = exc
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    log = get_logger()
    with contextlib.suppress(Exception):
        log.error("internal_error", error=f"{type(leaf).__name__}: {leaf}")
        log.debug("internal_error_traceback", exc_info=exc)
    return options.fail(
        command,
        f"internal error ({type(leaf).__name__}: {leaf}); the result log is flushed, rerun "
        "to resume, and please report it with the log at debug level",
        ExitCode.SOFTWARE,
    )


def _run(args: argparse.Namespace) -> int:
    from worker.cli.config import settings_from_args
    from worker.cli.run import execute
    from worker.errors import ConfigError

    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        return options.fail("run", exc)
    return execute(settings, log_format=args.log_format, log_level=options.log_level(args))


def _enqueue(args: argparse.Namespace) -> int:
    from worker.cli.enqueue import main as enqueue

    return enqueue(args)


def _plan(args: argparse.Namespace) -> int:
    from worker.cli.plan import main as plan

    return plan(args)


def _dead(args: argparse.Namespace) -> int:
    from worker.cli.dead import main as dead

    return dead(args)


def _queue(args: argparse.Namespace) -> int:
    from worker.cli.queue import main as queue

    return queue(args)


def _monitors(args: argparse.Namespace) -> int:
    from worker.cli.monitors import main as monitors

    return monitors(args)


def _report(args: argparse.Namespace) -> int:
    from worker.cli.report import main as report

    return report(args.results, as_json=args.json, html=args.html, rate=args.rate)


def _sandbox(args: argparse.Namespace) -> int:
    from worker.cli.sandbox import serve

    return serve(args)
