"""Job lines in every format: valid ones become jobs, everything else an Invalid naming the line."""

from __future__ import annotations

import codecs
import contextlib
import json
import os
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import ConfigError
from worker.models import ID_PATTERN, Invalid, Job
from worker.sources.base import Item
from worker.sources.file import FileSource, LineParser, parse_bytes
from worker.sources.parse import (
    MAX_LINE,
    csv_columns,
    flag,
    parse_csv_row,
    parse_json_line,
    parse_text_line,
)

ids = st.from_regex(ID_PATTERN, fullmatch=True)


@given(ids)
def test_any_valid_id_round_trips_through_jsonl(account_id: str) -> None:
    """Every id the API allows is accepted unchanged, as an opaque string."""
    job = parse_json_line("f:1", json.dumps({"account_id": account_id}))
    assert isinstance(job, Job)
    assert job.account_id == account_id


@given(st.text(max_size=200))
def test_jsonl_parser_never_raises(line: str) -> None:
    """Any text at all gives a Job or an Invalid, never an exception."""
    item = parse_json_line("f:3", line)
    assert isinstance(item, Job | Invalid)
    if isinstance(item, Job) and item.account_id is not None:
        assert ID_PATTERN.fullmatch(item.account_id)


@given(st.text(max_size=200))
def test_text_parser_only_yields_safe_ids(line: str) -> None:
    """Whatever a text line holds, a Job's id can only be a safe path segment."""
    item = parse_text_line("f:1", line)
    if isinstance(item, Job) and item.account_id is not None:
        assert ID_PATTERN.fullmatch(item.account_id)
        assert "/" not in item.account_id
        assert "." not in item.account_id


@pytest.mark.parametrize(
    "line",
    [
        '{"account_id": "../monitors/7"}',
        '{"account_id": "4 2"}',
        '{"account_id": "a/b"}',
        '{"account_id": "%2e%2e"}',
        '{"account_id": ""}',
        '{"account_id": "' + "x" * 129 + '"}',
        '{"account_id": 42.5}',
        '{"account_id": ["1"]}',
        '{"username": "no spaces allowed"}',
        '{"job_id": "only"}',
        '{"account_id": "1", "delete_monitors": "maybe"}',
        "[1, 2]",
        "not json",
        "[" * 3000,
    ],
)
def test_bad_jsonl_lines_are_invalid(line: str) -> None:
    """Path injection, bad ids, wrong types and non-JSON are invalid, with a reason."""
    item = parse_json_line("jobs.jsonl:9", line)
    assert isinstance(item, Invalid)
    assert item.source == "jobs.jsonl:9"
    assert item.error


def test_jsonl_fields() -> None:
    """Optional fields are read and the id stays a string; a bare number is accepted as an id."""
    job = parse_json_line(
        "f:1", '{"account_id": "7", "username": "@Acme", "job_id": 12, "delete_monitors": true}'
    )
    assert job == Job("f:1", "7", "Acme", "12", True)
    assert parse_json_line("f:2", "42") == Job("f:2", "42")


def items(text: str, fmt: str | None = None, name: str = "jobs") -> list[Job | Invalid]:
    return parse_bytes(text.encode(), name, fmt)  # type: ignore[arg-type]


def test_text_format_skips_blanks_and_comments() -> None:
    """Text: one id per line, @handle for usernames, blank lines and # comments skipped."""
    got = items("# offboarding\n42\n\n  @Acme  \nxacct_9f\nbad id\n", "text")
    assert got == [
        Job("jobs:2", "42"),
        Job("jobs:4", None, "Acme"),
        Job("jobs:5", "xacct_9f"),
        Invalid("jobs:6", got[3].error),  # type: ignore[union-attr]
    ]


def test_a_rerun_drops_done_ids_before_a_job_is_built() -> None:
    """A text line naming an account done by an earlier run is counted and dropped in the
    parser; what would be invalid stays invalid (a control character, a key that is no id),
    handles and other formats are left to the runner, and line numbers do not move."""
    done = {"1", "2", "bad id", "4"}
    parser = LineParser("jobs.txt", "text", done=done)
    items = parser.feed(b"1\n 2 \n3\nbad id\n4\x0b\n@ann\n1\n5")
    items += parser.finish()
    assert parser.skipped == 3  # 1, 2 and 1 again
    assert [(i.source, isinstance(i, Job)) for i in items] == [
        ("jobs.txt:3", True),
        ("jobs.txt:4", False),
        ("jobs.txt:5", False),
        ("jobs.txt:6", True),
        ("jobs.txt:8", True),
    ]
    jsonl = LineParser("jobs.jsonl", "jsonl", done=done)
    assert len(jsonl.feed(b'{"account_id": "1"}\n')) == 1  # the runner skips it
    assert jsonl.skipped == 0


