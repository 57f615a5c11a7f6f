"""Regenerate the command reference in docs/cli.md from the live ``--help`` texts.

Run after changing a command: ``python scripts/gen_cli_docs.py``. A test checks the file is current.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
MARK = "<!-- generated below by scripts/gen_cli_docs.py; do not edit by hand -->"


def _help(cli: click.Group, path: list[str]) -> str:
    ctx = click.Context(cli, info_name="panderm", terminal_width=100)
    cmd: click.Command = cli
    for name in path:
        ctx = click.Context(cmd.get_command(ctx, name), info_name=name, parent=ctx, terminal_width=100)
        cmd = ctx.command
    return cmd.get_help(ctx)


def render() -> str:
    """The generated part of docs/cli.md."""
    from panderm_cli.app import build_cli

    cli = build_cli()
    ctx = click.Context(cli, info_name="panderm")
    parts = [MARK, "", "## `panderm`", "", "```", _help(cli, []), "```", ""]
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        parts += [f"## `panderm {name}`", "", "```", _help(cli, [name]), "```", ""]
        if isinstance(cmd, click.Group):
            for sub in cmd.list_commands(ctx):
                parts += [f"### `panderm {name} {sub}`", "", "```", _help(cli, [name, sub]), "```", ""]
    return "\n".join(parts)


def current_doc() -> str:
    head = DOC.read_text().split(MARK)[0] if DOC.exists() else ""
    return head + render()


if __name__ == "__main__":
    text = current_doc()
    if "--check" in sys.argv:
        sys.exit(0 if DOC.read_text() == text else 1)
    DOC.write_text(text)
    print(f"wrote {DOC}")
