"""Hook specifications: the contract between panderm and its plugins.

Registration hooks receive a ``register`` callback instead of returning values,
so one plugin can register many things and the host knows who registered what.
See ``docs/plugins.md`` for a walk-through.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("panderm")


@hookspec
def register_commands(cli: Any) -> None:
    """Add Click commands to the ``panderm`` group.

    Args:
        cli: The root :class:`panderm_cli.lazy.LazyGroup`. Use ``@cli.command()``
            for a command defined inline, or ``cli.add_lazy_command(name,
            "module:attr", short_help)`` so that nothing heavy imports until the
            command runs.
    """


@hookspec
def register_encoders(register: Callable[..., None]) -> None:
    """Register encoder architectures.

    Call ``register(name, factory, pretrained_cfg=PretrainedCfg(...))`` for each
    one. ``factory(**kwargs)`` must return an ``nn.Module`` with
    ``forward_features(x) -> [B, D]`` and ``num_features``.
    """


@hookspec
def register_probe_heads(register: Callable[..., None]) -> None:
    """Register probe heads, e.g. ``register(ProbeHeadSpec(...))``; ``panderm probe --head NAME`` uses them.

    A head's factory returns an estimator with ``fit(X, y)`` and
    ``predict_proba(X)`` working on feature matrices.
    """


@hookspec
def register_tasks(register: Callable[..., None]) -> None:
    """Deprecated name of :func:`register_probe_heads`, still honoured for one release."""


@hookspec
def register_modalities(register: Callable[..., None]) -> None:
    """Register image modalities, e.g. ``register(ModalitySpec(...))``."""


@hookspec
def register_teachers(register: Callable[..., None]) -> None:
    """Register pretraining teachers: ``register(name, factory, summary=...)``.

    ``factory(spec: str)`` builds the teacher from the part of a teacher spec
    after the name, e.g. ``"ViT-L-14:/models/clip.bin"``.
    """


@hookspec(firstresult=True)
def resolve_weights(spec: str) -> Any:
    """Turn a ``--weights`` value into a local file path.

    Return a :class:`pathlib.Path` (or ``str``) if this plugin knows the spec,
    else ``None``. The first non-``None`` answer wins.
    """


@hookspec
def register_data_sources(register: Callable[..., None]) -> None:
    """Register pretraining data sources: ``register(name, factory, summary="")``.

    ``factory(spec: str, **options)`` returns a ``torch.utils.data.Dataset`` of
    ``(PIL.Image, modality)`` items (or skip records); ``panderm pretrain --data``
    takes ``name:spec`` or, without a prefix, a manifest CSV or folder.
    """


@hookspec
def register_segmenters(register: Callable[..., None]) -> None:
    """Register lesion segmenters: ``register(name, factory, summary="")``.

    ``factory(spec: str)`` builds the segmenter from the part of ``name:spec`` after
    the colon (``run:runs/seg`` → ``factory("runs/seg")``) and returns a callable
    ``rgb (H×W×3 uint8) -> bool mask (H×W)``. ``panderm align-pair --segmenter``
    takes ``name`` or ``name:spec``.
    """


@hookspec
def register_benchmarks(register: Callable[..., None]) -> None:
    """Register paper experiments for ``panderm reproduce``: ``register(Benchmark(...))``.

    A :class:`panderm.reproduce.benchmarks.Benchmark` names the dataset, the CSV it
    expects, the protocol and the published figures; ``panderm reproduce NAME``
    then runs it on the user's copy of the data.
    """
