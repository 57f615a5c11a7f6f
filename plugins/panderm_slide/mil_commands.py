"""``panderm slide mil`` and ``slide heatmap``: wrappers around :mod:`panderm.pathology.mil_train`/``heatmap``."""

from __future__ import annotations

from pathlib import Path

import click

from panderm_cli import options

from panderm_cli.format import fmt as _fmt
from panderm_cli.format import metrics_table

_CTX = {"help_option_names": ["-h", "--help"]}

MIL_EPILOG = """\b
Examples:
  panderm slide mil --features feats/ --csv slides.csv --folds 5 --out runs/mil
  panderm slide mil --features feats/ --csv slides.csv --out runs/mil --epochs 20 --patience 5 --json
  panderm slide mil --features panderm/ --csv slides.csv --compare uni/ --out runs/mil-cmp

\b
Gated attention MIL (ABMIL, as in the paper): Linear(D->512)+ReLU with input
dropout 0.10, gated attention with 384 hidden units and dropout 0.25, softmax
over the slide's patches, Linear(512->K). AdamW (lr 1e-4, weight decay 1e-5),
cosine schedule, 20 epochs, one slide per step; early stopping on the loss of
a stratified, case-grouped validation part of each training fold (the
best-validation-loss weights are kept).

\b
Slides CSV: slide (or slide_id; the .h5 name without extension), label,
optional case_id (slides of a case stay in one fold; a case with two labels
is refused) and optional fold (explicit fold numbers; a case in two folds is
refused). --folds case-level folds, stratified by label. Slides without a
features file are skipped and listed in skipped.csv.

\b
Outputs in --out: fold<k>/model.pt (state dict) and fold<k>/log.jsonl,
predictions.csv (= oof.csv: slide, case_id, fold, true_label,
predicted_label, prob_<class>; each slide from its held-out fold),
metrics.json (pooled out-of-fold metrics with 95% bootstrap CIs; written
last), folds.json (per-fold metrics, mean and sd), attention/<slide>.h5
(attention, coords), mil.json, roc.png, confusion_matrix.png, skipped.csv.

\b
--compare DIR: a second features folder of the same slides is trained on the
same folds (its run in --out/compare/) and each metric is compared by a
two-sided paired t-test over the folds (comparison.json; printed)."""

HEATMAP_EPILOG = """\b
Examples:
  panderm slide heatmap --run runs/mil --slide s1.svs --out heat/
  panderm slide heatmap --run runs/mil --slide s1.svs --out heat/ --alpha 0.4 --cmap viridis --json

\b
Colours are the percentile rank of each patch's attention within the slide
(0 = lowest, 1 = highest), drawn as the patch's box on the thumbnail and
blended with --alpha. Writes <stem>_heatmap.png (thumbnail + colour bar) and
<stem>_attention.csv (x, y level-0 coordinates, raw attention, rank)."""



@click.command("mil", epilog=MIL_EPILOG, context_settings=_CTX)
@options.features(required=True,
                  help="Patch features: a folder of <slide>.h5 (slide extract, any --layout), a TRIDENT job folder "
                       "(features_<encoder>/) or a CLAM folder (h5_files/, pt_files/).")
@options.csv(required=True, help="Slides CSV (slide, label[, case_id, fold]).")
@options.out(help="Run folder.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="Cross-validation folds.")
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True,
              help="Training epochs per fold (at most; early stopping may end sooner).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="AdamW learning rate.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-5, show_default=True,
              help="AdamW weight decay.")
@click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True,
              help="Epochs without a lower validation loss before stopping.")
@click.option("--hidden", type=click.IntRange(min=1), default=384, show_default=True, help="Attention hidden units.")
@click.option("--embed", type=click.IntRange(min=1), default=512, show_default=True, help="Embedding width.")
@click.option("--dropout-in", type=click.FloatRange(0, 1, max_open=True), default=0.10, show_default=True,
              help="Dropout on the patch features.")
@click.option("--dropout-attn", type=click.FloatRange(0, 1, max_open=True), default=0.25, show_default=True,
              help="Dropout in the gated attention.")
