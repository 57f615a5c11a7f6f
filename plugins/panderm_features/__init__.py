"""Built-in plugin: the image modalities (:mod:`panderm.data.modalities`) and the ``extract`` command.

Import stays light (no torch): the command module loads only when ``extract`` runs.
"""

from __future__ import annotations

import panderm
@panderm.hookimpl
def register_modalities(register):
    from panderm.data.modalities import MODALITIES

    for spec in MODALITIES:
        register(spec)


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("extract", "panderm_features.commands:extract_cmd",
                         "Extract encoder features from a folder or CSV of images.")
