"""Vectra WB360 lesion measurements: names, ISIC 2024 mapping, leakage guard, imputation, lesion filter.

The screening model's measurement features are the paper's 32 Vectra names
(:data:`VECTRA_MEASUREMENTS`). ISIC 2024 (SLICE-3D) exports the same values as
``tbp_lv_<name>`` columns; :func:`normalize_columns` renames them so one schema
serves both. :func:`measurement_matrix` turns any table into the model's float
matrix and says, in a :class:`MeasurementReport`, what was missing, imputed or
ignored, so nothing is silently wrong.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from panderm.errors import ConfigError, InputError

VECTRA_MEASUREMENTS: tuple[str, ...] = (
    "A", "Aext", "B", "Bext", "C", "Cext", "H", "Hext", "L", "Lext",
    "areaMM2", "area_perim_ratio", "color_std_mean", "deltaA", "deltaB", "deltaL",
    "deltaLB", "deltaLBnorm", "dnn_lesion_confidence", "eccentricity", "location_simple",
    "majorAxisMM", "minorAxisMM", "nevi_confidence", "norm_border", "norm_color",
    "perimeterMM", "radial_color_std_max", "stdL", "stdLExt", "symm_2axis", "symm_2axis_angle",
)

# ISIC 2024 has no tbp_lv_majorAxisMM; its clinical longest diameter is the same quantity.
ISIC2024_TO_VECTRA: dict[str, str] = {
    **{f"tbp_lv_{name}": name for name in VECTRA_MEASUREMENTS if name != "majorAxisMM"},
    "clin_size_long_diam_mm": "majorAxisMM",
}

FILTER_COLUMNS: tuple[str, ...] = (
    "majorAxisMM", "deltaLBnorm", "out_of_bounds_fraction", "dnn_lesion_confidence", "nevi_confidence",
)

#: Glob patterns of columns that encode the diagnosis; ``lesion_id`` only in ISIC 2024
#: format, where it exists only for biopsied (i.e. labelled) lesions.
LEAKY_PATTERNS: tuple[str, ...] = ("target", "iddx_*", "mel_*")
_ISIC_ONLY_LEAKY: tuple[str, ...] = ("lesion_id",)
_FORMATS = ("vectra", "isic2024")

KNOWN_NON_MEASUREMENT_COLUMNS: frozenset[str] = frozenset({
    "patient_id", "lesion_id", "image", "isic_id", "label", "target", "split", "mask",
    "age_approx", "sex", "anatom_site_general", "image_type", "tbp_tile_type", "attribution",
    "copyright_license", "tbp_lv_location", "tbp_lv_x", "tbp_lv_y", "tbp_lv_z",
    "out_of_bounds_fraction", "binary_label", "path", "measure_status", "size_mm",
    "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5", "mel_mitotic_index", "mel_thick_mm",
})

#: Fixed vocabulary of ``location_simple``; the model sees the index, so never reorder it.
LOCATIONS: tuple[str, ...] = (
    "Head & Neck", "Left Arm", "Right Arm", "Torso Front", "Torso Back", "Left Leg", "Right Leg", "Unknown",
)


#: Plausible (inclusive) range of each measurement, wide enough for Vectra units and for the
#: image-derived substitutes (pixels). A value outside it, or infinite, is treated as missing.
_LAB = (-128.0, 128.0)
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "L": (0.0, 100.0), "Lext": (0.0, 100.0), "A": _LAB, "Aext": _LAB, "B": _LAB, "Bext": _LAB,
    "C": (0.0, 182.0), "Cext": (0.0, 182.0), "H": (0.0, 360.0), "Hext": (0.0, 360.0),
    "deltaA": (-256.0, 256.0), "deltaB": (-256.0, 256.0), "deltaL": (-100.0, 100.0),
    "deltaLB": (0.0, 300.0), "deltaLBnorm": (0.0, 300.0),
    "areaMM2": (0.0, 1e8), "perimeterMM": (0.0, 1e5), "majorAxisMM": (0.0, 1e5), "minorAxisMM": (0.0, 1e5),
    "area_perim_ratio": (0.0, 1e6), "eccentricity": (0.0, 1.0), "symm_2axis": (0.0, 1.0),
    "symm_2axis_angle": (0.0, 360.0), "norm_border": (0.0, 10.0), "norm_color": (0.0, 10.0),
    "color_std_mean": (0.0, 200.0), "stdL": (0.0, 200.0), "stdLExt": (0.0, 200.0),
    "radial_color_std_max": (0.0, 200.0),
    "dnn_lesion_confidence": (0.0, 100.0), "nevi_confidence": (0.0, 100.0),
    "location_simple": (0.0, 7.0),  # index in LOCATIONS
}


def _loc_key(text: str) -> str:
    text = text.strip().lower().replace(" and ", "&").replace("/", "&")
    return re.sub(r"[^a-z&]", "", text)


_LOCATION_INDEX = {_loc_key(name): i for i, name in enumerate(LOCATIONS)}


def is_leaky(column: str, fmt: str = "isic2024") -> bool:
    """Whether ``column`` encodes the diagnosis and must never be a feature.

    Args:
        column: Column name.
        fmt: ``"isic2024"`` (default, the conservative choice) or ``"vectra"``, where
            ``lesion_id`` is the ordinary lesion key.
    """
    if fmt not in _FORMATS:
        raise ConfigError(f"unknown measurement format {fmt!r}", hint=f"use one of {', '.join(_FORMATS)}")
    patterns = LEAKY_PATTERNS + (_ISIC_ONLY_LEAKY if fmt == "isic2024" else ())
    return any(fnmatch.fnmatchcase(str(column), p) for p in patterns)


def drop_leaky(df: pd.DataFrame, fmt: str) -> tuple[pd.DataFrame, list[str]]:
    """Remove label-leaking columns.

    Args:
        df: Lesion table.
        fmt: ``"vectra"`` or ``"isic2024"`` (see :func:`is_leaky`).

    Returns:
        ``(df without the leaky columns, their names)``.
    """
    dropped = [c for c in df.columns if is_leaky(c, fmt)]
    return df.drop(columns=dropped), dropped


def _normalize(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    renamed: dict[str, str] = {}
    shadowed: list[str] = []
    present = set(df.columns)
    for isic, vectra in ISIC2024_TO_VECTRA.items():
        if isic not in present:
            continue
        # A native Vectra column is the primary source; the ISIC copy would be a duplicate name.
        if vectra in present or vectra in renamed.values():
            shadowed.append(isic)
        else:
            renamed[isic] = vectra
    out = df.drop(columns=shadowed).rename(columns=renamed)
    return out, renamed, shadowed


def normalize_columns(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rename ISIC 2024 columns to Vectra names.

    When both an ISIC column and its Vectra counterpart are present the Vectra one
    is kept and the ISIC one dropped; the dropped names are in
    ``df.attrs["shadowed_columns"]`` (and in :class:`MeasurementReport`).

    Args:
        df: Lesion table in either naming.

    Returns:
        ``(renamed copy, {isic_name: vectra_name} for the renames applied)``.
    """
    out, renamed, shadowed = _normalize(df)
    out.attrs["shadowed_columns"] = shadowed
    return out, renamed


