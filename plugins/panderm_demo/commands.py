"""``panderm demo``."""

from __future__ import annotations

import click


@click.command("demo", epilog="\b\nExamples:\n  panderm demo --out demo-out/\n"
               "  panderm demo --model panderm_large_patch16_224 --weights panderm-large --out demo-out/")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (features/ and probe/ inside).")
@click.option("--model", "model_name", default="panderm_tiny_patch16_224.demo", show_default=True,
              help="Encoder name (see `panderm models`).")
@click.option("--weights", help="Registered weights name or path (default: the model's bundled weights).")
@click.option("--random-init", is_flag=True,
              help="Use a randomly initialised encoder (for tests and ablations; features are meaningless).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "auto"]), default="auto", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo_cmd(out: str, model_name: str, weights: str | None, random_init: bool, precision: str, quiet: bool) -> None:
    """Extract features from 84 bundled HAM10000 images (7 classes) and linear-probe them.

    Everything is local: the images and the default encoder (a tiny ViT pretrained
    with `panderm pretrain` on public skin images, see panderm/weights/) ship inside
    the package (CC BY-NC 4.0). 84 images are far too few to judge an encoder: the
    numbers show that the pipeline works end to end.
    """
    from panderm.demo import run_demo

    from panderm.models.factory import has_weights, require_weights

    if not has_weights(model_name, weights):
        require_weights(model_name, weights, random_init)  # refuses before the note: it needs --random-init
        click.secho("note: this encoder has no weights; it is randomly initialised (pipeline check only)",
                    fg="yellow", err=True)
    result = run_demo(out, model=model_name, weights=weights, precision=precision, progress=not quiet,
                      random_init=random_init)
    click.echo(f"\nfeatures: {result.features_dir}  ({result.n_images} images)")
    click.echo(f"probe:    {result.probe_dir}  (metrics.json, predictions.csv, confusion_matrix.png, roc.png)")
    for name, m in result.metrics.items():
        if isinstance(m, dict) and "value" in m:
            click.echo(f"  {name:12s} {m['value']:.3f}  [{m['ci_low']:.3f}, {m['ci_high']:.3f}]")
