"""The paper's published figures as :class:`~panderm.reproduce.benchmarks.Benchmark` entries.

Every number below is transcribed from Yan et al., "A multimodal vision foundation
model for clinical dermatology" (Nature Medicine 2025), Extended Data Tables 1,
11–13 and 15–22, exactly as printed: the point estimate and its 95% CI, with the
significance stars dropped. Each table is kept whole (every model's row) in the
``TABLE_*`` literals of :mod:`panderm.reproduce.paper_tables` so that the choice
of the strongest baseline can be audited; a :class:`Benchmark` carries PanDerm's row(s) and the strongest baseline's row(s)
only. ``tests/test_reproduce_paper.py`` re-reads the paper text and checks every
figure here against the printed row.

The strongest baseline of an entry is the non-PanDerm model with the best value
of the entry's primary metric (ties broken by the table's other metrics, left to
right); for a label-efficiency curve, the best mean of the primary metric over
the printed percents. Model names are kept as each table prints them (Table 1:
``SL_Imagenet``, ``DINOV2``, ``SwaVDerm``; Tables 15–20: ``SL_ImageNet``,
``DINOv2``, ``SwAVDerm``).
"""

from __future__ import annotations

import re

from panderm.reproduce.benchmarks import PAPER_METRICS, Benchmark, Figure, PaperResult
from panderm.reproduce.paper_tables import (SUBGROUP_SETTINGS, TABLE_1, TABLE_11, TABLE_12, TABLE_13, TABLE_15,
                                            TABLE_16, TABLE_17, TABLE_18, TABLE_19, TABLE_20, TABLE_21, TABLE_22,
                                            Table)

_CLASSIFICATION_COLUMNS = ("W_F1", "AUROC", "BACC", "AUPR")
_SEGMENTATION_COLUMNS = ("DSC", "JAC")
_PERCENTS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)

_RELEASE = "github.com/SiyuanYan1/PanDerm"
_PROCESSED = (f"Official processed CSV and images: the PanDerm release ({_RELEASE}), README section "
              f"'Using Pre-processed Public Datasets', entry '{{entry}}' (the release asks that these, not the "
              f"original downloads, be used to reproduce the paper: its splits avoid patient leakage).")

_PROBE = ("linear probe, release protocol: L-BFGS (strong Wolfe, max 1,000 iterations), C = D·K/100 "
          "(D = 1024 for PanDerm-L, K = distinct train labels), mean cross-entropy + (1/C)·0.5·‖W‖ (plain "
          "Frobenius norm, bias unregularised); fit on split == train only (val unused), test on split == "
          "test; features: CLS token after the final LayerNorm, fp32, no normalisation; eval transform "
          "Resize(256) → CenterCrop(224), mean (0.485, 0.456, 0.406), std (0.228, 0.224, 0.225); "
          "95% CI: 1,000 bootstrap replicates of the test set")
_CURVE = ("label efficiency: the linear probe of the release protocol (as for the full-data entry) fitted "
          "on a fraction p of the train rows, val/test untouched, evaluated on the whole test split, "
          "p ∈ {5, 10, 20, 30, 50, 100}%. The release's --percent_data shuffles the train rows with "
          "random_state=42 and keeps the first ⌊n·p⌋; `panderm probe --percent-data` keeps a stratified, "
          "seeded max(1, round(p·n_class)) per class instead, so points below 100% use other subsamples")

# ---------------------------------------------------------------------------------------------
# Turning printed cells into figures, and choosing the strongest baseline
# ---------------------------------------------------------------------------------------------

_CELL = re.compile(r"(\d+(?:\.\d+)?)(?: \((\d+\.\d+)-(\d+\.\d+)\))?")
_N_IN_LABEL = re.compile(r"\(n=(\d+)\)")


def _figure(column: str, cell: str) -> Figure:
    """``"0.926 (0.912-0.940)"`` under column ``W_F1`` → ``Figure("weighted_f1", 0.926, (0.912, 0.940))``."""
    m = _CELL.fullmatch(cell)
    if m is None:
        raise ValueError(f"unreadable printed cell {cell!r} under {column}")
    metric = "n" if column == "n" else PAPER_METRICS[column]
    return Figure(metric, float(m[1]), (float(m[2]), float(m[3])) if m[2] else None)


