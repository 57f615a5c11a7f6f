"""Probe figures: confusion matrix and ROC curves as PNG (Agg backend, written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from panderm.io import atomic_path


def new_figure(width: float, height: float, *, dpi: int = 120, layout: str | None = "constrained"):
    """A matplotlib Figure on an Agg canvas (no pyplot state, no GUI backend).

    Args:
        width, height: Size in inches.
        dpi: Dots per inch (the TBP report and body map use 100).
        layout: Matplotlib layout engine; ``None`` for figures placed by hand (``subplots_adjust``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def confusion_matrix_png(path: str | Path, y, pred, classes, title: str = "Confusion matrix") -> Path:
    """Confusion matrix: colour = row-normalised recall, text = count (and % of the true class).

    Args:
        path: Output PNG.
        y, pred: True and predicted labels (each one of ``classes``).
        classes: Class labels in display order.
    """
    from sklearn.metrics import confusion_matrix

    labels = [str(c) for c in classes]
    cm = confusion_matrix(np.asarray(y).astype(str), np.asarray(pred).astype(str), labels=labels)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    k = len(labels)
    side = min(14.0, max(4.5, 0.75 * k + 2.5))
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    size = 11 if k <= 8 else 9 if k <= 15 else 7
    if k <= 30:  # beyond that the numbers would be unreadable; colour still shows the pattern
        for i in range(k):
            for j in range(k):
                text = f"{cm[i, j]}\n{100 * frac[i, j]:.0f}%" if k <= 12 else f"{cm[i, j]}"
                ax.text(j, i, text, ha="center", va="center", fontsize=size,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), labels, rotation=45 if max(map(len, labels)) > 3 else 0, ha="right"
                  if max(map(len, labels)) > 3 else "center", fontsize=size)
    ax.set_yticks(range(k), labels, fontsize=size)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title(f"{title} (n = {int(cm.sum())})")
    return save_png(fig, path)


def roc_png(path: str | Path, y, proba, classes, title: str = "ROC") -> Path:
    """ROC curves: the positive class for two classes, else one-vs-rest per class, AUC in the legend.

    Args:
        path: Output PNG.
        y: True labels (each one of ``classes``).
        proba: ``(N, K)`` probabilities, columns in ``classes`` order.
        classes: Class labels.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.asarray(y).tolist()
    P = np.asarray(proba, dtype=np.float64)
    classes = list(classes)
    fig = new_figure(6.5, 6.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1)
    curves = [(1, f"{classes[1]} vs {classes[0]}")] if len(classes) == 2 else \
        [(c, f"{classes[c]} vs rest") for c in range(len(classes))]
    for col, name in curves:
        truth = np.array([v == classes[col] for v in y])
        if truth.all() or not truth.any():
            continue  # ROC undefined without both positives and negatives
        fpr, tpr, _ = roc_curve(truth, P[:, col])
        ax.plot(fpr, tpr, linewidth=1.6, label=f"{name} (AUC {roc_auc_score(truth, P[:, col]):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    kind = "" if len(classes) == 2 else ", one-vs-rest"
    ax.set_title(f"{title} (n = {len(y)}{kind})")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=9 if len(curves) <= 10 else 7)
    return save_png(fig, path)
