"""Label-efficiency curves (the paper's Fig. 2b): a test metric against the fraction of training labels.

For every encoder × percent × seed one model is trained on a stratified, seeded
subsample of the training rows (:func:`panderm.eval.probe.subsample`; for one seed a
smaller fraction is a subset of a larger one) and evaluated on the full test split:

* ``method="probe"``: :func:`panderm.eval.probe.run_probe` on a features folder, with
  ``protocol`` (default ``"release"``, the released ``linear_eval.py`` objective);
* ``method="finetune"``: the caller's fine-tuning runner (``finetune_runner``, e.g.
  :func:`panderm.finetune.finetune`) on the images.

Outputs (``out``):

* ``runs.csv``: one row per run (encoder, percent, seed, n_train, the metric's value
  and its bootstrap CI; for the probe also the protocol, C, L-BFGS iterations, the
  solver settings as JSON and the features' precision). Rewritten atomically after
  every run; a later call skips runs already there with the same settings
  (``settings`` column: a hash of the CSV, the encoder's features/model, the
  method's options and protocol, binary, metric and bootstrap size), so an
  interrupted curve resumes where it stopped.
* ``curve.csv`` / ``curve.json``: per encoder × percent the mean over seeds, sd, min,
  max and a 95% interval. With ≥ 2 seeds the interval is the **t-interval across
  seeds**, mean ± t(0.975, n−1)·sd/√n (variation from the label subsample and the
  initialisation); with a single seed it is that run's bootstrap CI over test rows
  (``ci_method`` says which). ``boot_ci_low``/``boot_ci_high`` average the runs'
  bootstrap CIs (test-set uncertainty; at 100% the seeds share the training rows,
  so the t-interval there only reflects the classifier's initialisation).
* ``matches`` (in ``curve.json``): for each pair of encoders A ≠ B where B was run on
  100% of the labels, the **first measured percent** at which A's mean reaches
  (≥) B's full-data mean, plus ``percent_interpolated``: the linear interpolation
  (in percent) between that percent and the previous measured one where the line
  crosses B's score (equal to ``percent`` when already reached at the smallest).
* ``comparisons`` (``curve.json``, ``comparisons.csv``): with two or more encoders,
  the reference encoder (the first, or ``reference``) against each other one at every
  percent, by the paper's **two-sided paired t-test over seeds**: a seed draws the
  same label subsample and initialisation seed for both encoders, so the per-seed
  scores are pairs (:func:`panderm.eval.metrics.paired_t_test`). Needs ≥ 2 seeds. At
  100% with the probe every seed fits the same rows and the convex optimum does not
  depend on the seed, so t, p and the interval are null there (with a note).
* ``curve.png``: the metric against percent of labels (log x), one line per encoder
  with the 95% band, a star where an encoder first matches another's full-data score.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import ConfigError, InputError
from panderm.io import atomic_path, atomic_write_json, file_stamp

RUN_COLUMNS = ["encoder", "method", "percent", "seed", "n_train", "metric", "value", "ci_low", "ci_high",
               "protocol", "C", "n_iter", "features_precision", "solver", "settings"]
#: The paper's label-efficiency grid (Extended Data Tables 15-20).
DEFAULT_PERCENTS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
COMPARISON_COLUMNS = ["reference", "encoder", "percent", "n", "mean_reference", "mean_encoder", "mean_difference",
                      "ci_low", "ci_high", "t", "p_value", "note"]
CURVE_COLUMNS = ["encoder", "percent", "n_seeds", "n_train", "mean", "std", "min", "max", "ci_low", "ci_high",
                 "ci_method", "boot_ci_low", "boot_ci_high"]


@dataclass
class CurveResult:
    """What :func:`label_efficiency` computed and wrote."""

    metric: str
    runs: pd.DataFrame
    curve: pd.DataFrame
    matches: list[dict[str, Any]]
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    computed: int = 0
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)
    out: Path | None = None
    files: list[Path] = field(default_factory=list)


def resolve_metric(metric: str, binary: bool) -> str:
    """``"auto"`` → ``auroc`` for binary tasks, ``weighted_f1`` otherwise; else checked against the probe's keys."""
    from panderm.eval.metrics import ALL_METRICS

    if metric == "auto":
        return "auroc" if binary else "weighted_f1"
    if metric not in ALL_METRICS:
        raise ConfigError(f"unknown metric '{metric}'", hint=f"use auto or one of {', '.join(ALL_METRICS)}")
    return metric


