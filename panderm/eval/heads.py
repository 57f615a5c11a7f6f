"""The built-in probe heads: estimators fitted on frozen feature matrices (``panderm probe --head``).

The ``probe`` plugin registers them (``register_probe_heads``); a third-party head follows the same
factory contract: ``factory(C=..., penalty=..., seed=..., max_iter=..., **options)`` returns an
object with ``fit(X, y)`` and ``predict_proba(X)``.
"""

from __future__ import annotations

from panderm.registry import ProbeHeadSpec


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


BUILTIN_HEADS = (
    ProbeHeadSpec(name="logreg", factory=make_logreg,
                  summary="the paper's linear probe: torch L-BFGS softmax regression, C = D·K/100 "
                          "(--protocol release|sklearn)"),
    ProbeHeadSpec(name="sklearn-logreg", factory=make_sklearn_logreg,
                  summary="scikit-learn LogisticRegression(lbfgs) with the same C (comparison)"),
)
