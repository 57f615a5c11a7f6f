"""Built-in plugin: classifier bundles (``panderm classifier build|info``).

Import stays light: command modules load only when a command runs.
"""

from __future__ import annotations

import panderm


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("classifier", "panderm_classifier.commands:classifier_group",
                         "Build and inspect calibrated classifier bundles (build, info).")
