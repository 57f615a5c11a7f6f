"""Built-in plugin: the paper's experiments (``register_benchmarks``) and ``panderm reproduce``.

Import stays light: the benchmark records are plain dataclasses; torch loads only
when an experiment runs.
"""

from __future__ import annotations

import panderm


@panderm.hookimpl
def register_benchmarks(register):
    from panderm.reproduce.paper import paper_benchmarks

    for bench in paper_benchmarks():
        register(bench)


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("reproduce", "panderm_reproduce.commands:reproduce_group",
                         "Reproduce a table of the paper on public data: ours beside the published figures.")
