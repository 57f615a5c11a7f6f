"""``panderm classifier build|info``: thin wrappers around :mod:`panderm.classifier`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import click

_CTX = {"help_option_names": ["-h", "--help"]}
_PATH = click.Path(path_type=Path)


@click.group("classifier", context_settings=_CTX)
def classifier_group():
    """Build and inspect classifier bundles (encoder + calibrated head + reference set)."""


BUILD_EPILOG = """\b
Examples:
  panderm classifier build --features feats/ --csv data.csv --root images/ --out clf/
  panderm classifier build --features feats/ --csv data.csv --model M --weights W --out clf/
  panderm classifier build --finetune-run runs/ft --out clf/

\b
From features (of `panderm extract`): the linear probe of `panderm probe` is
fitted on the train rows, its temperature on the val rows (NLL), and the test
metrics (95% bootstrap CIs) use the calibrated probabilities. The encoder is
read from the features' meta.json; --model/--weights must match its sha256.
From a finetune run: the best (else last) checkpoint, calibrated on the run's
val images (--csv/--root default to the run's).

\b
The bundle (--out) holds classifier.json (written last, with the sha256 of
every member file), head.safetensors or model.safetensors,
reference.safetensors + reference.json (up to --reference-size training
images, stratified by class, with thumbnails from --root) and card.md.
Loading checks classifier.json against its schema and every member's sha256,
and refuses a changed file by name. --descriptions CSV:
class,description[,malignant]."""


@classifier_group.command("build", context_settings=_CTX, epilog=BUILD_EPILOG)
@click.option("--features", type=_PATH, default=None, help="Features folder from `panderm extract`.")
@click.option("--csv", type=_PATH, default=None, help="Dataset CSV (image, split, label[, binary_label]).")
@click.option("--root", type=_PATH, default=None, help="Image folder the CSV paths are relative to.")
@click.option("--model", default=None, help="Encoder of the features (default: from their meta.json).")
@click.option("--weights", default=None, metavar="W", help="Encoder weights (name or path) of the features.")
@click.option("--finetune-run", type=_PATH, default=None, help="A `panderm finetune` run folder instead.")
@click.option("--binary", is_flag=True, help="Use binary_label (0/1) instead of label.")
@click.option("--reference-size", type=click.IntRange(min=0), default=200, show_default=True,
              help="Reference ('similar cases') images kept, stratified by class.")
@click.option("--descriptions", type=_PATH, default=None, help="CSV class,description[,malignant].")
@click.option("--demo", is_flag=True, help="Mark the bundle as a demo (card says so).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap replicates for the test-metric CIs.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (fine-tune runs).")
@click.option("--out", type=_PATH, required=True, help="Bundle folder to write.")
def build_cmd(features, csv, root, model, weights, finetune_run, binary, reference_size, descriptions, demo, seed,
              n_bootstrap, device, out):
    """Build a classifier bundle from a features folder + CSV, or from a finetune run."""
    from panderm.classifier import build_classifier, load_classifier

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = build_classifier(out, features=features, csv=csv, model=model, weights=weights,
                                finetune_run=finetune_run, root=root, binary=binary, reference_size=reference_size,
                                descriptions=descriptions, demo=demo, seed=seed, n_bootstrap=n_bootstrap,
                                device=device)
    for w in caught:
        click.secho(f"Warning: {w.message}", fg="yellow", err=True)
    info = load_classifier(path, device="cpu").model_info()
    acc = (info.get("metrics") or {}).get("acc") or {}
    click.echo(f"wrote {path}: {len(info['classes'])} classes, T = {info['temperature']:.3f}"
               + (f", test acc {acc['value']:.3f}" if acc.get("value") is not None else ""))


@classifier_group.command("info", context_settings=_CTX)
@click.argument("clf", type=_PATH, required=False)
@click.option("--demo", is_flag=True, help="The bundled demo classifier.")
def info_cmd(clf, demo):
    """Print a classifier bundle's summary as JSON (CLF, or --demo)."""
    from panderm.classifier import load_classifier

    if clf is None and not demo:
        raise click.UsageError("give a classifier folder CLF, or --demo")
    click.echo(json.dumps(load_classifier(None if demo else clf, device="cpu").model_info(), indent=2))
