"""Built-in plugin: the probe heads (:mod:`panderm.eval.heads`) and the ``probe``, ``curve``, ``evaluate`` and ``ood`` commands.

Importing this module stays light: torch and scikit-learn load only when a head's
factory is called or a command runs.
"""

from __future__ import annotations

import panderm


@panderm.hookimpl
def register_probe_heads(register):
    from panderm.eval.heads import BUILTIN_HEADS

    for spec in BUILTIN_HEADS:
        register(spec)


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("probe", "panderm_probe.commands:probe_cmd",
                         "Linear probe on extracted features with 95% CIs.")
    cli.add_lazy_command("curve", "panderm_probe.curve_commands:curve_cmd",
                         "Label-efficiency curves: metric vs fraction of training labels.")
    cli.add_lazy_command("evaluate", "panderm_probe.evaluate_commands:evaluate_cmd",
                         "Subgroup robustness of predictions (by sex, age, site, …) with 95% CIs.")
    cli.add_lazy_command("ood", "panderm_probe.ood_commands:ood_group",
                         "Evaluate out-of-distribution gates (AUROC, FPR at 95% TPR, histogram).")
