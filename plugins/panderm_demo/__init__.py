"""Built-in plugin: ``panderm demo``, extract + probe on the bundled sample images."""

from __future__ import annotations

import panderm


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("demo", "panderm_demo.commands:demo_cmd",
                         "Run extract + probe on the bundled sample images (no downloads).")
