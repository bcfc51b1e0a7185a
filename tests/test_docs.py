"""The README and the documentation site say what is true: every shell example runs as written
against the sandbox (a block marked `<!-- not runnable: REASON -->` excepted, with its reason),
and every option an example or a sentence names exists for its command.

A runnable block runs line by line in a fresh directory holding the files the examples name
(accounts.csv, jobs.csv, jobs.jsonl, ids.txt, handles.txt, keys/ and the repository's jobs/),
with `xquik-disconnect` on PATH and XQUIK_BASE_URL naming a sandbox process. Two placeholders
stand for what a reader brings: `xq_…` (their key: the sandbox's) and
`redis://127.0.0.1:6379/0` (their Redis: a real redis-server of the test's). A line exits 0
unless its comment says `exits N`; `export NAME=VALUE` lines carry on to the next lines."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, SandboxProcess, cli_env

DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "jobs" / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
]
BLOCK = re.compile(
    r"(?:<!-- not runnable: (?P<why>[^>]*?) -->\n)?^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$",
    re.S | re.M,
)
SHELL = {"sh", "bash", "shell", "console"}
EXITS = re.compile(r"#.*\bexits (\d+)")
REDIS_PLACEHOLDER = "redis://127.0.0.1:6379/0"
KEY_PLACEHOLDER = "xq_…"


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence
    lang: str
    body: str
    not_runnable: str | None

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"

    def commands(self) -> Iterator[tuple[int, str]]:
        """(line number, command) for each command line, continuations joined."""
        pending, start = "", 0
        for offset, text in enumerate(self.body.splitlines(), start=self.line + 1):
            if not pending:
                start = offset
            if text.endswith("\\"):
                pending += text[:-1] + " "
                continue
            command = (pending + text).strip()
            pending = ""
            if command and not command.startswith("#"):
                yield start, command


def blocks() -> list[Block]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            found.append(
                Block(
                    document,
                    text.count("\n", 0, match.start("lang")) + 1,
                    match["lang"],
                    match["body"],
                    match["why"],
                )
            )
    return found


RUNNABLE = [b for b in blocks() if b.lang in SHELL and b.not_runnable is None]


def test_the_documents_have_examples_and_every_exception_says_why() -> None:
    every = blocks()
    readme = [b for b in RUNNABLE if b.document.name == "README.md" and b.document.parent == ROOT]
    assert len(readme) >= 5, [b.name for b in readme]
    assert len(RUNNABLE) >= 8
    for block in every:
        if block.not_runnable is not None:
            assert len(block.not_runnable.strip()) >= 10, f"{block.name}: say why it cannot run"
    # A shell block without a language would escape this test: none may hold a command.
    for block in every:
        if block.lang == "":
            assert not re.search(r"^\s*xquik-disconnect ", block.body, re.M), block.name


def _parser_options() -> dict[tuple[str, ...], set[str]]:
    """Every (sub)command's path -> its option strings."""
    import argparse

    from worker.cli import build_parser

    options: dict[tuple[str, ...], set[str]] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        options[path] = {o for a in parser._actions for o in a.option_strings}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))

    walk(build_parser(), ())
    return options


def _invocations(text: str) -> Iterator[list[str]]:
    """Each `xquik-disconnect …` command in a line of text, as words (pipes split)."""
    for segment in re.split(r"\||&&|;|`", text):
        try:
            words = shlex.split(segment, comments=True)
        except ValueError:
            continue
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # NAME=value before the command
        if words and words[0] == "xquik-disconnect":
            yield words[1:]


def test_every_option_the_documents_name_exists_for_its_command() -> None:
    options = _parser_options()
    checked = 0
    for document in DOCUMENTS:
        for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), 1):
            for words in _invocations(line):
                path: tuple[str, ...] = ()
                for word in words:
                    if (*path, word) in options:
                        path = (*path, word)
                    elif not word.startswith("-"):
                        break
                for word in words:
                    flag = word.split("=", 1)[0]
                    if flag.startswith("--") and flag != "--":
                        checked += 1
                        known = options[path] | options[()]
                        where = f"{document.relative_to(ROOT)}:{number}"
                        assert flag in known, f"{where}: {' '.join(path)} has no {flag}"
    assert checked >= 30


def test_no_document_writes_an_options_table_by_hand() -> None:
    """Option tables come from the parser (the generated reference pages), never a copy."""
    for document in DOCUMENTS:
        rows = [
            line
            for line in document.read_text(encoding="utf-8").splitlines()
            if re.match(r"\|\s*`?--[a-z]", line)
        ]
        assert rows == [], f"{document.relative_to(ROOT)}: a hand-written options table"


