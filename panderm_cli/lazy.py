"""A Click group whose commands import only when they run.

``panderm --help`` must stay fast, so the group lists lazy commands from their
registered short help without importing their modules (or torch).
"""

from __future__ import annotations

import importlib

import click


class LazyGroup(click.Group):
    """Click group that supports ``add_lazy_command(name, "module:attr", short_help)``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, tuple[str, str]] = {}
        self.command_owner: dict[str, str] = {}
        self.current_plugin: str | None = None

    def _claim(self, name: str) -> None:
        from panderm.errors import PluginError

        owner = self.current_plugin or "panderm_cli"
        if name in self.command_owner and self.command_owner[name] != owner:
            raise PluginError(
                f"command '{name}' is registered twice: by plugin '{self.command_owner[name]}' "
                f"and by plugin '{owner}'",
                hint="uninstall or disable one of the two plugins (PANDERM_DISABLE_PLUGINS=name)",
            )
        self.command_owner[name] = owner

    def add_lazy_command(self, name: str, import_path: str, short_help: str) -> None:
        """Register a command by ``"package.module:attribute"`` without importing it."""
        self._claim(name)
        self._lazy[name] = (import_path, short_help)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        self._claim(name)
        super().add_command(cmd, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self._lazy and name not in self.commands:
            import_path, _ = self._lazy[name]
            module_name, attr = import_path.split(":")
            cmd = getattr(importlib.import_module(module_name), attr)
            self.commands[name] = cmd
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self._lazy and name not in self.commands:
                rows.append((name, self._lazy[name][1]))
            else:
                cmd = self.commands[name]
                if not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit=formatter.width - 6 - 20)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