def _percent_key(p: float) -> float:
    return round(float(p), 6)


def _settings_key(**parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _check_percents(percents: Sequence[float]) -> list[float]:
    out = sorted({_percent_key(p) for p in percents})
    if not out:
        raise ConfigError("no percents given", hint="e.g. --percents 0.05,0.1,0.2,0.5,1")
    bad = [p for p in out if not 0 < p <= 1]
    if bad:
        raise ConfigError(f"percents must be fractions in (0, 1], got {', '.join(map(str, bad))}",
                          hint="0.1 means 10% of the training labels")
    return out


def _n_train(result) -> int | None:
    summary = getattr(result, "summary", None)
    if isinstance(summary, dict) and summary.get("n_train") is not None:
        return int(summary["n_train"])
    n = getattr(result, "n_train", None)
    return None if n is None else int(n)


def label_efficiency(csv, out, *, features: list[tuple[str, Path]] | None = None,
                     percents: Sequence[float] = DEFAULT_PERCENTS, seeds: Sequence[int] = (0, 1, 2),
                     metric: str = "auto", binary: bool = False, method: str = "probe", protocol: str = "release",
                     finetune_kwargs: dict | None = None, root=None,
                     models: list[tuple[str, str, str | None]] | None = None,
                     n_bootstrap: int = 1000, progress: bool = True, resume: bool = True,
                     reference: str | None = None, finetune_runner: Callable[..., Any] | None = None) -> CurveResult:
    """Train every encoder on growing fractions of the training labels and collect a test metric.

    Args:
        csv: Dataset CSV (image, split, label[, binary_label]).
        out: Output folder (``runs.csv``, ``curve.csv``, ``curve.json``, ``curve.png``).
        features: ``(name, features folder)`` per encoder (``method="probe"``).
        percents: Fractions of the training rows, each in (0, 1] (default: the paper's
            5, 10, 20, 30, 50 and 100%).
        seeds: Seeds of the subsample, the classifier and the bootstrap; one run each.
        metric: ``"auto"`` (AUROC for binary, weighted F1 otherwise) or any probe metric key.
        binary: Use ``binary_label`` instead of ``label``.
        method: ``"probe"`` (linear probe on features) or ``"finetune"``.
        protocol: The probe's protocol, ``"release"`` (default) or ``"sklearn"`` (``method="probe"``).
        finetune_kwargs: Extra keyword arguments for the fine-tuning runner.
        root: Image folder for ``method="finetune"``.
        models: ``(name, model, weights)`` per encoder (``method="finetune"``).
        n_bootstrap: Bootstrap replicates of each run's CI (0: none).
        progress: Print one line per run to stderr.
        resume: Skip runs already in ``out/runs.csv`` with the same settings.
        reference: Encoder compared with every other one by paired t-tests over seeds
            (default: the first encoder).
        finetune_runner: The fine-tuning function, called as
            ``runner(csv, root, run_folder, model=, weights=, percent_data=, seed=, binary=, progress=, **kwargs)``
            and returning a result with ``metrics`` (e.g. :func:`panderm.finetune.finetune`);
            required for ``method="finetune"`` (this layer never imports a feature package).

    Returns:
        A :class:`CurveResult`.

    Raises:
        ConfigError: Bad percents, seeds, metric or method, duplicate encoder names, or no
            ``finetune_runner`` for ``method="finetune"``.
        InputError: Missing inputs (and whatever the probe / fine-tuning raises).
    """
    csv, out = Path(csv), Path(out)
    metric, percents, seeds = _check_grid(csv, method, metric, binary, protocol, percents, seeds)
    finetune_kwargs = dict(finetune_kwargs or {})
    if method == "finetune":
        finetune_kwargs.setdefault("n_bootstrap", n_bootstrap)
    encoders = _check_encoders(method, features, models, root, finetune_runner)
    names = _check_names(encoders, reference)
    _make_out_folder(out)
    keys = {name: _encoder_settings(csv, method, src, binary=binary, metric=metric, n_bootstrap=n_bootstrap,
                                    protocol=protocol, root=root, finetune_kwargs=finetune_kwargs)
            for name, src in encoders}
    warns: list[str] = []
    runs_csv = out / "runs.csv"
    done = _earlier_runs(runs_csv, keys, percents, seeds, warns) if resume else {}
    train = {"binary": binary, "n_bootstrap": n_bootstrap, "protocol": protocol, "progress": progress,
             "finetune_kwargs": finetune_kwargs, "finetune_runner": finetune_runner}
    records, computed, skipped = _run_grid(out, csv, root, method, metric, encoders, percents, seeds, keys, done,
                                           train)
    runs = pd.DataFrame(records, columns=RUN_COLUMNS)
    _write_runs(runs_csv, records)
    curve, matches, comparisons, files = _write_curve(out, runs, encoders, names, reference, warns, csv=csv,
                                                      metric=metric, method=method, binary=binary,
                                                      percents=percents, seeds=seeds, n_bootstrap=n_bootstrap,
                                                      protocol=protocol)
    return CurveResult(metric=metric, runs=runs, curve=curve, matches=matches, comparisons=comparisons,
                       computed=computed,
                       skipped=skipped, warnings=warns, out=out, files=files)


def _check_grid(csv: Path, method: str, metric: str, binary: bool, protocol: str, percents: Sequence[float],
                seeds: Sequence[int]) -> tuple[str, list[float], list[int]]:
    """Validate the method, metric, protocol, percents, seeds and CSV; return the resolved metric, percents, seeds."""
    if method not in ("probe", "finetune"):
        raise ConfigError(f"unknown method '{method}'", hint="use probe or finetune")
    metric = resolve_metric(metric, binary)
    if method == "probe":
        from panderm.eval.linear import penalty_for

        penalty_for(protocol)  # unknown protocol → ConfigError before any work
    percents = _check_percents(percents)
    seeds = sorted({int(s) for s in seeds})
    if not seeds:
        raise ConfigError("no seeds given", hint="e.g. --seeds 0,1,2")
    if not csv.is_file():
        raise InputError(f"dataset CSV {csv} does not exist")
    return metric, percents, seeds


def _check_encoders(method: str, features, models, root, finetune_runner) -> list[tuple[str, Any]]:
    """``(name, source)`` per encoder: a features folder (probe) or ``(model, weights)`` (finetune), checked."""
    if method == "probe":
        if not features:
            raise ConfigError("method 'probe' needs at least one features folder", hint="pass --features DIR")
        encoders = [(str(n), Path(f)) for n, f in features]
        for _, f in encoders:
            if not (f / "features.npy").is_file():
                raise InputError(f"features folder {f} has no features.npy",
                                 hint="create it with: panderm extract CSV --out DIR")
        return encoders
    if not models:
        raise ConfigError("method 'finetune' needs at least one model", hint="pass --model NAME[=WEIGHTS]")
    if root is None:
        raise ConfigError("method 'finetune' needs the image folder", hint="pass --root IMAGES")
    if finetune_runner is None:
        raise ConfigError("method 'finetune' needs a fine-tuning runner",
                          hint="pass finetune_runner=panderm.finetune.finetune to label_efficiency")
    return [(str(n), (m, w)) for n, m, w in models]


def _check_names(encoders: list[tuple[str, Any]], reference: str | None) -> list[str]:
    """The encoders' names, refusing duplicates and a ``reference`` that is not one of them."""
    names = [n for n, _ in encoders]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"encoder name(s) used twice: {', '.join(dup)}",
                          hint="name them explicitly, e.g. --features panderm=feats_a/ --features other=feats_b/")
    if reference is not None and reference not in names:
        raise ConfigError(f"reference encoder '{reference}' is not one of the encoders ({', '.join(names)})",
                          hint="name it as in --features NAME=DIR (default name: the folder's name)")
    return names


