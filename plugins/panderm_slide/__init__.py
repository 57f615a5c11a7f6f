"""Built-in plugin: whole-slide pathology (``panderm slide tile|extract|mil|heatmap``).

Import stays light: the command module loads only when ``panderm slide`` runs.
"""

from __future__ import annotations

import panderm


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("slide", "panderm_slide.commands:slide_group",
                         "Whole-slide images: tile into patches, extract per-slide patch features.")
