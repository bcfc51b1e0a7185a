"""The command line's options and value types: each value is checked where it is parsed, so a
bad flag or environment value exits 2 naming the flag, before anything is sent."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from worker.errors import ExitCode
from worker.logs import configured_format, get_logger
from worker.redact import redact
from worker.settings import Rate

T = TypeVar("T")
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, None: 1.0}


def fail(command: str, message: object, code: ExitCode = ExitCode.USAGE) -> ExitCode:
    """One line on stderr naming the command, secrets masked; returns the exit code. Once the
    logs are JSON, the error is a JSON event too (one format per run, for log shippers)."""
    if configured_format() == "json":
        get_logger().error("error", command=command, message=str(message), exit_code=int(code))
        return code
    say(f"xquik-disconnect {command}: error: {message}")
    return code


def say(text: str) -> None:
    """A line on stderr, secrets masked; a closed stderr is not an error of the run."""
    with contextlib.suppress(BrokenPipeError, ValueError, OSError):
        print(redact(text), file=sys.stderr, flush=True)


FROM_ENV = "\0"  # marks a type error in a value read from the environment


class EnvValue(str):
    """A default that came from the environment: its errors name the variable, not the flag."""

    var: str

    def __new__(cls, value: str, var: str) -> EnvValue:
        self = super().__new__(cls, value)
        self.var = var
        return self


ENV_NAMES: set[str] = set()  # every option's environment twin, for the help texts


def env(name: str, default: str | None = None) -> str | None:
    ENV_NAMES.add(name)
    var = f"XQUIK_{name}"
    value = os.environ.get(var)
    return default if value is None else EnvValue(value, var)


def checked(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type whose error names the environment variable a bad value came from."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except argparse.ArgumentTypeError as exc:
            if isinstance(text, EnvValue) and not str(exc).startswith(FROM_ENV):
                message = f"{FROM_ENV}{text.var} (environment): {exc}"
                raise argparse.ArgumentTypeError(message) from None
            raise

    convert.__name__ = parse.__name__  # argparse names the type in some messages
    return convert


@checked
def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


@checked
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


MAX_SECONDS = 10_000_000.0  # about 116 days: longer is a typo, and would overflow deadlines


@checked
def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and {MAX_SECONDS:g}")
    return value


@checked
def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|min|h|d)?\s*")


@checked
def duration(text: str) -> float:
    """`24h`, `30m`, `90s`, `1d` or plain seconds; more than 0."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration, e.g. 24h, 30m, 90s")
    value = float(match[1]) * {**_UNITS, "d": 86400.0}[match[2]]
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 and at most 100d")
    return value


@checked
def retention(text: str) -> float | None:
    """A duration, or `forever` (None: never trim)."""
    if text.strip().lower() == "forever":
        return None
    return duration(text)


AUTO_CEILING = Rate(60, 60.0, auto=True)  # the newest docs' limit; 15/60 keys learn theirs


def parse_rate(text: str, *, allow_auto: bool = False) -> Rate:
    """`15/60s`, `60/1m`, `200/1s`, `unlimited` (and `auto`, `auto:N/PERIOD` where learning is
    allowed); ValueError naming the text otherwise."""
    word = text.strip().lower()
    if word == "unlimited":
        return Rate(None, 1.0)
    if allow_auto and word == "auto":
        return AUTO_CEILING
    if allow_auto and word.startswith("auto:"):
        ceiling = parse_rate(text.strip()[5:])
        if ceiling.limit is None:
            raise ValueError(f"{text!r}: the ceiling of auto is N/PERIOD, e.g. auto:60/60s")
        return Rate(ceiling.limit, ceiling.period, auto=True)
    match = _RATE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not N/PERIOD, e.g. 15/60s, 60/1m, 200/1s or unlimited")
    count, amount, unit = match.groups()
    if not amount and unit is None:
        raise ValueError(f"{text!r} has no PERIOD, e.g. 15/60s")
    period = float(amount or 1) * _UNITS[unit]
    if int(count) < 1 or not 0 < period <= MAX_SECONDS:
        raise ValueError(f"{text!r}: N must be at least 1 and PERIOD within 0..{MAX_SECONDS:g} s")
    return Rate(int(count), period)