def encode_location(series: Iterable) -> np.ndarray:
    """Encode ``location_simple`` as the index in :data:`LOCATIONS` (float).

    Strings match case- and punctuation-insensitively ("torso back", "Torso_Back",
    "head and neck"); numbers (already encoded) are kept; anything else is NaN so
    it is imputed like any other missing cell.
    """
    out = []
    for value in series:
        if isinstance(value, (bool, np.bool_)) or value is None:
            out.append(math.nan)
        elif isinstance(value, (int, float, np.integer, np.floating)):
            out.append(float(value))
        elif isinstance(value, str):
            idx = _LOCATION_INDEX.get(_loc_key(value))
            if idx is None:
                try:
                    idx = float(value)
                except ValueError:
                    idx = math.nan
            out.append(float(idx))
        else:
            out.append(math.nan)
    return np.asarray(out, dtype=np.float64)


def _numeric(df: pd.DataFrame, column: str) -> tuple[np.ndarray, int]:
    """Column as float64 with every unusable cell NaN, and how many *numbers* were implausible.

    Empty and non-numeric cells are NaN already; infinite values and values outside
    :data:`PLAUSIBLE_RANGES` (e.g. a negative area) are counted and made NaN too.
    """
    if column == "location_simple":
        values = encode_location(df[column])
    else:
        values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    values = values.astype(np.float64, copy=True)
    lo, hi = PLAUSIBLE_RANGES.get(column, (-np.inf, np.inf))
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(values) & (~np.isfinite(values) | (values < lo) | (values > hi))
    values[bad] = np.nan
    return values, int(bad.sum())


