"""``panderm reproduce``: list the paper's experiments, run one, or run all whose data is present."""

from __future__ import annotations

import json
from pathlib import Path

import click

from panderm_cli import options
from panderm_cli.format import fmt, printable

_PATH = click.Path(path_type=Path)
_SETTINGS = {"help_option_names": ["-h", "--help"]}

EPILOG = """\b
Examples:
  panderm reproduce list
  panderm reproduce ham10000 --data HAM10000/ --weights panderm-large --out rep/ham
  panderm reproduce ham10000 --data HAM10000/ --model panderm_tiny_patch16_224.demo --out rep/demo
  panderm reproduce ham10000-curve --data HAM10000/ --weights panderm-large --out rep/curve
  panderm reproduce --all --data-root datasets/ --weights panderm-large --out rep/

\b
--data holds the official processed CSV (labels.csv, or --csv) and the images
it names (under --data/images if that folder exists, else --data; or --root).
Each run extracts fp32 features into OUT/features (resumable; other weights
are refused unless --overwrite), fits the release's linear probe and writes
report.md, report.json and report.png: the paper's figure and 95% CI beside
ours, the difference, whether the paper's value lies inside our CI, and the
exact commands run. See docs/reproduce.md for each dataset."""


def _run_options(func, out_required: bool = True):
    """The options shared by one experiment and ``--all``."""
    decorators = [
        options.out(required=out_required, help=None if out_required else "With --all: output folder (one "
                    "folder per experiment, summary.md, summary.json)."),
        options.encoder(),
        options.batch_size(help="Images per extraction batch."),
        options.workers(),
        options.device(),
        options.bootstrap(help="Bootstrap replicates of our 95% CIs (the paper: 1,000; 0 = none)."),
        click.option("--overwrite", is_flag=True, help="Replace features of an earlier run with other weights."),
        options.quiet(),
        options.json_output(help="Print report.json plus out (summary.json with --all) instead of the table."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


class BenchmarkGroup(click.Group):
    """``list`` plus one subcommand per registered benchmark, built when asked for."""

    def list_commands(self, ctx):
        from panderm.reproduce.registry import list_benchmarks

        return ["list"] + [b.name for b in list_benchmarks()]

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        from panderm.plugins import registries

        if name not in registries().benchmarks:
            return None
        return _benchmark_command(registries().benchmarks.get(name))

    def format_commands(self, ctx, formatter):
        from panderm.reproduce.registry import list_benchmarks

        rows = [("list", "Print the experiments, their data layout and the paper's figures.")]
        rows += [(b.name, b.title + ("" if b.kind != "listed" else " (listed only)")) for b in list_benchmarks()]
        with formatter.section("Experiments"):
            formatter.write_dl(rows)


def _all_options(func):
    return _run_options(func, out_required=False)


@click.group("reproduce", cls=BenchmarkGroup, invoke_without_command=True, epilog=EPILOG, context_settings=_SETTINGS)
@click.option("--all", "run_all", is_flag=True, help="Run every experiment whose folder is under --data-root.")
@click.option("--data-root", type=_PATH, default=None,
              help="With --all: folder holding one folder per experiment (named as in `reproduce list`).")
@_all_options
@click.pass_context
def reproduce_group(ctx, run_all, data_root, out, **options):
    """Reproduce the paper's experiments on public data, ours beside the published figures.

    Run `panderm reproduce list` for the experiments, then `panderm reproduce
    NAME --data DIR --weights W --out OUT` for one of them.
    """
    given = _given_options(ctx)
    if ctx.invoked_subcommand is not None:
        if run_all:
            raise click.UsageError("--all runs every experiment; give it without an experiment name")
        if given:
            names = ", ".join(name for name, _ in given)
            example = " ".join(text for _, text in given)
            raise click.UsageError(
                f"{names} given before the experiment name would be ignored: put "
                f"{'it' if len(given) == 1 else 'them'} after the experiment name "
                f"(e.g. `panderm reproduce {ctx.invoked_subcommand} {example}`)")
        return
    if not run_all:
        if given:
            names = ", ".join(name for name, _ in given)
            raise click.UsageError(f"{names} given without --all or an experiment name: add --all to run every "
                                   "experiment, or an experiment name (see `panderm reproduce list`), e.g. "
                                   "`panderm reproduce ham10000 --data DIR --out OUT ...`")
        click.echo(ctx.get_help())
        return
    if data_root is None or out is None:
        raise click.UsageError("--all needs --data-root DIR and --out DIR")
    _run_all(data_root, out, **options)


def _given_options(ctx) -> list[tuple[str, str]]:
    """The group's own options typed on the command line (not left at their defaults): (name, example text)."""
    given = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        source = ctx.get_parameter_source(param.name)
        if source is not None and source != click.core.ParameterSource.DEFAULT:
            name = max(param.opts, key=len)
            given.append((name, name if param.is_flag else f"{name} {param.name.upper()}"))
    return given


@reproduce_group.command("list", context_settings=_SETTINGS, epilog="""\b
Examples:
  panderm reproduce list
  panderm reproduce list --json | jq '.[] | select(.kind == "probe") | .name'""")
@options.json_output(help="Print JSON (every published figure) instead of the table.")
def list_cmd(as_json):
    """Print the experiments: dataset, CSV layout, protocol and the paper's figures."""
    from dataclasses import asdict

    from panderm.reproduce.registry import list_benchmarks

    benches = list_benchmarks()
    if as_json:
        options.echo_json([asdict(b) for b in benches])
        return
    click.echo(f"{'name':<24} {'kind':<9} {'dataset':<9} {'metric':<11} {'PanDerm (95% CI)':<21} "
               f"{'best baseline (95% CI)':<33} source")
    for b in benches:
        click.echo(printable(_list_line(b), one_line=True))
    click.echo("\nCSV layouts, protocols and data sources: panderm reproduce list --json, docs/reproduce.md")


def _headline(bench, model):
    rows = bench.rows(model)
    row = next((r for r in rows if r.setting in ("", "100%")), rows[0] if rows else None)
    fig = row.figure(bench.primary_metric) if row else None
    return row, fig


def _list_line(bench) -> str:
    row, fig = _headline(bench, "PanDerm")
    _, base = _headline(bench, bench.baseline) if bench.baseline else (None, None)
    ours = _figure_text(fig)
    theirs = f"{bench.baseline} {_figure_text(base)}" if base else "-"
    return (f"{bench.name:<24} {bench.kind:<9} {bench.dataset[:9]:<9} {bench.primary_metric:<11} {ours:<21} "
            f"{theirs[:33]:<33} {row.source if row else ''}")


def _figure_text(fig) -> str:
    if fig is None:
        return "-"
    return f"{fig.value:.3f}" + (f" ({fig.ci[0]:.3f}-{fig.ci[1]:.3f})" if fig.ci else "")


def _benchmark_command(bench) -> click.Command:
    epilog = _benchmark_epilog(bench)
    @click.command(bench.name, epilog=epilog, context_settings=_SETTINGS, help=_benchmark_help(bench))
    @click.option("--data", required=True, type=_PATH, help="Folder with the CSV and the images it names.")
    @options.csv(help="The CSV [default: DATA/labels.csv].")
    @options.root(help="Folder the CSV's image paths are relative to [default: DATA/images if present, else DATA].")
    @_run_options
    def command(data, csv_path, root, out, model, weights, random_init, batch_size, workers, device, bootstrap,
                overwrite, quiet, as_json):
        from panderm.reproduce.run import reproduce

        result = reproduce(bench.name, data, out, csv=csv_path, root=root, model=model, weights=weights,
                           random_init=random_init,
                           batch_size=batch_size, workers=workers, device=device, n_bootstrap=bootstrap,
                           overwrite=overwrite, progress=not quiet)
        for w in result.warnings:
            click.secho(f"Warning: {printable(w)}", fg="yellow", err=True)
        if as_json:
            report = json.loads((Path(out) / "report.json").read_text(encoding="utf-8"))
            options.echo_json({**report, "out": str(out), "files": [str(p) for p in result.files]}
                              if isinstance(report, dict) else report)
            return
        _print_rows(result.rows, bench.baseline)
        click.echo(f"Report: {Path(out) / 'report.md'} (and report.json, report.png)")

    return command


def _benchmark_epilog(bench) -> str:
    """``Examples:`` for one experiment's subcommand, with its own name and kind."""
    lines = [f"  panderm reproduce {bench.name} --data DIR --weights panderm-large --out rep/{bench.name}",
             f"  panderm reproduce {bench.name} --data DIR --csv DIR/labels.csv --root DIR/images \\\n"
             f"      --weights panderm-large --out rep/{bench.name} --json"]
    if bench.kind == "listed":
        lines = [f"  panderm reproduce list --json | jq '.[] | select(.name == \"{bench.name}\")'"]
    note = ("This experiment is listed with the paper's figures only: running it is refused (see the notes above)."
            if bench.kind == "listed" else "See `panderm reproduce --help` for the data folder and the outputs.")
    return "\b\nExamples:\n" + "\n".join(lines) + "\n\n" + note


def _benchmark_help(bench) -> str:
    return (f"{bench.title}.\n\nDataset: {bench.dataset} ({bench.modality}); CSV: {bench.csv_layout}.\n\n"
            f"Protocol: {bench.protocol}." + (f"\n\n{bench.notes}" if bench.notes else ""))


def _print_rows(rows, baseline: str) -> None:
    click.echo(f"{'setting':<22} {'metric':<15} {'paper':>7} {(baseline or 'baseline')[:10]:>10} {'ours':>7}  "
               f"{'95% CI':<17} {'diff':>7}  paper in CI")
    for r in rows:
        spec = ".0f" if r["metric"] == "n" else ".3f"
        ci = f"[{fmt(r['ours_ci'][0], spec)}, {fmt(r['ours_ci'][1], spec)}]" if r["ours_ci"] else "n/a"
        diff = "n/a" if r["difference"] is None else format(r["difference"], "+" + spec)
        inside = {True: "yes", False: "no", None: "n/a"}[r["paper_in_our_ci"]]
        click.echo(printable(f"{(r['setting'] or 'all')[:22]:<22} {r['metric']:<15} {fmt(r['paper'], spec):>7} "
                             f"{fmt(r['baseline'], spec):>10} {fmt(r['ours'], spec):>7}  {ci:<17} {diff:>7}  "
                             f"{inside}", one_line=True))


def _run_all(data_root, out, model, weights, random_init, batch_size, workers, device, bootstrap, overwrite, quiet,
             as_json):
    from panderm.reproduce.run import reproduce_all

    summary = reproduce_all(data_root, out, model=model, weights=weights, random_init=random_init,
                            batch_size=batch_size, workers=workers,
                            device=device, n_bootstrap=bootstrap, overwrite=overwrite, progress=not quiet)
    if as_json:
        options.echo_json(summary)
        return
    for r in summary["runs"]:
        click.echo(f"{r['benchmark']:<20} {r['metric']:<12} paper {fmt(r.get('paper'), '.3f')}  "
                   f"ours {fmt(r.get('ours'), '.3f')}")
    if summary["absent"]:
        click.echo("no data for: " + ", ".join(summary["absent"]))
    for name, why in summary["failed"].items():
        click.secho(f"{name} failed: {printable(why)}", fg="red", err=True)
    click.echo(f"Summary: {Path(out) / 'summary.md'}")
