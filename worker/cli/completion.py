"""`xquik-disconnect completion bash|zsh|fish`: a completion script generated from the real
parser by shtab (a well-kept generator whose scripts run in the shell alone, so Tab costs no
Python start, unlike argcomplete's, which calls back into Python at every Tab)."""

from __future__ import annotations

import argparse
import sys

from worker.cli.parser import DIRECTORY, FILE, build_parser
from worker.errors import ExitCode


def main(args: argparse.Namespace) -> int:
    import shtab

    parser = build_parser()
    kinds = {FILE: shtab.FILE, DIRECTORY: shtab.DIRECTORY}
    for action in _actions(parser):
        kind = getattr(action, "complete", None)
        if isinstance(kind, str) and kind in kinds:
            action.complete = kinds[kind]  # type: ignore[attr-defined]
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return ExitCode.OK


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every action of the parser and of its subcommands, however deep."""
    found: list[argparse.Action] = []
    for action in parser._actions:
        found.append(action)
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _actions(sub)
    return found


__all__ = ["main"]
