"""Built-in plugin: opt-in ``hf-hub:`` weights (:func:`panderm.hub.resolve_hf_hub`)."""

from __future__ import annotations

import panderm


@panderm.hookimpl
def resolve_weights(spec):
    from panderm.hub import resolve_hf_hub

    return resolve_hf_hub(spec)
