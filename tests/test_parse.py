"""Job lines in every format: valid ones become jobs, everything else an Invalid naming the line."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import ConfigError
from worker.models import ID_PATTERN, Invalid, Job
from worker.sources.file import iter_lines, parse_stream
from worker.sources.parse import MAX_LINE, flag, parse_csv_row, parse_json_line, parse_text_line

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
    return list(parse_stream(io.StringIO(text), name, fmt))  # type: ignore[arg-type]


def test_text_format_skips_blanks_and_comments() -> None:
    """Text: one id per line, @handle for usernames, blank lines and # comments skipped."""
    got = items("# offboarding\n42\n\n  @Acme  \nxacct_9f\nbad id\n", "text")
    assert got == [
        Job("jobs:2", "42"),
        Job("jobs:4", None, "Acme"),
        Job("jobs:5", "xacct_9f"),
        Invalid("jobs:6", got[3].error),  # type: ignore[union-attr]
    ]


def test_csv_with_header_and_extra_columns() -> None:
    """CSV: the header names the columns; others are ignored; line numbers count the header."""
    text = "name,Account_ID,username,job_id\nA,1,acme,j1\nB,,bob,\nC,../x,,\n"
    got = items(text, "csv")
    assert got[0] == Job("jobs:2", "1", "acme", "j1")
    assert got[1] == Job("jobs:3", None, "bob")
    assert isinstance(got[2], Invalid)
    assert got[2].source == "jobs:4"


def test_csv_without_usable_header_is_a_config_error() -> None:
    """A CSV that names neither column cannot be read at all: that is a usage error."""
    with pytest.raises(ConfigError, match="jobs:1"):
        items("id,name\n1,a\n", "csv")


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


@given(st.lists(st.text(alphabet="ab\r\n", max_size=30), max_size=20))
def test_iter_lines_numbers_every_line(chunks: list[str]) -> None:
    """Only \\n ends a line (as for sed and wc), whatever else the lines hold."""
    text = "".join(chunks)
    numbered = list(iter_lines(io.StringIO(text, newline="\n"), 10))
    expected = text.split("\n")
    if expected and expected[-1] == "":
        expected.pop()
    assert [n for n, _ in numbered] == list(range(1, len(expected) + 1))
    for (_, got), want in zip(numbered, expected, strict=True):
        assert got is None if len(want) > 10 else got == want.rstrip("\r\n")


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
        csv_item = parse_csv_row("f.csv:2", ["7", text], (0, None, None, 1))
        json_item = parse_json_line(
            "f.jsonl:1", f'{{"account_id": "7", "delete_monitors": "{text}"}}'
        )
        stream_item = parse_message("s", "1-0", {"account_id": "7", "delete_monitors": text})
        for item in (csv_item, json_item, stream_item):
            assert isinstance(item, Job)
            assert item.delete_monitors is expected