@options.bootstrap()
@options.seed(help="Seed for the folds, initialisation and bootstrap.")
@click.option("--compare", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Second features folder (same slides): same folds, paired t-test over the folds.")
@options.device()
@options.quiet()
@options.json_output(help="Print metrics.json (pooled out-of-fold metrics) to stdout instead of the table.")
def mil_cmd(features_dir, csv_path, out, folds, epochs, lr, weight_decay, patience, hidden, embed, dropout_in,
            dropout_attn, bootstrap, seed, compare, device, quiet, as_json):
    """Cross-validated gated attention MIL (ABMIL) slide classification."""
    from panderm.pathology.mil_train import train_mil

    result = train_mil(features_dir, csv_path, out, folds=folds, epochs=epochs, lr=lr, weight_decay=weight_decay,
                       patience=patience, hidden=hidden, embed=embed, dropout_in=dropout_in,
                       dropout_attn=dropout_attn, seed=seed, device=device, n_bootstrap=bootstrap,
                       progress=not quiet and not as_json, compare=compare)
    for line in result.warnings:
        click.secho(f"Warning: {line}", fg="yellow", err=True)
    if as_json:
        options.echo_json(result.metrics)
        return
    s = result.summary
    click.echo(f"gated ABMIL, {s['config']['folds']} case-level folds; {s['n_slides']} slides "
               f"({s['n_cases']} cases, {len(result.classes)} classes), {s['n_skipped']} skipped")
    for f in result.folds:
        click.echo(f"  fold {f['fold']}: train {f['n_train']}, val {f['n_val']}, test {f['n_test']}; best epoch "
                   f"{f['best_epoch']}/{f['epochs_run']}{' (early stop)' if f['stopped_early'] else ''}, "
                   f"AUROC {_fmt(f['metrics']['auroc'])}")
    click.echo(metrics_table(result.metrics, "95% CI (out-of-fold, pooled)"))
    if result.comparison:
        from panderm.eval.metrics import format_t_tests

        click.echo(f"\ncomparison with {compare} (run in {result.comparison['run']}): {result.comparison['test']}")
        click.echo(format_t_tests(result.comparison["metrics"]))
    click.echo(f"wrote fold*/model.pt, attention/, {', '.join(p.name for p in result.files)} to {result.out}/")


@click.command("heatmap", epilog=HEATMAP_EPILOG, context_settings=_CTX)
@options.run(help="A `panderm slide mil` run folder.")
@click.option("--slide", "slide_path", required=True, type=click.Path(path_type=Path), help="The slide file.")
@options.out(help="Output folder.")
@click.option("--tiles", type=click.Path(path_type=Path), default=None,
              help="Tiles folder (patch size fallback when the attention file lacks it).")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Overlay opacity.")
@click.option("--cmap", default="jet", show_default=True, help="Matplotlib colour map.")
@click.option("--max-side", type=click.IntRange(min=16), default=1024, show_default=True,
              help="Longer side of the thumbnail (pixels).")
@options.quiet()
@options.json_output(help="Print the written paths as JSON on stdout.")
def heatmap_cmd(run_dir, slide_path, out, tiles, alpha, cmap, max_side, quiet, as_json):
    """Draw a MIL run's attention for one slide on its thumbnail."""
    from panderm.pathology.heatmap import slide_heatmap

    png = slide_heatmap(run_dir, slide_path, out, tiles=tiles, alpha=alpha, cmap=cmap, max_side=max_side)
    csv = png.with_name(f"{Path(slide_path).stem}_attention.csv")
    if as_json:
        options.echo_json({"out": out, "heatmap": png, "attention": csv})
    else:
        click.echo(f"wrote {png} and {csv}")


def register(group) -> None:
    """Add ``mil`` and ``heatmap`` to the ``panderm slide`` group (called by the slide plugin's commands)."""
    group.add_command(mil_cmd, "mil")
    group.add_command(heatmap_cmd, "heatmap")
