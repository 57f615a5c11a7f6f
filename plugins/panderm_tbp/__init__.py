"""Built-in plugin: TBP screening (``screen-tbp``, ``tbp train``, ``tbp eval``).

Import stays light: command modules load only when a command runs.
"""

from __future__ import annotations

import panderm


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("screen-tbp", "panderm_tbp.commands:screen_tbp_cmd",
                         "Screen TBP lesion tiles: risk head + ugly duckling + measurement model.")
    cli.add_lazy_command("tbp", "panderm_tbp.commands:tbp_group",
                         "Train and evaluate TBP screening bundles (train, eval).")
