"""Click commands of the encoders plugin: ``models``, ``weights``, ``export``."""

from __future__ import annotations

import click

from panderm_cli import options


@click.command("models", epilog="\b\nExamples:\n  panderm models\n  panderm models --all\n  panderm models --json")
@options.json_output(help="Print the list as JSON on stdout instead of the table.")
@click.option("--all", "show_all", is_flag=True, help="Also list test-only architectures.")
def models_cmd(as_json: bool, show_all: bool) -> None:
    """List registered encoders with input size, feature dim, normalisation and licence."""
    from panderm.models.listing import list_models
    from panderm.registry import is_test_arch

    rows = [r for r in list_models() if show_all or not is_test_arch(r["arch"])]
    if as_json:
        options.echo_json(rows)
        return
    for r in rows:
        click.echo(f"{r['name']}  [{r['plugin']}]")
        click.echo(f"    {r['summary']}")
        click.echo(f"    input {r['input_size']}  dim {r['num_features']}  preset {r['preset']}  "
                   f"mean {r['mean']} std {r['std']}")
        click.echo(f"    licence: {r['license']}" + (f"  file: {r['file_name']}" if r["file_name"] else ""))


@click.group("weights", epilog="\b\nExamples:\n  panderm weights add panderm-large ~/Downloads/panderm_ll_data6_checkpoint-499.pth\n"
             "  panderm weights list\n  panderm weights remove panderm-large")
def weights_group() -> None:
    """Keep a local name → path registry of weight files (in PANDERM_HOME)."""


@weights_group.command("add", epilog="\b\nExamples:\n"
                       "  panderm weights add panderm-large ~/Downloads/panderm_ll_data6_checkpoint-499.pth\n"
                       "  panderm weights add my-run runs/pl/checkpoint-last.pth --overwrite\n"
                       "  panderm extract images/ --weights my-run --out feats/")
@click.argument("name")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace an existing entry of the same name.")
def weights_add(name: str, path: str, overwrite: bool) -> None:
    """Register PATH under NAME (hashes the file with sha256)."""
    from panderm.weights import add_weights

    record = add_weights(name, path, overwrite=overwrite)
    click.echo(f"registered '{record.name}' → {record.path}\n  sha256 {record.sha256}  ({record.size / 1e6:.1f} MB)")


@weights_group.command("list", epilog="\b\nExamples:\n  panderm weights list\n  panderm weights list --json")
@options.json_output(help="Print the registered weights (name, path, sha256, size, exists) as JSON on stdout.")
def weights_list(as_json: bool) -> None:
    """List registered weights."""
    from dataclasses import asdict

    from panderm.weights import list_weights, registry_file

    records = list_weights()
    if as_json:
        options.echo_json([{**asdict(r), "exists": r.exists} for r in records])
        return
    if not records:
        click.echo(f"no weights registered ({registry_file()})")
    for r in records:
        flag = "" if r.exists else "  (MISSING FILE)"
        click.echo(f"{r.name}\t{r.path}\t{r.sha256[:12]}{flag}")


@weights_group.command("remove", epilog="\b\nExamples:\n  panderm weights remove panderm-large\n"
                       "  panderm weights list")
@click.argument("name")
def weights_remove(name: str) -> None:
    """Forget NAME (the file itself is not deleted)."""
    from panderm.weights import remove_weights

    record = remove_weights(name)
    click.echo(f"removed '{record.name}' ({record.path} was left in place)")


@click.command("export", epilog="\b\nExamples:\n"
               "  panderm export --weights panderm-large --out panderm_large.safetensors\n"
               "  panderm export --model panderm_large_patch16_224 --weights panderm-large "
               "--to timm --out panderm_large_timm --json\n\b\n"
               "Load the timm folder (model.safetensors + config.json) with timm alone:\n"
               "  m = timm.create_model('local-dir:panderm_large_timm', pretrained=True)\n"
               "  tf = timm.data.create_transform(**timm.data.resolve_data_config(model=m))\n"
               "  feats = m.forward_head(m.forward_features(tf(img)[None]), pre_logits=True)")
@options.encoder()
@click.option("--to", "fmt", type=click.Choice(["safetensors", "timm"]), default="safetensors", show_default=True,
              help="safetensors = PanDerm layout (one file); "
                   "timm = a folder loadable by timm.create_model('local-dir:OUT').")
@click.option("--pool", type=click.Choice(["token", "avg"]), default="token", show_default=True,
              help="timm only: token = CLS features (probe); avg = mean-pool + fc_norm (fine-tune).")
@options.out(help="safetensors: output .safetensors or .pth file; timm: output folder.")
@options.quiet()
@options.json_output(help="Print what was written (path, format, tensors) as JSON on stdout.")
def export_cmd(model: str, weights: str | None, random_init: bool, fmt: str, pool: str, out, quiet: bool,
               as_json: bool) -> None:
    """Export encoder weights as safetensors, or as a timm folder (weights + preprocessing config)."""
    from panderm.export import export_encoder

    from panderm.models.factory import has_weights, require_weights

    if not has_weights(model, weights):
        require_weights(model, weights, random_init)  # refuses before the warning: it needs --random-init
        click.secho("warning: no --weights given; exporting a randomly initialised encoder", fg="yellow", err=True)
    result = export_encoder(model, weights, fmt, str(out), global_pool=pool, random_init=random_init)
    if as_json:
        options.echo_json({"out": result.path, "format": result.format, "tensors": result.tensors,
                           "model": model, "weights": weights, "random_init": random_init,
                           "pool": pool if fmt == "timm" else None})
        return
    if fmt == "timm":
        click.echo(f"wrote {result.tensors} tensors + config.json to {result.path}/")
        click.echo(f"timm.create_model('local-dir:{result.path}', pretrained=True)")
    else:
        click.echo(f"wrote {result.tensors} tensors ({result.format}) to {result.path}")
