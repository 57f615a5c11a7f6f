"""Docs stay true: the generated CLI reference is current and the README commands exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    result = subprocess.run([sys.executable, "scripts/gen_cli_docs.py", "--check"], cwd=REPO, timeout=120)
    assert result.returncode == 0, "docs/cli.md is stale: run `python scripts/gen_cli_docs.py`"


def test_readme_opens_with_install_demo_and_test_commands():
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    assert "pip install" in commands[0] and "panderm screen-tbp --demo" in commands[0]
    assert "pip install" in commands[1] and "pytest" in commands[1]
    test_command = commands[1].split("&& ")[-1]
    assert test_command in (REPO / ".ci" / "run").read_text(), "CI must run exactly the README's test command"


def test_every_readme_panderm_command_is_registered(cli):
    from panderm_cli.app import build_cli

    group = build_cli()
    import click

    names = set(group.list_commands(click.Context(group)))
    used = set(re.findall(r"^panderm ([a-z-]+)", (REPO / "README.md").read_text(), flags=re.M))
    assert used and used <= names, used - names
