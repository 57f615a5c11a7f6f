"""``panderm screen-tbp``: score every lesion of one or many patients with a screening bundle.

Outputs in ``out`` (each written atomically): ``lesions.csv``, ``patients.json``,
``skipped.csv``, ``reports/<patient>.html`` and ``index.html``; ``.work/`` holds the
resumable features, cached image measurements and image-quality reports (rerunning reuses them).

Every tile passes two gates first (:mod:`panderm.tbp.gates`): image quality and the bundle's
out-of-distribution gate. A tile failing either is *not assessable*: it is left out of its
patient's ugly-duckling comparison, gets no rank and no flag, and is listed on its own in
``patients.json`` and the report, for examination in person or a new photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from panderm.errors import ConfigError, InputError
from panderm.eval.ood import gate_summary
from panderm.io import atomic_path, atomic_write_json, write_skipped_csv
from panderm.paths import inside_out, safe_stem

LESION_COLUMNS = ["patient_id", "lesion_id", "image", "assessable", "not_assessable_reason", "ood_score",
                  "risk_score", "ud_distance", "ud_fence", "ud_outlier", "ml_score", "flag_risk", "flag_ud", "flag_ml",
                  "flagged", "rank", "suspicion", "not_run_reason"]
#: Columns ``lesions.csv`` adds when the input has them: the ISIC id and where the lesion is (for the clinician).
OPTIONAL_COLUMNS = ["isic_id", "anatom_site_general", "tbp_lv_location", "size_mm", "tbp_lv_x", "tbp_lv_y",
                    "tbp_lv_z", "label"]
SUBMISSION_COLUMNS = ["isic_id", "target"]


def lesion_columns(df: pd.DataFrame) -> list[str]:
    """``lesions.csv`` columns for ``df``: :data:`LESION_COLUMNS`, ``isic_id`` after ``lesion_id`` when present,
    then the optional locator columns the input has (``size_mm`` only when some lesion has a size)."""
    cols = list(LESION_COLUMNS)
    if "isic_id" in df.columns:
        cols.insert(cols.index("lesion_id") + 1, "isic_id")
    extra = [c for c in OPTIONAL_COLUMNS[1:] if c in df.columns and not (c == "size_mm" and df[c].isna().all())]
    return cols + extra


def write_submission(path: str | Path, df: pd.DataFrame) -> Path:
    """ISIC 2024 submission: exactly ``isic_id,target`` (target = the risk head's probability), rows in ``df`` order.

    Every screened row is kept, not-assessable tiles included: a benchmark file scores every tile.

    Raises:
        InputError: ``df`` has no ``isic_id`` column.
    """
    if "isic_id" not in df.columns:
        raise InputError("--submission needs an isic_id per lesion; this input has none",
                         hint="screen ISIC 2024 metadata (--format isic2024), or add an isic_id column")
    out = Path(path)
    target = df["risk_score"].astype(float).clip(0.0, 1.0)
    with atomic_path(out) as tmp:
        pd.DataFrame({"isic_id": df["isic_id"].astype(str), "target": target}).to_csv(
            tmp, index=False, columns=SUBMISSION_COLUMNS, float_format="%.17g")
    return out


@dataclass
class ScreenResult:
    """What a screening run produced."""

    out: Path
    n_patients: int
    n_lesions: int
    n_flagged: int
    n_skipped: int
    lesions: pd.DataFrame
    reports: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ml_used: bool = True
    n_not_assessable: int = 0


def _report_name(pid: str, used: set[str]) -> str:
    """A safe ``<stem>.html`` for a patient id (any id: it is shown, never used as a path); ``-2`` … on a clash."""
    base = safe_stem(pid, "patient")
    name, i = f"{base}.html", 1
    while name.lower() in used:  # case-insensitive file systems would merge two reports
        i += 1
        name = f"{base}-{i}.html"
    used.add(name.lower())
    return name


def _ml_scores(bundle, table, work: Path, measure_from_image: bool | None, on_missing: str, progress: bool):
    """ML scores (NaN when the bundle has no model or the input has no measurements) and warnings."""
    from panderm.tbp import pipeline
    from panderm.tbp.measurements import measurement_matrix

    if bundle.ml is None:
        return np.full(len(table.df), np.nan), ["the bundle has no measurement model"]
    source = bundle.measurement_source
    if measure_from_image is not None and measure_from_image != (source == "image"):
        raise ConfigError(
            f"the bundle's measurement model was trained on {source} measurements; "
            f"{'--measure-from-image' if measure_from_image else 'Vectra measurements'} would feed it other units",
            hint="drop the flag: screening follows the bundle")
    if source == "image":
        pipeline.attach_image_measurements(table, work, progress)
    columns = bundle.meta["ml"]["columns"]
    if not any(c in table.df.columns for c in columns) and on_missing != "error":
        return np.full(len(table.df), np.nan), [
            ("the input has none of the measurement columns the bundle's model needs; the measurement module "
            "is off for this run (--strict-measurements makes this an error)")]
    Xm, rep = measurement_matrix(table.df, columns, fill_values=bundle.meta["ml"]["fill_values"],
                                 on_missing=on_missing)
    return bundle.ml.predict_proba(Xm)[:, 1], rep.warnings()


def score_lesions(table, bundle, work: Path, *, model=None, weights=None, measure_from_image=None,
                  on_missing: str = "impute", batch_size: int = 32, precision: str = "auto",
                  device: str | None = None, progress: bool = True) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Gate, encode, score (risk, UD, ML), flag and rank the lesions of ``table``.

    Not-assessable tiles (:mod:`panderm.tbp.gates`) keep their risk and ML scores but are left out
    of the ugly-duckling comparison and get no flag and no rank.

    Returns:
        The scored table (``table.df`` order), its features and the run's warnings.
    """
    from panderm.tbp import pipeline
    from panderm.tbp.gates import assess_tiles

    encoder = bundle.build_encoder(model, weights)
    X = pipeline.encode_lesions(table, encoder, work, precision=precision, batch_size=batch_size, device=device,
                                progress=progress)
    gates = assess_tiles(table.df["path"], X, bundle.ood_gate, work)
    ok = gates["assessable"].to_numpy(bool)
    ml, warnings = _ml_scores(bundle, table, work, measure_from_image, on_missing, progress)
    ud = bundle.ud
    d, o, f = pipeline.ugly_duckling_columns(table.df["patient_id"], X, k=ud["k"], min_lesions=ud["min_lesions"],
                                             metric=ud["metric"], include=ok)
    own = table.df.drop(columns=[c for c in gates.columns if c in table.df.columns])  # ours, never the input's
    df = pd.concat([own, gates], axis=1).assign(risk_score=bundle.risk_scores(X), ud_distance=d, ud_outlier=o,
                                                      ud_fence=f, ml_score=ml)
    thresholds = dict(bundle.thresholds)
    if np.isnan(ml).all():
        thresholds["ml"] = None
    n = int((df["assessable"].groupby(df["patient_id"]).sum() < ud["min_lesions"]).sum())  # assessable tiles only
    if n:
        warnings.append(f"{n} patient(s) have fewer than {ud['min_lesions']} lesions to compare (assessable tiles "
                        "only): the ugly-duckling test does not apply to them")
    df = pipeline.flag_and_rank(df, thresholds)
    ml_reason = ("the bundle has no measurement model" if bundle.ml is None else
                 "off for this run: the input has none of the measurement columns the model needs"
                 if np.isnan(ml).all() else None)
    df["not_run_reason"] = pipeline.module_notes(df, thresholds, ud["min_lesions"], ml_reason)
    # what the gates could not do on this run: screening and evaluation both say so
    warnings += [note for note in (bundle.ood_notice, bundle.ood_precision_note(precision, device)) if note]
    return df, X, warnings


def screen_tbp(input: str | Path | None, out: str | Path, *, bundle: str | Path | None = None, demo: bool = False,
               fmt: str = "auto", images: str | Path | None = None, model: str | None = None,
               weights: str | Path | None = None, measure_from_image: bool | None = None,
               lesion_filter: bool = False, on_missing: str = "impute", reports: bool = True,
               map_method: str = "pca", batch_size: int = 32, precision: str = "auto",
               device: str | None = None, progress: bool = True,
               submission: str | Path | None = None) -> ScreenResult:
    """Screen a patient folder, a cohort folder or ISIC 2024 input with a bundle.

    Args:
        input: Patient folder, cohort folder (one sub-folder per patient), lesions CSV or ISIC 2024
            metadata; ``None`` with ``demo=True`` uses the bundled demo patient.
        out: Output folder.
        bundle: Bundle folder (default: the bundled demo bundle).
        fmt: ``auto``, ``patient``, ``cohort`` or ``isic2024``.
        measure_from_image: ``None`` follows the bundle; a contradicting value is an error.
        lesion_filter: Apply the paper's Vectra lesion filter first.
        on_missing: ``impute`` (warn) or ``error`` for missing measurement columns.
        reports: Write the HTML reports.
        submission: Also write an ISIC 2024 submission CSV here (``isic_id,target``, input order;
            the input must have ``isic_id``; skipped lesions are absent and a warning counts them).
    """
    from panderm.tbp.bundle import demo_patient_path, load_bundle
    from panderm.tbp.inputs import SKIPPED_COLUMNS, read_input
    from panderm.tbp.measurements import lesion_filter as filt

    if input is None:
        if not demo:
            raise InputError("no input given", hint="pass a patient or cohort folder, or --demo")
        input = demo_patient_path()
    b = load_bundle(bundle, not_a_bundle_hint="train one with `panderm tbp train`, or leave out --run to screen "
                                              "with the bundled demo bundle")
    out = Path(out)
    work = out / ".work"
    table = read_input(input, fmt, images=images, cache=work / "tiles", strict_labels=False)
    if lesion_filter:
        keep, _ = filt(table.df)
        table.skip(table.df[~keep], "removed by the lesion filter")
    if submission is not None and "isic_id" not in table.df.columns:
        write_submission(submission, table.df)  # raises the InputError before any encoding
    if table.df.empty:
        write_skipped_csv(out, table.skipped, SKIPPED_COLUMNS)
        raise InputError(f"no lesion tiles to screen in {input}",
                         hint=f"{len(table.skipped)} item(s) were left out; see {out / 'skipped.csv'}")
    df, X, warnings = score_lesions(table, b, work, model=model, weights=weights,
                                    measure_from_image=measure_from_image, on_missing=on_missing,
                                    batch_size=batch_size, precision=precision, device=device, progress=progress)
    warnings = table.warnings + warnings
    if submission is not None:
        write_submission(submission, df)
        if table.skipped:
            warnings.append(f"{len(table.skipped)} lesion(s) were skipped (see skipped.csv) and have no row in "
                            f"the submission file {Path(submission).name}")
    order = df.sort_values(["patient_id", "rank"], kind="stable").index
    df, X = df.loc[order].reset_index(drop=True), X[order]
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "lesions.csv") as tmp:
        df[lesion_columns(df)].to_csv(tmp, index=False)
    write_skipped_csv(out, table.skipped, SKIPPED_COLUMNS)
    patients, paths = _patients(df, b, X, out, reports, map_method, warnings, table.skipped)
    n_na = int((~df["assessable"]).sum())
    atomic_write_json(out / "patients.json", {
        "bundle": str(b.path), "demo": bool(b.meta.get("demo")), "thresholds": b.thresholds, "ud": b.ud,
        "ood_gate": gate_summary(b.ood_gate),
        "ml_used": bool(df["ml_score"].notna().any()), "n_skipped": len(table.skipped), "n_not_assessable": n_na,
        "warnings": warnings, "patients": patients})
    return ScreenResult(out, len(patients), len(df), int(df["flagged"].sum()), len(table.skipped), df, paths,
                        warnings, bool(df["ml_score"].notna().any()), n_na)