def _figures(columns: tuple[str, ...], cells: tuple[str, ...]) -> tuple[Figure, ...]:
    if len(columns) != len(cells):
        raise ValueError(f"{len(cells)} cells for columns {columns}")
    return tuple(_figure(c, x) for c, x in zip(columns, cells))


def _values(columns: tuple[str, ...], cells: tuple[str, ...]) -> dict[str, float]:
    return {f.metric: f.value for f in _figures(columns, cells)}


def _rank(columns: tuple[str, ...], cells: tuple[str, ...], primary: str) -> tuple[float, ...]:
    """Primary metric first, then the table's metrics left to right (the tie-breakers)."""
    v = _values(columns, cells)
    return (v[primary], *(v[PAPER_METRICS[c]] for c in columns))


def _strongest(rows: dict[str, tuple[str, ...]], columns: tuple[str, ...], primary: str) -> str:
    """The non-PanDerm model of ``rows`` with the best ``primary`` (first printed on a full tie)."""
    baselines = [m for m in rows if m != "PanDerm"]
    return max(baselines, key=lambda m: _rank(columns, rows[m], primary))


def _curve_strongest(table: Table, primary: str) -> str:
    """The baseline with the best mean ``primary`` over the percents it has printed."""
    models = [m for m in next(iter(table.values())) if m != "PanDerm"]

    def mean(model: str) -> float:
        vals = [_values(_CLASSIFICATION_COLUMNS, rows[model])[primary] for rows in table.values() if model in rows]
        return sum(vals) / len(vals)

    return max(models, key=mean)


def _percent(label: str) -> float:
    return round(float(label.rstrip("%")) / 100, 4)


def _primary(binary: bool) -> str:
    # Main text and Methods: "weighted F1 score for multi-class datasets and AUROC for binary class datasets".
    return "auroc" if binary else "weighted_f1"


def _layout(binary: bool, *extra: str) -> str:
    return ",".join(("image", "binary_label" if binary else "label", "split", *extra))


def _metric_name(metric: str) -> str:
    return {"weighted_f1": "W_F1", "auroc": "AUROC", "jaccard": "JAC", "dice": "DSC"}.get(metric, metric)


# ---------------------------------------------------------------------------------------------
# Extended Data Table 1: the ten skin-cancer diagnosis datasets
# ---------------------------------------------------------------------------------------------

def _table1(name: str, dataset: str, *, modality: str, binary: bool, title: str, how_to_get: str,
            notes: str = "", kind: str = "probe", protocol: str = _PROBE) -> Benchmark:
    rows = TABLE_1[dataset]
    primary = _primary(binary)
    baseline = _strongest(rows, _CLASSIFICATION_COLUMNS, primary)
    results = tuple(PaperResult(model, _figures(_CLASSIFICATION_COLUMNS, rows[model]),
                                f"Extended Data Table 1, {model} / {dataset}")
                    for model in ("PanDerm", baseline))
    return Benchmark(name=name, title=title, dataset=dataset, modality=modality, kind=kind, binary=binary,
                     primary_metric=primary, csv_layout=_layout(binary), protocol=protocol,
                     results=results, baseline=baseline, how_to_get=how_to_get, notes=notes)