def _workdir(tmp_path: Path, sb: SandboxProcess, keys_out: Path) -> tuple[Path, dict[str, str]]:
    """The files the examples name, and the environment of a reader's shell."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "jobs", work / "jobs", ignore=shutil.ignore_patterns("*.results.jsonl"))
    (work / "accounts.csv").write_text("account_id\n" + "".join(f"{i}\n" for i in range(1, 26)))
    (work / "jobs.csv").write_text("account_id,job_id\n26,a\n27,b\n28,c\n")
    (work / "jobs.jsonl").write_text(
        "".join(json.dumps({"account_id": str(i)}) + "\n" for i in range(29, 33))
    )
    (work / "tenants.jsonl").write_text(
        "".join(json.dumps({"account_id": f"t1-{i}", "tenant": "client-x"}) + "\n" for i in (1, 2))
    )
    (work / "ids.txt").write_text("33\n34\n")
    listed = sb.get("/x/accounts")["accounts"]
    healthy = [a["xUsername"] for a in listed if a.get("health") == "healthy" and int(a["id"]) > 36]
    (work / "handles.txt").write_text(f"@{healthy[0]}\n{healthy[1]}\n")
    keys = work / "keys"
    keys.mkdir(mode=0o700)
    (keys / "client-x").write_text((keys_out / "t1").read_text())
    (keys / "client-x").chmod(0o600)
    home = tmp_path / "home"
    home.mkdir()
    env = cli_env(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_STATE_HOME=str(home / ".state"),
        PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        XQUIK_BASE_URL=sb.base_url,
    )
    return work, env


DOCUMENTS_WITH_EXAMPLES = sorted({b.document for b in RUNNABLE})


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "document",
    DOCUMENTS_WITH_EXAMPLES,
    ids=[str(d.relative_to(ROOT)) for d in DOCUMENTS_WITH_EXAMPLES],
)
def test_the_examples_run_as_written(
    document: Path,
    tmp_path: Path,
    sandbox_process: Callable[..., SandboxProcess],
    request: pytest.FixtureRequest,
) -> None:
    """A document's runnable blocks, in order, in one reader's session (an `export` in one block
    holds for the next), each line with the exit code it says."""
    keys_out = tmp_path / "tenant-keys"
    sb = sandbox_process(
        "--accounts",
        "60",
        "--delete-limit",
        "600/60s",
        "--tenants",
        "1",
        "--keys-out",
        str(keys_out),
    )
    work, env = _workdir(tmp_path, sb, keys_out)
    runnable = [b for b in RUNNABLE if b.document == document]
    substitutions = {KEY_PLACEHOLDER: sb.api_key}
    if any(REDIS_PLACEHOLDER in b.body for b in runnable):
        substitutions[REDIS_PLACEHOLDER] = request.getfixturevalue("redis_server").url
    ran = 0
    for block in runnable:
        for number, command in block.commands():
            for placeholder, value in substitutions.items():
                command = command.replace(placeholder, value)
            words = shlex.split(command, comments=True)
            if words[0] == "export":
                for assignment in words[1:]:
                    name, _, value = assignment.partition("=")
                    env[name] = value
                continue
            expected = int(m[1]) if (m := EXITS.search(command)) else 0
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", command],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            where = f"{document.relative_to(ROOT)}:{number}: {command}"
            tail = done.stderr[-3000:]
            assert done.returncode == expected, f"{where}\nexit {done.returncode}\n{tail}"
            assert "Traceback" not in done.stderr, f"{where}\n{tail}"
            ran += 1
    assert ran > 0


def test_readme_benchmarks_are_the_ones_bench_results_holds() -> None:
    """README's benchmark section is what `make bench` generates from bench/RESULTS.md (its
    `headline:` lines): the two cannot drift."""
    check = subprocess.run(
        [sys.executable, "scripts/bench_readme.py", "--check"], cwd=ROOT, check=False
    )
    assert check.returncode == 0, "README's benchmark section differs: run scripts/bench_readme.py"
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- bench:start -->", 1)[1].split("<!-- bench:end -->", 1)[0]
    results = (ROOT / "bench" / "RESULTS.md").read_text()
    headlines = [line for line in results.splitlines() if line.startswith("headline: ")]
    assert len(headlines) >= 6  # one or more per benchmark
    for line in headlines:
        assert f"- {line.removeprefix('headline: ')}" in block
