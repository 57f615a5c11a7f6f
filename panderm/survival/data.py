"""Reading and joining survival inputs: prediction scores + clinical table.

* ``scores``: e.g. ``oof.csv`` from ``panderm probe --folds``; the score column is
  ``score`` (P(positive class) of a binary probe) unless ``score_col`` says
  otherwise (e.g. ``prob_distant``).
* ``clinical``: one row per id with the time, event and covariate columns.
* The join column (``id_col``) is auto-detected as the first of :data:`ID_COLUMNS`
  present in both tables. ``image`` paths are normalised like ``panderm probe``
  does. Several score rows for one id (e.g. images of one patient joined on
  ``patient_id``) are averaged.
* Times that are NaN or negative and events that are missing drop their rows
  (a warning says how many); rows without a covariate value are dropped too
  (complete-case analysis).
* Covariates: numeric columns are kept as they are; boolean columns become 0/1;
  other (categorical) columns are one-hot encoded with the first level (sorted)
  as the reference, named ``column[level]``.
* ``subset`` (e.g. ``{"stage": ["I", "II"]}``, the paper's multivariate Cox on stage
  I–II) keeps the joined rows whose clinical value, as text after strip, is one of the
  listed values; each column's rows before/after are in ``join["subset"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from panderm.errors import ConfigError, InputError, examples
from panderm.io import read_csv_frame
from panderm.paths import normalise_path

ID_COLUMNS = ("image", "case_id", "patient_id", "lesion_id", "id")
_TRUE = {"1", "true", "yes", "y", "t", "event", "recurred", "dead", "1.0"}
_FALSE = {"0", "false", "no", "n", "f", "censored", "0.0"}


@dataclass
class SurvivalData:
    """The joined, cleaned analysis table."""

    frame: pd.DataFrame            # id, time, event, score, covariate design columns
    id_col: str
    design: list[str]              # covariate design column names (after one-hot)
    design_of: dict[str, list[str]]  # covariate → its design columns
    categorical: dict[str, dict]   # covariate → {"reference": level, "levels": [...]}
    join: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _table(path, role: str) -> pd.DataFrame:
    if isinstance(path, pd.DataFrame):
        return path.copy()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{role} file {path} does not exist")
    return read_csv_frame(path)


def _need(df: pd.DataFrame, cols, role: str, src) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"{role} {src} lacks column(s) {', '.join(missing)} "
                         f"(has: {', '.join(map(str, df.columns))})")


def _event(values: pd.Series, name: str, source) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values.astype(float)
    num = pd.to_numeric(values, errors="coerce")
    text = values.astype(str).str.strip().str.lower()
    out = pd.Series(np.where(text.isin(_TRUE), 1.0, np.where(text.isin(_FALSE), 0.0, np.nan)), index=values.index)
    out = out.where(num.isna() | ~num.isin([0, 1]), num)
    bad = values[out.isna() & values.notna()]
    if len(bad):
        raise InputError(f"clinical {source}: event column '{name}' must be 0/1 (or true/false), "
                         f"found {examples(bad.astype(str).unique())}")
    return out


def _as_text(values: pd.Series) -> pd.Series:
    """Values as stripped text for matching (whole floats without ``.0``: a stage column with gaps reads as float)."""
    def one(v):
        if pd.isna(v):
            return None
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v).strip()
    return values.map(one)


def _apply_subset(merged: pd.DataFrame, subset: dict, clinical) -> tuple[pd.DataFrame, list[dict]]:
    """Keep the rows whose value in each subset column is one of its values; log rows before/after."""
    log = []
    for col, wanted in subset.items():
        wanted = [str(v).strip() for v in wanted if str(v).strip()]
        if not wanted:
            raise ConfigError(f"--subset {col}= lists no values", hint=f"e.g. --subset {col}=I,II")
        text = _as_text(merged[col])
        keep = text.isin(wanted)
        if not keep.any():
            present = sorted(set(text.dropna()), key=str)
            raise InputError(f"--subset {col}={','.join(wanted)} keeps no row of clinical {clinical}: column "
                             f"'{col}' holds {examples(present)}", hint="values are compared as text, exactly")
        log.append({"column": col, "values": wanted, "rows_before": len(merged), "rows_after": int(keep.sum())})
        merged = merged[keep]
    return merged, log


def _check_subset_events(frame: pd.DataFrame, subset_log: list[dict], n_terms: int, clinical) -> None:
    """A subset must leave more events than the multivariate Cox model has terms (else it cannot be fitted)."""
    need, events = n_terms + 1, int(frame["event"].sum())
    if events < need:
        cols = ", ".join(f"{s['column']}={','.join(s['values'])}" for s in subset_log)
        raise InputError(f"--subset {cols} leaves {len(frame)} row(s) of clinical {clinical} with {events} "
                         f"event(s); the Cox models need at least {need} ({n_terms} term(s) + 1)",
                         hint="widen the subset or use fewer --covariates")


def load_survival_data(scores, clinical, *, time: str, event: str, covariates=(), score_col: str = "score",
                       id_col: str | None = None, subset: dict[str, list[str]] | None = None) -> SurvivalData:
    """Join ``scores`` with ``clinical`` and clean the analysis table (see module doc)."""
    s, c = _table(scores, "scores"), _table(clinical, "clinical")
    covariates = list(covariates)
    subset = dict(subset or {})
    id_col = _check_columns(s, c, scores, clinical, time=time, event=event, covariates=covariates,
                            score_col=score_col, id_col=id_col, subset=subset)
    warn: list[str] = []
    _normalise_ids(s, c, id_col, clinical)
    merged, join = _join_scores(s, c, id_col, score_col, scores, clinical, warn)
    merged, join["subset"] = _apply_subset(merged, subset, clinical)
    merged = merged.reset_index(drop=True)
    frame = pd.DataFrame({id_col: merged[id_col], "time": pd.to_numeric(merged[time], errors="coerce"),
                          "event": _event(merged[event], event, clinical), "score": merged["score"]})
    bad = frame["time"].isna() | (frame["time"] < 0) | frame["event"].isna() | frame["score"].isna()
    if bad.any():
        warn.append(f"{int(bad.sum())} row(s) with a missing/negative '{time}', missing '{event}' or missing "
                    f"score were dropped: {examples(frame.loc[bad, id_col])}")
    parts, design_of, categorical = _covariate_design(merged, covariates)
    if parts:
        X = pd.concat(parts, axis=1)
        frame = pd.concat([frame, X], axis=1)
        miss = X.isna().any(axis=1) & ~bad
        if miss.any():
            warn.append(f"{int(miss.sum())} row(s) with missing covariate values were dropped (complete cases)")
        bad = bad | X.isna().any(axis=1)
    frame = frame[~bad].reset_index(drop=True)
    design = [d for cov in covariates for d in design_of[cov]]
    _check_analysed(frame, design, event)
    if subset:
        _check_subset_events(frame, join["subset"], 1 + len(design), clinical)
    join["analysed"] = len(frame)
    return SurvivalData(frame=frame, id_col=id_col, design=design, design_of=design_of, categorical=categorical,
                        join=join, warnings=warn)


def _check_columns(s: pd.DataFrame, c: pd.DataFrame, scores, clinical, *, time: str, event: str,
                   covariates: list[str], score_col: str, id_col: str | None, subset: dict) -> str:
    """Refuse missing subset, score, time/event/covariate and id columns; return the id column (picked when None)."""
    unknown = [col for col in subset if col not in c.columns]
    if unknown:
        raise InputError(f"--subset column(s) {', '.join(unknown)} not in clinical {clinical} "
                         f"(has: {', '.join(map(str, c.columns))})", hint="subset columns come from --clinical")
    if score_col not in s.columns:
        probs = [x for x in s.columns if str(x).startswith("prob_")]
        hint = f"pick one with --score-col, e.g. {probs[-1]}" if probs else "name it with --score-col"
        raise InputError(f"scores {scores} have no '{score_col}' column (has: {', '.join(map(str, s.columns))})",
                         hint=hint)
    _need(c, [time, event, *covariates], "clinical table", clinical)
    if id_col is None:
        shared = [x for x in ID_COLUMNS if x in s.columns and x in c.columns]
        if not shared:
            raise InputError(f"no shared id column between scores {scores} and clinical {clinical} "
                             f"(looked for {', '.join(ID_COLUMNS)})", hint="name it with --id-col")
        id_col = shared[0]
    _need(s, [id_col], "scores", scores)
    _need(c, [id_col], "clinical table", clinical)
    return id_col


def _normalise_ids(s: pd.DataFrame, c: pd.DataFrame, id_col: str, clinical) -> None:
    """Ids as stripped text (image paths normalised) in both tables; a clinical id listed twice is refused."""
    for df in (s, c):
        df[id_col] = df[id_col].astype(str).str.strip()
        if id_col == "image":
            df[id_col] = [normalise_path(p) for p in df[id_col]]
    dup = c[id_col][c[id_col].duplicated()].unique().tolist()
    if dup:
        raise InputError(f"clinical {clinical} lists {len(dup)} {id_col}(s) more than once: {examples(dup)}")


def _join_scores(s: pd.DataFrame, c: pd.DataFrame, id_col: str, score_col: str, scores, clinical,
                 warn: list[str]) -> tuple[pd.DataFrame, dict]:
    """Scores averaged per id, inner-joined with the clinical rows; the join's counts (``join``)."""
    s[score_col] = pd.to_numeric(s[score_col], errors="coerce")
    n_score_rows = len(s)
    agg = s.groupby(id_col, sort=False)[score_col].mean().rename("score").reset_index()
    if len(agg) < n_score_rows:
        warn.append(f"{n_score_rows} score rows for {len(agg)} {id_col}s: scores averaged per {id_col}")
    merged = agg.merge(c, on=id_col, how="inner", validate="one_to_one")
    join = {"id_col": id_col, "score_col": score_col, "score_ids": len(agg), "clinical_rows": len(c),
            "joined": len(merged), "scores_without_clinical": int((~agg[id_col].isin(c[id_col])).sum()),
            "clinical_without_scores": int((~c[id_col].isin(agg[id_col])).sum())}
    if merged.empty:
        raise InputError(f"no {id_col} is in both scores {scores} and clinical {clinical} "
                         f"(scores: {examples(agg[id_col].head(3))}; clinical: {examples(c[id_col].head(3))})")
    if join["scores_without_clinical"] or join["clinical_without_scores"]:
        warn.append(f"join on {id_col}: {join['scores_without_clinical']} scored id(s) without clinical data and "
                    f"{join['clinical_without_scores']} clinical row(s) without scores were dropped")
    return merged, join


