"""``panderm classifier build|info``: thin wrappers around :mod:`panderm.classifier`."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from panderm_cli import options

_CTX = {"help_option_names": ["-h", "--help"]}
_PATH = click.Path(path_type=Path)


GROUP_EPILOG = """\b
Examples:
  panderm classifier build --features feats/ --csv data.csv --root images/ --out clf/
  panderm classifier build --run runs/ft --out clf/
  panderm classifier info --run clf/
  panderm classifier info --demo --json"""


@click.group("classifier", context_settings=_CTX, epilog=GROUP_EPILOG)
def classifier_group():
    """Build and inspect classifier bundles (encoder + calibrated head + reference set)."""


BUILD_EPILOG = """\b
Examples:
  panderm classifier build --features feats/ --csv data.csv --root images/ --out clf/
  panderm classifier build --features feats/ --csv data.csv --model M --weights W --out clf/
  panderm classifier build --run runs/ft --out clf/ --json

\b
From features (of `panderm extract`): the linear probe of `panderm probe` is
fitted on the train rows, its temperature on the val rows (NLL), and the test
metrics (95% bootstrap CIs) use the calibrated probabilities. The encoder is
read from the features' meta.json; --model/--weights must match its sha256.
From a finetune run (--run): the best (else last) checkpoint, calibrated on the run's
val images (--csv/--root default to the run's).

\b
The bundle (--out) holds classifier.json (written last, with the sha256 of
every member file), head.safetensors or model.safetensors,
reference.safetensors + reference.json (up to --reference-size training
images, stratified by class, with thumbnails from --root), ood.safetensors
(the out-of-distribution gate: fitted on the train rows' features, its
threshold passed by 95% of the val rows; `panderm serve` answers "not
assessable" above it; needs 20 train and 20 val rows, else the bundle has
no gate and a warning says so) and card.md. Loading checks classifier.json against its schema and every member's sha256,
and refuses a changed file by name. --descriptions CSV:
class,description[,malignant]."""


@classifier_group.command("build", context_settings=_CTX, epilog=BUILD_EPILOG)
@options.features(required=False, help="Features folder written by `panderm extract` (with --csv).")
@options.csv(required=False, help="Dataset CSV (image, split, label[, binary_label]); with --run: the run's.")
@options.root(help="Image folder the CSV paths are relative to (reference thumbnails) [default: the CSV's folder; "
                   "with --run: the run's].")
@options.model(None, why="from the features' meta.json",
               help="Encoder the features came from (must match their meta.json).")
@options.weights(help="Encoder weights (name or path) of the features; their sha256 must match the meta.json "
                      "[default: the ones recorded there].")
@options.run(required=False, help="A `panderm finetune` run folder (instead of --features).")
@click.option("--binary", is_flag=True, help="Use binary_label (0/1) instead of label.")
@click.option("--reference-size", type=click.IntRange(min=0), default=200, show_default=True,
              help="Reference ('similar cases') images kept, stratified by class.")
@click.option("--descriptions", type=_PATH, default=None, help="CSV class,description[,malignant].")
@click.option("--mark-demo", "mark_demo", is_flag=True, help="Mark the bundle as a demo (its card says so).")
@options.seed(help="Seed for the probe, the reference sampling and the bootstrap.")
@options.bootstrap(help="Bootstrap replicates for the test-metric 95% CIs (0 = none).")
@options.device(help="cpu, cuda or cuda:N for the image passes of a --run build [default: cuda if available].")
@options.out(help="Bundle folder to write.")
@options.quiet()
@options.json_output(help="Print the bundle's summary (classes, temperature, test metrics) and path as JSON.")
def build_cmd(features_dir, csv_path, root, model, weights, run_dir, binary, reference_size, descriptions, mark_demo,
              seed, bootstrap, device, out, quiet, as_json):
    """Build a classifier bundle from a features folder + CSV, or from a finetune run."""
    from panderm.classifier import build_classifier, load_classifier

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = build_classifier(out, features=features_dir, csv=csv_path, model=model, weights=weights,
                                finetune_run=run_dir, root=root, binary=binary, reference_size=reference_size,
                                descriptions=descriptions, demo=mark_demo, seed=seed, n_bootstrap=bootstrap,
                                device=device)
    for w in caught:
        click.secho(f"Warning: {w.message}", fg="yellow", err=True)
    info = load_classifier(path, device="cpu").model_info()
    if as_json:
        options.echo_json({"out": path, "classifier_json": Path(path) / "classifier.json", **info})
        return
    acc = (info.get("metrics") or {}).get("acc") or {}
    click.echo(f"wrote {path}: {len(info['classes'])} classes, T = {info['temperature']:.3f}"
               + (f", test acc {acc['value']:.3f}" if acc.get("value") is not None else ""))


INFO_EPILOG = """\b
Examples:
  panderm classifier info --run clf/
  panderm classifier info --run clf/ --json
  panderm classifier info --demo --json"""


@classifier_group.command("info", context_settings=_CTX, epilog=INFO_EPILOG)
@options.run(required=False, help="Classifier bundle folder (from `panderm classifier build`).")
@click.option("--demo", is_flag=True, help="The bundled demo classifier.")
@options.json_output(help="Print the bundle's full summary as JSON on stdout instead of the human summary.")
def info_cmd(run_dir, demo, as_json):
    """Show a classifier bundle's summary (--run DIR, or --demo)."""
    from panderm.classifier import load_classifier

    if (run_dir is None) == (not demo):
        raise click.UsageError("give a classifier folder with --run DIR, or --demo (not both)")
    info = load_classifier(None if demo else run_dir, device="cpu").model_info()
    if as_json:
        options.echo_json(info)
        return
    enc = info["encoder"]
    click.echo(f"{info['name']}{' (demo)' if info['demo'] else ''}: {info['head']} head on {enc['name']} "
               f"(dim {enc['dim']}, preset {enc['preset']}), created {info['created']}")
    click.echo(f"classes ({len(info['classes'])}): {', '.join(info['classes'])}")
    if info["malignant"]:
        click.echo(f"malignant: {', '.join(info['malignant'])}")
    click.echo(f"temperature {info['temperature']:.3f}; {info['reference_size']} reference images")
    gate = info.get("ood_gate")
    if gate:
        click.echo(f"out-of-distribution gate: {gate['method']}, threshold {gate['threshold']:.3f} "
                   f"({gate['pass_rate']:.0%} of {gate['n_calibration']} {gate['calibration_source']} pass)")
    else:
        click.echo(f"note: {info['ood_notice']}", err=True)
    for name, m in (info.get("metrics") or {}).items():
        if isinstance(m, dict) and m.get("value") is not None:
            ci = f"  [{m['ci_low']:.3f}, {m['ci_high']:.3f}]" if m.get("ci_low") is not None else ""
            click.echo(f"  {name:12s} {m['value']:.3f}{ci}")
