"""Proof of removal (#26): `verify` against the sandbox (which reconnects an X user under a new
id on request, and lists accounts over several pages), `plan --offboarded`, and the result
log's hash chain (`report --check [--head]`), with real processes and a real kill -9."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT, SandboxProcess, cli_env, read_results, run_cli, write_jobs
from tests.test_notify import Receiver
from worker.results.chain import SEED, check, link

PAGED = ("--accounts", "30", "--accounts-page-cap", "10", "--delete-limit", "unlimited")


def cli(sb: SandboxProcess, tmp: Path, *args: str, stdin: str | None = None) -> Any:
    return run_cli(
        *args, env=cli_env(XQUIK_API_KEY=sb.api_key, XQUIK_BASE_URL=sb.base_url,
                           XQUIK_STATE_DIR=str(tmp / "state")),
        stdin=stdin,
    )  # fmt: skip


def reconnect(sb: SandboxProcess, account_id: str, new_id: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{sb.url}/_sandbox/reconnect",
        data=json.dumps({"account_id": account_id, "new_id": new_id}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def verify_records(results: Path) -> list[dict[str, Any]]:
    return [r for r in read_results(results) if r.get("op") == "verify"]


def test_verify_after_a_run_a_reconnect_and_plan_offboarded(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(*PAGED)
    jobs = write_jobs(tmp_path / "jobs.txt", ["3", "4", "5", "6", "25"])
    results = tmp_path / "jobs.txt.results.jsonl"
    assert cli(sb, tmp_path, "run", str(jobs)).returncode == 0

    # Every account gone: exit 0, one verify record each, and not one DELETE sent by verify.
    deletes_before = sum(1 for m, *_ in sb.requests() if m == "DELETE")
    done = cli(sb, tmp_path, "verify", str(results))
    assert done.returncode == 0, done.stderr
    assert "5 gone, 0 still connected, 0 reconnected" in done.stdout
    assert sorted(r["account_id"] for r in verify_records(results)) == ["25", "3", "4", "5", "6"]
    assert {r["outcome"] for r in verify_records(results)} == {"gone"}
    assert sum(1 for m, *_ in sb.requests() if m == "DELETE") == deletes_before
    pages = [p for m, p, *_ in sb.requests() if m == "GET" and p.startswith("/api/v1/x/accounts")]
    assert any("cursor=" in p for p in pages)  # 25 listed, 10 a page: the listing was paged

    # The X user of account 4 connects again, under a new id: reconnected, named; exit 1.
    user = reconnect(sb, "4", "1004")
    again = cli(sb, tmp_path, "verify", str(results), "--json")
    assert again.returncode == 1, again.stderr
    found = json.loads(again.stdout)
    assert found["outcomes"] == {"gone": 4, "still_connected": 0, "reconnected": 1}
    [exception] = found["exceptions"]
    assert (exception["account_id"], exception["new_account_id"]) == ("4", "1004")
    assert exception["x_user_id"] == user["xUserId"]
    [latest] = [r for r in verify_records(results)[-5:] if r["outcome"] == "reconnected"]
    assert latest["new_account_id"] == "1004"

    # plan --offboarded selects exactly the user who came back; run - removes them.
    plan = cli(sb, tmp_path, "plan", "--offboarded", str(results))
    assert plan.returncode == 0, plan.stderr
    assert [json.loads(line)["account_id"] for line in plan.stdout.splitlines()] == ["1004"]
    removed = cli(sb, tmp_path, "run", "-", "--results", str(tmp_path / "kept-off.jsonl"),
                  stdin=plan.stdout)  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    final = cli(sb, tmp_path, "verify", str(results))
    assert final.returncode == 0, final.stdout + final.stderr
    assert "5 gone" in final.stdout

    # Verify records never change what a rerun does: every job is still skipped as done.
    rerun = cli(sb, tmp_path, "run", str(jobs), "--log-format", "json")
    assert rerun.returncode == 0
    summary = next(
        json.loads(line) for line in rerun.stderr.splitlines() if '"run_summary"' in line
    )
    assert summary["skipped_done"] == 5
    assert summary["records"] == 0


def test_verify_says_still_connected_when_the_log_lies(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """A log that says done for an account still connected (a log from another key, or
    edited): the account's GET decides: still_connected, exit 1."""
    sb = sandbox_process(*PAGED)
    jobs = write_jobs(tmp_path / "jobs.txt", ["7"])
    results = tmp_path / "jobs.txt.results.jsonl"
    assert cli(sb, tmp_path, "run", str(jobs)).returncode == 0
    record = read_results(results)[0]
    record.update(account_id="8", x_user_id=None, x_username="user8", chain=None)
    del record["chain"]
    with results.open("a") as f:
        f.write(json.dumps(record) + "\n")
    done = cli(sb, tmp_path, "verify", str(results))
    assert done.returncode == 1
    assert "8 (@user8): still connected" in done.stdout
    gets = [p for m, p, *_ in sb.requests() if m == "GET" and p == "/api/v1/x/accounts/8"]
    assert gets  # listed: confirmed by its own GET


