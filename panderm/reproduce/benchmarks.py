"""What a reproducible experiment of the paper is: its dataset, protocol and published figures.

A :class:`Benchmark` names one experiment that runs on public data. Its
``results`` hold the paper's figures exactly as printed (table and row named in
``source``), for PanDerm and for the strongest baseline, so a report can set
ours beside them. Built-in entries live in :mod:`panderm.reproduce.paper`;
plugins add more through the ``register_benchmarks`` hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: What ``panderm reproduce`` can run. ``probe``: extract + linear probe on the test split;
#: ``curve``: the label-efficiency grid; ``subgroups``: per-subgroup metrics of a probe;
#: ``listed``: shown with its figures but not runnable here (the ``notes`` say why).
KINDS = ("probe", "curve", "subgroups", "listed")

#: Paper metric names → ours (``panderm.eval.metrics`` / ``panderm.eval.subgroups``).
PAPER_METRICS = {
    "W_F1": "weighted_f1", "AUROC": "auroc", "BACC": "bacc", "AUPR": "aupr", "ACC": "acc",
    "Sensitivity": "weighted_recall", "DSC": "dice", "JAC": "jaccard",
}


@dataclass(frozen=True)
class Figure:
    """One published number: ``metric`` (our name), the value and its 95% CI if printed."""

    metric: str
    value: float
    ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class PaperResult:
    """One model's row of a paper table.

    Attributes:
        model: As printed, e.g. ``"PanDerm"``, ``"DINOv2"``.
        figures: The row's numbers.
        source: Where it is printed, e.g. ``"Extended Data Table 1, PanDerm / HAM10000"``.
        setting: The row's condition within the experiment: ``""`` for a single result,
            ``"10%"`` for a label-efficiency point, ``"Location=Face"`` for a subgroup.
    """

    model: str
    figures: tuple[Figure, ...]
    source: str
    setting: str = ""

    def figure(self, metric: str) -> Figure | None:
        return next((f for f in self.figures if f.metric == metric), None)


@dataclass(frozen=True)
class Benchmark:
    """A paper experiment ``panderm reproduce NAME`` knows.

    Attributes:
        name: Command name, lower case (``ham10000``).
        title: One line for ``reproduce list``.
        dataset: The dataset as the paper names it.
        modality: ``dermoscopy``, ``clinical``, ``tbp`` or ``pathology``.
        kind: One of :data:`KINDS`.
        binary: Whether the task reads ``binary_label`` (the paper's melanoma tasks).
        primary_metric: The paper's headline metric for the dataset (``weighted_f1`` or ``auroc``).
        csv_layout: The CSV the run expects, e.g. ``"image,label,split"``.
        protocol: The evaluation protocol in words.
        results: Published rows: PanDerm's and the strongest baseline's (per setting).
        baseline: The strongest baseline's ``model`` name among ``results``.
        how_to_get: Where the public data and the official CSV come from.
        notes: Anything a user must know (deviations, why it is only listed).
        subgroup_columns: For ``subgroups``: the CSV columns to stratify by.
        subgroup_values: For ``subgroups``: ``(setting, column, value)`` per paper setting, e.g.
            ``("Location=Face", "localization", "face")``; value ``None``: the paper does not say
            which rows it means (shown for reference only).
        percents: For ``curve``: the training fractions.
        plugin: Who registered it (filled in by the registry).
    """

    name: str
    title: str
    dataset: str
    modality: str
    kind: str
    binary: bool
    primary_metric: str
    csv_layout: str
    protocol: str
    results: tuple[PaperResult, ...]
    baseline: str = ""
    how_to_get: str = ""
    notes: str = ""
    subgroup_columns: tuple[str, ...] = ()
    subgroup_values: tuple[tuple[str, str, str | None], ...] = ()
    percents: tuple[float, ...] = ()
    plugin: str = field(default="", compare=False)

    def rows(self, model: str) -> tuple[PaperResult, ...]:
        """The published rows of ``model`` (``"PanDerm"`` or :attr:`baseline`)."""
        return tuple(r for r in self.results if r.model == model)

    def paper(self, setting: str = "") -> PaperResult | None:
        """PanDerm's published row for ``setting``."""
        return next((r for r in self.results if r.model == "PanDerm" and r.setting == setting), None)
