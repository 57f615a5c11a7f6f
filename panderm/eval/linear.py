"""The PanDerm linear probe: multinomial logistic regression fitted with full-batch L-BFGS.

Reproduces the released ``linear_eval.py`` classifier (see
``docs/reference-model.md`` §4): ``Linear(D, K)`` initialised after
``torch.manual_seed(seed)``, one ``torch.optim.LBFGS(lr=1, max_iter=1000,
line_search_fn="strong_wolfe").step(closure)`` over the whole training set, and
``C = D·K/100`` by default.

Two objectives are available (``W`` is the K×D weight, the bias is never
penalised, ``N`` the number of training rows):

* ``penalty="official"``: ``mean CE + (0.5/C)·‖W‖₂`` — the released code uses
  the plain, *not squared*, Frobenius norm.
* ``penalty="sklearn"``: ``mean CE + 0.5/(C·N)·‖W‖²`` — scikit-learn's
  ``C·ΣCE + 0.5‖W‖²`` divided by ``C·N`` (same minimiser). For K=2 we keep two
  softmax logits, so the effective regularisation differs from sklearn's
  single-logit binary model by a factor of two in C.
"""

from __future__ import annotations

import numpy as np
import torch

PENALTIES = ("official", "sklearn")


def default_C(n_features: int, n_classes: int) -> float:
    """The paper's fixed regularisation: ``C = D·K/100`` (no search)."""
    return n_features * n_classes / 100.0


class LBFGSLogisticRegression:
    """Softmax regression with the released PanDerm L-BFGS recipe (scikit-learn style API).

    Args:
        C: Inverse regularisation strength; ``None`` means ``D·K/100`` at fit time.
        penalty: ``"official"`` or ``"sklearn"`` (see module docstring).
        seed: Seed for the ``Linear`` initialisation.
        max_iter: L-BFGS iterations (the single ``step`` call's ``max_iter``).
        dtype: ``torch.float32`` (like the release, and fast) or ``torch.float64``.
        tolerance_grad: L-BFGS first-order tolerance (torch default).
        tolerance_change: L-BFGS loss/step change tolerance (torch default).
        history_size: L-BFGS memory (torch default).

    Attributes:
        classes_: Sorted distinct training labels; column order of ``predict_proba``.
        coef_: ``(K, D)`` weights. ``intercept_``: ``(K,)`` biases.
        n_iter_: L-BFGS iterations actually run. ``C_``: the C used.
    """

    def __init__(self, C: float | None = None, penalty: str = "official", seed: int = 0,
                 max_iter: int = 1000, dtype: torch.dtype = torch.float32,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100):
        if penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
        self.C = C
        self.penalty = penalty
        self.seed = seed
        self.max_iter = max_iter
        self.dtype = dtype
        self.tolerance_grad = tolerance_grad
        self.tolerance_change = tolerance_change
        self.history_size = history_size

    def fit(self, X, y) -> "LBFGSLogisticRegression":
        """Fit on features ``X`` (N×D) and labels ``y`` (any sortable labels)."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got shape {X.shape}")
        self.classes_, y_idx = np.unique(np.asarray(y), return_inverse=True)
        n, d = X.shape
        k = len(self.classes_)
        if k < 2:
            raise ValueError("need at least two classes in the training labels")
        self.C_ = float(self.C) if self.C is not None else default_C(d, k)

        torch.manual_seed(self.seed)
        linear = torch.nn.Linear(d, k)  # PyTorch default init, as in the release
        W = linear.weight.detach().to(self.dtype).clone().requires_grad_(True)
        b = linear.bias.detach().to(self.dtype).clone().requires_grad_(True)
        Xt = torch.as_tensor(X, dtype=self.dtype)
        yt = torch.as_tensor(y_idx.reshape(-1), dtype=torch.long)
        rows = torch.arange(n)
        pen = 0.5 / self.C_ if self.penalty == "official" else 0.5 / (self.C_ * n)
        squared = self.penalty == "sklearn"
        W.grad = torch.zeros_like(W)
        b.grad = torch.zeros_like(b)

        def closure() -> torch.Tensor:
            # Analytic gradients instead of autograd: same values, much less overhead
            # per L-BFGS evaluation on the CPU.
            with torch.no_grad():
                logits = torch.addmm(b, Xt, W.t())
                lse = torch.logsumexp(logits, dim=1, keepdim=True)
                loss = (lse.squeeze(1) - logits[rows, yt]).mean()
                resid = logits.sub_(lse).exp_()  # softmax probabilities, in place
                resid[rows, yt] -= 1.0
                resid.div_(n)
                torch.mm(resid.t(), Xt, out=W.grad)
                torch.sum(resid, dim=0, out=b.grad)
                if squared:
                    loss = loss + pen * W.pow(2).sum()
                    W.grad.add_(W, alpha=2 * pen)
                else:
                    norm = torch.linalg.vector_norm(W)
                    loss = loss + pen * norm
                    if norm > 0:  # the norm is not differentiable at W = 0
                        W.grad.add_(W, alpha=float(pen / norm))
            return loss

        opt = torch.optim.LBFGS([W, b], lr=1, max_iter=self.max_iter, history_size=self.history_size,
                                tolerance_grad=self.tolerance_grad, tolerance_change=self.tolerance_change,
                                line_search_fn="strong_wolfe")
        opt.step(closure)  # returns the *initial* loss; the final one is recomputed below
        self.n_iter_ = int(opt.state[opt._params[0]].get("n_iter", 0))
        self.coef_ = W.detach().numpy().copy()
        self.intercept_ = b.detach().numpy().copy()
        self.loss_ = float(closure())
        return self

    def objective(self, X, y) -> tuple[float, np.ndarray, np.ndarray]:
        """Return (loss, dL/dW, dL/db) of the fitted model's objective on ``(X, y)`` (float64, autograd).

        Used by tests and diagnostics to check that the solution is stationary.
        """
        y_idx = np.searchsorted(self.classes_, np.asarray(y))
        Xt = torch.as_tensor(np.asarray(X), dtype=torch.float64)
        W = torch.tensor(self.coef_, dtype=torch.float64, requires_grad=True)
        b = torch.tensor(self.intercept_, dtype=torch.float64, requires_grad=True)
        loss = torch.nn.functional.cross_entropy(Xt @ W.t() + b, torch.as_tensor(y_idx))
        if self.penalty == "official":
            loss = loss + 0.5 / self.C_ * torch.linalg.vector_norm(W)
        else:
            loss = loss + 0.5 / (self.C_ * len(Xt)) * W.pow(2).sum()
        loss.backward()
        return float(loss), W.grad.numpy(), b.grad.numpy()

    def decision_function(self, X) -> np.ndarray:
        """Logits ``X·Wᵀ + b`` (N×K)."""
        return np.asarray(X, dtype=self.coef_.dtype) @ self.coef_.T + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N×K, columns in ``classes_`` order; K=2: column 1 is P(class 1))."""
        z = self.decision_function(X).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """Most probable label per row."""
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in ("C", "penalty", "seed", "max_iter", "dtype", "tolerance_grad",
                                               "tolerance_change", "history_size")}

    def __repr__(self) -> str:
        return f"LBFGSLogisticRegression(C={self.C}, penalty={self.penalty!r}, seed={self.seed})"
