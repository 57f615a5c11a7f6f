"""``panderm sequence eval``: thin Click wrapper around :func:`panderm.longitudinal.sequence.evaluate_sequences`."""

from __future__ import annotations

from pathlib import Path

import click

from panderm_cli import options

EVAL_EPILOG = """\b
Examples:
  panderm sequence eval --predictions oof_predictions.csv --out seq/
  panderm sequence eval --predictions preds.csv --out seq/ --threshold 0.3
  panderm sequence eval --predictions preds.csv --out seq/ --json

\b
Input CSV: one row per image with columns lesion_id, timepoint (visit number
or ISO date), prob_malignant (0-1) and label (1 = melanoma, 0 = benign; the
same for every image of a lesion). A call is malignant when
prob_malignant >= --threshold.

\b
Outputs in --out: per_lesion.csv (first correct melanoma call / first false
alarm per lesion, as 1-based time point and original timepoint), summary.json
(detected at first time point, sensitivity, mean/median first detection,
specificity over benign lesions, per-image accuracy) and sequence_plot.png
(as the paper's Fig. 2e)."""


GROUP_EPILOG = """\b
Examples:
  panderm sequence eval --predictions preds.csv --out seq/
  panderm sequence eval --predictions preds.csv --out seq/ --threshold 0.3 --json"""


@click.group("sequence", epilog=GROUP_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
def sequence_group():
    """Evaluate per-lesion image sequences: earliest correct melanoma call."""


@sequence_group.command("eval", epilog=EVAL_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--predictions", required=True, type=click.Path(path_type=Path),
              help="Per-image predictions CSV (lesion_id, timepoint, prob_malignant, label).")
@options.out()
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Malignant call when prob_malignant >= threshold.")
@options.quiet()
@options.json_output(help="Print summary.json (plus the output paths) as JSON on stdout.")
def eval_cmd(predictions, out, threshold, quiet, as_json):
    """Find, per melanoma, the first time point the model calls it correctly."""
    from panderm.longitudinal.sequence import evaluate_sequences

    result = evaluate_sequences(predictions, out, threshold=threshold)
    s = result.summary
    if as_json:
        options.echo_json({**s, "out": result.out, "files": [str(p) for p in result.files]})
        return

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    click.echo(f"{s['n_lesions']} lesions ({s['n_melanomas']} melanoma, {s['n_benign']} benign), "
               f"{s['n_images']} images, threshold {threshold:g}")
    click.echo(f"melanomas detected at the first time point: {s['n_detected_at_first_timepoint']}/"
               f"{s['n_melanomas']} ({pct(s['detected_at_first_timepoint'])})")
    click.echo(f"melanomas detected at any time point (sensitivity): {s['n_detected']}/{s['n_melanomas']} "
               f"({pct(s['sensitivity'])})")
    if s["mean_first_detection_index"] is not None:
        click.echo(f"first detection at time point: mean {s['mean_first_detection_index']:.2f}, "
                   f"median {s['median_first_detection_index']:g}")
    click.echo(f"specificity (benign lesions without a false alarm): {pct(s['specificity'])}; "
               f"per-image accuracy {pct(s['accuracy_per_image'])}")
    click.echo(f"Wrote {', '.join(p.name for p in result.files)} to {result.out}")
