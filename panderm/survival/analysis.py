"""``survival_analysis``: prognostic value of a prediction score (paper: Fig. 3h–j, Extended Data Table 26).

Steps (each number's definition: :mod:`panderm.survival.models`; inputs:
:mod:`panderm.survival.data`):

1. join scores with the clinical table on the id column, keep the ``subset`` rows
   (e.g. stage I–II, as the paper's multivariate Cox) and clean the rows;
2. risk groups: high = score above the median (or ``risk_cutoff``), KM curves and log-rank
   test → ``km.png``;
3. Cox PH models (lifelines): ``risk_group`` alone (HR high vs low), ``score``
   alone (HR per unit of score), and ``multivariate``: the risk group (or the
   continuous score with ``cox_score="continuous"``) plus the covariates →
   ``cox.csv``, ``forest.png``;
4. time-dependent AUC of the score at ``years`` (in the time column's unit) with
   bootstrap 95% CIs → ``td_auc.json``;
5. Extended Data Table 26: C-index and td-AUC of the score alone, each clinical
   covariate alone, all clinical covariates, and score + clinical (Cox linear
   predictors, in-sample) → ``comparison.csv``/``comparison.json``;
6. ``survival.json``: the summary, written last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import ConfigError, InputError
from panderm.io import atomic_path, atomic_write_json, jsonable, make_out_dir
from panderm.survival import models as M
from panderm.survival.data import load_survival_data


@dataclass
class SurvivalResult:
    """What ``survival_analysis`` computed (and wrote when ``out`` was given)."""

    cox: pd.DataFrame
    km: dict
    td_auc: dict
    comparison: pd.DataFrame
    summary: dict[str, Any]
    data: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    out: Path | None = None
    files: list[Path] = field(default_factory=list)


def _ticks(tmax: float) -> list[float]:
    from matplotlib.ticker import MaxNLocator

    return [float(t) for t in MaxNLocator(nbins=6).tick_values(0, tmax) if 0 <= t <= tmax]


def survival_analysis(scores, clinical, out: Path | None = None, *, time: str, event: str, covariates=(),
                      score_col: str = "score", id_col: str | None = None, years=(3, 5, 7),
                      risk_cutoff: str | float = "median", cox_score: str = "group", n_bootstrap: int = 1000,
                      seed: int = 0, subset: dict[str, list[str]] | None = None) -> SurvivalResult:
    """Kaplan–Meier, Cox PH, time-dependent AUC and the score-vs-clinical comparison.

    Args:
        scores: CSV path (or DataFrame) with the id column and ``score_col`` (e.g. ``oof.csv``).
        clinical: CSV path (or DataFrame) with the id column, ``time``, ``event`` and ``covariates``.
        out: Output folder; ``None`` writes nothing.
        time, event: Clinical columns: follow-up time (e.g. years) and 1 = event / 0 = censored.
        covariates: Clinical columns for the Cox models (categorical ones are one-hot encoded).
        score_col: Score column of ``scores`` (higher = higher risk).
        id_col: Join column; ``None`` picks the first of image/case_id/patient_id/lesion_id/id in both.
        years: Times for the time-dependent AUC, in the unit of ``time``.
        risk_cutoff: ``"median"`` or a score threshold for the high/low risk groups (``--risk-cutoff``).
        cox_score: ``"group"`` (high vs low) or ``"continuous"``: the score term of the multivariate model.
        n_bootstrap: Bootstrap replicates for the td-AUC CIs (0: none).
        seed: Bootstrap seed.
        subset: ``{clinical column: [values]}``: analyse only the joined rows whose value (as text,
            stripped) is listed, e.g. ``{"stage": ["I", "II"]}``; every step uses the subset.

    Raises:
        InputError: Missing files/columns, no events, nothing left after the join, an unknown
            subset column or a subset that leaves too few events.
        ConfigError: Bad option values.
    """
    risk_cutoff, years = _check_survival_options(cox_score, n_bootstrap, risk_cutoff, years)
    data = load_survival_data(scores, clinical, time=time, event=event, covariates=covariates,
                              score_col=score_col, id_col=id_col, subset=subset)
    df, warn = data.frame, list(data.warnings)
    km, threshold = _risk_groups_km(df, risk_cutoff)
    T, E = df["time"].to_numpy(float), df["event"].to_numpy(int)
    cox, term = _cox_models(df, data.design, cox_score)
    forest_model = "multivariate" if data.design else "risk_group"

    times, notes = M.valid_times(T, E, years)
    for k, v in notes.items():
        warn.append(f"time-dependent AUC at {k}: {v} (reported as null)")
    candidates = _comparison_models(data, covariates)
    estimates, cindex = _model_estimates(df, T, E, candidates)
    boot, mean_auc = _td_aucs(T, E, estimates, times, n_bootstrap, seed)
    keys = [M.time_key(y) for y in years]
    td = {"times": years, "unit": time, "evaluated": times, "notes": notes,
          "score": {k: boot["score"].get(k) for k in keys},
          "mean_auc": mean_auc["score"], "bootstrap": {"n": n_bootstrap, "seed": seed, "ci": 0.95},
          "method": "sksurv.metrics.cumulative_dynamic_auc (cumulative/dynamic, IPCW; train = test = all rows)"}
    comparison = _comparison_table(candidates, cindex, mean_auc, boot, keys)

    group_hr = cox[(cox["model"] == "risk_group")].iloc[0]
    summary = {
        "n": len(df), "events": int(E.sum()), "join": data.join, "subset": data.join["subset"] or None,
        "time": time, "event": event,
        "score_col": score_col, "covariates": list(covariates), "design": data.design,
        "categorical": data.categorical, "risk_cutoff": risk_cutoff, "threshold": threshold,
        "kaplan_meier": {k: km[k] for k in ("n", "events", "median_time", "logrank", "ticks", "at_risk")},
        "hazard_ratio_high_vs_low": {"hr": group_hr["hr"], "ci_low": group_hr["hr_ci_low"],
                                     "ci_high": group_hr["hr_ci_high"], "p": group_hr["p"]},
        "cox_multivariate_score_term": term if data.design else None,
        "concordance": {name: cindex[name] for name in cindex},
        "td_auc": {k: (boot["score"].get(k) or {}).get("auc") for k in keys}, "warnings": warn,
    }
    result = SurvivalResult(cox=cox, km=km, td_auc=td, comparison=comparison, summary=summary, data=df,
                            warnings=warn)
    if out is not None:
        result.out, result.files = Path(out), _write(Path(out), result, forest_model, time)
    return result


def _check_survival_options(cox_score: str, n_bootstrap: int, risk_cutoff, years) -> tuple[str | float, list]:
    """Refuse bad option values; return the risk cut-off (``"median"`` or a number) and the sorted years."""
    if cox_score not in ("group", "continuous"):
        raise ConfigError(f"unknown cox_score '{cox_score}'", hint="use 'group' or 'continuous'")
    if n_bootstrap < 0:
        raise ConfigError(f"the number of bootstrap replicates must be ≥ 0, got {n_bootstrap}")
    if risk_cutoff != "median":
        try:
            risk_cutoff = float(risk_cutoff)
        except ValueError:
            raise ConfigError(f"--risk-cutoff must be 'median' or a number, got {risk_cutoff!r}") from None
    years = sorted({float(y) for y in years})
    if any(y <= 0 for y in years):
        raise ConfigError(f"--years must be positive, got {years}")
    return risk_cutoff, years


def _risk_groups_km(df: pd.DataFrame, risk_cutoff) -> tuple[dict, float]:
    """Add ``risk_group`` (high = score above the cut-off) to ``df``; Kaplan–Meier per group and the threshold."""
    df["risk_group"], threshold = M.risk_groups(df["score"].to_numpy(), risk_cutoff)
    if df["risk_group"].nunique() < 2:
        raise InputError(f"all {len(df)} rows fall in one risk group (threshold {threshold:g})",
                         hint="the score must vary; check --score-col")
    T, E = df["time"].to_numpy(float), df["event"].to_numpy(int)
    km = M.kaplan_meier(T, E, df["risk_group"].to_numpy(), _ticks(T.max()))
    km["threshold"], km["xmax"] = threshold, float(T.max())
    return km, threshold


def _cox_models(df: pd.DataFrame, design: list[str], cox_score: str) -> tuple[pd.DataFrame, str]:
    """Cox PH of the risk group, of the score and (with a design) the multivariate model: the table and the
    multivariate model's score term."""
    fits = {"risk_group": M.fit_cox(df, ["risk_group"]), "score": M.fit_cox(df, ["score"])}
    term = "risk_group" if cox_score == "group" else "score"
    if design:
        fits["multivariate"] = M.fit_cox(df, [term, *design])
    return pd.concat([M.cox_table(f, k) for k, f in fits.items()], ignore_index=True), term


