"""Built-in plugin: ``panderm serve`` (local web page + HTTP API for a classifier).

Import stays light: FastAPI, uvicorn and torch load only when the command runs.
"""

from __future__ import annotations

import panderm


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("serve", "panderm_serve.commands:serve_cmd",
                         "Local web page + HTTP API for a classifier (research use only).")
