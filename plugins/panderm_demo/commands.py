"""``panderm demo``."""

from __future__ import annotations

import click

from panderm_cli import options


@click.command("demo", epilog="\b\nExamples:\n  panderm demo --out demo-out/\n"
               "  panderm demo --out demo-out/ --json -q\n"
               "  panderm demo --model panderm_large_patch16_224 --weights panderm-large --out demo-out/")
@options.out(help="Output folder (features/ and probe/ inside).")
@options.encoder("panderm_tiny_patch16_224.demo", why="the bundled demo encoder")
@options.precision()
@options.quiet()
@options.json_output(help="Print the probe's metrics and the output folders as JSON on stdout.")
def demo_cmd(out, model: str, weights: str | None, random_init: bool, precision: str, quiet: bool,
             as_json: bool) -> None:
    """Extract features from 84 bundled HAM10000 images (7 classes) and linear-probe them.

    Everything is local: the images and the default encoder (a tiny ViT pretrained
    with `panderm pretrain` on public skin images, see panderm/bundled_weights/) ship inside
    the package (CC BY-NC 4.0). 84 images are far too few to judge an encoder: the
    numbers show that the pipeline works end to end.
    """
    from panderm.demo import run_demo

    from panderm.models.factory import has_weights, require_weights

    if not has_weights(model, weights):
        require_weights(model, weights, random_init)  # refuses before the note: it needs --random-init
        click.secho("note: this encoder has no weights; it is randomly initialised (pipeline check only)",
                    fg="yellow", err=True)
    result = run_demo(out, model=model, weights=weights, precision=precision, progress=not quiet,
                      random_init=random_init)
    if as_json:
        options.echo_json({"out": out, "features": result.features_dir, "probe": result.probe_dir,
                           "metrics_json": result.probe_dir / "metrics.json", "n_images": result.n_images,
                           "random_weights": result.random_weights, "metrics": result.metrics})
        return
    click.echo(f"\nfeatures: {result.features_dir}  ({result.n_images} images)")
    click.echo(f"probe:    {result.probe_dir}  (metrics.json, predictions.csv, confusion_matrix.png, roc.png)")
    for name, m in result.metrics.items():
        if isinstance(m, dict) and "value" in m:
            click.echo(f"  {name:12s} {m['value']:.3f}  [{m['ci_low']:.3f}, {m['ci_high']:.3f}]")