def _make_out_folder(out: Path) -> None:
    """Create the output folder, refusing a path that is a file."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)


def _encoder_settings(csv: Path, method: str, src, *, binary: bool, metric: str, n_bootstrap: int, protocol: str,
                      root, finetune_kwargs: dict) -> str:
    """The ``settings`` hash of one encoder's runs (what a resumed run must share)."""
    if method == "probe":
        source = {"features": str(src.resolve()), "stamp": file_stamp(src / "features.npy"), "protocol": protocol}
    else:
        source = {"model": src[0], "weights": src[1], "root": str(Path(root).resolve()), "kwargs": finetune_kwargs}
    return _settings_key(method=method, csv=str(csv.resolve()), csv_stamp=file_stamp(csv), binary=binary,
                         metric=metric, n_bootstrap=n_bootstrap, **source)


def _earlier_runs(runs_csv: Path, keys: dict[str, str], percents: list[float], seeds: list[int],
                  warns: list[str]) -> dict[tuple, dict]:
    """Rows of an earlier ``runs.csv`` with the same settings inside the grid, by (encoder, percent, seed)."""
    done: dict[tuple, dict] = {}
    if not runs_csv.is_file():
        return done
    try:
        # as text: a settings hash of only digits (or an encoder named "1") must not become a number
        old = pd.read_csv(runs_csv, dtype={"settings": str, "encoder": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:  # a damaged file is recomputed
        warns.append(f"could not read {runs_csv} ({exc}); recomputing every run")
        old = pd.DataFrame(columns=RUN_COLUMNS)
    if set(RUN_COLUMNS) <= set(old.columns):
        for rec in old[RUN_COLUMNS].to_dict("records"):
            k = (str(rec["encoder"]), _percent_key(rec["percent"]), int(rec["seed"]))
            if keys.get(k[0]) == rec["settings"] and k[1] in percents and k[2] in seeds:
                done[k] = rec
        dropped = len(old) - len(done)
        if dropped:
            warns.append(f"{dropped} earlier run(s) in {runs_csv} with other settings or outside the "
                         f"requested grid were dropped")
    return done


def _run_grid(out: Path, csv: Path, root, method: str, metric: str, encoders, percents: list[float],
              seeds: list[int], keys: dict[str, str], done: dict[tuple, dict],
              train: dict) -> tuple[list[dict], int, int]:
    """Every encoder × percent × seed: reuse ``done`` rows, else train (``train``: :func:`_train_one`'s options),
    rewriting ``runs.csv`` after each run; return the rows and the computed / skipped counts."""
    runs_csv = out / "runs.csv"
    records: list[dict] = []
    computed = skipped = i = 0
    total = len(encoders) * len(percents) * len(seeds)
    for name, src in encoders:
        for p in percents:
            for s in seeds:
                i += 1
                if (name, p, s) in done:
                    records.append(done[(name, p, s)])
                    skipped += 1
                    continue
                res = _train_one(method, src, csv, root, out / "runs" / name / f"p{p:g}_s{s}", p, s, **train)
                rec = _run_row(res, name, method, metric, p, s, keys[name])
                records.append(rec)
                computed += 1
                _write_runs(runs_csv, records)
                if train["progress"]:
                    print(f"[{i}/{total}] {name} {100 * p:g}% seed {s}: n_train {rec['n_train']}, "
                          f"{metric} {rec['value']:.4f}", file=sys.stderr, flush=True)
    return records, computed, skipped


def _train_one(method: str, src, csv: Path, root, run_dir: Path, p: float, s: int, *, binary: bool,
               n_bootstrap: int, protocol: str, progress: bool, finetune_kwargs: dict, finetune_runner):
    """One run: the probe on a features folder, or the fine-tuning runner on the images into ``run_dir``."""
    if method == "probe":
        from panderm.eval import probe as _probe

        return _probe.run_probe(src, csv, None, binary=binary, percent_data=p, seed=s,
                                n_bootstrap=n_bootstrap, protocol=protocol)
    return finetune_runner(csv, root, run_dir, model=src[0], weights=src[1], percent_data=p, seed=s,
                           binary=binary, progress=progress, **finetune_kwargs)


def _run_row(res, name: str, method: str, metric: str, p: float, s: int, settings: str) -> dict:
    """The ``runs.csv`` row of one run's result (refusing a metric the run did not compute)."""
    if metric not in res.metrics:
        raise ConfigError(f"metric '{metric}' is not among the run's metrics "
                          f"({', '.join(res.metrics)})")
    m = res.metrics[metric]
    return {"encoder": name, "method": method, "percent": p, "seed": s, "n_train": _n_train(res),
            "metric": metric, "value": _num(m.get("value")), "ci_low": _num(m.get("ci_low")),
            "ci_high": _num(m.get("ci_high")), **_run_record(res), "settings": settings}


def _write_curve(out: Path, runs: pd.DataFrame, encoders, names: list[str], reference: str | None,
                 warns: list[str], *, csv: Path, metric: str, method: str, binary: bool, percents: list[float],
                 seeds: list[int], n_bootstrap: int, protocol: str) -> tuple[pd.DataFrame, list, list, list[Path]]:
    """Summarise the runs and write curve.csv, comparisons.csv, curve.json and curve.png; return what was made."""
    curve = summarise(runs)
    matches = find_matches(curve)
    comparisons = compare_encoders(runs, reference or names[0]) if len(names) > 1 else []
    if comparisons and len(seeds) < 2:
        warns.append("paired t-tests between encoders need at least 2 seeds (e.g. --seeds 0,1,2); "
                     "t and p are null")
    files = [out / "runs.csv"]
    with atomic_path(out / "curve.csv") as tmp:
        curve.to_csv(tmp, index=False)
    files.append(out / "curve.csv")
    if comparisons:
        with atomic_path(out / "comparisons.csv") as tmp:
            pd.DataFrame(comparisons, columns=COMPARISON_COLUMNS).to_csv(tmp, index=False)
        files.append(out / "comparisons.csv")
    else:
        (out / "comparisons.csv").unlink(missing_ok=True)  # never leave a stale one from another grid
    from panderm.io import jsonable

    atomic_write_json(out / "curve.json", jsonable({
        "metric": metric, "method": method, "binary": binary, "csv": str(csv), "percents": percents,
        "seeds": seeds, "n_bootstrap": n_bootstrap, "protocol": protocol if method == "probe" else None,
        "solver": _solver_of(runs), "features_precision": _precisions(runs),
        "encoders": {n: (str(s) if method == "probe" else {"model": s[0], "weights": s[1]}) for n, s in encoders},
        "interval": "t-interval across seeds (mean ± t·sd/√n) with ≥ 2 seeds; the run's bootstrap CI with 1 seed",
        "matches_rule": "first measured percent where the mean reaches (≥) the reference's 100% mean; "
                        "percent_interpolated: linear interpolation between that percent and the previous one",
        "comparison_test": "two-sided paired t-test over seeds (scipy.stats.ttest_rel); difference = reference − "
                           "encoder; 95% CI = mean ± t·sd/√n of the per-seed differences",
        "curve": curve.to_dict("records"), "matches": matches, "comparisons": comparisons, "warnings": warns}))
    files.append(out / "curve.json")
    files.append(curve_png(out / "curve.png", curve, matches, metric))
    return curve, matches, comparisons, files


def _run_record(res) -> dict:
    """Protocol, C, iterations, solver settings (JSON) and features' precision of a probe run (blank otherwise)."""
    record = getattr(res, "record", None) or {}
    solver = dict(record.get("solver") or {})
    n_iter, C = solver.pop("n_iter", None), solver.pop("C", None)
    return {"protocol": record.get("protocol"), "C": C, "n_iter": n_iter,
            "features_precision": record.get("features_precision"),
            "solver": json.dumps(solver, sort_keys=True, ensure_ascii=False) if solver else None}


def _solver_of(runs: pd.DataFrame) -> dict | None:
    """The solver settings shared by the runs (C and n_iter vary: see runs.csv); None when none recorded."""
    texts = runs["solver"].dropna().unique().tolist()
    if not texts:
        return None
    return json.loads(texts[0]) if len(texts) == 1 else {"varies": [json.loads(t) for t in texts]}


def _precisions(runs: pd.DataFrame) -> dict:
    """Features' extraction precision per encoder (None where meta.json did not record it)."""
    out = {}
    for enc, g in runs.groupby("encoder", sort=False):
        vals = g["features_precision"].dropna().unique().tolist()
        out[str(enc)] = vals[0] if len(vals) == 1 else (vals or None)
    return out


SAME_ROWS_NOTE = ("at 100% every seed fits the convex probe on the same training rows: the seeds differ only "
                  "by solver noise, so no t-test (see boot_ci_* for the test-set uncertainty)")


def _seeds_share_everything(runs: pd.DataFrame, percent: float) -> bool:
    """Probe runs on all training rows: the optimum does not depend on the seed, only the solver's endpoint does."""
    at = runs[np.isclose(runs["percent"].astype(float), percent)]
    return bool(np.isclose(percent, 1.0) and len(at) and "method" in at and (at["method"] == "probe").all())


def compare_encoders(runs: pd.DataFrame, reference: str) -> list[dict[str, Any]]:
    """Paired two-sided t-test of ``reference`` against each other encoder at every percent, paired by seed.

    Returns one dict per (encoder, percent) with the :data:`COMPARISON_COLUMNS`
    (difference = reference − encoder); fewer than 2 shared seeds give null t/p and a note,
    and so does 100% with the probe (:data:`SAME_ROWS_NOTE`): its seeds vary only the
    initialisation of a convex fit, and a t-test over solver noise gives |t| in the thousands.
    """
    from panderm.errors import ConfigError
    from panderm.eval.metrics import paired_t_test

    out = []
    ref = runs[runs["encoder"] == reference]
    for enc in dict.fromkeys(runs["encoder"]):
        if enc == reference:
            continue
        other = runs[runs["encoder"] == enc]
        for p in sorted(set(ref["percent"]) & set(other["percent"])):
            a = ref[ref["percent"] == p].set_index("seed")["value"]
            b = other[other["percent"] == p].set_index("seed")["value"]
            shared = sorted(set(a.index) & set(b.index))
            row = {"reference": reference, "encoder": enc, "percent": float(p), "n": len(shared)}
            try:
                t = paired_t_test(a.loc[shared].to_numpy(float), b.loc[shared].to_numpy(float))
            except ConfigError as exc:
                t = {"n": 0, "note": exc.message}
            if _seeds_share_everything(runs, p) and t.get("n"):
                t = {**t, "ci_low": None, "ci_high": None, "t": None, "p_value": None, "note": SAME_ROWS_NOTE}
            row.update({"n": t["n"], "mean_reference": t.get("mean_a"), "mean_encoder": t.get("mean_b"),
                        "mean_difference": t.get("mean_difference"), "ci_low": t.get("ci_low"),
                        "ci_high": t.get("ci_high"), "t": t.get("t"), "p_value": t.get("p_value"),
                        "note": t.get("note")})
            out.append(row)
    return out


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _write_runs(path: Path, records: list[dict]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(records, columns=RUN_COLUMNS).to_csv(tmp, index=False)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per encoder × percent: mean/sd/min/max over seeds and the 95% interval (see module doc)."""
    from scipy import stats

    rows = []
    for (enc, p), g in runs.groupby(["encoder", "percent"], sort=False):
        v = g["value"].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        n = len(v)
        mean = float(v.mean()) if n else float("nan")
        sd = float(v.std(ddof=1)) if n > 1 else float("nan")
        if n > 1:
            half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
            lo, hi, how = mean - half, mean + half, "t"
        else:
            lo = float(g["ci_low"].iloc[0]) if n else float("nan")
            hi = float(g["ci_high"].iloc[0]) if n else float("nan")
            how = "bootstrap"
        n_train = pd.to_numeric(g["n_train"], errors="coerce")
        rows.append({"encoder": enc, "percent": float(p), "n_seeds": n,
                     "n_train": float(n_train.mean()) if n_train.notna().any() else float("nan"),
                     "mean": mean, "std": sd, "min": float(v.min()) if n else float("nan"),
                     "max": float(v.max()) if n else float("nan"), "ci_low": lo, "ci_high": hi,
                     "ci_method": how, "boot_ci_low": float(pd.to_numeric(g["ci_low"]).mean()),
                     "boot_ci_high": float(pd.to_numeric(g["ci_high"]).mean())})
    curve = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    order = {e: i for i, e in enumerate(dict.fromkeys(runs["encoder"]))}  # encoders in the order given
    curve["_o"] = curve["encoder"].map(order)
    return curve.sort_values(["_o", "percent"], kind="stable").drop(columns="_o").reset_index(drop=True)


def find_matches(curve: pd.DataFrame) -> list[dict[str, Any]]:
    """Where each encoder first reaches (≥) another encoder's full-data (100%) mean.

    Args:
        curve: A ``curve.csv`` table (encoder, percent, mean, …).

    Returns:
        ``[{encoder, reference, percent, percent_interpolated, value, reference_value}]``;
        pairs that never match are left out.
    """
    out = []
    encoders = list(dict.fromkeys(curve["encoder"]))
    for ref in encoders:
        full = curve[(curve["encoder"] == ref) & np.isclose(curve["percent"], 1.0)]
        if full.empty or not np.isfinite(full["mean"].iloc[0]):
            continue
        target = float(full["mean"].iloc[0])
        for enc in encoders:
            if enc == ref:
                continue
            g = curve[curve["encoder"] == enc].sort_values("percent")
            ps, vs = g["percent"].to_numpy(float), g["mean"].to_numpy(float)
            hit = np.flatnonzero(np.isfinite(vs) & (vs >= target))
            if not len(hit):
                continue
            j = int(hit[0])
            interp = ps[j]
            if j > 0 and np.isfinite(vs[j - 1]) and vs[j] > vs[j - 1]:
                interp = ps[j - 1] + (target - vs[j - 1]) / (vs[j] - vs[j - 1]) * (ps[j] - ps[j - 1])
            out.append({"encoder": enc, "reference": ref, "percent": float(ps[j]),
                        "percent_interpolated": float(interp), "value": float(vs[j]), "reference_value": target})
    return out


def curve_png(path, curve: pd.DataFrame, matches: list[dict], metric: str, title: str | None = None) -> Path:
    """Metric vs percent of labels (log x): line + markers + 95% band per encoder, stars at matches."""
    from matplotlib.ticker import FixedLocator, NullLocator

    from panderm.eval.plots import new_figure, save_png

    encoders = list(dict.fromkeys(curve["encoder"]))
    fig = new_figure(7.5, 5.2)
    ax = fig.add_subplot()
    colors = {e: f"C{i % 10}" for i, e in enumerate(encoders)}
    markers = "osD^vP*X"
    for i, enc in enumerate(encoders):
        g = curve[curve["encoder"] == enc].sort_values("percent")
        x = 100 * g["percent"].to_numpy(float)
        ax.fill_between(x, g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float), color=colors[enc],
                        alpha=0.18, linewidth=0)
        ax.plot(x, g["mean"].to_numpy(float), marker=markers[i % len(markers)], color=colors[enc],
                linewidth=1.8, markersize=6, label=enc)
    refs_drawn = set()
    for k, m in enumerate(matches):
        ref = m["reference"]
        if ref not in refs_drawn:
            ax.axhline(m["reference_value"], color=colors[ref], linestyle=":", linewidth=1.1, alpha=0.9)
            refs_drawn.add(ref)
        ax.plot([100 * m["percent"]], [m["value"]], marker="*", markersize=16, color=colors[m["encoder"]],
                markeredgecolor="black", zorder=5, linestyle="none")
        ax.annotate(f"{m['encoder']} matches {ref}'s full-data\nscore with {100 * m['percent']:g}% of the labels",
                    xy=(100 * m["percent"], m["value"]), xytext=(12, -28 - 26 * k), textcoords="offset points",
                    fontsize=8.5, arrowprops={"arrowstyle": "->", "color": "0.3", "linewidth": 0.8},
                    bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.7", "alpha": 0.9})
    ax.set_xscale("log")
    ticks = sorted(set(100 * curve["percent"].to_numpy(float)))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}%" for t in ticks])
    ax.set_xlabel("Training labels used (log scale)")
    label = {"auroc": "AUROC", "weighted_f1": "Weighted F1", "bacc": "Balanced accuracy", "acc": "Accuracy",
             "aupr": "AUPR", "kappa": "Quadratic kappa", "auroc_ovr": "AUROC (OvR)"}.get(metric, metric)
    ax.set_ylabel(f"Test {label}")
    seeds = int(curve["n_seeds"].max()) if len(curve) else 0
    band = "95% t-interval over seeds" if seeds > 1 else "95% bootstrap CI"
    ax.set_title(title or f"Label efficiency: test {label} (mean of {seeds} seed{'s' * (seeds != 1)}; band: {band})",
                 fontsize=10)
    ax.grid(alpha=0.3, which="major")
    ax.legend(loc="lower right", fontsize=9)
    return save_png(fig, path)