def test_csv_with_header_and_extra_columns() -> None:
    """CSV: the header names the columns; others are ignored; line numbers count the header."""
    text = "name,Account_ID,username,job_id\nA,1,acme,j1\nB,,bob,\nC,../x,,\n"
    got = items(text, "csv")
    assert got[0] == Job("jobs:2", "1", "acme", "j1")
    assert got[1] == Job("jobs:3", None, "bob")
    assert isinstance(got[2], Invalid)
    assert got[2].source == "jobs:4"


def test_csv_without_usable_header_is_a_config_error(tmp_path: Path) -> None:
    """A CSV that names neither column cannot be read at all: refused before the run; read
    anyway, every line is invalid and nothing raises."""
    path = tmp_path / "jobs.csv"
    path.write_text("id,name\n1,a\n")
    with pytest.raises(ConfigError, match=r"jobs\.csv:1"):
        FileSource(path).check()
    got = items("id,name\n1,a\n", "csv")
    assert [type(i) for i in got] == [Invalid, Invalid]


@pytest.mark.parametrize(
    ("first", "fmt"),
    [('{"account_id": "1"}', "jsonl"), ("account_id,username", "csv"), ("42", "text")],
)
def test_stdin_format_is_sniffed(first: str, fmt: str) -> None:
    """Without a file name, the first line tells the format."""
    got = items(f"{first}\n" + {"jsonl": '{"account_id": "2"}', "csv": "2,", "text": "2"}[fmt])
    assert got[-1] == Job("jobs:2", "2")


def test_over_long_line_is_invalid_and_skipped_whole() -> None:
    """A line over the limit is one Invalid; the next line is read normally."""
    text = "1\n" + "9" * (MAX_LINE * 3) + "\n3\n"
    got = items(text, "text")
    assert got[0] == Job("jobs:1", "1")
    assert isinstance(got[1], Invalid)
    assert got[1].source == "jobs:2"
    assert "longer than" in got[1].error
    assert got[2] == Job("jobs:3", "3")


@given(st.lists(st.text(alphabet="ab\r\n", max_size=30), max_size=20), st.integers(1, 7))
def test_lines_are_numbered_alike_however_the_input_is_chunked(
    pieces: list[str], size: int
) -> None:
    """Only \\n ends a line (as for sed and wc); a trailing \\r is dropped, any other \\r
    makes its line invalid; chunk boundaries change nothing."""
    data = "".join(pieces).encode()
    parser = LineParser("jobs", "text", limit=10)
    got = [i for n in range(0, len(data), size) for i in parser.feed(data[n : n + size])]
    got += parser.finish()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    expected = []
    for number, raw in enumerate(lines, 1):
        text = raw.decode().removesuffix("\r")
        if not text.strip():
            continue
        ok = len(text) <= 10 and "\r" not in text
        expected.append((f"jobs:{number}", ok))
    assert [(i.source, isinstance(i, Job)) for i in got] == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        (" TRUE ", True),
        ("Yes", True),
        ("1", True),
        ("false", False),
        ("no", False),
        ("0", False),
        ("", False),
        ("maybe", None),
        ("2", None),
        (1, None),
        (None, None),
        ([True], None),
    ],
)
def test_one_truthiness_rule_for_delete_monitors(value: object, expected: bool | None) -> None:
    """JSONL, CSV and stream messages share one rule; anything else is refused (None)."""
    assert flag(value) is expected


def test_the_rule_is_the_same_in_every_format() -> None:
    """The same text means the same in a CSV row, a JSONL line and a stream message."""
    from worker.sources.stream import parse_message

    for text, expected in (("YES", True), ("0", False)):
        csv_item = parse_csv_row("f.csv:2", ["7", text], (0, None, None, 1, None))
        json_item = parse_json_line(
            "f.jsonl:1", f'{{"account_id": "7", "delete_monitors": "{text}"}}'
        )
        stream_item = parse_message("s", "1-0", {"account_id": "7", "delete_monitors": text})
        for item in (csv_item, json_item, stream_item):
            assert isinstance(item, Job)
            assert item.delete_monitors is expected