#: Extended Data Table 1's benchmarks: :func:`_table1`'s arguments per dataset, in the paper's order.
_TABLE1_ENTRIES: tuple[dict, ...] = (
    dict(
        name="pad", dataset="PAD", modality="clinical", binary=False,
        title="PAD-UFES-20, 6-class skin cancer diagnosis on smartphone clinical images (Ext. Data Table 1)",
        how_to_get=("PAD-UFES-20 (Pacheco et al. 2020) is published on Mendeley Data (see the dataset's "
                    "page); the paper's Data availability links a Kaggle copy "
                    "(kaggle.com/datasets/mahdavi1202/skin-cancer). "
                    + _PROCESSED.format(entry="PAD-UFES")
                    + " The release's own example reads pad-ufes/2000.csv with images in pad-ufes/images/."),
        notes=("2,298 close-up clinical images, 6 classes (Methods). Extended Data Table 19's caption calls "
               "PAD 'dermoscopic'; Methods and the dataset itself are smartphone clinical images, so the "
               "modality here is clinical."),
    ),
    dict(
        name="ham10000", dataset="HAM10000", modality="dermoscopy", binary=False,
        title="HAM10000, 7-class pigmented lesion diagnosis on dermoscopy (Ext. Data Table 1)",
        how_to_get=("HAM10000 (Tschandl et al. 2018) is on Harvard Dataverse and in the ISIC 2018 challenge "
                    "data (challenge.isic-archive.com/data/, as in the paper's Data availability); see the "
                    "dataset's page. " + _PROCESSED.format(entry="HAM10000")),
        notes=("Methods: every experiment except the reader study uses the leakage-free 'clean' HAM10000 of "
               "Gröger et al. 2023 (ref. 80; lesions of one patient never straddle splits), split "
               "60/20/20 — the release's processed CSV carries that split; the official ISIC splits will "
               "not give comparable numbers. The 100% point of Extended Data Table 15 (HAM_clean) is a "
               "separate run: PanDerm W_F1 0.922 there vs 0.926 here."),
    ),
    dict(
        name="dermc", dataset="DermC", modality="clinical", binary=True,
        title="Derm7pt clinical images (DermC), melanoma vs others (Ext. Data Table 1)",
        how_to_get=("Derm7pt (Kawahara et al. 2018) from derm.cs.sfu.ca (the paper's Data availability; "
                    "registration required, see the dataset's page). "
                    + _PROCESSED.format(entry="Derm7pt")
                    + " DermC is its clinical-image part ('Derm.C' in Methods)."),
        notes=("Binary melanoma vs other classes, so the probe reads binary_label and the headline metric "
               "is AUROC. The strongest baseline by AUROC is SL_Imagenet (0.797) by 0.001 over DINOV2 "
               "(0.796)."),
    ),
    dict(
        name="bcn20000", dataset="BCN20000", modality="dermoscopy", binary=False,
        title="BCN20000, 9-class dermoscopic lesion diagnosis (Ext. Data Table 1)",
        how_to_get=("BCN20000 (Hernández-Pérez et al. 2024), the ISIC 2019 challenge training data, also on "
                    "figshare (figshare.com/articles/journal_contribution/"
                    "BCN20000_Dermoscopic_Lesions_in_the_Wild/24140028/1, the paper's Data availability). "
                    + _PROCESSED.format(entry="BCN20000")),
        notes=("12,413 dermoscopic images, 9 classes, the leakage-free 'clean' version split 60/20/20 "
               "(Methods). Extended Data Table 16's 100% point is a separate run (PanDerm W_F1 0.767 "
               "there vs 0.772 here)."),
    ),
    dict(
        name="ddi", dataset="DDI", modality="clinical", binary=True,
        title="DDI (Diverse Dermatology Images), melanoma vs others on clinical images (Ext. Data Table 1)",
        how_to_get=("DDI (Daneshjou et al. 2022) from Stanford AIMI after accepting its terms; project page "
                    "ddi-dataset.github.io (the paper's Data availability). "
                    + _PROCESSED.format(entry="DDI")),
        notes=("647 clinical images from the US; the paper groups DDI's classes into melanoma and others "
               "(Methods), so the probe reads binary_label. DDI's own metadata (ddi_metadata.csv) holds the "
               "skin_tone column used by 'ddi-skintone'."),
    ),
    dict(
        name="hiba", dataset="HIBA", modality="dermoscopy", binary=True,
        title="HIBA (ISIC archive), melanoma vs others on dermoscopy (Ext. Data Table 1)",
        how_to_get=("The HIBA collection of the ISIC archive (isic-archive.com; see the archive's collection "
                    "page). " + _PROCESSED.format(entry="HIBA")),
        notes=("1,635 dermoscopic images, melanoma vs other classes (Methods). Extended Data Table 17's "
               "100% point is a separate run (PanDerm AUROC 0.949 there vs 0.948 here)."),
    ),
    dict(
        name="mskcc", dataset="MSKCC", modality="dermoscopy", binary=True,
        title="MSKCC (ISIC archive), melanoma vs others on dermoscopy (Ext. Data Table 1)",
        how_to_get=("The MSKCC collections of the ISIC archive (isic-archive.com; see the archive's "
                    "collection page). " + _PROCESSED.format(entry="MSKCC")),
        notes="8,984 dermoscopic images, melanoma vs other classes (Methods).",
    ),
    dict(
        name="patch16", dataset="PATCH16", modality="pathology", binary=False,
        title="PATCH16, 16-class skin tumour / tissue patch classification on histopathology (Ext. Data Table 1)",
        how_to_get=("Kriegsmann et al. 2022, on heiDATA (heidata.uni-heidelberg.de, "
                    "doi:10.11588/data/7QCR8S, the paper's Data availability). "
                    + _PROCESSED.format(entry="PATCH16")),
        notes=("129,364 patches of 100×100 µm (395×395 px) from 378 slides, 16 classes (4 tumour types, "
               "12 normal structures), stratified 55/15/30 (Methods). The paper's Statistical analysis "
               "derives the CIs of skin tumour patch classification from k-fold cross-validation "
               "(mean ± 1.96·SE over folds), whereas reproduce bootstraps the test split: the point "
               "estimates compare, the CI widths do not."),
    ),
    dict(
        name="isic2024", dataset="ISIC2024", modality="tbp", binary=True, kind="listed",
        protocol=("full fine-tuning (Methods: 'skin cancer detection in ISIC2024' is among the fine-tuned "
                  "tasks): BEiT v2 recipe, cross-entropy, lr 5e-4, 50 epochs with 10 warm-up, best "
                  "validation checkpoint; evaluated on a hold-out of 49,025 TBP crops"),
        title="ISIC2024 (SLICE-3D), skin cancer detection on 3D-TBP lesion crops, fine-tuned (Ext. Data Table 1)",
        how_to_get=("ISIC 2024 challenge / SLICE-3D (Kurtansky et al. 2024): "
                    "kaggle.com/competitions/isic-2024-challenge (the paper's Data availability) and the "
                    "ISIC archive. The PanDerm release ships no processed CSV for it."),
        notes=("Not run by reproduce: the paper fine-tuned the encoder for this task (Methods, 'Fine-tuning "
               "and linear probing'), and its hold-out (49,025 crops from FNQH Cairns, Alfred Hospital and "
               "Melanoma Institute Australia) is not published as a CSV. Approximate it with `panderm "
               "finetune --csv CSV --root IMAGES --binary …` on an institution-held-out split of your own; "
               "`panderm probe --binary` gives a linear-probe figure the paper does not report. PanDerm's "
               "pretraining data include 352,034 ISIC2024 tiles (a subset stratified by institution). "
               "Some CIs are printed as asymmetric or touching the point (SL_Imagenet W_F1 0.877 "
               "(0.873-0.877)); they are kept as printed."),
    ),
    dict(
        name="wsi", dataset="WSI", modality="pathology", binary=True, kind="listed",
        protocol=("slide-level weakly supervised classification: CLAM tissue segmentation, 256×256 patches "
                  "at 20× resized to 224, frozen-encoder patch features, gated ABMIL (512-d embedding, 384 "
                  "hidden, dropout 0.10/0.25), AdamW lr 1e-4, wd 1e-5, cosine, 20 epochs with early "
                  "stopping on validation loss; five-fold label-stratified cross-validation"),
        title="WSI (CPTAC-CM), melanoma vs normal slide classification with ABMIL (Ext. Data Table 1)",
        how_to_get=("The CPTAC-CM (cutaneous melanoma) cohort of the NCI Clinical Proteomic Tumor Analysis "
                    "Consortium, whose slides are distributed through The Cancer Imaging Archive (TCIA, "
                    "ref. 85; see the cohort's page). The paper's Data availability links "
                    "portal.gdc.cancer.gov/projects/TCGA-SKCM instead. The PanDerm release ships no "
                    "processed CSV for it."),
        notes=("Not run by reproduce: it is a slide-level multiple-instance task (302 slides: 71 normal, 231 "
               "tumour; five-fold CV), not a linear probe on images. Approximate it with `panderm slide "
               "tile` → `panderm slide extract` → `panderm slide mil --folds 5` (the same gated ABMIL "
               "recipe). SL_Imagenet and SwaVDerm tie on AUROC (0.989); SL_Imagenet is taken as the "
               "strongest baseline on the next metric, W_F1 (0.945 vs 0.932). CIs above 1 "
               "(e.g. 0.977-1.002) are the paper's mean ± 1.96·SE over folds, kept as printed."),
    ),
)