def fit_fill_values(df: pd.DataFrame, columns: Iterable[str] = VECTRA_MEASUREMENTS) -> dict[str, float]:
    """Training medians used to impute missing cells and columns.

    Args:
        df: Training lesion table (either naming).
        columns: Measurement columns (Vectra names).

    Returns:
        ``{column: median}``; 0.0 for a column that is absent or entirely NaN.
    """
    df, _, _ = _normalize(df)
    fills = {}
    for col in columns:
        values = _numeric(df, col)[0] if col in df.columns else np.array([np.nan])
        finite = values[~np.isnan(values)]
        fills[col] = float(np.median(finite)) if finite.size else 0.0
    return fills


@dataclass
class MeasurementReport:
    """What :func:`measurement_matrix` had to fix or ignore.

    Attributes:
        n_rows: Rows in the matrix.
        missing_columns: Requested columns absent from the table (filled).
        missing_without_fill: The subset of those filled with 0.0 for lack of a training median.
        imputed_cells: ``{column: number of NaN/non-numeric/implausible cells imputed}`` (only > 0).
        implausible: ``{column: number of infinite or out-of-range values}`` (only > 0; see
            :data:`PLAUSIBLE_RANGES`), treated as missing and so also in ``imputed_cells``.
        unknown_columns: Columns that are neither measurements nor known id/meta columns (ignored).
        leaky_columns: Label-leaking columns present in the table (ignored).
        renamed: ISIC 2024 -> Vectra renames applied.
        shadowed_columns: ISIC columns dropped because the Vectra column was also present.
    """

    n_rows: int = 0
    missing_columns: list[str] = field(default_factory=list)
    missing_without_fill: list[str] = field(default_factory=list)
    imputed_cells: dict[str, int] = field(default_factory=dict)
    implausible: dict[str, int] = field(default_factory=dict)
    unknown_columns: list[str] = field(default_factory=list)
    leaky_columns: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    shadowed_columns: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """One human-readable line per problem, naming the columns; empty when clean."""
        lines = []
        with_fill = [c for c in self.missing_columns if c not in self.missing_without_fill]
        if with_fill:
            lines.append(f"{len(with_fill)} measurement column{'s' * (len(with_fill) != 1)} missing, "
                         f"imputed with training medians: {', '.join(with_fill)}")
        if self.missing_without_fill:
            n = len(self.missing_without_fill)
            lines.append(f"{n} measurement column{'s' * (n != 1)} missing and no training median, "
                         f"filled with 0: {', '.join(self.missing_without_fill)}")
        if self.imputed_cells:
            total = sum(self.imputed_cells.values())
            detail = ", ".join(f"{c} ({n})" for c, n in self.imputed_cells.items())
            lines.append(f"{total} empty or non-numeric measurement cell{'s' * (total != 1)} imputed: {detail}")
        for col, n in self.implausible.items():
            lo, hi = PLAUSIBLE_RANGES.get(col, (-np.inf, np.inf))
            lines.append(f"{col}: {n} value{'s' * (n != 1)} infinite or outside the plausible range [{lo:g}, {hi:g}]"
                         " (e.g. negative), treated as missing and imputed")
        if self.unknown_columns:
            lines.append(f"{len(self.unknown_columns)} unknown column{'s' * (len(self.unknown_columns) != 1)} "
                         f"ignored: {', '.join(self.unknown_columns)}")
        if self.leaky_columns:
            lines.append(f"label-leaking column{'s' * (len(self.leaky_columns) != 1)} never used as features: "
                         f"{', '.join(self.leaky_columns)}")
        if self.shadowed_columns:
            lines.append("ISIC 2024 column(s) ignored because the Vectra column is also present: "
                         + ", ".join(self.shadowed_columns))
        return lines


