"""Built-in plugin: the linear-probe tasks and the ``panderm probe`` command.

Importing this module stays light: torch and scikit-learn load only when a task
factory is called or the command runs.
"""

from __future__ import annotations

import panderm
from panderm.registry import TaskSpec


def make_logreg(C: float | None = None, penalty: str = "official", seed: int = 0, max_iter: int = 1000, **_):
    """The paper's probe: softmax regression fitted by full-batch torch L-BFGS.

    ``penalty``: ``"official"`` (the release protocol, default) or ``"sklearn"``; the
    protocol names ``"release"``/``"sklearn"`` are accepted too.
    """
    from panderm.eval.linear import PROTOCOL_PENALTY, LBFGSLogisticRegression

    return LBFGSLogisticRegression(C=C, penalty=PROTOCOL_PENALTY.get(penalty, penalty), seed=seed,
                                   max_iter=max_iter)


def make_sklearn_logreg(C: float | None = None, seed: int = 0, max_iter: int = 1000, **_):
    """scikit-learn's ``LogisticRegression(solver="lbfgs")`` with the same C, for comparison.

    ``penalty`` is ignored: sklearn always minimises ``C·ΣCE + ½‖W‖²``.
    """
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0 if C is None else C, solver="lbfgs", max_iter=max_iter, random_state=seed)


@panderm.hookimpl
def register_tasks(register):
    register(TaskSpec(name="logreg", factory=make_logreg,
                      summary="the paper's linear probe: torch L-BFGS softmax regression, C = D·K/100 "
                              "(--protocol release|sklearn)"))
    register(TaskSpec(name="sklearn-logreg", factory=make_sklearn_logreg,
                      summary="scikit-learn LogisticRegression(lbfgs) with the same C (comparison)"))


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("probe", "panderm_probe.commands:probe_cmd",
                         "Linear probe on extracted features with 95% CIs.")
    cli.add_lazy_command("curve", "panderm_probe.curve_commands:curve_cmd",
                         "Label-efficiency curves: metric vs fraction of training labels.")
    cli.add_lazy_command("evaluate", "panderm_probe.evaluate_commands:evaluate_cmd",
                         "Subgroup robustness of predictions (by sex, age, site, …) with 95% CIs.")
