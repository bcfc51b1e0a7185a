"""The command line's value types and environment twins. Each option that takes a value reads
`XQUIK_<NAME>` as its default; a bad value (from a flag or from the environment) exits 2
naming the flag or the variable, before anything is sent. The parsing itself is below the
command line (`worker.values`, `worker.budget.rate`), shared with the Python API."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TypeVar

from worker import values
from worker.budget.rate import Rate, parse_rate

T = TypeVar("T")
FROM_ENV = "\0"  # marks a type error in a value read from the environment
ENV_NAMES: set[str] = set()  # every option's environment twin, for the help texts


class EnvValue(str):
    """A default that came from the environment: its errors name the variable, not the flag."""

    var: str

    def __new__(cls, value: str, var: str) -> EnvValue:
        self = super().__new__(cls, value)
        self.var = var
        return self


def env(name: str, default: str | None = None) -> str | None:
    """The default of an option: XQUIK_<name> if set, else `default`."""
    ENV_NAMES.add(name)
    var = f"XQUIK_{name}"
    value = os.environ.get(var)
    return default if value is None else EnvValue(value, var)


def checked(parse: Callable[[str], T], name: str | None = None) -> Callable[[str], T]:
    """An argparse type from a parser raising ValueError; its error names the environment
    variable a bad value came from."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            if isinstance(text, EnvValue):
                raise argparse.ArgumentTypeError(
                    f"{FROM_ENV}{text.var} (environment): {exc}"
                ) from None
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name or parse.__name__  # argparse names the type in some messages
    return convert


non_negative_int = checked(lambda t: values.whole(t, least=0), "non_negative_int")
positive_int = checked(lambda t: values.whole(t, least=1), "positive_int")
replica_count = checked(values.replica_count)
seconds = checked(values.seconds)
positive_seconds = checked(values.positive_seconds)
duration = checked(values.duration)
retention = checked(values.retention)
port = checked(values.port)
probability = checked(values.probability)
chain_head = checked(values.chain_head)
rate: Callable[[str], Rate] = checked(parse_rate, "rate")
delete_rate: Callable[[str], Rate] = checked(
    lambda t: parse_rate(t, allow_auto=True), "delete_rate"
)


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in allowed:
            raise ValueError(f"{text!r} is not {', '.join(allowed[:-1])} or {allowed[-1]}")
        return text.lower()

    return parse


# Checked for XQUIK_LOG_FORMAT / XQUIK_LOG_LEVEL too: argparse checks `choices` only for
# values given on the command line.
log_format = checked(_choice("json", "console"), "log_format")
level = checked(_choice("debug", "info", "warning", "error"), "level")


def name_env_twins(parser: argparse.ArgumentParser) -> None:
    """Each option that reads XQUIK_<DEST> says so in its help (once)."""
    for action in parser._actions:
        twin = action.dest.upper()
        if not action.option_strings or twin not in ENV_NAMES or not action.help:
            continue
        if f"XQUIK_{twin}" not in action.help and action.help != argparse.SUPPRESS:
            action.help += f"; env XQUIK_{twin}"


__all__ = [
    "ENV_NAMES",
    "FROM_ENV",
    "EnvValue",
    "checked",
    "delete_rate",
    "duration",
    "env",
    "level",
    "log_format",
    "name_env_twins",
    "non_negative_int",
    "port",
    "positive_int",
    "positive_seconds",
    "probability",
    "rate",
    "retention",
    "seconds",
]
