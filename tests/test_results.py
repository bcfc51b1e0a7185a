"""The result log: whole lines, appended, torn tails mended; reading it back for a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.models import ID_PATTERN, Op, Outcome, Result
from worker.results.prior import read_prior
from worker.results.sink import FileSink
from worker.sandbox import Sandbox


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


def test_sync_reaches_the_disk_for_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sync` fsyncs the log's own descriptor once something was written since the last one
    (and close does too): a sync that did nothing would leave records to a crash."""
    import os

    synced: list[tuple[int, int]] = []  # (inode, size) of each fsync, then the real one
    real = os.fsync

    def spy(fd: int) -> None:
        info = os.fstat(fd)
        synced.append((info.st_ino, info.st_size))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)  # what the sink calls: os.fsync
    path = tmp_path / "r.jsonl"
    sink = FileSink.open(path)
    inode = path.stat().st_ino
    sink.sync()
    assert synced == []  # nothing written, nothing to sync
    sink.write(record("1", Outcome.DISCONNECTED))
    sink.sync()
    assert synced == [(inode, path.stat().st_size)]
    sink.sync()
    assert len(synced) == 1  # nothing new
    sink.write(record("2", Outcome.DISCONNECTED))
    sink.close()
    assert synced[1:] == [(inode, path.stat().st_size)]  # close syncs the rest


async def test_a_run_syncs_its_last_record_before_it_ends(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole run: the last fsync of the log covers every record written."""
    import os

    from tests.conftest import read_results, run_against, write_jobs

    sizes: dict[int, int] = {}
    real = os.fsync

    def spy(fd: int) -> None:
        info = os.fstat(fd)
        sizes[info.st_ino] = info.st_size
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)  # what the sink calls: os.fsync
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 9)])
    summary = await run_against(sandbox, jobs, tmp_path)
    assert summary.exit_code == 0
    log = tmp_path / "results.jsonl"
    assert len(read_results(log)) == 8
    assert sizes.get(log.stat().st_ino) == log.stat().st_size


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


# No deadline: every example opens, writes and fsyncs a real file, whose time the disk decides.
@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60, deadline=None
)
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


def _hostile_lines() -> list[str]:
    """A done record as the worker writes it, then each field of it changed to every other
    type or shape a hand or another tool could write (or removed), then every combination of
    the fields the scope weighs."""
    base: dict[str, object] = {
        "ts": "2026-12-02T10:00:00.123Z", "run_id": "r", "account_id": "1",
        "outcome": "disconnected", "op": "disconnect", "username": "ann", "tenant": None,
        "key_id": "a" * 12, "origin": "https://xquik.com", "key_group": None,
    }  # fmt: skip
    anything: list[object] = [None, True, False, 0, 7, 1.5, "", "x", [1], {"a": 1}]
    times = ["2026-12-02T10:00:00Z", "2026-02-30T10:00:00.123Z", "2026-12-02T24:00:00.000Z",
             "9999-01-01T00:00:00.000Z", "1969-12-31T23:59:59.000Z",
             "2026-12-02 10:00:00"]  # fmt: skip
    lines = []
    for name in [*base, "sandbox"]:
        lines.append(json.dumps({k: v for k, v in base.items() if k != name}))
        for value in [*anything, *(times if name == "ts" else [])]:
            lines.append(json.dumps({**base, name: value}))
    for sandbox in ("-", True, False, "true"):
        for tenant in ("-", "", "t1", "t2"):
            for group in ("-", "grp", "other"):
                for key_id in ("-", "a" * 12, "b" * 12):
                    fields = {"sandbox": sandbox, "tenant": tenant, "key_group": group}
                    record = {**base, "key_id": key_id, **fields}
                    lines.append(json.dumps({k: v for k, v in record.items() if v != "-"}))
    lines.append(json.dumps(base, separators=(",", ":")))  # compact: another writer's
    lines.append(json.dumps(base, ensure_ascii=False).replace('"ann"', '"ännchen"'))
    lines.append(json.dumps({**base, "outcome": "failed", "username": "disconnected"}))
    lines.append("[1, 2]")
    lines.append('{"outcome": "disconnected", "ts": NaN}')
    # Each line its own account (unless the line is about account_id): what it adds shows.
    own = (
        line.replace('"account_id": "1"', f'"account_id": "a{i}"') for i, line in enumerate(lines)
    )
    return list(own)


def test_typed_reader_counts_as_the_one_record_reader(tmp_path: Path) -> None:
    """Lines of any field types, times and shapes (written by hand or another tool): the
    typed fast path takes for done, foreign and incomplete exactly what the one record
    reader (`records.parse`, `records.is_done`) would."""
    from worker.models import job_key
    from worker.results import records
    from worker.results.prior import Scope

    path = tmp_path / "hostile.jsonl"
    lines = _hostile_lines()
    path.write_text("".join(line + "\n" for line in lines))
    scope = Scope("https://xquik.com", False, {"": "a" * 12, "t1": "b" * 12}, {"t1": "grp"})
    done: set[str] = set()
    names: set[str] = set()
    bad: list[int] = []
    incomplete: list[int] = []
    foreign = 0
    for number, r in records.read(path):
        if r is None:
            bad.append(number)
        elif records.is_done(r) and r.get("account_id"):
            tenant, origin = records.tenant(r), records.text(r, "origin")
            key_id, group = records.text(r, "key_id"), records.text(r, "key_group")
            if origin is None or (key_id is None and group is None):
                incomplete.append(number)
            elif scope.accepts(
                tenant=tenant, origin=origin, sandbox=r.get("sandbox") is True,
                key_id=key_id, key_group=group,
            ):  # fmt: skip
                done.add(job_key(str(r["account_id"]), None, tenant or None))
                if (username := records.text(r, "username")) is not None:
                    names.add(job_key(None, username, tenant or None))
            else:
                foreign += 1
    prior = read_prior(path, scope)
    assert len(lines) > 250
    assert len(done) >= 10
    assert foreign > 50
    assert incomplete
    assert bad
    assert prior.done == done
    assert prior.done_names == names
    assert prior.incomplete == incomplete
    assert prior.foreign == foreign
    # Lines that cannot be done are never parsed: a bad one is listed only if it could be.
    assert set(prior.bad_lines) <= set(bad)


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