def _table1_benchmarks() -> list[Benchmark]:
    """The ten datasets of Extended Data Table 1 (:data:`_TABLE1_ENTRIES`)."""
    return [_table1(**entry) for entry in _TABLE1_ENTRIES]


# ---------------------------------------------------------------------------------------------
# Extended Data Tables 15-20: label-efficiency curves
# ---------------------------------------------------------------------------------------------

def _curve(name: str, number: int, table: Table, dataset: str, table1_dataset: str, *, modality: str,
           binary: bool, title: str, how_to_get: str, notes: str = "") -> Benchmark:
    primary = _primary(binary)
    baseline = _curve_strongest(table, primary)
    percents = tuple(_percent(p) for p in table)
    if percents != _PERCENTS:
        raise ValueError(f"Extended Data Table {number} prints percents {percents}")
    results = tuple(PaperResult(model, _figures(_CLASSIFICATION_COLUMNS, rows[model]),
                                f"Extended Data Table {number}, {model} / {pct}", setting=pct)
                    for model in ("PanDerm", baseline) for pct, rows in table.items())
    label = _metric_name(primary)
    facts = [f"Strongest baseline: {baseline}, the best mean {label} over the six percents."]
    others = []
    for pct, rows in table.items():
        best = _strongest(rows, _CLASSIFICATION_COLUMNS, primary)
        value, ours = (_values(_CLASSIFICATION_COLUMNS, rows[m])[primary] for m in (best, baseline))
        if value > ours:
            others.append(f"{pct} {best} ({value:.3f} vs {ours:.3f})")
    if others:
        facts.append(f"Another baseline beats {baseline} at some percents: {', '.join(others)}.")
    behind = [f"{pct} ({_values(_CLASSIFICATION_COLUMNS, rows['PanDerm'])[primary]:.3f} vs "
              f"{_values(_CLASSIFICATION_COLUMNS, rows[baseline])[primary]:.3f})"
              for pct, rows in table.items()
              if _values(_CLASSIFICATION_COLUMNS, rows["PanDerm"])[primary]
              < _values(_CLASSIFICATION_COLUMNS, rows[baseline])[primary]]
    if behind:
        facts.append(f"PanDerm's {label} is below {baseline}'s at {', '.join(behind)}.")
    full = _values(_CLASSIFICATION_COLUMNS, table["100%"]["PanDerm"])[primary]
    t1 = _values(_CLASSIFICATION_COLUMNS, TABLE_1[table1_dataset]["PanDerm"])[primary]
    if full != t1:
        facts.append(f"The 100% point is a separate run from Extended Data Table 1 (PanDerm {label} "
                     f"{full:.3f} here vs {t1:.3f} there).")
    facts.append("The paper does not describe its subsampling; the release's --percent_data keeps the first "
                 "⌊n·p⌋ train rows after a shuffle with random_state=42, while `panderm probe --percent-data` "
                 "draws a stratified, seeded subsample, so the small-percent points are not the paper's "
                 "subsamples.")
    return Benchmark(name=name, title=title, dataset=dataset, modality=modality, kind="curve", binary=binary,
                     primary_metric=primary, csv_layout=_layout(binary), protocol=_CURVE, results=results,
                     baseline=baseline, how_to_get=how_to_get,
                     notes=" ".join(([notes] if notes else []) + facts), percents=percents)


