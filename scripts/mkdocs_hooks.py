"""MkDocs hooks: the parts of the documentation that are never written by hand. A page names what
it wants with a marker, and the build puts it there from the one source:

    <!-- generated: commands -->          every command and option, from the parser
    <!-- generated: exit-codes -->        the exit codes, from worker.errors.EXIT_MEANINGS
    <!-- generated: schema PATH -->       a JSON schema's fields, as a table
    <!-- generated: benchmarks -->        bench/RESULTS.md, headings demoted
    <!-- include: PATH -->                a Markdown file of the repository

Used by mkdocs.yml (`hooks:`); `mkdocs build --strict` runs in `make test`."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!-- (generated|include): ([^>]+?) -->")


def on_page_markdown(markdown: str, **_: Any) -> str:
    return MARKER.sub(_expand, markdown)


def _expand(match: re.Match[str]) -> str:
    kind, what = match.group(1), match.group(2).strip()
    if kind == "include":
        return _include(ROOT / what)
    if what == "commands":
        return commands()
    if what == "exit-codes":
        return exit_codes()
    if what == "benchmarks":
        return _demote(_include(ROOT / "bench" / "RESULTS.md"), levels=1)
    if what.startswith("schema "):
        return schema(ROOT / what.split(" ", 1)[1])
    raise ValueError(f"unknown marker: {match.group(0)}")


def _include(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^# .*\n", "", text, count=1)  # the page has its own title
    # Links to the repository's files are not pages of this site: keep their names.
    return re.sub(r"\[`?([^\]`]+)`?\]\((?!https?:)[^)]+\)", r"`\1`", text)


def _demote(text: str, levels: int) -> str:
    return re.sub(r"(?m)^(#+) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", text)


def _cell(text: str) -> str:
    """Text for a table cell: `<jobs file>` is text, not a tag; `|` is not a column."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")


def commands() -> str:
    """Every command of `xquik-disconnect` (and their subcommands), as `--help` groups them."""
    from worker.cli import build_parser

    parser = build_parser()
    out: list[str] = []
    for name, sub in _subcommands(parser, "xquik-disconnect"):
        out += [f"## `{name}`", "", sub.description or "", "", "```", _usage(sub), "```", ""]
        for group in sub._action_groups:
            rows = [_row(action) for action in group._group_actions if action.help is not None]
            rows = [r for r in rows if r]
            if not rows:
                continue
            out += [f"**{group.title}**", "", "| option | what |", "|---|---|", *rows, ""]
        if sub.epilog and "examples:" in sub.epilog:
            example = sub.epilog.split("examples:", 1)[1].split("\n\n", 1)[0]
            out += ["Examples:", "", "```sh", *(x.strip() for x in example.strip().splitlines()),
                    "```", ""]  # fmt: skip
    return "\n".join(out)


def _subcommands(
    parser: argparse.ArgumentParser, name: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    found: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                nested = _subcommands(sub, f"{name} {verb}")
                found += nested or [(f"{name} {verb}", sub)]
    return found


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = parser._get_formatter()
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _row(action: argparse.Action) -> str:
    if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
        return ""
    if action.option_strings:
        meta = f" {action.metavar}" if action.metavar and action.nargs != 0 else ""
        if action.choices and not action.metavar:
            meta = " {" + ",".join(map(str, action.choices)) + "}"
        flags = ", ".join(f"`{o}{meta}`" for o in action.option_strings)
    else:
        flags = f"`{action.metavar or action.dest}`"
    return f"| {flags} | {_cell(action.help or '')} |"


def exit_codes() -> str:
    from worker.errors import EXIT_MEANINGS

    rows = [f"| `{int(code)}` | {_cell(long)} |" for code, (_, long) in EXIT_MEANINGS.items()]
    return "\n".join(["| code | meaning |", "|---|---|", *rows])


def schema(path: Path) -> str:
    """The properties of a JSON schema as a table: field, type, what."""
    data = json.loads(path.read_text(encoding="utf-8"))
    required = set(data.get("required", ()))
    rows = []
    for field, spec in data.get("properties", {}).items():
        kind = spec.get("type", spec.get("enum") and "enum") or "any"
        if isinstance(kind, list):
            kind = " or ".join(kind)
        if "enum" in spec:
            kind += ": " + ", ".join(f"`{v}`" for v in spec["enum"] if v is not None)
        mark = " (required)" if field in required else ""
        rows.append(f"| `{field}`{mark} | {_cell(kind)} | {_cell(spec.get('description', ''))} |")
    intro = data.get("description", "")
    return "\n".join([intro, "", "| field | type | what |", "|---|---|---|", *rows])