def _comparison_models(data, covariates) -> list[tuple[str, str, list[str]]]:
    """Extended Data Table 26's models ``(name, kind, design columns)``: the score, each clinical
    variable, all clinical variables, score + clinical."""
    candidates: list[tuple[str, str, list[str]]] = [("score", "score", [])]
    for cov in covariates:
        candidates.append((cov, "single clinical", data.design_of[cov]))
    if data.design:
        candidates += [("clinical", "multi clinical", data.design),
                       ("score+clinical", "score + clinical", ["score", *data.design])]
    return candidates


def _model_estimates(df: pd.DataFrame, T: np.ndarray, E: np.ndarray,
                     candidates: list[tuple[str, str, list[str]]]) -> tuple[dict, dict]:
    """Each model's risk estimate (the score itself, else the Cox linear predictor) and its C-index."""
    estimates, cindex = {}, {}
    for name, _kind, cols in candidates:
        if name == "score":
            estimates[name] = df["score"].to_numpy(float)
            cindex[name] = M.concordance(T, E, estimates[name])
        else:
            cph = M.fit_cox(df, cols)
            estimates[name] = cph.predict_log_partial_hazard(df[cols]).to_numpy(float)
            cindex[name] = float(cph.concordance_index_)
    return estimates, cindex


def _td_aucs(T: np.ndarray, E: np.ndarray, estimates: dict, times: list, n_bootstrap: int,
             seed: int) -> tuple[dict, dict]:
    """Bootstrap td-AUC per model and evaluable time (with p vs the score), and each model's mean td-AUC."""
    if not times:
        return {k: {} for k in estimates}, {k: None for k in estimates}
    boot = M.bootstrap_td_auc(T, E, estimates, times, n_bootstrap, seed, reference="score")
    mean_auc = {k: M.td_auc(T, E, e, times)[1] for k, e in estimates.items()} if len(times) > 1 else {
        k: boot[k][M.time_key(times[0])]["auc"] for k in estimates}
    return boot, mean_auc