@checked
def rate(text: str) -> Rate:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@checked
def delete_rate(text: str) -> Rate:
    try:
        return parse_rate(text, allow_auto=True)
    except ValueError as exc:
        message = str(exc).replace(" or unlimited", ", unlimited, auto or auto:N/PERIOD")
        raise argparse.ArgumentTypeError(message) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@checked
def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not within 0..65535")
    return value


@checked
def probability(text: str) -> float:
    value = seconds(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is a probability: 0 to 1")
    return value


def run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        metavar="SOURCE",
        nargs="?",
        help="jobs file (.jsonl, .csv, .txt), - for stdin, or redis://… (queue mode); "
        "omitted: the queue at --redis-url-file or XQUIK_REDIS_URL",
    )
    p.add_argument(
        "--results",
        metavar="PATH",
        default=env("RESULTS"),
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
        default=env("CONCURRENCY", "4"),
        metavar="N",
        help="requests in flight at most (default 4)",
    )
    p.add_argument(
        "--keys",
        metavar="DIR",
        default=env("KEYS"),
        help="several API keys: one per file, the file name being the tenant name (a mounted "
        "Kubernetes Secret; NAME@ACCOUNT shares ACCOUNT's budget); a job's `tenant` picks "
        "one, jobs without use the default key; files are read again when they change "
        "(env XQUIK_KEYS)",
    )
    p.add_argument(
        "--read-ahead",
        type=positive_int,
        default=env("READ_AHEAD", "10000"),
        metavar="N",
        help="with --keys: jobs read ahead into the tenants' queues at most, so one cooling "
        "key never holds up the others; a queue consumer reads only as its work runs short, "
        "leaving the rest to other consumers (default 10000)",
    )
    p.add_argument(
        "--rate",
        type=delete_rate,
        default=env("RATE", "auto"),
        metavar="RATE",
        help="DELETE budget for the key: auto (learn the server's live limit under a ceiling "
        "of 60/60s), auto:N/PERIOD (another ceiling), or fixed: 15/60s, 60/1m, unlimited "
        "(default auto)",
    )
    p.add_argument(
        "--relearn",
        type=duration,
        default=env("RELEARN", "24h"),
        metavar="DURATION",
        help="with --rate auto: try the ceiling again after this long without a 429, "
        "e.g. 24h, 30m, 3600 (default 24h)",
    )
    p.add_argument(
        "--rate-margin",
        type=seconds,
        default=env("RATE_MARGIN"),
        metavar="S",
        help="extra seconds each slot stays held after its answer (default 0: the budget is "
        "already exact under any latency)",
    )
    p.add_argument(
        "--max-cooldown",
        type=seconds,
        default=env("MAX_COOLDOWN", "900"),
        metavar="S",
        help="cap on a single Retry-After wait (default 900)",
    )
    p.add_argument(
        "--state-dir",
        default=env("STATE_DIR"),
        metavar="DIR",
        help="where the budget's recent send times persist, shared by every run on this "
        "machine (default: user cache dir; none: keep nothing)",
    )
    p.add_argument(
        "--grace",
        type=seconds,
        default=env("GRACE", "30"),
        metavar="S",
        help="on SIGINT/SIGTERM, seconds given to in-flight requests (default 30)",
    )
    p.add_argument(
        "--delete-monitors",
        nargs="?",
        const="account",
        choices=("account", "all"),
        default=None,
        metavar="account|all",
        help="also delete the monitors that track each disconnected user: its account monitors "
        "(account, the default), or those and the keyword monitors whose query names the user "
        "(from:user, to:user, @user) (all)",
    )
    p.add_argument(
        "--wait-monitors",
        type=positive_seconds,
        nargs="?",
        const=300.0,
        default=None,
        metavar="S",
        help="with --delete-monitors: wait (at most S seconds, default 300) until each "
        "monitor's background deletion is over (its GET answers 404) before recording it; "
        "by default it is recorded at once with pending: true",
    )
    p.add_argument("--dry-run", action="store_true", help="GET each account instead of deleting it")
    p.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask: on a terminal a run that deletes more than --confirm-over accounts "
        "first shows what it will do and asks (never without a terminal)",
    )
    p.add_argument(
        "--confirm-over",
        type=non_negative_int,
        default=env("CONFIRM_OVER", "10"),
        metavar="N",
        help="ask before deleting more than N accounts, on a terminal (default 10)",
    )
    p.add_argument(
        "--strict-missing",
        action="store_true",
        help="an id that was not connected when the run began (removed earlier, or a "
        "mistyped id) fails as not_connected instead of counting as already_gone",
    )
    p.add_argument(
        "--no-precheck",
        action="store_true",
        help="send a DELETE even for an id missing from the account listing (default: confirm "
        "it gone with a GET, no DELETE spent)",
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        default=env("LIMIT"),
        metavar="N",
        help="handle at most N jobs (a canary batch)",
    )
    budget_option(p)
    p.add_argument(
        "--notify",
        metavar="URL",
        default=env("NOTIFY"),
        help="POST the run's summary (a text for a Slack-style webhook, and the summary "
        "object) to this URL when the run ends, however it ends; a secret, never logged",
    )
    p.add_argument(
        "--wait-lock",
        action="store_true",
        help="wait for another run holding the same result log (default: exit 2 at once)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on for a TTY)",
    )


