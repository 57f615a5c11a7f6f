"""The survival statistics: Kaplan–Meier + log-rank, Cox PH, time-dependent AUC, C-index.

Thin wrappers so every number is exactly lifelines' or scikit-survival's:

* Kaplan–Meier: ``lifelines.KaplanMeierFitter`` per risk group; log-rank:
  ``lifelines.statistics.logrank_test``.
* Cox: ``lifelines.CoxPHFitter()`` (Efron ties, no penalty); HR = exp(coef),
  95% CI = exp(coef ± 1.96·se), Wald p; C-index = Harrell's on the training data
  (``concordance_index_``, apparent/in-sample).
* Time-dependent AUC: ``sksurv.metrics.cumulative_dynamic_auc`` (cumulative
  cases / dynamic controls, inverse-probability-of-censoring weights from the same
  data), with a percentile bootstrap over rows for 95% CIs (the risk scores are
  held fixed: the interval reflects evaluation sampling, not refitting).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def risk_groups(score: np.ndarray, cutoff: str | float = "median") -> tuple[np.ndarray, float]:
    """``1`` = high risk (score > threshold), ``0`` = low; threshold = the median unless a number is given."""
    thr = float(np.median(score)) if cutoff == "median" else float(cutoff)
    return (np.asarray(score) > thr).astype(int), thr


def kaplan_meier(time, event, group, ticks) -> dict:
    """KM fits of both groups, log-rank test, numbers at risk at ``ticks``."""
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    time, event, group = np.asarray(time, float), np.asarray(event, int), np.asarray(group, int)
    fits = {}
    for g, name in ((0, "low"), (1, "high")):
        m = group == g
        fits[name] = KaplanMeierFitter(label=f"{name} risk").fit(time[m], event[m])
    hi, lo = group == 1, group == 0
    lr = logrank_test(time[hi], time[lo], event_observed_A=event[hi], event_observed_B=event[lo])
    at_risk = {name: [int(((time >= t) & (group == g)).sum()) for t in ticks]
               for g, name in ((0, "low"), (1, "high"))}
    return {"fits": fits, "logrank": {"statistic": float(lr.test_statistic), "p": float(lr.p_value)},
            "ticks": [float(t) for t in ticks], "at_risk": at_risk,
            "n": {"low": int(lo.sum()), "high": int(hi.sum())},
            "events": {"low": int(event[lo].sum()), "high": int(event[hi].sum())},
            "median_time": {k: _finite(f.median_survival_time_) for k, f in fits.items()}}


def _finite(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def fit_cox(frame: pd.DataFrame, columns: list[str]):
    """``CoxPHFitter().fit`` on ``columns`` of ``frame`` (with ``time``/``event``)."""
    from lifelines import CoxPHFitter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CoxPHFitter().fit(frame[["time", "event", *columns]], duration_col="time", event_col="event")


def cox_table(cph, model: str) -> pd.DataFrame:
    """Rows of ``cox.csv`` for one fitted model."""
    s = cph.summary
    return pd.DataFrame({"model": model, "covariate": s.index.astype(str), "coef": s["coef"].to_numpy(),
                         "hr": s["exp(coef)"].to_numpy(), "hr_ci_low": s["exp(coef) lower 95%"].to_numpy(),
                         "hr_ci_high": s["exp(coef) upper 95%"].to_numpy(), "se": s["se(coef)"].to_numpy(),
                         "z": s["z"].to_numpy(), "p": s["p"].to_numpy(),
                         "concordance": float(cph.concordance_index_)})


def td_auc(time, event, estimate, times) -> tuple[np.ndarray, float]:
    """``cumulative_dynamic_auc`` with train = test = the analysed rows.

    In the test copy, events after the last evaluation time count as censored.
    This leaves every AUC(t ≤ max(times)) unchanged (such rows are controls,
    time > t, whatever their event; only cases carry IPC weights) and avoids
    sksurv's "censoring survival function is zero" error when events happen at
    the last follow-up time (e.g. the rossi data: arrests and censoring at week 52).
    """
    from sksurv.metrics import cumulative_dynamic_auc
    from sksurv.util import Surv

    time, event = np.asarray(time, float), np.asarray(event).astype(bool)
    times = np.asarray(times, float)
    train = Surv.from_arrays(event=event, time=time)
    test = Surv.from_arrays(event=event & (time <= times.max()), time=time)
    auc, mean = cumulative_dynamic_auc(train, test, np.asarray(estimate, float), times)
    return np.asarray(auc, float), float(mean)


def valid_times(time, event, years) -> tuple[list[float], dict[str, str]]:
    """The evaluation times inside the follow-up (sksurv needs min(time) ≤ t < max(time)) and notes on the others."""
    time = np.asarray(time, float)
    lo, hi = time.min(), time.max()
    ok, notes = [], {}
    for t in years:
        if t >= hi:
            notes[time_key(t)] = f"beyond the follow-up (longest time {hi:g})"
        elif t < lo:
            notes[time_key(t)] = f"before the first observed time ({lo:g})"
        elif not ((time <= t) & (np.asarray(event) == 1)).any():
            notes[time_key(t)] = "no event up to this time"
        else:
            ok.append(float(t))
    return ok, notes


def time_key(t) -> str:
    """A time as the key of per-time results (``3.0`` → ``"3"``)."""
    return f"{float(t):g}"


def bootstrap_td_auc(time, event, estimates: dict[str, np.ndarray], times, n: int, seed: int,
                     reference: str | None = None) -> dict[str, dict]:
    """td-AUC per estimate at ``times`` with percentile 95% CIs from ``n`` row resamples.

    The same resamples serve every estimate, so the paired difference with
    ``reference`` gets a two-sided bootstrap p-value (2·min(P(Δ ≤ 0), P(Δ ≥ 0))).
    Resamples in which sksurv cannot evaluate a time (no event before it, last time
    too early) are left out of that time's interval.
    """
    time, event = np.asarray(time, float), np.asarray(event, int)
    out = {}
    point = {k: td_auc(time, event, e, times)[0] for k, e in estimates.items()}
    reps = {k: np.full((n, len(times)), np.nan) for k in estimates}
    rng = np.random.default_rng(seed)
    for b in range(n):
        idx = rng.integers(0, len(time), len(time))
        for k, e in estimates.items():
            reps[k][b] = _safe_td_auc(time[idx], event[idx], e[idx], times)
    for k in estimates:
        res = {}
        for j, t in enumerate(times):
            r = reps[k][:, j]
            r = r[np.isfinite(r)]
            lo, hi = (np.percentile(r, [2.5, 97.5]) if r.size else (np.nan, np.nan))
            entry = {"auc": float(point[k][j]), "ci_low": float(lo), "ci_high": float(hi), "n_boot": int(r.size)}
            if reference is not None and k != reference:
                d = reps[k][:, j] - reps[reference][:, j]
                d = d[np.isfinite(d)]
                entry["diff_vs_" + reference] = float(point[k][j] - point[reference][j])
                entry["p_vs_" + reference] = (float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))
                                              if d.size else None)
            res[time_key(t)] = entry
        out[k] = res
    return out


def _safe_td_auc(time, event, estimate, times) -> np.ndarray:
    ok, _ = valid_times(time, event, times)
    if len(ok) < len(times) or event.sum() == 0:
        vals = np.full(len(times), np.nan)
        good = [j for j, t in enumerate(times) if t in ok]
        if not good or event.sum() == 0:
            return vals
        try:
            vals[good] = td_auc(time, event, estimate, [times[j] for j in good])[0]
        except ValueError:
            pass
        return vals
    try:
        return td_auc(time, event, estimate, times)[0]
    except ValueError:
        return np.full(len(times), np.nan)


def concordance(time, event, risk) -> float:
    """Harrell's C of a risk score (higher = earlier event), via lifelines."""
    from lifelines.utils import concordance_index

    return float(concordance_index(np.asarray(time, float), -np.asarray(risk, float), np.asarray(event, int)))