def _curve_benchmarks() -> list[Benchmark]:
    same = "The same data and official processed CSV as '{0}' (see its entry)."
    return [
        _curve("ham10000-curve", 15, TABLE_15, "HAM_clean", "HAM10000", modality="dermoscopy", binary=False,
               title="HAM_clean label efficiency, W_F1 at 5–100% of the training labels (Ext. Data Table 15)",
               how_to_get=same.format("ham10000"),
               notes="HAM_clean is the leakage-free HAM10000 split of Gröger et al. 2023, as in 'ham10000'."),
        _curve("bcn20000-curve", 16, TABLE_16, "BCN20000", "BCN20000", modality="dermoscopy", binary=False,
               title="BCN20000 label efficiency, W_F1 at 5–100% of the training labels (Ext. Data Table 16)",
               how_to_get=same.format("bcn20000")),
        _curve("hiba-curve", 17, TABLE_17, "HIBA", "HIBA", modality="dermoscopy", binary=True,
               title="HIBA label efficiency, melanoma AUROC at 5–100% of the training labels (Ext. Data Table 17)",
               how_to_get=same.format("hiba")),
        _curve("dermc-curve", 18, TABLE_18, "DermC", "DermC", modality="clinical", binary=True,
               title="DermC label efficiency, melanoma AUROC at 5–100% of the training labels (Ext. Data Table 18)",
               how_to_get=same.format("dermc")),
        _curve("pad-curve", 19, TABLE_19, "PAD", "PAD", modality="clinical", binary=False,
               title="PAD-UFES-20 label efficiency, W_F1 at 5–100% of the training labels (Ext. Data Table 19)",
               how_to_get=same.format("pad"),
               notes="The table's caption says 'dermoscopic'; PAD-UFES-20 is smartphone clinical images."),
        _curve("patch16-curve", 20, TABLE_20, "PATCH16", "PATCH16", modality="pathology", binary=False,
               title="PATCH16 label efficiency, W_F1 at 5–100% of the training labels (Ext. Data Table 20)",
               how_to_get=same.format("patch16"),
               notes=("Table 20's caption: 'SwAVDerm results for the 100% setting are missing' (printed as "
                      "'—'); SwAVDerm's mean is taken over the five printed percents."),
               ),
    ]


