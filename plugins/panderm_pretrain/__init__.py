"""Built-in plugin: CAE v2 pretraining: teachers, data sources and the ``pretrain`` command.

Import stays light: no torch here. The teachers' factories live in
:mod:`panderm.train.builtin_teachers`, the data sources in :mod:`panderm.data.unlabelled`; this plugin forwards them.
"""

from __future__ import annotations

import panderm

# --------------------------------------------------------------------------- teachers


@panderm.hookimpl
def register_teachers(register):
    from panderm.train.builtin_teachers import builtin_teachers

    builtin_teachers(register)


# --------------------------------------------------------------------------- commands (register_commands)


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("pretrain", "panderm_pretrain.commands:pretrain_cmd",
                         "Self-supervised CAE v2 pretraining of a PanDerm encoder (CPU demo to multi-GPU).")


# --------------------------------------------------------------------------- data sources (register_data_sources)


@panderm.hookimpl
def register_data_sources(register):
    from panderm.data.unlabelled import builtin_data_sources

    builtin_data_sources(register)
