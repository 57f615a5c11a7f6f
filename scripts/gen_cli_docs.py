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


def _type_name(row) -> str:
    if row.is_flag:
        return "flag"
    if isinstance(row.type, click.Choice):
        return ", ".join(row.type.choices)
    return {"integer range": "integer", "text": "text"}.get(row.type.name, row.type.name)


def _optional_somewhere(cli: click.Group) -> set[str]:
    """Shared option names that some command makes optional although SHARED requires them."""
    found, stack = set(), [cli]
    while stack:
        cmd = stack.pop()
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            stack += [cmd.get_command(ctx, n) for n in cmd.list_commands(ctx)]
            continue
        found |= {p.panderm_shared for p in cmd.params if getattr(p, "panderm_shared", None) and not p.required}
    return found


def convention_table(cli: click.Group | None = None) -> list[str]:
    """The shared options (panderm_cli.options.SHARED) as a Markdown table."""
    from panderm_cli.options import SHARED

    optional = _optional_somewhere(cli) if cli is not None else set()
    lines = ["## Shared options", "",
             "Every command builds these from `panderm_cli/options.py`; `tests/test_cli_conventions.py` checks",
             "each registered command (plugins included) against this table. A command that changes a default",
             "says why in its help (`[default: 16, the paper's segmentation recipe]`).", "",
             "| Option | Type | Default | Meaning |", "|---|---|---|---|"]
    for row in SHARED.values():
        default = ("required" + (" (some commands have a default, see their help)" if row.name in optional else "")
                   if row.required else "off" if row.is_flag else
                   "—" if row.default is None else f"`{row.default}`")
        meaning = row.help.replace("|", "/")
        lines.append(f"| `{', '.join(row.decls)}` | {_type_name(row)} | {default} | {meaning} |")
    return lines + [""]


def render() -> str:
    """The generated part of docs/cli.md."""
    from panderm_cli.app import build_cli

    cli = build_cli()
    ctx = click.Context(cli, info_name="panderm")
    parts = [MARK, "", *convention_table(cli), "## `panderm`", "", "```", _help(cli, []), "```", ""]
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