# ---------------------------------------------------------------------------------------------
# Extended Data Tables 11-13: lesion segmentation
# ---------------------------------------------------------------------------------------------

def _segmentation(name: str, dataset: str, number: int, table: Table, *, title: str, how_to_get: str,
                  notes: str) -> Benchmark:
    primary = "jaccard"
    own, medsam = table[dataset], TABLE_13[dataset]
    candidates = {**{m: (number, c) for m, c in own.items()}, "MedSAM": (13, medsam["MedSAM"])}
    baseline = max((m for m in candidates if m != "PanDerm"),
                   key=lambda m: _rank(_SEGMENTATION_COLUMNS, candidates[m][1], primary))
    results = tuple(PaperResult(model, _figures(_SEGMENTATION_COLUMNS, candidates[model][1]),
                                f"Extended Data Table {candidates[model][0]}, {model} / {dataset}")
                    for model in ("PanDerm", baseline))
    return Benchmark(
        name=name, title=title, dataset=dataset, modality="dermoscopy", kind="listed", binary=False,
        primary_metric=primary, csv_layout="image,mask,split",
        protocol=("fine-tuned segmentation (Methods): PanDerm encoder + UperNet decoder, 224×224 inputs, colour "
                  "jitter, rotation and flips, AdamW lr 5e-4, weight decay 0.01, cosine schedule, 100 epochs, "
                  "best validation checkpoint; Dice (DSC) and Jaccard (JAC) on the test split"),
        results=results, baseline=baseline, how_to_get=how_to_get,
        notes=("Not run by reproduce: it fine-tunes a segmentation decoder and the encoder, not a linear probe. "
               "Approximate it with `panderm segment train --csv CSV --root DIR --weights W --epochs 100` then "
               "`panderm segment eval`. The paper's headline comparison is JAC (Results), and the release keeps "
               "the best validation Jaccard, so JAC is the primary metric. The strongest baseline is MedSAM "
               "(Extended Data Table 13, 1024×1024 inputs); the strongest of Table "
               f"{number}'s baselines is BATFormer. The CIs are over five seeded replicas "
               "(Extended Data Fig. 1). " + notes),
    )


