"""Built-in plugin: longitudinal monitoring (``align-pair``, ``change``, ``sequence``).

Import stays light: command modules load only when a command runs.
"""

from __future__ import annotations

import panderm


@panderm.hookimpl
def register_commands(cli):
    # Sections for the commands of this plugin; each adds its own lazy command.
    cli.add_lazy_command("align-pair", "panderm_longitudinal.align_commands:align_pair_cmd",
                         "Register image b onto image a (dark corners, hair, AKAZE + RANSAC).")
    cli.add_lazy_command("sequence", "panderm_longitudinal.sequence_commands:sequence_group",
                         "Evaluate per-lesion image sequences: earliest correct melanoma call.")
    cli.add_lazy_command("change", "panderm_longitudinal.change_commands:change_group",
                         "Siamese change detection on registered image pairs (train, eval).")
