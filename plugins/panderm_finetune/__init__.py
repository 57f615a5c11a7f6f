"""Built-in plugin: ``panderm finetune`` (the official PanDerm fine-tuning recipe).

Import stays light: the command module loads only when the command runs.
"""

from __future__ import annotations

import panderm


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("finetune", "panderm_finetune.commands:finetune_cmd",
                         "Fine-tune an encoder end to end (official PanDerm recipe) and test it.")
