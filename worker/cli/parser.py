"""Every command's options, declared in one place and one way: a function per command adding its
options to groups a person looks for (input and results, rate budget, safety, keys and API,
observability, queue mode), from shared group builders. Only argparse and the value types are
imported here: `--help` and `--version` start fast. Each command's code is in its own module,
imported when it runs."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from worker._version import __version__
from worker.cli import types as t
from worker.cli.say import say
from worker.errors import EXIT_MEANINGS, ExitCode

Group = argparse.ArgumentParser | argparse._ArgumentGroup
EXIT_CODES = (
    "Exit codes: " + ", ".join(f"{int(c)} {short}" for c, (short, _) in EXIT_MEANINGS.items()) + "."
)


class Parser(argparse.ArgumentParser):
    """No abbreviations (`--api-key` must never become `--api-key-file`); errors exit 2
    naming the flag, or the environment variable a bad value came from, secrets masked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        from worker.redact import redact

        with contextlib.suppress(OSError, ValueError, AttributeError):
            self.print_usage(sys.stderr)
        if t.FROM_ENV in message:  # "argument --rate: \0XQUIK_RATE (environment): …"
            head, _, rest = message.partition(t.FROM_ENV)
            flag = head.removeprefix("argument ").rstrip(": ")
            message = f"{rest} (it sets {flag})"
        say(f"{self.prog}: error: {redact(message)}")
        self.exit(ExitCode.USAGE)


