"""Built-in plugin: ``panderm survival`` (Kaplan–Meier, Cox PH, time-dependent AUC of prediction scores).

Import stays light: lifelines and scikit-survival load only when the command runs.
"""

from __future__ import annotations

import panderm


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("survival", "panderm_survival.commands:survival_cmd",
                         "Survival analysis of prediction scores: KM, Cox PH, time-dependent AUC.")