def redis_option(p: argparse.ArgumentParser) -> None:
    """--redis URL for the commands that only talk to a queue (enqueue, queue, dead)."""
    p.add_argument(
        "--redis",
        metavar="URL",
        default=env("REDIS_URL"),
        help="redis://HOST:PORT/DB or rediss://… (env XQUIK_REDIS_URL)",
    )
    redis_url_file_option(p)


def redis_url_file_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--redis-url-file",
        metavar="PATH",
        default=env("REDIS_URL_FILE"),
        help="read the Redis URL from this file (a mounted Secret), so its password is "
        "never in the arguments or `ps` (env XQUIK_REDIS_URL_FILE)",
    )


def redis_url(args: argparse.Namespace, given: str | None) -> str | None:
    """The Redis URL from `given` (a flag or argument), --redis-url-file or XQUIK_REDIS_URL,
    in that order; its password is registered as a secret. Raises ValueError naming the
    flag when the file cannot be read or two places give one."""
    from worker.redact import register

    path = getattr(args, "redis_url_file", None)
    if path:
        if given and not getattr(given, "var", None):
            raise ValueError("give the Redis URL once: as an argument or in --redis-url-file")
        try:
            text = Path(path).read_bytes()[:4096].decode("utf-8").strip()
        except OSError as exc:
            raise ValueError(f"--redis-url-file: cannot read it ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ValueError("--redis-url-file: not a text file") from None
        if not text:
            raise ValueError("--redis-url-file: the file is empty")
        given = text
    if given is None:
        given = os.environ.get("XQUIK_REDIS_URL") or None
    if given:
        password = urlsplit(given).password
        if password:
            register(password)
    return given


def need_redis(args: argparse.Namespace) -> str:
    """enqueue, queue, dead: the Redis URL from --redis, --redis-url-file or XQUIK_REDIS_URL
    (ValueError with the message otherwise)."""
    url = redis_url(args, args.redis)
    if not url:
        raise ValueError("no Redis: give --redis URL, --redis-url-file PATH or XQUIK_REDIS_URL")
    if urlsplit(url).scheme not in {"redis", "rediss", "unix"}:
        raise ValueError(f"--redis {url!r} is not a redis:// URL")
    return url


def budget_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--budget",
        metavar="URL",
        default=env("BUDGET"),
        help="keep the key's budget (slots, cooldown, learned limit) in this Redis, "
        "redis://… or rediss://…, shared with queue consumers and runs on other machines "
        "(default: the state file)",
    )


