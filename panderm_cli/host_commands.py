"""Commands owned by the host itself: ``plugins`` and ``doctor``."""

from __future__ import annotations

import json

import click

from panderm_cli import options


@click.command("plugins", epilog="\b\nExamples:\n  panderm plugins\n  panderm plugins | jq '.[].name'\n"
                                 "  panderm plugins --json    # the same: plugins always prints JSON")
@options.json_output(help="Accepted for symmetry: plugins always prints JSON.")
def plugins_cmd(as_json: bool) -> None:
    """Print JSON: each plugin, its hooks, and what it registered."""
    from panderm.plugins import describe_plugins
    from panderm_cli.app import build_cli

    records = describe_plugins()
    owners = build_cli().command_owner
    for rec in records:
        rec["commands"] = sorted(c for c, p in owners.items() if p == rec["name"])
    click.echo(json.dumps(records, indent=2))


@click.command("doctor", epilog="\b\nExamples:\n  panderm doctor\n  panderm doctor --json")
@options.json_output(help="Print the report (versions, CPU, CUDA, extras, weights, plugin failures) as JSON.")
def doctor_cmd(as_json: bool) -> None:
    """Show versions, CPU bf16/AMX support, CUDA, optional extras and registered weights."""
    from panderm.doctor import collect, describe_extra

    report = collect()
    if as_json:
        options.echo_json(report)
        return
    click.echo(f"panderm {report['panderm']}  python {report['python']}  ({report['platform']})")
    click.echo("packages: " + ", ".join(f"{k} {v or 'missing'}" for k, v in report["packages"].items()))
    cpu = report["cpu"]
    click.echo(f"cpu: {cpu['machine']}, {cpu['threads']} threads, amx_bf16={cpu['amx_bf16']}, "
               f"avx512_bf16={cpu['avx512_bf16']} → --precision auto = {cpu['auto_precision']}")
    cuda = report["cuda"]
    click.echo(f"cuda: {'available ' + ', '.join(cuda['devices']) if cuda['available'] else 'not available'}")
    click.echo("optional dependencies:")
    for name, info in report["extras"].items():
        click.echo(f"  {name:16s} {describe_extra(info)}")
    click.echo(f"home: {report['home']}")
    if report["weights"]:
        for w in report["weights"]:
            click.echo(f"  weights {w['name']}: {w['path']}" + ("" if w["exists"] else "  (MISSING)"))
    else:
        click.echo("  no weights registered (panderm weights add NAME PATH)")
    for name, why in report["plugin_failures"].items():
        click.secho(f"  plugin {name} failed: {why}", fg="yellow")