#: ``table.skipped`` reason of rows the lesion filter removed on purpose: not listed in patient reports.
FILTER_REASON = "removed by the lesion filter"


def skipped_by_patient(skipped: list[dict]) -> dict[str, list[dict]]:
    """Unreadable tiles per patient id (``lesion_id``, ``image`` file name, ``reason``); rows without a patient
    id and lesion-filter removals are left to ``skipped.csv``."""
    from panderm.tbp.report_gates import skipped_items

    by: dict[str, list[dict]] = {}
    for r in skipped:
        pid = r.get("patient_id")
        if r.get("reason") != FILTER_REASON and pid is not None and not pd.isna(pid) and str(pid):
            by.setdefault(str(pid), []).extend(skipped_items([r]))
    return by


def _patients(df: pd.DataFrame, b, X: np.ndarray, out: Path, reports: bool, map_method: str,
              warnings: list[str] | None = None, skipped: list[dict] = ()):
    from panderm.tbp.bundle import demo_bundle_path
    from panderm.tbp.gates import not_assessable_entries
    from panderm.tbp.report import write_cohort_index, write_patient_report
    from panderm.tbp.report_gates import NO_GATE_NOTE, not_assessable_items

    name = "demo bundle" if b.path.resolve() == demo_bundle_path().resolve() else b.path.resolve().name
    info = {"encoder": b.meta["encoder"]["name"], "bundle": name, "created": b.meta.get("created"),
            "demo": bool(b.meta.get("demo"))}
    thresholds = {"risk": b.thresholds["risk"], "ml": b.thresholds.get("ml"), "ud_k": b.ud["k"],
                  "ud_min_lesions": b.ud["min_lesions"]}
    imp = b.importance[["feature", "importance", "std"]] if b.importance is not None else None
    used, patients, paths = set(), [], []
    unread = skipped_by_patient(list(skipped))
    groups = dict(iter(df.groupby("patient_id", sort=True)))
    for pid in sorted(set(groups) | set(unread)):  # a patient with no readable tile still gets a report
        all_rows, pid_skipped = groups.get(pid, df.iloc[:0]), unread.get(pid, [])
        ok = all_rows["assessable"].to_numpy(bool)
        rows, bad = all_rows[ok], all_rows[~ok]  # ranked lesions; tiles that failed a gate, listed on their own
        flagged = rows[rows["flagged"]].sort_values("rank")
        entry = {"patient_id": pid, "n_lesions": len(all_rows), "n_flagged": len(flagged),
                 "recommended_for_dermoscopy": flagged["lesion_id"].tolist(),
                 "ud_applied": len(rows) >= b.ud["min_lesions"], "n_not_assessable": len(bad),
                 "not_assessable": not_assessable_entries(bad), "n_skipped": len(pid_skipped),
                 "skipped": pid_skipped}
        if reports:
            name = _report_name(str(pid), used)
            paths.append(write_patient_report(inside_out(out, "reports", name), str(pid), rows.reset_index(drop=True),
                                              X[rows.index.to_numpy()], rows["path"].tolist(), importance=imp,
                                              thresholds=thresholds, bundle_info=info, map_method=map_method,
                                              warnings=warnings or (), not_assessable=not_assessable_items(bad),
                                              gate_note=NO_GATE_NOTE if b.ood_gate is None else None,
                                              skipped=pid_skipped))
            entry["report"] = f"reports/{name}"
        patients.append(entry)
    if reports:
        # the index counts every tile of a patient: unreadable ones are not assessable either
        write_cohort_index(out / "index.html", [{"patient_id": p["patient_id"], "flagged": p["n_flagged"],
                                                 "lesions": p["n_lesions"] + p["n_skipped"],
                                                 "not_assessable": p["n_not_assessable"] + p["n_skipped"],
                                                 "report": p["report"]}
                                                for p in patients], bundle_info=info, warnings=warnings or ())
    return patients, paths
