"""Fault injection for the sandbox: seeded, so a failing test can be replayed."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from enum import Enum


class Fault(Enum):
    ERROR_403 = "fail_403"  # permanent errors: a worker must not retry them
    ERROR_409 = "fail_409"
    ERROR_422 = "fail_422"
    ERROR_500 = "fail_500"
    ERROR_502 = "fail_502"
    ERROR_503 = "fail_503"
    HTML_502 = "html_502"  # a proxy's HTML error page
    RESET = "reset"  # connection dropped before the request is handled
    SLOW = "slow"  # the answer comes after `slow_seconds`
    LOST = "lose"  # the delete takes effect, then the connection drops: the answer is lost


@dataclass(frozen=True, slots=True)
class FaultConfig:
    fail_403: float = 0.0
    fail_409: float = 0.0
    fail_422: float = 0.0
    fail_500: float = 0.0
    fail_502: float = 0.0
    fail_503: float = 0.0
    html_502: float = 0.0
    reset: float = 0.0
    slow: float = 0.0
    lose: float = 0.0
    slow_seconds: float = 2.0
    seed: int | None = None

    def __post_init__(self) -> None:
        total = 0.0
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in {"slow_seconds", "seed"}:
                continue
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault probability {f.name}={value} is not within 0..1")
            total += value
        if total > 1.0:
            raise ValueError("fault probabilities add up to more than 1")


class FaultPlan:
    __slots__ = ("_config", "_rng")

    def __init__(self, config: FaultConfig) -> None:
        self._config = config
        self._rng = random.Random(config.seed)

    def draw(self) -> Fault | None:
        roll = self._rng.random()
        for fault in Fault:
            roll -= getattr(self._config, fault.value)
            if roll < 0:
                return fault
        return None

    @property
    def slow_seconds(self) -> float:
        return self._config.slow_seconds
