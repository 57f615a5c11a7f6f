"""Built-in plugin: longitudinal monitoring (``align-pair``, ``change``, ``sequence``).

Import stays light: command modules load only when a command runs.
"""

from __future__ import annotations

import panderm


@panderm.hookimpl
def register_commands(cli):
    # Sections for the commands of this plugin; each adds its own lazy command.
    pass