def _comparison_table(candidates: list[tuple[str, str, list[str]]], cindex: dict, mean_auc: dict, boot: dict,
                      keys: list[str]) -> pd.DataFrame:
    """``comparison.csv``: per model its terms, C-index, mean td-AUC and the td-AUC (CI, p vs score) per year."""
    rows = []
    for name, kind, cols in candidates:
        row = {"model": name, "kind": kind, "terms": " + ".join(cols) if cols else "score",
               "c_index": cindex[name], "mean_td_auc": mean_auc[name]}
        for k in keys:
            e = boot[name].get(k) or {}
            row[f"auc_{k}"] = e.get("auc")
            row[f"auc_{k}_ci_low"], row[f"auc_{k}_ci_high"] = e.get("ci_low"), e.get("ci_high")
            row[f"auc_{k}_p_vs_score"] = e.get("p_vs_score")
        rows.append(row)
    return pd.DataFrame(rows)

def _write(out: Path, result: SurvivalResult, forest_model: str, time_label: str) -> list[Path]:
    from panderm.survival.plots import forest_png, km_png

    make_out_dir(out)
    (out / "survival.json").unlink(missing_ok=True)
    files = []
    for name, frame in (("cox.csv", result.cox), ("comparison.csv", result.comparison)):
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False)
        files.append(out / name)
    files.append(km_png(out / "km.png", result.km, time_label=time_label,
                        title=f"Kaplan–Meier by risk group ({_cutoff_text(result)} {result.km['threshold']:.3g})"))
    files.append(forest_png(out / "forest.png", result.cox[result.cox["model"] == forest_model],
                            title=f"Cox PH ({forest_model})"))
    for name, obj in (("td_auc.json", result.td_auc),
                      ("comparison.json", result.comparison.replace({np.nan: None}).to_dict(orient="records"))):
        atomic_write_json(out / name, jsonable(obj))
        files.append(out / name)
    atomic_write_json(out / "survival.json", jsonable(result.summary))
    return files + [out / "survival.json"]


def _cutoff_text(result: SurvivalResult) -> str:
    return "median split at" if result.summary.get("risk_cutoff") == "median" else "cut-off"
