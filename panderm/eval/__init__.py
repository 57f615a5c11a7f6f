"""Evaluation of frozen features: the linear probe, its metrics, statistics and figures.

Submodules import torch / scikit-learn / matplotlib only when used:
:mod:`panderm.eval.linear` (L-BFGS logistic regression), :mod:`panderm.eval.metrics`
(metrics, bootstrap CIs, paired tests), :mod:`panderm.eval.plots` (PNG figures),
:mod:`panderm.eval.probe` (``run_probe``, behind ``panderm probe``),
:mod:`panderm.eval.curve` (label-efficiency curves, ``panderm curve``) and
:mod:`panderm.eval.subgroups` (subgroup robustness, ``panderm evaluate``).
"""
