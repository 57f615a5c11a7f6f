"""``card.md`` of a TBP screening bundle: data, validation metrics, intended use."""

from __future__ import annotations


from panderm.formatting import format_number


def _format_metric(v) -> str:
    """A metric for the card: 3 decimals, integers and text as they are, an em dash when missing."""
    return format_number(v, ".3f", missing="—")


def risk_target_lines(meta: dict) -> tuple[list[str], str]:
    """(a warning block when the risk head fell back to the pathology label, the risk head's model line)."""
    target = meta["risk_head"].get("target", "label")  # bundles made before risk_label learnt label
    rt = meta["metrics"].get("risk_target") or {}
    stats = (f" {rt['n_train_positive']} training / {rt['n_val_positive']} validation positives; validation AUROC "
             f"against it {_format_metric(rt['val_auroc'])}." if rt else "")
    if target == "risk_label":
        return [], ("- Risk head target: `risk_label` (1 = the lesion was sent to dermoscopy), as in the paper; the "
                    f"measurement model and every metric below use the pathology `label`.{stats}")
    warning = ["> **Warning: risk head trained on the pathology label.** The training table had no `risk_label` "
               "column (1 = the lesion was sent to dermoscopy), so the risk head was trained and thresholded on "
               "`label` (malignant or not) instead of the paper's target. Retrain with a `risk_label` column to "
               "follow the paper.", ""]
    return warning, f"- Risk head target: `label` (1 = malignant; fallback, see the warning above).{stats}"


def gate_line(ood: dict | None, training: dict) -> str:
    """The card's sentence about the out-of-distribution gate (or why there is none)."""
    if not ood:
        return (f"Out-of-distribution gate: none ({training.get('ood_missing') or 'not fitted'}); screening "
                "checks image quality only.")
    return (f"Out-of-distribution gate: distance to the nearest training tile after Ledoit-Wolf whitening, "
            f"fitted on {ood['n_reference']} training tiles; threshold {ood['threshold']:.3f}, passed by "
            f"{ood['pass_rate']:.0%} of {ood['n_calibration']} {ood['calibration_source']} tiles. A tile above it, "
            "or failing the image-quality gate, is reported as not assessable: it is left out of the "
            "ugly-duckling comparison, the ranking and the flags, and listed for examination in person.")


def render_card(meta: dict) -> str:
    """Markdown model card from the bundle metadata (``bundle.json`` content)."""
    m, enc, tr = meta["metrics"], meta["encoder"], meta["training"]
    val = m["validation"]
    s = val["summary"]
    ml = meta.get("ml")
    demo = meta.get("demo")
    lines = [f"# TBP screening bundle{' (DEMO)' if demo else ''}", ""]
    if demo:
        lines += [("> **Demo bundle — not for clinical use.** It exists so that `panderm screen-tbp --demo` runs "
                  "out of the box. It was trained on dermoscopic images, not TBP tiles, with a tiny encoder; "
                  "its numbers say nothing about screening performance."), ""]
    warning, target_line = risk_target_lines(meta)
    lines += warning + [
        "## Intended use",
        ("Research decision support for ranking a patient's TBP lesion tiles for dermoscopic review. "
        "A lesion is flagged when any module (risk head, ugly-duckling outlier test, measurement model) is "
        "positive. Not a diagnostic device; unflagged lesions may still need review."), "",
        "## Model",
        (f"- Encoder: `{enc['name']}` ({'fine-tuned, weights in this bundle' if enc['finetuned'] else 'frozen'}); "
        f"base weights sha256 `{enc['weights_sha256']}`; preprocessing preset `{enc['preset']}`; {enc['dim']}-d features."),
        f"- Risk head: one linear layer ({meta['risk_head']['mode']}).",
        target_line,
        (f"- Ugly duckling: {meta['ud']['metric']} distance to the patient's mean feature, outlier above "
        f"Q3 + {meta['ud']['k']}·IQR, patients with ≥ {meta['ud']['min_lesions']} lesions."),
    ]
    if ml:
        lines.append(f"- Measurement model: ExtraTrees ({ml['n_estimators']} trees, balanced class weights) on "
                     f"{len(ml['columns'])} {'image-derived' if ml['measurement_source'] == 'image' else 'Vectra'} "
                     f"measurements: {', '.join(ml['columns'])}.")
    else:
        lines.append("- Measurement model: none.")
    lines.append(f"- {gate_line(meta.get('ood'), meta.get('training') or {})}")
    th = meta["thresholds"]
    lines += [(f"- Thresholds (validation sensitivity ≥ {th['target_sensitivity']}, each against its own target): "
              f"risk {_format_metric(th['risk'])}, measurement model {_format_metric(th['ml'])}."), "",
              "## Training data",
              f"- Input: `{tr['lesions']}` ({tr['format']} layout); lesion filter: {'on' if tr['lesion_filter'] else 'off'}.",
              (f"- {m['n_patients']} patients; {m['n_train']} training lesions ({m['n_train_malignant']} malignant), "
              f"{m['n_val']} validation lesions ({m['n_val_malignant']} malignant); {m['skipped']} skipped."),
              f"- Split: {m['split']}."]
    if tr.get("data_note"):
        lines.append(f"- {tr['data_note']}")
    lines += ["", "## Validation metrics (against the pathology `label`)", "",
              (f"- Lesion sensitivity {_format_metric(s['lesion_sensitivity'])}, patient sensitivity "
              f"{_format_metric(s['patient_sensitivity'])} ({s['patients_detected']} of {s['n_patients_with_malignant']} "
              f"patients with a malignant lesion)."),
              (f"- Benign lesions flagged: {s['benign_flagged_total']} "
              f"(mean {_format_metric(s['benign_flagged_per_patient_mean'])} per patient)."),
              "- AUROC: " + ", ".join(f"{k} {_format_metric(v)}" for k, v in val["auroc"].items()) + ".",
              "- Partial AUROC above 80% TPR (max 0.2): "
              + ", ".join(f"{k} {_format_metric(v)}" for k, v in val["partial_auroc_tpr80"].items()) + ".", "",
              "Per module (layout of the paper's Extended Data Table 10):", "", val["table_markdown"], ""]
    return "\n".join(lines) + "\n"
