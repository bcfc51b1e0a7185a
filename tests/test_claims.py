"""Claims: which accounts a job may still take; the compact seen-set behind them behaves like
a set of strings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.run.claims import Claims, SeenSet


@given(st.lists(st.text(max_size=12), max_size=300), st.lists(st.text(max_size=12), max_size=50))
def test_membership_matches_a_set(added: list[str], probes: list[str]) -> None:
    """Across flushes and merges, `in` answers as a plain set would."""
    seen, plain = SeenSet(flush_at=7), set()
    for key in added:
        assert (key in seen) == (key in plain)
        assert seen.add(key) == (key not in plain)
        plain.add(key)
    for key in probes + added:
        assert (key in seen) == (key in plain)
    assert len(seen) == len(plain)


def test_many_keys_take_about_eight_bytes_each() -> None:
    """200,000 ids take about 8 bytes each, not the 60+ of a set of strings."""
    seen = SeenSet()
    for i in range(200_000):
        seen.add(str(i))
    assert seen.nbytes() < 10 * 200_000
    assert "199999" in seen
    assert "200000" not in seen
    assert len(seen) == 200_000


def test_queue_claims_last_as_long_as_their_job() -> None:
    """A consumer lives for months: the same account twice at once is a duplicate, but once
    the first job is over the account may come again (a requeued dead letter, a reconnected
    account). A file run keeps its claims for the whole run."""
    queue = Claims(in_flight_only=True)
    assert queue.claim("42") == "new"
    assert queue.claim("42") == "duplicate"
    queue.release("42")
    assert queue.claim("42") == "new"
    run = Claims()
    assert run.claim("42") == "new"
    run.release("42")
    assert run.claim("42") == "duplicate"
