"""Shell completion, in real shells: the script `completion bash` prints, loaded into bash,
offers the commands, the options, their choices and file paths as a person types them; zsh
and fish get scripts of their own. Generated from the parser: a new option completes too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from worker.cli import COMMANDS

SCRIPT = Path(sys.executable).with_name("xquik-disconnect")
HARNESS = """
source <("$XD" completion bash)
fn=$(complete -p xquik-disconnect | sed -E 's/.*-F ([^ ]+).*/\\1/')
COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
"$fn" xquik-disconnect "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
printf '%s\\n' "${COMPREPLY[@]}"
"""


def offered(*words: str, cwd: Path | None = None) -> list[str]:
    """What bash's completion offers for the command line `words` (the last one being typed)."""
    done = subprocess.run(
        ["bash", "-c", HARNESS, "bash", "xquik-disconnect", *words],
        capture_output=True, text=True, timeout=60, cwd=cwd,
        env={"XD": str(SCRIPT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_bash_completes_commands_options_choices_and_paths(tmp_path: Path) -> None:
    assert offered("r") == ["run", "report"]
    assert offered("run", "--ra") == ["--rate", "--rate-margin"]
    assert offered("run", "--log-format", "") == ["json", "console"]
    assert offered("run", "--delete-monitors", "") == ["account", "all"]
    assert offered("completion", "") == ["bash", "zsh", "fish"]
    assert offered("dead", "") == ["list", "requeue", "purge"]
    (tmp_path / "jobs.csv").write_text("account_id\n1\n")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keyfile").write_text("x")
    assert offered("run", "--results", "jo", cwd=tmp_path) == ["jobs.csv"]
    assert offered("run", "--keys", "k", cwd=tmp_path) == ["keys"]  # directories only
    assert "jobs.csv" in offered("run", "j", cwd=tmp_path)  # SOURCE: a file


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_load(shell: str) -> None:
    """The zsh and fish scripts name every command; where the shell is installed, it loads
    them without an error."""
    script = run_cli("completion", shell)
    assert script.returncode == 0
    for command in COMMANDS:
        assert command in script.stdout
    if shutil.which(shell):
        check = ["zsh", "-n"] if shell == "zsh" else ["fish", "--no-execute"]
        done = subprocess.run([*check], input=script.stdout, text=True, capture_output=True)
        assert done.returncode == 0, done.stderr