def _segmentation_benchmarks() -> list[Benchmark]:
    return [
        _segmentation(
            "isic2018-segmentation", "ISIC2018", 11, TABLE_11,
            title="ISIC2018 Task 1 lesion segmentation, Dice and Jaccard (Ext. Data Tables 11 and 13)",
            how_to_get=("ISIC 2018 challenge Task 1 images and lesion masks (challenge.isic-archive.com/data/, the "
                        "paper's Data availability). Build the CSV from the official split: 2,594 train, 100 "
                        "val, 1,000 test."),
            notes="PanDerm's row in Table 13 repeats Table 11's (0.910 / 0.846).",
        ),
        _segmentation(
            "ham10000-segmentation", "HAM10000", 12, TABLE_12,
            title="HAM10000 lesion segmentation, Dice and Jaccard (Ext. Data Tables 12 and 13)",
            how_to_get=("HAM10000 images with the lesion masks published alongside the dataset (Harvard "
                        "Dataverse / ISIC 2018 challenge data; see the dataset's page)."),
            notes=("The paper's split is a random 64/16/20 selection (Methods) that is not published, so the "
                   "test images differ from the paper's. On DSC MedSAM and PanDerm tie at 0.949 "
                   "(Table 13 p = 0.793)."),
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Extended Data Tables 21-22: subgroups
# ---------------------------------------------------------------------------------------------

def _subgroup_values(name: str) -> tuple[tuple[str, str, str | None], ...]:
    return tuple((setting, column, value) for setting, (column, value) in SUBGROUP_SETTINGS[name].items())


def _ham10000_subgroups() -> Benchmark:
    columns = ("n", "W_F1", "Sensitivity")
    results = tuple(
        PaperResult("PanDerm", _figures(columns, cells), f"Extended Data Table 22, PanDerm / {category} / {sub}",
                    setting="" if category == "Overall" else f"{category}={sub}")
        for category, rows in TABLE_22.items() for sub, cells in rows.items())
    return Benchmark(
        name="ham10000-subgroups", dataset="HAM10000", modality="dermoscopy", kind="subgroups", binary=False,
        title="HAM10000 robustness by sex, body location and age, W_F1 and sensitivity (Ext. Data Table 22)",
        primary_metric="weighted_f1", csv_layout=_layout(False, "sex", "localization", "age"),
        protocol=(_PROBE + "; then per-subgroup W_F1 and 'Sensitivity' (support-weighted recall, our "
                  "weighted_recall) of the test predictions, grouped by the CSV's sex, localization and age"),
        results=results, baseline="", subgroup_columns=("sex", "localization", "age"),
        subgroup_values=_subgroup_values("ham10000-subgroups"),
        how_to_get=("As 'ham10000'. The subgroup columns come from HAM10000's own metadata "
                    "(HAM10000_metadata: image_id, sex, localization, age); merge them into the processed CSV "
                    "by image id if it lacks them."),
        notes=("PanDerm only: the table prints no baseline, and only point estimates (no CIs). Each row's "
               "sample size is kept as a Figure with metric 'n'. Settings are 'Category=Subgroup' as printed "
               "('Location=Face'); subgroup_values maps them to CSV columns and "
               "values (HAM10000 writes them in lower case: 'face', 'lower extremity'). The overall row "
               "(n = 1232) has setting ''. The paper does not define its age groups Young / Medium / Old "
               "numerically (their n: 34 / 669 / 517), so the age rows cannot be matched to bins of the "
               "metadata's age column and are shown for reference. The counts do not add up to 1232 (sex "
               "1222, location 1226, age 1220: rows with missing values are left out), and 1232 is not 20% "
               "of 10,015, so check the size of your test split. The overall W_F1 (0.957) differs from "
               "Extended Data Table 1's HAM10000 figure (0.926): the table comes from a different run than "
               "Table 1, so treat it as a robustness profile rather than a target."),
    )


def _skin_tone_results(dataset: str) -> tuple[PaperResult, ...]:
    out = []
    for label, cells in TABLE_21[dataset].items():
        group = label.split(" (n=")[0]
        n = _N_IN_LABEL.search(label)
        figures = (Figure("n", float(n[1])), *_figures(("W_F1", "Sensitivity"), cells))
        out.append(PaperResult("PanDerm", figures, f"Extended Data Table 21, PanDerm / {dataset} / {label}",
                               setting=f"Skin Tone={group}"))
    return tuple(out)


def _skin_tone_benchmarks() -> list[Benchmark]:
    common = ("PanDerm only (no baseline printed). The printed 95% CIs equal the point estimates ('identical "
              "to point estimate due to single measurement') and are kept as printed. 'Sensitivity' is "
              "support-weighted recall (our weighted_recall). Each group's n, printed in its label, is kept "
              "as a Figure with metric 'n'.")
    return [
        Benchmark(
            name="ddi-skintone", dataset="DDI", modality="clinical", kind="subgroups", binary=True,
            title="DDI by Fitzpatrick skin type (I-II, III-IV, V-VI), W_F1 and sensitivity (Ext. Data Table 21)",
            primary_metric="weighted_f1", csv_layout=_layout(True, "skin_tone"),
            protocol=(_PROBE + "; then per-group W_F1 and support-weighted recall of the test predictions, "
                      "grouped by DDI's skin_tone column"),
            results=_skin_tone_results("DDI"), baseline="", subgroup_columns=("skin_tone",),
            subgroup_values=_subgroup_values("ddi-skintone"),
            how_to_get=("As 'ddi'. skin_tone comes from DDI's own ddi_metadata.csv (values 12, 34, 56 for "
                        "FST I-II, III-IV, V-VI); merge it into the processed CSV by image file name if it "
                        "lacks it."),
            notes=(common + " The paper does not state the DDI task of this table; the binary melanoma-vs-others "
                   "task of Extended Data Table 1 (the only DDI task it defines) is assumed. Its groups total "
                   "137 images, about a fifth of DDI's 647, i.e. a test split. The table prints W_F1 and "
                   "Sensitivity only, so W_F1 is the primary metric here although the task is binary."),
        ),
        Benchmark(
            name="fitzpatrick17k-skintone", dataset="F17K", modality="clinical", kind="listed", binary=False,
            title="Fitzpatrick17k by Fitzpatrick skin type, W_F1 and sensitivity (Ext. Data Table 21)",
            primary_metric="weighted_f1", csv_layout=_layout(False, "fitzpatrick_scale"),
            protocol="linear probe (task, classes and split not stated in the paper), grouped by skin type",
            results=_skin_tone_results("F17K"), baseline="",
            how_to_get=("Fitzpatrick17k (Groh et al. 2021), distributed by its authors as a CSV of image URLs "
                        "with a fitzpatrick_scale column (1-6, -1 unknown); see the dataset's page. The PanDerm "
                        "release ships no processed CSV for it."),
            notes=(common + " Not run by reproduce: the paper does not say which Fitzpatrick17k labels (114 "
                   "conditions, or the 3- or 9-way partitions), which split, or which images it used; its "
                   "groups total 2,219 images. With a CSV of your own, `panderm probe` then `panderm evaluate "
                   "--by fitzpatrick_scale --bins 0.5,2.5,4.5,6.5` gives the same three groups."),
        ),
    ]


def paper_benchmarks() -> list[Benchmark]:
    """The built-in entries of ``panderm reproduce``: the paper's figures on public data.

    In order: the ten datasets of Extended Data Table 1, the six label-efficiency curves
    (Tables 15–20), the two segmentation benchmarks (Tables 11–13) and the subgroup
    analyses (Tables 21–22).
    """
    return [*_table1_benchmarks(), *_curve_benchmarks(), *_segmentation_benchmarks(), _ham10000_subgroups(),
            *_skin_tone_benchmarks()]
