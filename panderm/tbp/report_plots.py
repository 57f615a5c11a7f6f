"""Matplotlib plots embedded in the TBP report: feature importance and the feature-space map."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd

from panderm.eval.plots import new_figure


def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def importance_png(importance: pd.DataFrame, top: int = 20) -> bytes:
    """Horizontal bar chart of the ``top`` most important measurement features.

    Args:
        importance: columns ``feature``, ``importance`` and optionally ``std``.
        top: number of features to show.

    Returns:
        PNG bytes.
    """
    df = importance.dropna(subset=["importance"]).sort_values("importance", ascending=False).head(top)
    df = df.iloc[::-1]
    fig = new_figure(6.5, max(1.6, 0.28 * len(df) + 0.8), dpi=100, layout=None)
    ax = fig.add_subplot(1, 1, 1)
    xerr = df["std"].to_numpy(dtype=float) if "std" in df.columns else None
    ax.barh(np.arange(len(df)), df["importance"].to_numpy(dtype=float), xerr=xerr,
            color="#1565c0", ecolor="#52606d", capsize=2, height=0.7)
    ax.set_yticks(np.arange(len(df)))
    ax.set_yticklabels([str(f)[:40] for f in df["feature"]], fontsize=8)
    for label in ax.get_yticklabels():
        label.set_parse_math(False)
    ax.set_xlabel("importance", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _fig_png(fig)


def _embed_2d(features: np.ndarray, method: str) -> tuple[np.ndarray, str]:
    """2-D embedding via UMAP (if requested and importable) or PCA; returns (coords, used)."""
    x = np.nan_to_num(np.asarray(features, dtype=np.float64).reshape(len(features), -1))
    if method == "umap":
        try:
            import umap  # type: ignore[import-not-found]

            reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, len(x) - 1)), random_state=0)
            return np.asarray(reducer.fit_transform(x)), "umap"
        except Exception:  # noqa: BLE001, S110 - missing package or tiny-sample failure: fall back to PCA
            pass
    if x.shape[1] < 2:
        x = np.hstack([x, np.zeros((len(x), 2 - x.shape[1]))])
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=0).fit_transform(x), "pca"


def feature_map(features, outlier, flagged, labels, method, label_order=None) -> tuple[bytes | None, str]:
    """:func:`feature_map_png` plus the embedding used (``label_order``: flagged lesions labelled first)."""
    if features is None or len(features) < 3:
        return None, method
    coords, used = _embed_2d(features, method)
    outlier = np.asarray(outlier, dtype=bool)
    flagged = np.asarray(flagged, dtype=bool)
    fig = new_figure(5.2, 4.2, dpi=100, layout=None)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(coords[~flagged, 0], coords[~flagged, 1], s=36, c="#9aa5b1", label="not flagged", zorder=2)
    ax.scatter(coords[flagged, 0], coords[flagged, 1], s=60, c="#ef6c00", label="flagged", zorder=3)
    if outlier.any():
        ax.scatter(coords[outlier, 0], coords[outlier, 1], s=170, facecolors="none",
                   edgecolors="#c62828", linewidths=1.8, label="UD outlier", zorder=4)
    if labels is not None:
        order = np.flatnonzero(flagged) if label_order is None else [i for i in label_order if flagged[i]]
        for i in order[:6]:
            ax.annotate(str(labels[i])[:18], coords[i], xytext=(6, 5), textcoords="offset points",
                        fontsize=7, color="#7a3b00", parse_math=False)
    name = "UMAP" if used == "umap" else "PCA"
    ax.set_xlabel(f"{name} 1", fontsize=9)
    ax.set_ylabel(f"{name} 2", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _fig_png(fig), used


def feature_map_png(features: np.ndarray, outlier: np.ndarray, flagged: np.ndarray,
                    labels: Sequence[str] | None = None, method: str = "pca") -> bytes | None:
    """Scatter plot of lesion features in 2-D (PCA, or UMAP when available).

    Args:
        features: ``(n, d)`` lesion features.
        outlier: per-lesion UD-outlier mask (drawn with a red ring).
        flagged: per-lesion flagged mask (filled orange; a few are labelled).
        labels: optional lesion ids used to label flagged points.
        method: ``"pca"`` or ``"umap"`` (falls back to PCA if umap is unavailable).

    Returns:
        PNG bytes, or None when there are fewer than 3 lesions.
    """
    return feature_map(features, outlier, flagged, labels, method)[0]
