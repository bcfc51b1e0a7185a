"""The result log: whole lines, appended, torn tails mended; reading it back for a rerun."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.models import ID_PATTERN, Op, Outcome, Result
from worker.results.prior import read_prior
from worker.results.sink import FileSink


def record(account: str, outcome: Outcome, op: Op = Op.DISCONNECT) -> Result:
    return Result(run_id="r", source="j:1", account_id=account, outcome=outcome, op=op)


def test_sink_appends_whole_lines_and_mends_a_torn_tail(tmp_path: Path) -> None:
    """A torn last line gets its newline before our first record; nothing is truncated."""
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"torn')
    sink = FileSink.open(path)
    sink.write(record("1", Outcome.DISCONNECTED))
    sink.close()
    sink.close()  # idempotent
    lines = path.read_text().split("\n")
    assert lines[:2] == ['{"a": 1}', '{"torn']
    assert json.loads(lines[2])["account_id"] == "1"
    assert lines[3] == ""


def test_read_prior_finds_done_disconnects_only(tmp_path: Path) -> None:
    """Done means disconnected or already_gone of op disconnect; monitor records don't count."""
    path = tmp_path / "r.jsonl"
    sink = FileSink.open(path)
    for r in (
        record("1", Outcome.DISCONNECTED),
        record("2", Outcome.ALREADY_GONE),
        record("3", Outcome.FAILED),
        record("4", Outcome.DUPLICATE),
        record("5", Outcome.DISCONNECTED, Op.DELETE_MONITOR),
    ):
        sink.write(r)
    sink.close()
    with path.open("a") as f:  # another writer's compact JSON takes the slow path
        compact = {"ts": "2026-01-01T00:00:00Z", "run_id": "r", "account_id": "6"}
        compact["outcome"] = "disconnected"
        f.write(json.dumps(compact, separators=(",", ":")))
        f.write("\n")
        f.write('{"account_id": "7", "outcome": "disconnected", "op": "disconnect"')  # torn
    prior = read_prior(path)
    assert prior.done == {"1", "2", "6"}
    assert prior.bad_lines == [7]
    assert prior.lines == 7


def test_missing_log_is_empty(tmp_path: Path) -> None:
    """No log yet: nothing done, nothing bad."""
    prior = read_prior(tmp_path / "none.jsonl")
    assert (prior.done, prior.bad_lines, prior.lines) == (set(), [], 0)


records_strategy = st.lists(
    st.tuples(
        st.from_regex(ID_PATTERN, fullmatch=True),
        st.sampled_from(list(Outcome)),
        st.sampled_from(list(Op)),
        st.one_of(st.none(), st.text(max_size=40)),
    ),
    max_size=40,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(records_strategy)
def test_fast_reader_agrees_with_json(
    tmp_path: Path, rows: list[tuple[str, Outcome, Op, str | None]]
) -> None:
    """Whatever the error texts hold, the fast path finds exactly what json.loads finds."""
    path = tmp_path / "prop.jsonl"
    path.unlink(missing_ok=True)
    sink = FileSink.open(path)
    for account, outcome, op, error in rows:
        sink.write(
            Result(
                run_id="r",
                source="s",
                account_id=account,
                outcome=outcome,
                op=op,
                error=error,
                username=error,
            )
        )
    sink.close()
    expected = {
        r["account_id"]
        for r in map(json.loads, path.read_text().split("\n")[:-1])
        if r["op"] == "disconnect" and r["outcome"] in {"disconnected", "already_gone"}
    }
    assert read_prior(path).done == expected


def test_resume_counts_only_records_of_this_api_and_account(tmp_path: Path) -> None:
    """Done records count for a rerun only when made against the same origin (and sandbox or
    not) with the same key, or a key of the tenant's key group; a done record without an
    origin or a key is listed as incomplete."""
    from worker.results.prior import Scope

    def line(account: str, **fields: object) -> str:
        base = {"ts": "2026-01-01T00:00:00Z", "run_id": "r", "account_id": account}
        base.update(op="disconnect", outcome="disconnected")
        return json.dumps({**base, **fields}) + "\n"

    here = {"origin": "https://xquik.com", "key_id": "a" * 12}
    path = tmp_path / "r.jsonl"
    path.write_text(
        line("1", **here)
        + line("2", **{**here, "sandbox": True})
        + line("3", **{**here, "origin": "http://127.0.0.1:8787"})
        + line("4", **{**here, "key_id": "b" * 12})
        + line("5")
        + line("6", **{**here, "key_id": "c" * 12, "tenant": "t1", "key_group": "grp"})
        + line("7", **{**here, "key_id": "c" * 12, "tenant": "t2"})
    )
    scope = Scope("https://xquik.com", False, {"": "a" * 12, "t1": "d" * 12}, {"t1": "grp"})
    prior = read_prior(path, scope)
    assert prior.done == {"1", "t1/6"}
    assert prior.incomplete == [5]
    assert prior.foreign == 4
    assert read_prior(path).done == {"1", "2", "3", "4", "5", "t1/6", "t2/7"}