def _covariate_design(merged: pd.DataFrame, covariates: list[str]) -> tuple[list[pd.Series], dict, dict]:
    """Design columns per covariate: numeric/boolean as is, text one-hot against its first level (sorted)."""
    design_of: dict[str, list[str]] = {}
    categorical: dict[str, dict] = {}
    parts = []
    for cov in covariates:
        col = merged[cov]
        num = pd.to_numeric(col, errors="coerce")
        if pd.api.types.is_bool_dtype(col):
            parts.append(col.astype(float).rename(cov))
            design_of[cov] = [cov]
        elif num.notna().sum() == col.notna().sum():
            parts.append(num.rename(cov))
            design_of[cov] = [cov]
        else:
            levels = sorted(col.dropna().astype(str).str.strip().unique().tolist())
            categorical[cov] = {"reference": levels[0], "levels": levels}
            text = col.astype(str).str.strip().where(col.notna())
            names = []
            for lev in levels[1:]:
                name = f"{cov}[{lev}]"
                parts.append(pd.Series(np.where(text.isna(), np.nan, (text == lev).astype(float)),
                                       index=col.index, name=name))
                names.append(name)
            design_of[cov] = names
    return parts, design_of, categorical


def _check_analysed(frame: pd.DataFrame, design: list[str], event: str) -> None:
    """Refuse constant covariates, fewer than 2 usable rows, or no events."""
    const = [d for d in design if frame[d].nunique() < 2]
    if const:
        raise InputError(f"covariate column(s) {', '.join(const)} are constant in the analysed rows",
                         hint="drop them from --covariates")
    if len(frame) < 2:
        raise InputError(f"only {len(frame)} usable row(s) after the join and cleaning")
    if frame["event"].sum() == 0:
        raise InputError(f"no events: '{event}' is 0 for all {len(frame)} analysed rows",
                         hint="survival analysis needs at least one event (1 = event, 0 = censored)")