def api_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that talks to the API."""
    p.add_argument(
        "--base-url",
        default=env("BASE_URL"),
        metavar="URL",
        help="API base URL (default https://xquik.com/api/v1; env XQUIK_BASE_URL)",
    )
    p.add_argument(
        "--api-key-file",
        default=env("API_KEY_FILE"),
        metavar="PATH",
        help="file holding the API key, - for stdin (default: env XQUIK_API_KEY)",
    )
    # Never a way to give the key: present only to refuse it without echoing the value.
    p.add_argument("--api-key", nargs="?", const="", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--read-rate",
        type=rate,
        default=env("READ_RATE", "60/1s"),
        metavar="N/PERIOD",
        help="budget for GETs (default 60/1s)",
    )
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=env("TIMEOUT", "30"),
        metavar="S",
        help="bound on each attempt, from its send to the last byte of the answer (default 30)",
    )
    p.add_argument(
        "--max-attempts",
        type=positive_int,
        default=env("MAX_ATTEMPTS", "5"),
        metavar="N",
        help="attempts per request, the first included (default 5)",
    )
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="run against the built-in sandbox API, in-process (no key needed)",
    )
    log_format_option(p)


@checked
def log_format(text: str) -> str:
    """json or console; checked for XQUIK_LOG_FORMAT too (argparse checks `choices` only for
    values given on the command line)."""
    if text not in ("json", "console"):
        raise argparse.ArgumentTypeError(f"{text!r} is not json or console")
    return text


@checked
def level(text: str) -> str:
    """debug, info, warning or error (XQUIK_LOG_LEVEL too: argparse checks `choices` only for
    values given on the command line)."""
    if text.lower() not in ("debug", "info", "warning", "error"):
        raise argparse.ArgumentTypeError(f"{text!r} is not debug, info, warning or error")
    return text.lower()


def log_format_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        type=log_format,
        choices=("json", "console"),
        default=env("LOG_FORMAT"),
        help="logs on stderr (default: console on a TTY, else json)",
    )
    p.add_argument(
        "--log-level",
        type=level,
        choices=("debug", "info", "warning", "error"),
        default=env("LOG_LEVEL", "info"),
        help="the least important events shown (default info)",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only (--log-level warning)"
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="debug events too (--log-level debug)"
    )


def log_level(args: argparse.Namespace) -> str:
    """-v and -q win over --log-level (and XQUIK_LOG_LEVEL)."""
    if getattr(args, "verbose", False):
        return "debug"
    if getattr(args, "quiet", False):
        return "warning"
    return str(getattr(args, "log_level", "info"))


def plan_options(p: argparse.ArgumentParser) -> None:
    budget_option(p)
    p.add_argument(
        "--usernames",
        metavar="FILE",
        help="handles to disconnect, one per line, @ optional, any case; - for stdin",
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
    p.add_argument(
        "--tenant",
        metavar="NAME",
        help="plan with this tenant's key from --keys DIR; each job names the tenant",
    )
    p.add_argument(
        "--keys",
        metavar="DIR",
        default=env("KEYS"),
        help="the keys directory of `run --keys` (env XQUIK_KEYS)",
    )


def queue_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-port",
        type=port,
        default=env("METRICS_PORT"),
        metavar="N",
        help="serve Prometheus metrics on /metrics and health on /healthz",
    )
    p.add_argument(
        "--metrics-textfile",
        metavar="PATH",
        default=env("METRICS_TEXTFILE"),
        help="write the metrics to PATH (node_exporter's textfile collector) every 10 s and "
        "at the end, atomically; for batch runs that end before any scrape",
    )
    p.add_argument(
        "--pushgateway",
        metavar="URL",
        default=env("PUSHGATEWAY"),
        help="push the metrics to this Prometheus Pushgateway at the end (job "
        "xquik_disconnect); a failure is logged, never changes the exit code",
    )
    q = p.add_argument_group("queue mode (SOURCE is redis://HOST:PORT/DB or rediss://…)")
    redis_url_file_option(q)
    q.add_argument(
        "--stream",
        default=env("STREAM", "xquik:disconnect"),
        help="stream of jobs (default xquik:disconnect); results go to "
        "<stream>:results, dead letters to <stream>:dead",
    )
    q.add_argument(
        "--group",
        default=env("GROUP", "xquik-disconnect"),
        help="consumer group, created if missing (default xquik-disconnect)",
    )
    q.add_argument(
        "--consumer", default=env("CONSUMER"), help="consumer name (default: host name and pid)"
    )
    q.add_argument(
        "--retain",
        type=retention,
        default=env("RETAIN", "7d"),
        metavar="DURATION",
        help="at most once a minute, trim the job stream (never a pending or undelivered "
        "entry), <stream>:results and <stream>:dead below now - DURATION; forever: keep "
        "everything (default 7d)",
    )
    q.add_argument(
        "--claim-idle",
        type=seconds,
        default=env("CLAIM_IDLE", "60"),
        metavar="S",
        help="take over messages another consumer left pending this long (default 60)",
    )
    q.add_argument(
        "--max-deliveries",
        type=positive_int,
        default=env("MAX_DELIVERIES", "5"),
        metavar="N",
        help="dead-letter a message delivered more often (default 5)",
    )
    q.add_argument(
        "--redis-connect-timeout",
        type=positive_seconds,
        default=env("REDIS_CONNECT_TIMEOUT"),
        metavar="S",
        help="give up (exit 2) when Redis cannot be reached at start for S seconds "
        "(default: wait for ever; 30 with --drain)",
    )
    q.add_argument(
        "--drain",
        action="store_true",
        help="exit once the stream and this consumer's pending entries are empty",
    )


def sandbox_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=8787, help="0 picks a free port (default 8787)")
    p.add_argument(
        "--accounts",
        type=int,
        default=50,
        metavar="N",
        help="generated accounts, ids 1..N (default 50)",
    )
    p.add_argument("--seed", type=int, default=0, help="for accounts and faults (default 0)")
    p.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="accept this key (never printed); default: a throwaway key, printed",
    )
    p.add_argument(
        "--tenants",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="serve K more Xquik accounts t1..tK, each with its own key, accounts (tK-1, "
        "tK-2, …), monitors and windows; a key sees only its own account's connections "
        "(default 0)",
    )
    p.add_argument(
        "--tenant-accounts",
        type=non_negative_int,
        default=20,
        metavar="N",
        help="accounts each tenant holds (default 20)",
    )
    p.add_argument(
        "--keys-out",
        metavar="DIR",
        help="write the tenants' keys there, one file per tenant (the --keys directory)",
    )
    p.add_argument(
        "--delete-limit",
        type=rate,
        default="15/60s",
        metavar="N/PERIOD",
        help="the DELETE tier's fixed window (default 15/60s; unlimited)",
    )
    p.add_argument(
        "--read-limit",
        type=rate,
        default="60/1s",
        metavar="N/PERIOD",
        help="the read tier's fixed window (default 60/1s; unlimited)",
    )
    for name, help_text in (
        ("fail-403", "403 forbidden (permanent)"),
        ("fail-409", "409 conflict (permanent)"),
        ("fail-422", "422 invalid_input (permanent)"),
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
    p.add_argument(
        "--slow-seconds",
        type=seconds,
        default=2.0,
        metavar="S",
        help="how late a --slow answer comes (default 2)",
    )
    p.add_argument(
        "--list-limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="GET /x/accounts lists only the first N accounts (a listing cut short)",
    )
    p.add_argument(
        "--accounts-page-cap",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="GET /x/accounts without limit/cursor answers up to N accounts, then pages "
        "(default 10000, as the live API)",
    )
    p.add_argument(
        "--monitor-deletion-s",
        type=seconds,
        default=0.0,
        metavar="S",
        help="a deleted monitor stays listed S seconds (the API deletes in the background; "
        "default 0)",
    )
    p.add_argument(
        "--ingress-jitter-ms",
        type=seconds,
        default=0.0,
        metavar="J",
        help="delay each request a random 0..J ms before its limiter counts it (default 0)",
    )


def name_env_twins(parser: argparse.ArgumentParser) -> None:
    """Each option that reads XQUIK_<DEST> says so in its help (once)."""
    for action in parser._actions:
        twin = action.dest.upper()
        if not action.option_strings or twin not in ENV_NAMES or not action.help:
            continue
        if f"XQUIK_{twin}" not in action.help and action.help != argparse.SUPPRESS:
            action.help += f"; env XQUIK_{twin}"