def measurement_matrix(df: pd.DataFrame, columns: Iterable[str] = VECTRA_MEASUREMENTS,
                       fill_values: Mapping[str, float] | None = None,
                       on_missing: str = "impute", fmt: str | None = None) -> tuple[np.ndarray, MeasurementReport]:
    """The model's float64 measurement matrix from a lesion table in either naming.

    Args:
        df: Lesion table (Vectra or ISIC 2024 column names).
        columns: Feature columns, Vectra names, in model order.
        fill_values: Training medians (:func:`fit_fill_values`); ``None`` imputes NaN
            cells with this table's own medians and absent columns with 0.0.
        on_missing: ``"impute"`` or ``"error"`` for absent columns.
        fmt: ``"vectra"`` (``None``) or ``"isic2024"``: which columns present in the table
            are reported as leaky (``lesion_id`` only for ``"isic2024"``). Requested
            feature columns are always checked the strict ISIC 2024 way.

    Returns:
        ``(X of shape (n, len(columns)), report)``.

    Raises:
        ConfigError: a leaky column is requested as a feature, or a bad ``on_missing``.
        InputError: ``on_missing="error"`` and columns are absent (all listed).
    """
    columns = list(columns)
    if on_missing not in ("impute", "error"):
        raise ConfigError(f"on_missing must be 'impute' or 'error', not {on_missing!r}")
    leaky_requested = [c for c in columns if is_leaky(c)]
    if leaky_requested:
        raise ConfigError(f"label-leaking column(s) requested as features: {', '.join(leaky_requested)}",
                          hint="these encode the diagnosis; remove them from the feature list")
    fill_values = dict(fill_values or {})
    table, renamed, shadowed = _normalize(df)
    report = MeasurementReport(n_rows=len(table), renamed=renamed, shadowed_columns=shadowed)
    # lesion_id is only reported as leaky when the caller says the table is raw ISIC 2024:
    # readers replace that column by a safe key, which must not raise a false alarm.
    fmt = fmt or "vectra"
    report.leaky_columns = [c for c in table.columns if is_leaky(c, fmt)]
    expected = set(VECTRA_MEASUREMENTS) | set(columns) | KNOWN_NON_MEASUREMENT_COLUMNS
    # "_"-prefixed columns are the caller's own bookkeeping, not user input.
    report.unknown_columns = [c for c in table.columns
                              if c not in expected and not is_leaky(c, fmt) and not str(c).startswith("_")]
    report.missing_columns = [c for c in columns if c not in table.columns]
    if report.missing_columns and on_missing == "error":
        n = len(report.missing_columns)
        raise InputError(f"{n} measurement column{'s' * (n != 1)} missing: {', '.join(report.missing_columns)}",
                         hint="add them, or drop --strict-measurements to impute them with the training medians")

    X = np.empty((len(table), len(columns)), dtype=np.float64)
    for j, col in enumerate(columns):
        fill = fill_values.get(col)
        fill_ok = fill is not None and not (isinstance(fill, float) and math.isnan(fill))
        if col not in table.columns:
            if not fill_ok:
                report.missing_without_fill.append(col)
            X[:, j] = float(fill) if fill_ok else 0.0
            continue
        values, implausible = _numeric(table, col)
        if implausible:
            report.implausible[col] = implausible
        bad = np.isnan(values)
        if bad.any():
            if not fill_ok:
                finite = values[~bad]
                fill = float(np.median(finite)) if finite.size else 0.0
            values[bad] = float(fill)
            report.imputed_cells[col] = int(bad.sum())
        X[:, j] = values
    return X, report


_CRITERIA = (
    ("majorAxisMM", ">=", 2.0),
    ("deltaLBnorm", ">=", 4.5),
    ("out_of_bounds_fraction", "<=", 0.25),
    ("dnn_lesion_confidence", ">=", 50.0),
    ("nevi_confidence", ">", 80.0),
)
_OPS = {">=": np.greater_equal, "<=": np.less_equal, ">": np.greater}


def lesion_filter(df: pd.DataFrame) -> tuple[np.ndarray, dict]:
    """The paper's lesion filter on Vectra measurements.

    Keeps lesions with majorAxisMM >= 2, deltaLBnorm >= 4.5, out_of_bounds_fraction
    <= 0.25, dnn_lesion_confidence >= 50 and nevi_confidence > 80. A criterion whose
    column is absent is skipped; a NaN (or non-numeric) value does not remove the row
    for that criterion — the measurement is unknown, not failing.

    Args:
        df: Lesion table (either naming).

    Returns:
        ``(keep bool array, report)``; report keys: ``n_total``, ``n_kept``, ``n_removed``,
        ``removed`` ({criterion: rows failing it}), ``nan_rows`` ({criterion: rows
        with NaN, kept}), ``applied_criteria``, ``skipped_criteria``.
    """
    table, _, _ = _normalize(df)
    keep = np.ones(len(table), dtype=bool)
    report: dict = {"removed": {}, "nan_rows": {}, "applied_criteria": [], "skipped_criteria": []}
    for col, op, threshold in _CRITERIA:
        name = f"{col} {op} {threshold:g}"
        if col not in table.columns:
            report["skipped_criteria"].append(name)
            continue
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        nan = np.isnan(values)
        with np.errstate(invalid="ignore"):
            fails = ~_OPS[op](values, threshold) & ~nan
        keep &= ~fails
        report["applied_criteria"].append(name)
        report["removed"][name] = int(fails.sum())
        report["nan_rows"][name] = int(nan.sum())
    report["n_total"] = len(table)
    report["n_kept"] = int(keep.sum())
    report["n_removed"] = len(table) - int(keep.sum())
    return keep, report