def test_verify_without_a_key_is_exit_2(tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    results.write_text("")
    done = run_cli("verify", str(results), env=cli_env())
    assert done.returncode == 2
    assert "no API key" in done.stderr


def test_verify_of_a_log_with_nothing_done_here_is_not_a_success(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """The wrong file, or a sandbox rehearsal's log checked against a real API: nothing to
    verify is exit 2 saying so (never "every account gone"), and nothing is appended."""
    sb = sandbox_process(*PAGED)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    done = cli(sb, tmp_path, "verify", str(empty))
    assert done.returncode == 2, done.stderr
    assert "records no account done against this API" in done.stderr
    assert empty.read_text() == ""
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2"])
    rehearsal = run_cli("run", str(jobs), "--sandbox", env=cli_env())
    assert rehearsal.returncode == 0, rehearsal.stderr
    log = tmp_path / "jobs.txt.sandbox.results.jsonl"
    before = log.read_text()
    real = cli(sb, tmp_path, "verify", str(log))
    assert real.returncode == 2, real.stderr
    assert "(2 by another API or a sandbox rehearsal)" in real.stderr
    assert log.read_text() == before
    assert sb.stats()["requests"] == 0  # nothing asked of the API either


# The hash chain ---------------------------------------------------------------------------


def _run_log(sb: SandboxProcess, tmp: Path, ids: list[str]) -> Path:
    jobs = write_jobs(tmp / "jobs.txt", ids)
    assert cli(sb, tmp, "run", str(jobs)).returncode == 0
    return tmp / "jobs.txt.results.jsonl"


def _check(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("report", str(path), "--check", *args, env=cli_env())


def test_check_passes_an_intact_log_and_names_what_was_changed(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(*PAGED)
    log = _run_log(sb, tmp_path, [str(i) for i in range(1, 9)])
    lines = log.read_bytes().splitlines(keepends=True)
    assert len(lines) == 8
    intact = _check(log)
    assert intact.returncode == 0, intact.stdout
    assert "chain: intact, 8 records" in intact.stdout

    def tampered(name: str, new: list[bytes]) -> subprocess.CompletedProcess[str]:
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(b"".join(new))
        return _check(path)

    removed = tampered("removed", lines[:3] + lines[4:])
    assert removed.returncode == 1
    assert "BROKEN at line 4" in removed.stdout
    assert "removed" in removed.stdout

    record = json.loads(lines[5])
    account = record["account_id"]
    record["outcome"] = "failed"  # an outcome edited, the chain left as it was
    edited = tampered("edited", [*lines[:5], (json.dumps(record) + "\n").encode(), *lines[6:]])
    assert edited.returncode == 1
    assert f"BROKEN at line 6 (account {account})" in edited.stdout
    assert "edited" in edited.stdout

    # A record inserted by someone who knows the rule: linked to the one before it.
    forged = json.loads(lines[2])
    forged.update(account_id="4242", job_id="forged")
    forged["chain"] = link(json.loads(lines[2])["chain"], forged)
    inserted = tampered("inserted", [*lines[:3], (json.dumps(forged) + "\n").encode(), *lines[3:]])
    assert inserted.returncode == 1
    assert "BROKEN at line 4 (account 4242, job forged): inserted" in inserted.stdout


def test_a_line_torn_by_kill_9_is_listed_and_the_next_run_continues_the_chain(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(*PAGED)
    log = _run_log(sb, tmp_path, ["1", "2", "3"])
    jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "3", "4", "5", "6"])
    env = cli_env(
        XQUIK_API_KEY=sb.api_key,
        XQUIK_BASE_URL=sb.base_url,
        XQUIK_STATE_DIR=str(tmp_path / "state"),
        XQUIK_FAILPOINT="torn_write",
    )
    killed = run_cli("run", str(jobs), env=env)
    assert killed.returncode == -9  # SIGKILL, half a line written
    assert not log.read_bytes().endswith(b"\n")
    torn_line = log.read_bytes().count(b"\n") + 1
    assert cli(sb, tmp_path, "run", str(jobs)).returncode == 0  # resumes, finishes the line
    checked = _check(log)
    assert checked.returncode == 0, checked.stdout
    assert f"1 lines are not records (torn by a crash): {torn_line}" in checked.stdout
    verdict = check(log)
    assert verdict.intact
    assert verdict.records == 6
    assert verdict.torn == [torn_line]


def test_head_from_the_notification_catches_a_log_rewritten_whole(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(*PAGED)
    receiver = Receiver()
    try:
        jobs = write_jobs(tmp_path / "jobs.txt", ["1", "2", "3", "4"])
        done = cli(sb, tmp_path, "run", str(jobs), "--notify", receiver.url, "--log-format",
                   "json")  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        receiver.close()
    [post] = receiver.posts
    head = post["summary"]["chain_head"]
    assert head in post["text"]
    event = next(json.loads(x) for x in done.stderr.splitlines() if '"run_summary"' in x)
    assert event["chain_head"] == head
    log = tmp_path / "jobs.txt.results.jsonl"
    assert _check(log, "--head", head).returncode == 0

    # Rewritten whole: one outcome changed and every link recomputed from the seed. The
    # chain alone is intact again; the head the notification carried is not in it.
    previous, rewritten = SEED, []
    for number, line in enumerate(log.read_text().splitlines()):
        record = json.loads(line)
        if number == 1:
            record["outcome"] = "failed"
        record.pop("chain")
        record["chain"] = previous = link(previous, record)
        rewritten.append(json.dumps(record) + "\n")
    log.write_text("".join(rewritten))
    assert _check(log).returncode == 0
    caught = _check(log, "--head", head)
    assert caught.returncode == 1
    assert "does not hold head" in caught.stdout


def test_records_of_an_earlier_version_start_the_chain(tmp_path: Path) -> None:
    """A log whose first records carry no chain (written before it existed), continued by
    this version: intact, the unchained start counted; an unchained record later is not."""
    from worker.models import Outcome, Result
    from worker.results.sink import FileSink

    log = tmp_path / "old.jsonl"
    old = Result(run_id="old", source="a:1", outcome=Outcome.DISCONNECTED, account_id="1")
    log.write_text(old.to_json() + "\n" + old.to_json() + "\n")
    sink = FileSink.open(log)
    sink.write(Result(run_id="new", source="a:2", outcome=Outcome.DISCONNECTED, account_id="2"))
    sink.close()
    verdict = check(log)
    assert (verdict.intact, verdict.unchained, verdict.records) == (True, 2, 1)
    with log.open("a") as f:
        f.write(old.to_json() + "\n")
    late = check(log)
    assert not late.intact
    assert late.broken is not None
    assert late.broken.line == 4


@pytest.mark.parametrize("text", ["xyz", "ab" * 31, "g" * 64])
def test_head_must_be_a_chain(text: str, tmp_path: Path) -> None:
    log = tmp_path / "r.jsonl"
    log.write_text("")
    done = run_cli("report", str(log), "--check", "--head", text, env=cli_env())
    assert done.returncode == 2
    assert "--head" in done.stderr


def test_verify_and_chain_fields_match_the_schema(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    import jsonschema

    sb = sandbox_process(*PAGED)
    log = _run_log(sb, tmp_path, ["1", "2"])
    reconnect(sb, "2", "2002")
    assert cli(sb, tmp_path, "verify", str(log)).returncode == 1
    schema = json.loads((ROOT / "jobs" / "result.schema.json").read_text())
    records = read_results(log)
    assert {r["op"] for r in records} == {"disconnect", "verify"}
    for record in records:
        jsonschema.validate(record, schema)


def test_the_html_page_and_report_lead_with_the_chain_and_the_verification(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(*PAGED)
    log = _run_log(sb, tmp_path, ["1", "2", "3"])
    reconnect(sb, "2", "2002")
    assert cli(sb, tmp_path, "verify", str(log)).returncode == 1
    page = tmp_path / "page.html"
    text = run_cli("report", str(log), "--html", str(page), env=cli_env()).stdout
    first = text.splitlines()[:3]
    assert first[0].startswith("chain: intact, 6 records, head ")
    assert "2 gone, 0 still connected, 1 reconnected" in first[1]
    assert "2: reconnected as 2002" in first[2]
    html = page.read_text()
    assert 'id="chain"><b>Hash chain: intact</b>' in html
    assert "reconnected as 2002" in html
    assert html.index('id="verification"') < html.index('class="cards"')

    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:1] + lines[2:]))  # a record removed
    run_cli("report", str(log), "--html", str(page), env=cli_env())
    assert 'id="chain"><b>Hash chain: BROKEN</b>' in page.read_text()


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.text(max_size=12),
    st.text(st.characters(max_codepoint=0x80), max_size=6),  # ASCII's edges: \x00-\x1f, \x7f
    st.sampled_from(["ok", "http://127.0.0.1:9", "a\x7fb", 'say "hi"', "é", "\u2028", "tab\t"]),
)
_KEYS = st.one_of(st.sampled_from(["ts", "run_id", "chain", "a\x7f"]), st.text(max_size=8))


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.dictionaries(_KEYS, _SCALARS, max_size=8),  # a record as the worker writes them
        st.dictionaries(
            _KEYS,
            st.one_of(_SCALARS, st.floats(allow_nan=False), st.lists(_SCALARS, max_size=3)),
            max_size=8,
        ),
    )
)
def test_the_canonical_bytes_are_the_documented_encoders(record: dict[str, Any]) -> None:
    """Whatever a record holds (any text, huge numbers, floats, lists, a `chain`), its
    canonical bytes are json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    of it without `chain`: what any reader recomputes (the fast encoder never differs)."""
    from worker.results.chain import canonical

    plain = {k: v for k, v in record.items() if k != "chain"}
    expected = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert canonical(record) == expected.encode()
