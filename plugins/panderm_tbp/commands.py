"""``panderm screen-tbp`` and ``panderm tbp train|eval``: thin wrappers around :mod:`panderm.tbp`."""

from __future__ import annotations

from pathlib import Path

import click

from panderm.formatting import format_number
from panderm_cli import options

_CTX = {"help_option_names": ["-h", "--help"]}
_PATH = click.Path(path_type=Path)
_FORMATS = click.Choice(["auto", "patient", "cohort", "isic2024"])


def _warn(lines) -> None:
    from panderm_cli.format import printable

    for line in lines:
        click.secho(f"Warning: {printable(line)}", fg="yellow", err=True)


_BUNDLE_WEIGHTS = "Encoder weights (registered name or path) when the bundle does not carry its own."


def _common(f):
    """Options shared by the three commands (input layout, compute, output)."""
    opts = [
        click.option("--format", "fmt", type=_FORMATS, default="auto", show_default=True,
                     help="Input layout: auto (folder → patient/cohort, CSV → lesions CSV), isic2024."),
        click.option("--images", type=_PATH, default=None, metavar="DIR|HDF5",
                     help="ISIC 2024: image folder or HDF5 file keyed by isic_id (default: found beside the CSV)."),
        click.option("--strict-measurements", is_flag=True,
                     help="Missing measurement columns are an error (default: imputed with a warning)."),
        options.batch_size(32, why="the TBP pipeline's (feature extraction and fine-tuning)"),
        options.precision(),
        options.device(),
        options.quiet(),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


SCREEN_EPILOG = """\b
Examples:
  panderm screen-tbp --demo --out report/
  panderm screen-tbp patient_dir/ --run bundle/ --out report/
  panderm screen-tbp cohort_dir/ --run bundle/ --out report/ --json
  panderm screen-tbp isic2024/ --format isic2024 --run bundle/ --out report/
  panderm screen-tbp isic2024/ --format isic2024 --run b/ --out r/ --submission submission.csv

\b
A patient folder holds lesion tiles (jpg/png) and measurements.csv
(lesion_id, image, measurement columns); a cohort folder holds one such
folder per patient. Paths may be relative to the working directory; image
paths in measurements.csv stay inside the patient folder. A lesion is flagged
when the risk head, the ugly-duckling outlier test or the measurement model
says so (see docs/tbp.md). Patients whose id cannot be a file name are skipped.
--run is a screening bundle from `panderm tbp train` (default: the bundled
demo bundle).

\b
Every tile first passes two gates: image quality (size, blur, noise,
exposure, skin colour) and the bundle's out-of-distribution gate on its
features. A tile failing either is "not assessable": it gets no rank and no
flag, is left out of the ugly-duckling comparison, and is listed in its own
report section with the reasons, for examination in person.

\b
Assessable lesions are ranked by the risk head's probability (rank 1 =
highest risk in the patient; ties: measurement model score, then
ugly-duckling distance).

\b
Outputs in --out: lesions.csv (assessable, not_assessable_reason,
ood_score, scores, thresholds, flags, rank, isic_id and
site/size/position when the input has them; empty score + not_run_reason when
a module did not run), patients.json (lesions recommended for dermoscopy),
skipped.csv, reports/<patient>.html (self-contained: body map, per-lesion
scores next to thresholds, warnings) and index.html. --submission FILE also
writes an ISIC 2024 submission (isic_id,target = risk probability, input
order). Rerunning reuses the features in --out/.work."""


@click.command("screen-tbp", context_settings=_CTX, epilog=SCREEN_EPILOG)
@click.argument("input", required=False, type=_PATH)
@options.run(required=False, help="Screening bundle folder from `panderm tbp train` [default: the bundled demo "
                                  "bundle].")
@click.option("--demo", is_flag=True, help="Screen the bundled demo patient (with the demo bundle unless --run).")
@options.out(help="Output folder for lesions.csv, patients.json and the reports.")
@click.option("--lesion-filter", is_flag=True,
              help="Apply the paper's Vectra filter first (majorAxisMM ≥ 2, deltaLBnorm ≥ 4.5, ...).")
@click.option("--measure-from-image/--vectra-measurements", default=None,
              help="Measurement source; default: whatever the bundle was trained on.")
@click.option("--no-reports", is_flag=True, help="Skip the HTML reports.")
@click.option("--map", "map_method", type=click.Choice(["pca", "umap"]), default="pca", show_default=True,
              help="Feature-space map in the reports (umap needs umap-learn).")
@options.json_output(help="Print patients.json (plus the output folder) as JSON on stdout.")
@click.option("--submission", type=_PATH, default=None, metavar="FILE",
              help="Also write an ISIC 2024 submission CSV: isic_id,target (the risk head's probability), one row "
                   "per screened lesion in input order; the input needs isic_id.")
@options.weights(help=_BUNDLE_WEIGHTS)
@_common
def screen_tbp_cmd(input, run_dir, demo, out, lesion_filter, measure_from_image, no_reports, map_method, as_json,
                   submission, weights, fmt, images, strict_measurements, batch_size, precision, device, quiet):
    """Screen the lesions of a patient (or a cohort) and rank them for dermoscopy."""
    from panderm.tbp.screen import screen_tbp

    if input is None and not demo:
        raise click.UsageError("give a patient/cohort folder, or --demo")
    res = screen_tbp(input, out, bundle=run_dir, demo=demo, fmt=fmt, images=images, weights=weights,
                     measure_from_image=measure_from_image, lesion_filter=lesion_filter,
                     on_missing="error" if strict_measurements else "impute", reports=not no_reports,
                     map_method=map_method, batch_size=batch_size, precision=precision, device=device,
                     progress=not quiet, submission=submission)
    _warn(res.warnings)
    if as_json:
        import json

        options.echo_json({**json.loads((res.out / "patients.json").read_text(encoding="utf-8")), "out": res.out,
                           "submission": submission})
        return
    click.echo(f"{res.n_patients} patient(s), {res.n_lesions} lesions screened, {res.n_flagged} flagged for "
               f"dermoscopy, {res.n_not_assessable} not assessable (examine in person or retake the photo), "
               f"{res.n_skipped} skipped" + ("" if res.ml_used else " (measurement model off)"))
    from panderm_cli.format import printable

    for pid, rows in res.lesions.groupby("patient_id"):
        top = rows[rows["flagged"]].sort_values("rank")["lesion_id"].tolist()
        more = f" … (+{len(top) - 5})" if len(top) > 5 else ""
        n_na = int((~rows["assessable"]).sum())
        na = f", {n_na} not assessable" if n_na else ""
        line = f"  {pid}: {len(top)}/{len(rows) - n_na} flagged{na}  {', '.join(map(str, top[:5]))}{more}"
        if n_na == len(rows):  # nothing could be judged: not a reassuring "0 flagged"
            line = f"  {pid}: no lesion could be assessed ({n_na} not assessable): examine in person"
        click.echo(printable(line, one_line=True))
    import json

    screened = set(res.lesions["patient_id"].astype(str))
    for entry in json.loads((res.out / "patients.json").read_text(encoding="utf-8"))["patients"]:
        if str(entry["patient_id"]) not in screened:  # every tile unreadable: still a patient to examine
            line = (f"  {entry['patient_id']}: no tile could be read ({entry.get('n_skipped', 0)} skipped): "
                    "examine in person")
            click.echo(printable(line, one_line=True))
    click.echo(f"wrote lesions.csv, patients.json, skipped.csv"
               f"{', index.html and ' + str(len(res.reports)) + ' report(s)' if res.reports else ''} to {res.out}/")
    if submission is not None:
        click.echo(f"wrote the ISIC 2024 submission (isic_id,target) to {submission}")


TBP_EPILOG = """\b
Examples:
  panderm tbp train --csv lesions.csv --root tiles/ --weights W --out bundle/
  panderm tbp train --csv lesions.csv --root tiles/ --weights W --risk-head finetune --out bundle/
  panderm tbp eval --run bundle/ --csv test.csv --root tiles/ --out eval/
  panderm screen-tbp patient_dir/ --run bundle/ --out report/"""


@click.group("tbp", context_settings=_CTX, epilog=TBP_EPILOG)
def tbp_group():
    """Train and evaluate TBP screening bundles."""


TRAIN_EPILOG = """\b
Examples:
  panderm tbp train --csv lesions.csv --root tiles/ --weights W --out bundle/
  panderm tbp train --csv lesions.csv --root tiles/ --weights W --risk-head finetune --epochs 10 --out bundle/
  panderm tbp train --csv lesions.csv --root tiles/ --weights W --risk-head finetune --out bundle/ --resume
  panderm tbp train --csv train-metadata.csv --format isic2024 --images train-image.hdf5 --weights W --out b/
  panderm tbp train --csv lesions.csv --root tiles/ --weights W --measure-from-image --out bundle/ --json

\b
--csv, the lesions table: patient_id, lesion_id, image (relative to
--root, which it may not leave), label (1/malignant, 0/benign), optional
risk_label (1 = the lesion was sent to dermoscopy, 0 = not), optional
split (train/val; other rows unused) and measurement columns (Vectra
names or ISIC 2024 tbp_lv_* names). Without a split column one
patient-grouped StratifiedGroupKFold fold is the validation set.

\b
Two targets, as in the paper: the risk head learns risk_label (which
lesions clinicians sent to dermoscopy) and its threshold reaches
--target-sensitivity on it; the measurement model learns label
(pathology), and every validation metric (and tbp eval) uses label.
Without a risk_label column the risk head falls back to label: a
warning is printed and bundle.json (risk_head.target) and card.md
record it.

\b
Outputs in --out (the bundle): bundle.json (with the sha256 of every member),
risk_head.safetensors, extra_trees.safetensors (the trees' arrays), importance.csv,
card.md, encoder.safetensors (fine-tuned only), metrics.json and
validation_lesions.csv. --resume continues an interrupted fine-tuning in
--out/.work and refuses a changed table or other weights. The default
encoder is PanDerm-Large (ViT-L), the paper's TBP model."""


@tbp_group.command("train", context_settings=_CTX, epilog=TRAIN_EPILOG)
@options.csv(required=True, help="Labelled lesions CSV (or ISIC 2024 metadata): patient_id, lesion_id, image, label[, "
                                "risk_label, split, measurement columns].")
@options.root(help="Folder the image paths are relative to and must stay in [default: the CSV's folder].")
@options.encoder(model_help="Encoder name (see `panderm models`); the paper screens with PanDerm-Large (ViT-L).")
@options.out(help="Bundle folder.")
@click.option("--risk-head", "risk_head", type=click.Choice(["probe", "finetune"]), default="probe",
              show_default=True,
              help="Risk head: probe = linear head on frozen features; finetune = encoder + head with the Trainer.")
@click.option("--measure-from-image", is_flag=True, help="Train the measurement model on image-derived substitutes.")
@click.option("--no-ml", is_flag=True, help="No measurement model.")
@click.option("--lesion-filter", is_flag=True, help="Apply the paper's Vectra lesion filter first.")
@click.option("--target-sensitivity", type=click.FloatRange(0, 1, min_open=True), default=0.8, show_default=True,
              help="Validation sensitivity each threshold reaches (risk head on risk_label, measurement model on "
                   "label).")
@click.option("--ud-k", type=click.FloatRange(min=0), default=1.5, show_default=True, help="IQR multiplier.")
@click.option("--ud-min-lesions", type=click.IntRange(min=1), default=4, show_default=True,
              help="Ugly duckling: patients with fewer lesions get no outlier test.")
@click.option("--ud-metric", type=click.Choice(["euclidean", "cosine"]), default="euclidean", show_default=True,
              help="Ugly duckling: distance from each lesion's features to the patient's mean.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Without a split column: StratifiedGroupKFold folds (one fold, grouped by patient, validates).")
@click.option("--trees", "n_estimators", type=click.IntRange(min=1), default=300, show_default=True,
              help="Trees of the measurement model (ExtraTrees).")
@click.option("--epochs", type=float, default=10, show_default=True, help="Fine-tuning epochs.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Fine-tuning optimizer steps instead.")
@click.option("--lr", type=float, default=5e-4, show_default=True,
              help="Fine-tuning learning rate (not batch-scaled, as the paper).")
@options.seed()
@options.resume(help="Continue the interrupted run in --out (its fine-tuning in --out/.work); refused when the "
                     "table or the weights changed.")
@click.option("--keep-work", is_flag=True, help="Keep --out/.work (features, fine-tuning checkpoints) after success.")
@options.json_output(help="Print metrics.json (plus the bundle folder and counts) as JSON on stdout.")
@_common
def tbp_train_cmd(csv_path, root, model, weights, random_init, out, risk_head, measure_from_image, no_ml, lesion_filter,
                  target_sensitivity, ud_k, ud_min_lesions, ud_metric, folds, n_estimators, epochs, max_steps, lr,
                  seed, resume, keep_work, as_json, fmt, images, strict_measurements, batch_size, precision, device,
                  quiet):
    """Train a screening bundle: risk head (on risk_label), ExtraTrees (on label), thresholds."""
    from panderm.tbp.train import train_tbp

    res = train_tbp(csv_path, out, root=root, fmt=fmt, images=images, model=model, weights=weights,
                    random_init=random_init, head=risk_head,
                    measure_from_image=measure_from_image, no_ml=no_ml, lesion_filter=lesion_filter,
                    target_sensitivity=target_sensitivity, ud_k=ud_k, ud_min_lesions=ud_min_lesions,
                    ud_metric=ud_metric, folds=folds, seed=seed, n_estimators=n_estimators, epochs=epochs,
                    max_steps=max_steps, batch_size=batch_size, lr=lr, precision=precision, device=device,
                    on_missing="error" if strict_measurements else "impute", progress=not quiet, resume=resume,
                    keep_work=keep_work)
    _warn(res.warnings)
    if as_json:
        options.echo_json({**res.metrics, "bundle": res.bundle, "n_train": res.n_train, "n_val": res.n_val,
                           "skipped": res.skipped})
        return
    v = res.metrics["validation"]
    click.echo(f"trained on {res.n_train} lesions, validated on {res.n_val} ({res.skipped} skipped); "
               f"risk head target: {res.metrics['risk_target']['column']}")
    click.echo(v["table_markdown"])
    s = v["summary"]
    click.echo(f"validation: lesion sensitivity {format_number(s['lesion_sensitivity'])}, patient sensitivity "
               f"{format_number(s['patient_sensitivity'])}, {s['benign_flagged_total']} benign flagged")
    click.echo(f"wrote the bundle to {res.bundle}/ (card.md describes it)")


EVAL_EPILOG = """\b
Examples:
  panderm tbp eval --run bundle/ --csv test.csv --root tiles/ --out eval/
  panderm tbp eval --run bundle/ --csv test-metadata.csv --format isic2024 --out eval/ --json

\b
Every metric is computed against label (pathology), whatever the bundle's
risk head was trained on (risk_label or label; metrics.json: risk_target).

\b
Outputs in --out: metrics.json (lesion/patient sensitivity, benign flagged,
per-module precision/recall/F1, AUROC, partial AUROC above 80% TPR: the
ISIC 2024 metric, range 0-0.2, isic2024_pauc for the risk score),
table10.csv and table10.md (the paper's Extended Data Table 10 layout),
per_patient.csv, lesions.csv, skipped.csv. With a split column the test rows
are evaluated (--split to choose)."""


@tbp_group.command("eval", context_settings=_CTX, epilog=EVAL_EPILOG)
@options.run(help="Screening bundle folder from `panderm tbp train`.")
@options.csv(required=True, help="Labelled lesions CSV (or ISIC 2024 metadata): patient_id, lesion_id, image, label.")
@options.root(help="Folder the image paths are relative to and must stay in [default: the CSV's folder].")
@click.option("--split", default=None, help="Rows to evaluate (default: test if present, else all).")
@options.out()
@options.json_output(help="Print metrics.json (plus the output folder) as JSON on stdout.")
@options.weights(help=_BUNDLE_WEIGHTS)
@_common
def tbp_eval_cmd(run_dir, csv_path, root, split, out, as_json, weights, fmt, images, strict_measurements, batch_size,
                 precision, device, quiet):
    """Screening metrics of a bundle on labelled lesions."""
    from panderm.tbp.evaluate import evaluate_tbp

    m = evaluate_tbp(run_dir, csv_path, out, root=root, fmt=fmt, images=images, split=split, weights=weights,
                     on_missing="error" if strict_measurements else "impute", batch_size=batch_size,
                     precision=precision, device=device, progress=not quiet)
    _warn(m["warnings"])
    if as_json:
        options.echo_json({**m, "out": out})
        return
    s = m["summary"]
    click.echo(m["table_markdown"])
    click.echo(f"lesion sensitivity {format_number(s['lesion_sensitivity'])}, patient sensitivity {format_number(s['patient_sensitivity'])} "
               f"({s['patients_detected']}/{s['n_patients_with_malignant']}), benign flagged "
               f"{s['benign_flagged_total']} ({format_number(s['benign_flagged_per_patient_mean'])} per patient)")
    if m["n_not_assessable"]:
        click.echo(f"not assessable (image gates; counted as not flagged): {m['n_not_assessable']} lesion(s), "
                   f"{m['n_not_assessable_malignant']} malignant")
    click.echo(f"ISIC 2024 pAUC above 80% TPR (risk score, max 0.2): {format_number(m['isic2024_pauc'])}")
    click.echo("partial AUROC (TPR ≥ 0.8): " + ", ".join(f"{k} {format_number(v)}" for k, v in m["partial_auroc_tpr80"].items()))
    rt = m["risk_target"]
    own = f" (risk score AUROC against {rt['column']}: {format_number(rt['auroc'])})" if rt["column"] != "label" else ""
    click.echo(f"risk head trained on {rt['column']}; the metrics above use label{own}")
    click.echo(f"wrote metrics.json, table10.csv, table10.md, per_patient.csv, lesions.csv to {out}/")