class RefuseKey(argparse.Action):
    """`--api-key VALUE` exits 2 at once, never echoing the value."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(
            "the key is never a flag (it would show in `ps` and the shell history): "
            "use XQUIK_API_KEY or --api-key-file PATH (- for stdin)"
        )


FILE, DIRECTORY = "file", "directory"  # what an option takes, for shell completion


def path(action: argparse.Action, kind: str = FILE) -> argparse.Action:
    """Mark an option as taking a file (or a directory): `completion` completes paths there."""
    action.complete = kind  # type: ignore[attr-defined]
    return action


def examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="xquik-disconnect",
        description="Disconnect many X accounts from Xquik within the API's rate limit.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    commands = (run, plan, enqueue, report, verify, monitors, queue, dead, budget, sandbox)
    for add in (*commands, completion):
        add(sub)
    for command in sub.choices.values():
        t.name_env_twins(command)
        for action in command._actions:  # sub-subcommands (queue status, dead list, …)
            if isinstance(action, argparse._SubParsersAction):
                for nested in action.choices.values():
                    t.name_env_twins(nested)
    return parser


# Groups shared by several commands --------------------------------------------------------------
def api_group(p: argparse.ArgumentParser, *, rate: bool, insecure: bool = True) -> None:
    """Keys and API: the options of every command that speaks with the API."""
    g = p.add_argument_group("keys and API")
    g.add_argument(
        "--base-url",
        default=t.env("BASE_URL"),
        metavar="URL",
        help="API base URL (default https://xquik.com/api/v1); plain http:// only to loopback; "
        "redirects are never followed",
    )
    path(
        g.add_argument(
            "--api-key-file",
            default=t.env("API_KEY_FILE"),
            metavar="PATH",
            help="file holding the API key, - for stdin (default: env XQUIK_API_KEY); the key is "
            "never a flag (--api-key is refused) and never logged",
        )
    )
    # Never a way to give the key: present only to refuse it without echoing the value.
    g.add_argument("--api-key", nargs="?", action=RefuseKey, help=argparse.SUPPRESS)
    g.add_argument(
        "--sandbox",
        action="store_true",
        help="run against the built-in sandbox API, in-process (no key needed)",
    )
    g.add_argument(
        "--timeout",
        type=t.positive_seconds,
        default=t.env("TIMEOUT"),
        metavar="S",
        help="bound on each attempt, from its send to the last byte of the answer, more than "
        "0 (default 30)",
    )
    g.add_argument(
        "--max-attempts",
        type=t.positive_int,
        default=t.env("MAX_ATTEMPTS"),
        metavar="N",
        help="attempts per request, the first included; a job's DELETE and each of its "
        "monitor DELETEs have their own (default 5)",
    )
    b = p.add_argument_group("rate budget")
    if rate:
        b.add_argument(
            "--rate",
            type=t.delete_rate,
            default=t.env("RATE"),
            metavar="RATE",
            help="DELETE budget for the key: auto (learn the server's live limit under a "
            "ceiling of 60/60s), auto:N/PERIOD (another ceiling), or fixed: 15/60s, 60/1m, "
            "unlimited (default auto)",
        )
    b.add_argument(
        "--read-rate",
        type=t.rate,
        default=t.env("READ_RATE"),
        metavar="N/PERIOD",
        help="budget for GETs (default 60/1s)",
    )
    b.add_argument(
        "--budget",
        metavar="URL",
        default=t.env("BUDGET"),
        help="keep the key's budget (slots, cooldown, learned limit) in this Redis, "
        "redis://… or rediss://…, as queue consumers do: file-mode runs, `plan`, a CronJob "
        "and consumers on other machines then share one budget per key (default: the state "
        "file); a password in it shows in `ps`: prefer XQUIK_BUDGET or --budget-file",
    )
    path(
        b.add_argument(
            "--budget-file",
            metavar="PATH",
            default=t.env("BUDGET_FILE"),
            help="read the --budget URL from this file (a mounted Secret)",
        )
    )
    if insecure:  # plan and monitors (run has it among its queue options)
        insecure_tls(b)


def redis_group(p: Group) -> None:
    """--redis URL for the commands that only talk to a queue (enqueue, queue, dead)."""
    p.add_argument(
        "--redis",
        metavar="URL",
        default=t.env("REDIS_URL"),
        help="redis://HOST:PORT/DB, rediss://…, a cluster node's URL or "
        "redis+sentinel://S1:26379,S2:26379/SERVICE/DB (env XQUIK_REDIS_URL)",
    )
    redis_url_file(p)
    p.add_argument(
        "--stream",
        default=t.env("STREAM", "xquik:disconnect"),
        help="the job stream (default xquik:disconnect)",
    )
    p.add_argument(
        "--redis-connect-timeout",
        type=t.positive_seconds,
        default=t.env("REDIS_CONNECT_TIMEOUT", "5"),
        metavar="S",
        help="give up (exit 2) when Redis cannot be reached for S seconds, at the start (one "
        "line) or, for enqueue, mid-way (a failover) (default 5)",
    )


def redis_url_file(p: Group) -> None:
    path(
        p.add_argument(
            "--redis-url-file",
            metavar="PATH",
            default=t.env("REDIS_URL_FILE"),
            help="read the Redis URL from this file (a mounted Secret), so its password is "
            "never in the arguments or `ps`",
        )
    )
    insecure_tls(p)


def insecure_tls(p: Group) -> None:
    p.add_argument(
        "--insecure-redis-tls",
        action="store_true",
        help="accept a rediss:// URL that turns certificate checks off (ssl_cert_reqs=none): "
        "whoever answers in Redis's place could then feed the queue",
    )


def log_group(p: Group) -> None:
    p.add_argument(
        "--log-format",
        type=t.log_format,
        choices=("json", "console"),
        default=t.env("LOG_FORMAT"),
        help="logs on stderr (default: console on a TTY, else json)",
    )
    p.add_argument(
        "--log-level",
        type=t.level,
        choices=("debug", "info", "warning", "error"),
        default=t.env("LOG_LEVEL", "info"),
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


def reading_api(args: argparse.Namespace) -> dict[str, Any]:
    """The API flags given, as `api_settings` keywords, for a command that only reads (plan,
    verify): the DELETE tier is never used, so it needs no budget of its own."""
    from worker.budget.rate import UNLIMITED

    names = ["base_url", "api_key_file", "read_rate", "timeout", "max_attempts", "budget"]
    names += ["budget_file"]
    given: dict[str, Any] = {n: getattr(args, n) for n in names if getattr(args, n, None)}
    given.update(sandbox=args.sandbox, rate=UNLIMITED, state_dir="none")
    given["insecure_redis_tls"] = args.insecure_redis_tls
    return given


# The commands -----------------------------------------------------------------------------------
def run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        usage="xquik-disconnect run [options] [SOURCE]",
        help="disconnect the accounts in SOURCE (the main job)",
        description="Disconnect the accounts listed in SOURCE: a jobs file (.jsonl, .csv, "
        ".txt), - for stdin, or redis://… (queue mode).",
        epilog=examples(
            "XQUIK_API_KEY=xq_... xquik-disconnect run accounts.csv",
            "xquik-disconnect run jobs.jsonl --limit 20          # a canary batch first",
            "xquik-disconnect run jobs/example.jsonl --sandbox   # no key: the built-in sandbox",
            "xquik-disconnect plan --health suspended | xquik-disconnect run - --yes",
            "xquik-disconnect run redis://127.0.0.1:6379/0       # a queue consumer",
            "xquik-disconnect run jobs.jsonl --keys keys/   # several keys: each job's tenant",
            "XQUIK_REDIS_URL=redis://:pw@redis:6379/0 xquik-disconnect run   # URL not in ps",
        )
        + "\n\n"
        + EXIT_CODES,
    )
    run_input(p)
    run_budget(p)
    run_safety(p)
    api_group(p, rate=False, insecure=False)
    keys = p.add_argument_group("keys and API").add_argument(
        "--keys",
        metavar="DIR",
        default=t.env("KEYS"),
        help="several API keys: one per file, the file name being the tenant name (a mounted "
        "Kubernetes Secret; NAME@ACCOUNT shares ACCOUNT's budget); a job's `tenant` picks "
        "one, jobs without use the default key; files are read again when they change",
    )
    path(keys, DIRECTORY)
    run_observability(p)
    run_queue(p)
    _regroup(p)


def _regroup(p: argparse.ArgumentParser) -> None:
    """Merge groups of one title (a group added twice by the shared builders) and order them
    as a person looks for them."""
    order = [
        "positional arguments",
        "filters (all must match)",
        "output",
        "input and results",
        "rate budget",
        "safety",
        "keys and API",
        "observability",
        "queue mode (SOURCE is redis://HOST:PORT/DB, rediss://… or redis+sentinel://…)",
        "options",
    ]
    merged: dict[str | None, argparse._ArgumentGroup] = {}
    for group in p._action_groups:
        first = merged.setdefault(group.title, group)
        if first is not group:
            first._group_actions.extend(group._group_actions)
    known = [title for title in order if title in merged]  # the others keep their place
    p._action_groups[:] = sorted(
        merged.values(), key=lambda g: known.index(g.title) if g.title in known else 50
    )


def run_input(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input and results")
    source = g.add_argument(
        "source",
        metavar="SOURCE",
        nargs="?",
        help="jobs file (.jsonl, .csv, .txt), - for stdin, or redis://… (queue mode); "
        "omitted: the queue at --redis-url-file or XQUIK_REDIS_URL",
    )
    path(source)
    path(
        g.add_argument(
            "--results",
            metavar="PATH",
            default=t.env("RESULTS"),
            help="result log, appended (default: <jobs file>.results.jsonl, or results.jsonl "
            "for stdin and queues; with --sandbox <jobs file>.sandbox.results.jsonl)",
        )
    )
    g.add_argument(
        "--fresh",
        action="store_true",
        help="ignore earlier records; by default accounts already done are skipped",
    )
    g.add_argument(
        "--limit",
        type=t.positive_int,
        default=t.env("LIMIT"),
        metavar="N",
        help="handle at most N jobs (a canary batch); the rest stay for a rerun",
    )
    g.add_argument(
        "--read-ahead",
        type=t.positive_int,
        default=t.env("READ_AHEAD"),
        metavar="N",
        help="with --keys: jobs read ahead into the tenants' queues at most, so one cooling "
        "key never holds up the others (a JSONL or CSV file is read in turns, one job of "
        "each tenant per turn, however it is ordered); a queue consumer reads only as its "
        "work runs short, leaving the rest to other consumers (default 10000)",
    )
    g.add_argument(
        "--wait-lock",
        action="store_true",
        help="wait for another run holding the same result log (default: exit 2 at once; a "
        "result log is one run's at a time)",
    )
    g.add_argument(
        "--concurrency",
        type=t.positive_int,
        default=t.env("CONCURRENCY"),
        metavar="N",
        help="requests in flight at most, up to 1024 (default 4)",
    )
    g.add_argument(
        "--grace",
        type=t.seconds,
        default=t.env("GRACE"),
        metavar="S",
        help="on SIGINT/SIGTERM/SIGHUP, seconds given to in-flight requests (default 30)",
    )


def run_budget(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("rate budget")
    g.add_argument(
        "--rate",
        type=t.delete_rate,
        default=t.env("RATE"),
        metavar="RATE",
        help="DELETE budget for the key: auto (learn the server's live limit under a ceiling "
        "of 60/60s), auto:N/PERIOD (another ceiling), or fixed: 15/60s, 60/1m, unlimited "
        "(default auto)",
    )
    g.add_argument(
        "--relearn",
        type=t.duration,
        default=t.env("RELEARN"),
        metavar="DURATION",
        help="with --rate auto: try the ceiling again after this long without a 429, "
        "e.g. 24h, 30m, 3600 (default 24h)",
    )
    g.add_argument(
        "--rate-margin",
        type=t.seconds,
        default=t.env("RATE_MARGIN"),
        metavar="S",
        help="extra seconds each slot stays held after its answer (default 0: the budget is "
        "already exact under any latency)",
    )
    g.add_argument(
        "--max-cooldown",
        type=t.seconds,
        default=t.env("MAX_COOLDOWN"),
        metavar="S",
        help="cap on any cooldown in force, a server's Retry-After or one inherited from "
        "the state file or Redis (a clock that ran ahead, a lying Retry-After); a value there "
        "that is not a time, or a learned limit that is not a count, is ignored with a "
        "warning (default 900)",
    )
    path(
        g.add_argument(
            "--state-dir",
            default=t.env("STATE_DIR"),
            metavar="DIR",
            help="where the budget's recent send times persist, shared by every run on this "
            "machine (default: user cache dir; none: keep nothing)",
        ),
        DIRECTORY,
    )


def run_safety(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("safety")
    g.add_argument("--dry-run", action="store_true", help="GET each account instead of deleting it")
    g.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask: on a terminal a run that would delete more than --confirm-over "
        "accounts first shows what it will do (counting only the accounts still connected, "
        "from the key's listing) and asks; no DELETE is sent before the answer, declining "
        "exits 130; never asks without a terminal (cron, a pipe, a queue consumer). A jobs "
        "source that cannot be read twice (a FIFO, run <(…)) is refused at a terminal "
        "(exit 2): pass --yes or a regular file",
    )
    g.add_argument(
        "--confirm-over",
        type=t.non_negative_int,
        default=t.env("CONFIRM_OVER"),
        metavar="N",
        help="ask before deleting more than N accounts, on a terminal (default 10)",
    )
    g.add_argument(
        "--no-precheck",
        action="store_true",
        help="send a DELETE even for an id missing from the account listing (default: confirm "
        "it gone with a GET, no DELETE spent)",
    )
    g.add_argument(
        "--strict-missing",
        action="store_true",
        help="an id that was not connected when the run began (removed earlier, or a "
        "mistyped id) fails as not_connected instead of counting as already_gone",
    )
    g.add_argument(
        "--delete-monitors",
        nargs="?",
        const="account",
        choices=("account", "all"),
        default=t.env("DELETE_MONITORS"),
        metavar="account|all",
        help="also delete the monitors that track each disconnected user: its account monitors "
        "(account, the default), or those and the keyword monitors whose query names the user "
        "(from:user, to:user, @user) (all)",
    )
    g.add_argument(
        "--wait-monitors",
        type=t.positive_seconds,
        nargs="?",
        const=300.0,
        default=t.env("WAIT_MONITORS"),
        metavar="S",
        help="for the jobs whose monitors go (--delete-monitors, or a job's delete_monitors: "
        "true): wait (at most S seconds, default 300) until each monitor's background "
        "deletion is over (its GET answers 404) before recording it; by default it is "
        "recorded at once with pending: true",
    )


def run_observability(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("observability")
    log_group(g)
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar with counts and an ETA from the budget (default: on for a TTY; "
        "off one, a `progress` log event every 10 s)",
    )
    g.add_argument(
        "--metrics-port",
        type=t.port,
        default=t.env("METRICS_PORT"),
        metavar="N",
        help="serve Prometheus metrics on /metrics and health on /healthz",
    )
    g.add_argument(
        "--metrics-host",
        default=t.env("METRICS_HOST"),
        metavar="ADDR",
        help="the address --metrics-port listens on (default 127.0.0.1: this machine only; "
        "0.0.0.0 for a scrape or a probe from elsewhere, e.g. in Kubernetes)",
    )
    path(
        g.add_argument(
            "--metrics-textfile",
            metavar="PATH",
            default=t.env("METRICS_TEXTFILE"),
            help="write the metrics to PATH (node_exporter's textfile collector) every 10 s and "
            "at the end, atomically; for batch runs that end before any scrape",
        )
    )
    g.add_argument(
        "--pushgateway",
        metavar="URL",
        default=t.env("PUSHGATEWAY"),
        help="push the metrics to this Prometheus Pushgateway at the end (job "
        "xquik_disconnect); a failure is logged, never changes the exit code",
    )
    g.add_argument(
        "--notify",
        metavar="URL",
        default=t.env("NOTIFY"),
        help='POST the run\'s summary ({"text": …, "summary": {…}}: a Slack-style incoming '
        "webhook takes it as is) to this URL when the run ends, however it ends (a closed "
        "terminal too); retried within 10 s, never changes the exit code; https, or http to "
        "loopback; a secret, never logged: prefer XQUIK_NOTIFY or --notify-file, which `ps` "
        "does not show",
    )
    path(
        g.add_argument(
            "--notify-file",
            metavar="PATH",
            default=t.env("NOTIFY_FILE"),
            help="read the --notify URL from this file (a mounted Secret)",
        )
    )


def run_queue(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group(
        "queue mode (SOURCE is redis://HOST:PORT/DB, rediss://… or redis+sentinel://…)"
    )
    redis_url_file(q)
    q.add_argument(
        "--stream",
        default=t.env("STREAM"),
        help="stream of jobs (default xquik:disconnect); results go to "
        "<stream>:results, dead letters to <stream>:dead",
    )
    q.add_argument(
        "--group",
        default=t.env("GROUP"),
        help="consumer group, created if missing (default xquik-disconnect)",
    )
    q.add_argument(
        "--consumer", default=t.env("CONSUMER"), help="consumer name (default: host name and pid)"
    )
    q.add_argument(
        "--retain",
        type=t.retention,
        default=t.env("RETAIN"),
        metavar="DURATION",
        help="at most once a minute, trim the job stream (never a pending or undelivered "
        "entry), <stream>:results and <stream>:dead below now - DURATION; forever: keep "
        "everything (default 7d)",
    )
    q.add_argument(
        "--claim-idle",
        type=t.seconds,
        default=t.env("CLAIM_IDLE"),
        metavar="S",
        help="take over messages another consumer left pending this long (default 60)",
    )
    q.add_argument(
        "--max-deliveries",
        type=t.positive_int,
        default=t.env("MAX_DELIVERIES"),
        metavar="N",
        help="dead-letter a message delivered more often (default 5)",
    )
    q.add_argument(
        "--redis-connect-timeout",
        type=t.positive_seconds,
        default=t.env("REDIS_CONNECT_TIMEOUT"),
        metavar="S",
        help="give up (exit 2) when Redis cannot be reached at start for S seconds "
        "(default: wait for ever; 30 with --drain)",
    )
    q.add_argument(
        "--drain",
        action="store_true",
        help="exit once the stream and this consumer's pending entries are empty",
    )
    min_replicas(q, "a job's record and ack (and each budget decision)")


def min_replicas(p: Group, what: str) -> None:
    p.add_argument(
        "--min-replicas",
        type=t.replica_count,
        default=t.env("MIN_REPLICAS", "0"),
        metavar="N",
        help=f"count {what} done only once N Redis replicas hold it (WAIT): a failover then "
        "loses none of it (default 0: Redis's asynchronous replication; not on a cluster)",
    )


def plan(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        usage="xquik-disconnect plan [options] (--all | FILTER …)",
        help="list connected accounts and write jobs (JSONL) to stdout",
        description="Select connected accounts by filters (all must match) "
        "and write them as jobs. Scheduled cleanup: plan ... | run -",
        epilog=examples(
            "xquik-disconnect plan --health needsReauth,suspended > jobs.jsonl",
            "xquik-disconnect plan --usernames handles.txt --with-monitors --format table",
            "xquik-disconnect plan --all --budget redis://redis:6379/0 | xquik-disconnect run -",
            "xquik-disconnect plan --all --tenant client-x --keys keys/ > client-x.jsonl",
            "xquik-disconnect plan --offboarded offboarding.jsonl | xquik-disconnect run -",
        ),
    )
    f = p.add_argument_group("filters (all must match)")
    path(
        f.add_argument(
            "--usernames",
            metavar="FILE",
            help="handles to disconnect, one per line, @ optional, any case; - for stdin",
        )
    )
    f.add_argument(
        "--health", metavar="LIST", help="comma-separated health states, e.g. needsReauth,suspended"
    )
    f.add_argument("--status", metavar="LIST", help="comma-separated statuses, e.g. active")
    f.add_argument("--created-before", metavar="DATE", help="connected before this ISO date")
    path(
        f.add_argument(
            "--offboarded",
            metavar="RESULTS",
            help="the accounts whose X user RESULTS records as disconnected (by x_user_id, "
            "else handle): users who came back under a new id; a scheduled `plan "
            "--offboarded offboarding.jsonl | run -` keeps them off",
        )
    )
    f.add_argument("--all", action="store_true", help="every connected account (explicitly)")
    o = p.add_argument_group("output")
    o.add_argument(
        "--with-monitors",
        action="store_true",
        help="jobs also delete the account monitors tracking each user; lists them",
    )
    o.add_argument(
        "--format",
        choices=("jsonl", "table"),
        default="jsonl",
        help="jsonl jobs for `run -` (default), or a table for a person",
    )
    o.add_argument("--out", metavar="FILE", help="write the jobs here instead of stdout")
    api_group(p, rate=False)
    k = p.add_argument_group("keys and API")
    k.add_argument(
        "--tenant",
        metavar="NAME",
        help="plan with this tenant's key from --keys DIR; each job names the tenant",
    )
    path(
        k.add_argument(
            "--keys",
            metavar="DIR",
            default=t.env("KEYS"),
            help="the keys directory of `run --keys`",
        ),
        DIRECTORY,
    )
    log_group(p.add_argument_group("observability"))
    _regroup(p)


def enqueue(sub: Any) -> None:
    p = sub.add_parser(
        "enqueue",
        help="push a jobs file onto a Redis stream",
        description="Validate a jobs file and XADD each valid job to the "
        "stream; invalid lines are reported, not enqueued (exit 1). A JSONL or CSV file's "
        "jobs go on in turns, one of each tenant per turn (each tenant's in file order), so "
        "consumers start every tenant early however the file is grouped.",
        epilog=examples(
            "xquik-disconnect enqueue jobs.csv --redis redis://127.0.0.1:6379/0",
            "XQUIK_REDIS_URL=redis://redis:6379/0 xquik-disconnect enqueue - < ids.txt",
        ),
    )
    path(p.add_argument("jobs", metavar="JOBS", help="jobs file (.jsonl, .csv, .txt) or -"))
    redis_group(p)
    p.add_argument(
        "--dedupe-for",
        type=t.duration,
        default=t.env("DEDUPE_FOR", "24h"),
        metavar="DURATION",
        help="a job line enqueued again within this long is not added again (an enqueue "
        "interrupted and run again adds each job once) (default 24h)",
    )
    min_replicas(p, "a job enqueued")
    log_group(p)


def report(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="summarise a result log",
        description="Summarise a result log: outcomes, runs, failures not "
        "done since (grouped by error). Exit 1 if any are outstanding.",
        epilog=examples(
            "xquik-disconnect report jobs.csv.results.jsonl",
            "xquik-disconnect report results.jsonl --html offboarding.html --rate 15/60s",
            "ssh host cat results.jsonl | xquik-disconnect report -",
            "xquik-disconnect report results.jsonl --check --head 5edacb27…   # unchanged?",
        ),
    )
    path(p.add_argument("results", metavar="RESULTS", help="a result log (.jsonl), - for stdin"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    path(
        p.add_argument(
            "--html",
            metavar="FILE",
            help="also write one self-contained HTML page (no network): summary, a chart of "
            "DELETEs per window against the limit, failures, invalid lines, the audit table",
        )
    )
    p.add_argument(
        "--rate",
        type=t.rate,
        default=t.env("RATE_LINE"),
        metavar="N/PERIOD",
        help="the limit the report's windows are drawn against, and their length (default: "
        "the DELETE limit the log's latest record says was in force; 15/60s for a log "
        "that says none)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="exit by the log's hash chain alone: 0 when intact, 1 naming the first record "
        "edited, removed or inserted (lines torn by a crash are listed, not counted)",
    )
    p.add_argument(
        "--head",
        type=t.chain_head,
        metavar="HEX",
        help="with --check (implied): the log must hold this chain head, the one a run "
        "reported when it ended (run_summary, the summary, --notify); catches a log rewritten "
        "whole",
    )


def monitors(sub: Any) -> None:
    p = sub.add_parser(
        "monitors",
        help="the monitors left running for users a result log disconnected",
        description="List (JSON lines on stdout), and with --delete remove, the account "
        "monitors that track users RESULTS records as disconnected (by x_user_id, else "
        "username). Deletions go through the key's DELETE budget and are appended to RESULTS.",
        epilog=examples(
            "xquik-disconnect monitors accounts.csv.results.jsonl",
            "xquik-disconnect monitors accounts.csv.results.jsonl --delete",
        ),
    )
    path(p.add_argument("results", metavar="RESULTS", help="a result log (.jsonl)"))
    p.add_argument(
        "--delete",
        action="store_true",
        help="delete them (DELETE budget), appending delete_monitor records to RESULTS",
    )
    api_group(p, rate=True)
    log_group(p.add_argument_group("observability"))
    _regroup(p)


def verify(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        usage="xquik-disconnect verify [options] RESULTS",
        help="prove removal: gone, still connected, or reconnected under a new id",
        description="For every account RESULTS records as done (against this API), read the "
        "key's listing (every page, once per key; a GET for an id still listed) and answer: "
        "gone, still_connected, or reconnected (the same X user, by x_user_id, else handle, "
        "is connected under another id, named). Appends one op verify record per account to "
        "RESULTS (a rerun of `run` never counts them); only GETs, never a DELETE. Exit 0 when "
        "every account is gone, 1 otherwise (or when one could not be checked), 2 when "
        "RESULTS records no account done against this API (the wrong file, or a sandbox "
        "rehearsal's), 3 when the key is rejected.",
        epilog=examples(
            "xquik-disconnect verify accounts.csv.results.jsonl",
            "xquik-disconnect verify results.jsonl --keys keys/ --json   # several keys",
            "xquik-disconnect plan --offboarded results.jsonl | xquik-disconnect run -",
        ),
    )
    path(p.add_argument("results", metavar="RESULTS", help="a result log (.jsonl)"))
    p.add_argument("--json", action="store_true", help="one JSON object on stdout, for scripts")
    api_group(p, rate=False)
    k = p.add_argument_group("keys and API")
    path(
        k.add_argument(
            "--keys",
            metavar="DIR",
            default=t.env("KEYS"),
            help="the keys directory of `run --keys`: a tenant's accounts are checked with its key",
        ),
        DIRECTORY,
    )
    log_group(p.add_argument_group("observability"))
    _regroup(p)


def queue(sub: Any) -> None:
    p = sub.add_parser(
        "queue",
        help="see a job stream: pending, dead letters, budgets",
        description="Queue-mode operations.",
        epilog=examples(
            "xquik-disconnect queue status --redis redis://127.0.0.1:6379/0",
            "xquik-disconnect queue status --json || alert 'dead letters'",
        ),
    )
    verbs = p.add_subparsers(dest="queue_command", required=True, parser_class=Parser)
    st = verbs.add_parser(
        "status",
        help="stream, pending, dead letters, budgets",
        description="Stream length, entries not yet delivered, pending entries per consumer, "
        "the oldest pending entry's age, dead letters by error code, each key's shared DELETE "
        "budget and the results stream's length. A table on a terminal, JSON otherwise; exit 1 "
        "while dead letters exist (for alerting from cron).",
    )
    redis_group(st)
    st.add_argument("--group", default=t.env("GROUP", "xquik-disconnect"), help="consumer group")
    st.add_argument("--json", action="store_true", help="JSON even on a terminal")


def dead(sub: Any) -> None:
    p = sub.add_parser(
        "dead",
        help="list, requeue or purge a stream's dead letters",
        description="Dead letters (<stream>:dead): list them, requeue jobs onto the stream "
        "(one atomic script each: never lost, never twice), purge old ones.",
        epilog=examples(
            "xquik-disconnect dead list --redis redis://127.0.0.1:6379/0 --error forbidden",
            "xquik-disconnect dead requeue --error retries_exhausted",
            "xquik-disconnect dead purge --older-than 30d",
        ),
    )
    verbs = p.add_subparsers(dest="dead_command", required=True, parser_class=Parser)
    ls = verbs.add_parser("list", help="each dead letter: job fields, reason, when")
    redis_group(ls)
    ls.add_argument("--error", metavar="CODE", help="only this error code (e.g. forbidden)")
    ls.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    rq = verbs.add_parser("requeue", help="put jobs back on the stream")
    redis_group(rq)
    which = rq.add_mutually_exclusive_group()
    which.add_argument("--error", metavar="CODE", help="every dead letter with this code")
    which.add_argument("--id", nargs="+", metavar="ID", help="these dead letters")
    which.add_argument("--all", action="store_true", help="every dead letter")
    pg = verbs.add_parser("purge", help="drop dead letters older than a duration")
    redis_group(pg)
    pg.add_argument(
        "--older-than", type=t.duration, required=True, metavar="DURATION", help="e.g. 30d, 12h"
    )


def budget(sub: Any) -> None:
    p = sub.add_parser(
        "budget",
        help="what a key's budget holds and has learned; forget what it learned",
        description="The limit in force for the key (learned, when, or the ceiling), the "
        "cooldown left and the slots held, per tier, from the state file (or --budget's "
        "Redis); `forget` drops the learned limit, so the next run tries the ceiling.",
        epilog=examples(
            "xquik-disconnect budget status",
            "xquik-disconnect budget status --keys keys/ --json",
            "xquik-disconnect budget forget --budget redis://redis:6379/0",
        ),
    )
    verbs = p.add_subparsers(dest="budget_command", required=True, parser_class=Parser)
    for verb, text in (
        ("status", "the limit in force, learned or not, the cooldown, the slots held"),
        ("forget", "drop the learned limit (held slots and a cooldown stay)"),
    ):
        v = verbs.add_parser(verb, help=text, description=text)
        api_group(v, rate=True)
        k = v.add_argument_group("keys and API")
        path(
            k.add_argument(
                "--keys", metavar="DIR", default=t.env("KEYS"), help="every tenant's key in DIR"
            ),
            DIRECTORY,
        )
        b = v.add_argument_group("rate budget")
        path(
            b.add_argument(
                "--state-dir",
                default=t.env("STATE_DIR"),
                metavar="DIR",
                help="where the state files are (default: the user cache dir)",
            ),
            DIRECTORY,
        )
        v.add_argument("--json", action="store_true", help="JSON even on a terminal")
        log_group(v.add_argument_group("observability"))
        _regroup(v)


def completion(sub: Any) -> None:
    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, fish)",
        description="A completion script generated from this very parser (commands, options, "
        "their choices, file paths where an option takes one). Tab costs no Python start.",
        epilog=examples(
            "xquik-disconnect completion bash > ~/.local/share/bash-completion/completions/"
            "xquik-disconnect",
            'xquik-disconnect completion zsh > "${fpath[1]}/_xquik-disconnect"',
            "xquik-disconnect completion fish > ~/.config/fish/completions/xquik-disconnect.fish",
        ),
    )
    p.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell")


def sandbox(sub: Any) -> None:
    p = sub.add_parser(
        "sandbox",
        help="serve a local stand-in for the Xquik API",
        description="Serve the Xquik endpoints this tool uses, from memory, "
        "on loopback. Prints one JSON line with base_url and api_key.",
        epilog=examples(
            "xquik-disconnect sandbox --port 8787 --accounts 1000 --delete-limit 15/60s",
            "xquik-disconnect sandbox --fail-500 0.05 --slow 0.1 --ingress-jitter-ms 500",
            "xquik-disconnect sandbox --tenants 3 --keys-out keys/   # 3 more Xquik accounts",
        ),
    )
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    s.add_argument("--port", type=t.port, default=8787, help="0 picks a free port (default 8787)")
    path(
        s.add_argument(
            "--api-key-file",
            metavar="PATH",
            help="accept this key (never printed); default: a throwaway key, printed",
        )
    )
    a = p.add_argument_group("accounts")
    a.add_argument(
        "--accounts",
        type=t.non_negative_int,
        default=50,
        metavar="N",
        help="generated accounts, ids 1..N (default 50)",
    )
    a.add_argument("--seed", type=int, default=0, help="for accounts and faults (default 0)")
    a.add_argument(
        "--tenants",
        type=t.non_negative_int,
        default=0,
        metavar="K",
        help="serve K more Xquik accounts t1..tK, each with its own key, accounts (tK-1, "
        "tK-2, …), monitors and windows; a key sees only its own account's connections "
        "(default 0)",
    )
    a.add_argument(
        "--tenant-accounts",
        type=t.non_negative_int,
        default=20,
        metavar="N",
        help="accounts each tenant holds (default 20)",
    )
    path(
        a.add_argument(
            "--keys-out",
            metavar="DIR",
            help="write the tenants' keys there, one file per tenant (the --keys directory)",
        ),
        DIRECTORY,
    )
    a.add_argument(
        "--list-limit",
        type=t.positive_int,
        default=None,
        metavar="N",
        help="GET /x/accounts lists only the first N accounts (a listing cut short)",
    )
    a.add_argument(
        "--accounts-page-cap",
        type=t.positive_int,
        default=10_000,
        metavar="N",
        help="GET /x/accounts without limit/cursor answers up to N accounts, then pages "
        "(default 10000, as the live API)",
    )
    a.add_argument(
        "--monitor-deletion-s",
        type=t.seconds,
        default=0.0,
        metavar="S",
        help="a deleted monitor stays listed S seconds (the API deletes in the background; "
        "default 0)",
    )
    lim = p.add_argument_group("rate limits")
    lim.add_argument(
        "--delete-limit",
        type=t.rate,
        default="15/60s",
        metavar="N/PERIOD",
        help="the DELETE tier's fixed window (default 15/60s; unlimited)",
    )
    lim.add_argument(
        "--read-limit",
        type=t.rate,
        default="60/1s",
        metavar="N/PERIOD",
        help="the read tier's fixed window (default 60/1s; unlimited)",
    )
    faults(p.add_argument_group("faults"))


def faults(g: argparse._ArgumentGroup) -> None:
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
        g.add_argument(
            f"--{name}",
            type=t.probability,
            default=0.0,
            metavar="P",
            help=f"probability of: {help_text}",
        )
    g.add_argument(
        "--slow-seconds",
        type=t.seconds,
        default=2.0,
        metavar="S",
        help="how late a --slow answer comes (default 2)",
    )
    g.add_argument(
        "--ingress-jitter-ms",
        type=t.seconds,
        default=0.0,
        metavar="J",
        help="delay each request a random 0..J ms before its limiter counts it (default 0)",
    )


__all__ = ["Parser", "build_parser", "examples", "log_level"]
