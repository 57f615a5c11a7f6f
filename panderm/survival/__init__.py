"""Survival analysis of prediction scores: Kaplan–Meier, Cox PH, time-dependent AUC (``panderm survival``)."""

from panderm.survival.analysis import SurvivalResult, survival_analysis
from panderm.survival.data import load_survival_data

__all__ = ["SurvivalResult", "load_survival_data", "survival_analysis"]
