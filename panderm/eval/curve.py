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
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from panderm.errors import ConfigError, InputError
from panderm.eval.curve_summary import COMPARISON_COLUMNS, compare_encoders, curve_png, find_matches, summarise
from panderm.io import atomic_path, atomic_write_json, file_stamp, make_out_dir

RUN_COLUMNS = ["encoder", "method", "percent", "seed", "n_train", "metric", "value", "ci_low", "ci_high",
               "protocol", "C", "n_iter", "features_precision", "solver", "settings"]
#: The paper's label-efficiency grid (Extended Data Tables 15-20).
DEFAULT_PERCENTS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


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
    make_out_dir(out)


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


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _write_runs(path: Path, records: list[dict]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(records, columns=RUN_COLUMNS).to_csv(tmp, index=False)
