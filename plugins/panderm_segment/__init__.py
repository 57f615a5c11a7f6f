"""Built-in plugin: lesion segmentation (``panderm segment train|predict|eval``) and the segmenter registry.

Import stays light: no torch here; commands and segmenters import it when they run.
"""

from __future__ import annotations

import panderm


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("segment", "panderm_segment.commands:segment_group",
                         "Lesion segmentation: UPerNet on PanDerm features (train, predict, eval).")


@panderm.hookimpl
def register_segmenters(register):
    from panderm.segmentation.segmenters import builtin_segmenters

    builtin_segmenters(register)
