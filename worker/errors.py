"""The worker's exceptions and the command line's exit codes. aiohttp errors are translated into
these in `worker.api.client` only.

XquikError
├── ConfigError            bad flag, file or environment: exit 2, nothing sent
│   └── OptionError        one option (a flag, or a keyword of `worker.run`) is invalid
├── BudgetClosed           the run (or the key) is stopping: no request may start
├── NoSlot                 a request that may not wait found no free slot: nothing sent
├── TransportError         no HTTP answer: retried
│   ├── NetworkError       connection refused, reset, dropped
│   ├── RequestTimeout     no whole answer within --timeout
│   └── TlsError           the server's certificate cannot be verified: the key stops
└── ApiError               an HTTP answer that is not a success (status, code, message)
    ├── TransientApiError  408, 424, 425, 5xx: retried
    │   └── RateLimited    429: the whole key cools down for `retry_after` seconds
    ├── PermanentApiError  400, 402, 403, 409, 422, …: the job fails, no retry
    └── AuthError          401: the run stops (exit 3)
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The one exit-code table of the command line (README, `--help` and design say the same)."""

    OK = 0  # every job done
    FAILED = 1  # some job failed or some input line was invalid
    USAGE = 2  # usage or configuration error: nothing sent
    AUTH = 3  # the API key was rejected: the run stopped
    WRITE = 4  # the result log could not be written mid-run: sending stopped
    SOFTWARE = 70  # an internal error (EX_SOFTWARE): one line on stderr, the log flushed
    INTERRUPTED = 130  # SIGINT/SIGTERM/SIGHUP, or the confirmation declined: rerun to resume


# What each exit code means: the one table `--help`, the documentation and README draw from.
EXIT_MEANINGS: dict[ExitCode, tuple[str, str]] = {
    ExitCode.OK: ("all done", "every job done"),
    ExitCode.FAILED: (
        "some job failed or invalid",
        "some job failed or some input line was invalid",
    ),
    ExitCode.USAGE: (
        "usage or configuration error (nothing sent)",
        "usage or configuration error, found before anything is sent: a bad flag or "
        "environment value, a jobs file that is not UTF-8 text, a result log that cannot be "
        "used or is held by another run, an unusable `--state-dir`, Redis unreachable for "
        "`--redis-connect-timeout`; also a server certificate that cannot be verified (the "
        "run stops)",
    ),
    ExitCode.AUTH: (
        "API key rejected",
        "API key rejected (the run stopped; with several keys: every key that had jobs)",
    ),
    ExitCode.WRITE: (
        "the result log could not be written (free space, rerun)",
        "the result log could not be written mid-run (disk full, I/O error): sending stopped "
        "at once; free space and rerun (accounts deleted but not recorded come back as "
        "`already_gone`)",
    ),
    ExitCode.SOFTWARE: (
        "internal error",
        "an internal error: one line on stderr, the result log flushed, the traceback in the "
        "log at debug level; never for a configuration mistake",
    ),
    ExitCode.INTERRUPTED: (
        "interrupted (SIGINT, SIGTERM, SIGHUP, or the confirmation declined; rerun to resume)",
        "interrupted (SIGINT, SIGTERM, or SIGHUP: a closed terminal or SSH session), or the "
        "confirmation declined; rerun to resume",
    ),
}


class XquikError(Exception):
    """Base of every error the worker raises on purpose."""


class ConfigError(XquikError):
    """A usage or configuration problem, found before anything is sent."""


class OptionError(ConfigError):
    """An invalid option, from the command line or a keyword of `worker.run` / `run_async`:
    `option` names it (the keyword, e.g. "concurrency"); the message says what is wrong.
    Raised before anything is read or sent."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


class BudgetClosed(XquikError):
    """The run is stopping: no more requests may start."""


class NoSlot(XquikError):
    """A request that may not wait (a tenant's job, with several keys) found no free slot: its
    key can send again in `seconds` at the soonest. Nothing was sent."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no slot for {seconds:.3f} s")
        self.seconds = seconds


class TransportError(XquikError):
    """The request got no HTTP answer."""

    code = "network_error"


class NetworkError(TransportError):
    code = "network_error"


class RequestTimeout(TransportError):
    code = "timeout"


class TlsError(TransportError):
    """Retrying cannot help and every request would fail the same way: the key stops."""

    code = "tls_verification_failed"


class ApiError(XquikError):
    """The API answered with an error status."""

    def __init__(self, status: int, code: str, message: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"HTTP {status} {code}" + (f": {message}" if message else ""))


class TransientApiError(ApiError):
    pass


class RateLimited(TransientApiError):
    def __init__(
        self, status: int, code: str, message: str | None = None, *, retry_after: float | None
    ) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class PermanentApiError(ApiError):
    pass


class AuthError(ApiError):
    pass
