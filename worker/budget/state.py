"""The budget's recent send times on disk, so a restarted or back-to-back run cannot burst past
the server's window. A small JSON file per (API key, base URL, tier), replaced atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from worker.budget.window import SlidingWindowBudget


def default_state_dir() -> Path:
    import platformdirs  # only when a budget is persisted

    return Path(platformdirs.user_cache_dir("xquik-disconnect"))


class StateFile:
    __slots__ = ("path",)

    def __init__(self, directory: Path, fingerprint: str, tier: str) -> None:
        self.path = directory / f"budget-{fingerprint}-{tier}.json"

    def load_into(self, budget: SlidingWindowBudget) -> int:
        """Restore the recent sends into `budget`; returns how many are still in its window."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            sends = [float(t) for t in data.get("sends", [])]
            until = data.get("cooldown_until")
            cooldown = float(until) if until is not None else None
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, TypeError, AttributeError):
            return 0  # an unreadable state file is no worse than none
        budget.restore(sends, cooldown)
        return budget.sends_in_span()

    def save(self, budget: SlidingWindowBudget) -> None:
        sends, cooldown = budget.snapshot()
        data = json.dumps({"sends": [round(t, 4) for t in sends], "cooldown_until": cooldown})
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(data, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass  # persisting is best effort; the in-memory budget still holds