async def read_all(source: FileSource) -> list[Job | Invalid]:
    return [item async for batch in source.batches() for item in batch]


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=600)
    | st.lists(
        st.sampled_from(
            [
                b"1",
                b"@a",
                b'{"account_id": "2"}',
                b"account_id,username",
                b'"33',
                b'34",',
                b"\r",
                b"\x00",
                b"\xff",
                b"\xef\xbb\xbf",
                b",",
                b'"',
                b"\n",
                b"\r\n",
                b"\t",
                b"#",
            ]
        ),
        max_size=40,
    ).map(b"".join),
    suffix=st.sampled_from([".csv", ".jsonl", ".txt", ""]),
)
def test_arbitrary_bytes_never_raise_out_of_a_source(data: bytes, suffix: str) -> None:
    """Any bytes, in any format (a suffixless name is sniffed, as stdin is): at most a refusal
    before the run (ConfigError from check), never an exception from reading; at most one
    item per line, each naming its own line."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"jobs{suffix}"
        path.write_bytes(data)
        source = FileSource(path)
        with contextlib.suppress(ConfigError):
            source.check()
        got = anyio.run(read_all, source)
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    numbers = [int(item.source.rsplit(":", 1)[1]) for item in got]
    assert numbers == sorted(set(numbers))
    assert all(1 <= n <= lines for n in numbers)


def test_a_stray_carriage_return_in_a_csv_row_is_one_invalid_line(tmp_path: Path) -> None:
    """The 0.1 crash: a \\r inside row 801 of 1,000. Every other row is a job."""
    rows = [f"{i},user{i}" for i in range(1, 1001)]
    rows[799] = "800,\ruser800"
    path = tmp_path / "jobs.csv"
    path.write_text("account_id,username\n" + "\n".join(rows) + "\n")
    FileSource(path).check()
    got = anyio.run(read_all, FileSource(path))
    assert len(got) == 1000
    [bad] = [i for i in got if isinstance(i, Invalid)]
    assert bad.source.endswith("jobs.csv:801")
    assert "U+000D" in bad.error


@pytest.mark.parametrize(
    ("text", "bad"),
    [('account_id\n"33\n34",\n5\n', {2, 3}), ('account_id\n"48\n7\n', {2})],
)
def test_a_malformed_csv_quote_is_never_silently_repaired(text: str, bad: set[int]) -> None:
    """A quoted field that spans lines or never closes: the affected lines are invalid."""
    got = items(text, "csv")
    assert {int(i.source.split(":")[1]) for i in got if isinstance(i, Invalid)} == bad
    assert not [i for i in got if isinstance(i, Job) and i.account_id in {"33", "34", "48"}]


@pytest.mark.parametrize(
    "head", [codecs.BOM_UTF16_LE + "account_id\n1\n".encode("utf-16-le"), b"\x00\x01\x02binary"]
)
def test_a_file_that_is_not_utf8_text_is_refused_before_the_run(
    tmp_path: Path, head: bytes
) -> None:
    """UTF-16 or binary: a ConfigError that says so (exit 2), not a run of garbage lines."""
    path = tmp_path / "jobs.csv"
    path.write_bytes(head)
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        FileSource(path).check()


def test_a_utf8_bom_is_fine(tmp_path: Path) -> None:
    """A UTF-8 byte order mark (Excel's CSV) is read as if it were not there."""
    path = tmp_path / "jobs.csv"
    path.write_bytes(codecs.BOM_UTF8 + b"account_id\r\n7\r\n")
    FileSource(path).check()
    assert anyio.run(read_all, FileSource(path)) == [Job(f"{path}:2", "7")]


async def test_a_fifo_is_read_as_lines_arrive(tmp_path: Path) -> None:
    """A pipe's first line reaches the run before the writer has finished (or closed)."""
    fifo = tmp_path / "jobs"
    os.mkfifo(fifo)
    source = FileSource(fifo)
    source.check()  # does not read (or block on) a FIFO

    def writer() -> int:
        fd = os.open(fifo, os.O_WRONLY)
        os.write(fd, b'{"account_id": "1"}\n')
        return fd

    batches = source.batches()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            fds: list[int] = []

            async def write() -> None:
                fds.append(await anyio.to_thread.run_sync(writer))

            tg.start_soon(write)
            first = await anext(batches)
    assert first == [Job(f"{fifo}:1", "1")]
    os.write(fds[0], b"2\n")
    os.close(fds[0])
    rest = [item async for batch in batches for item in batch]
    assert rest == [Job(f"{fifo}:2", "2")]


def test_a_tenant_is_read_from_every_format_and_checked() -> None:
    """`tenant` names a key of --keys: the same in a JSONL line, a CSV column and a stream
    message; a name that could not be a key file's is invalid and names the line; a job of
    one tenant is not a duplicate of the same id under another."""
    from worker.sources.stream import parse_message

    json_item = parse_json_line("f.jsonl:1", '{"account_id": "7", "tenant": "brand-a"}')
    columns = csv_columns(["account_id", "tenant"])
    csv_item = parse_csv_row("f.csv:2", ["7", " brand-a "], columns)
    stream_item = parse_message("s", "1-0", {"account_id": "7", "tenant": "brand-a"})
    for item in (json_item, csv_item, stream_item):
        assert isinstance(item, Job)
        assert item.tenant == "brand-a"
    plain = parse_json_line("f.jsonl:2", '{"account_id": "7"}')
    assert isinstance(plain, Job)
    assert plain.tenant is None
    assert plain.key != json_item.key  # type: ignore[union-attr]
    for bad in ('"../etc"', '"a b"', "7", '"' + "x" * 65 + '"', '".hidden"'):
        item = parse_json_line("f.jsonl:3", f'{{"account_id": "7", "tenant": {bad}}}')
        assert isinstance(item, Invalid), bad
        assert item.error.startswith("invalid tenant"), bad
        assert item.source == "f.jsonl:3"


async def _read_all(source: FileSource) -> list[Item]:
    out: list[Item] = []
    async for batch in source.batches():
        out.extend(batch)
    return out


async def test_several_keys_read_a_file_grouped_by_tenant_in_turns(tmp_path: Path) -> None:
    """With several keys, a regular file's jobs come one of each tenant per turn (tenants in
    the order the file first names them, each one's jobs in file order), however the file
    is grouped; invalid lines come at once; every line keeps its number, every line is one
    item. A file of more than one chunk, CSV with a header, and a text file (in order)."""
    lines = ["\ufeff# agencies' export, sorted by client"]
    lines += [json.dumps({"account_id": f"a{i}", "tenant": "acme"}) for i in range(1, 4)]
    lines += ["{not json", "", json.dumps({"account_id": "b1", "tenant": "brand-b"})]
    lines += [json.dumps({"account_id": "b2", "tenant": "brand-b"}), json.dumps("d1")]
    lines += [json.dumps({"account_id": "c1", "tenant": "client-x"}) + "\r"]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines))  # no newline at the end
    items = await _read_all(FileSource(path, fair=True))
    got = [(i.source.rsplit(":")[1], i.account_id, isinstance(i, Job)) for i in items]
    assert got == [
        ("5", None, False),  # invalid: at once
        ("2", "a1", True), ("7", "b1", True), ("9", "d1", True), ("10", "c1", True),
        ("3", "a2", True), ("8", "b2", True),
        ("4", "a3", True),
    ]  # fmt: skip
    in_order = await _read_all(FileSource(path))
    assert sorted(i.source for i in in_order) == sorted(i.source for i in items)

    big = tmp_path / "big.csv"  # ~3 chunks, grouped: t0's 3,000 jobs, then t1's, t2's
    rows = [f"t{t}-{i},t{t}" for t in range(3) for i in range(3000)]
    big.write_text("account_id,tenant\n" + "\n".join(rows) + "\n")
    items = await _read_all(FileSource(big, fair=True))
    assert [i.account_id for i in items[:6]] == ["t0-0", "t1-0", "t2-0", "t0-1", "t1-1", "t2-1"]
    assert len(items) == 9000
    assert {i.source for i in items} == {f"{big}:{n}" for n in range(2, 9002)}
    where = {row: number for number, row in enumerate(rows, 2)}
    assert all(i.source == f"{big}:{where[f'{i.account_id},{i.tenant}']}" for i in items)

    text = tmp_path / "ids.txt"
    text.write_text("1\n2\n3\n")
    assert [i.account_id for i in await _read_all(FileSource(text, fair=True))] == ["1", "2", "3"]


async def test_a_file_cut_short_between_the_passes_loses_no_line(tmp_path: Path) -> None:
    """Read in turns, a file truncated after it was indexed: every indexed line is still one
    item (those that cannot be read back are invalid, naming their line), none is lost."""
    path = tmp_path / "jobs.jsonl"
    lines = [json.dumps({"account_id": f"t{t}-{i}", "tenant": f"t{t}"}) for t in range(3)
             for i in range(400)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    items: list[Item] = []
    async for batch in FileSource(path, fair=True).batches():
        if not items:
            path.write_bytes(b"")  # after the first pass: what is not buffered yet is gone
        items.extend(batch)
    assert len(items) == 1200
    assert sorted(int(i.source.rsplit(":", 1)[1]) for i in items) == list(range(1, 1201))
    changed = [i for i in items if isinstance(i, Invalid)]
    assert changed
    assert {i.error for i in changed} == {"the line changed while the run was reading the file"}
    assert all(isinstance(i, Job) for i in items[:512])
