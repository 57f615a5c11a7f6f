"""The PanDerm linear probe: multinomial logistic regression fitted with full-batch L-BFGS.

Reproduces the released ``linear_eval.py`` classifier (see
``docs/reference/linear-probe.md``): ``Linear(D, K)`` initialised after
``torch.manual_seed(seed)``, one ``torch.optim.LBFGS(lr=1, max_iter=1000,
line_search_fn="strong_wolfe").step(closure)`` over the whole training set, and
``C = D·K/100`` by default.

Two objectives are available (``W`` is the K×D weight, the bias is never
penalised, ``N`` the number of training rows), chosen by the evaluation
*protocol* (:data:`PROTOCOLS`). The default is ``"release"``: the released
``linear_eval.py`` objective and stopping rule, so that our numbers are
comparable with the paper's tables, which that code produced.

* protocol ``"release"`` → ``penalty="official"``: ``mean CE + (0.5/C)·‖W‖₂``,
  the plain, *not squared*, Frobenius norm (docs/reference/linear-probe.md and docs/reference/compatibility.md#94-probe-regulariser-and-unused-val-split), torch's
  LBFGS tolerances (``tolerance_grad`` 1e-7, ``tolerance_change`` 1e-9).
* protocol ``"sklearn"`` → ``penalty="sklearn"``: ``mean CE + 0.5/(C·N)·‖W‖²``,
  scikit-learn's ``C·ΣCE + 0.5‖W‖²`` divided by ``C·N`` (same minimiser), with
  scikit-learn's ``tol=1e-4`` — the probe the paper's Methods describe in words.
  For K=2 we keep two softmax logits, so the effective regularisation differs
  from sklearn's single-logit binary model by a factor of two in C.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

PENALTIES = ("official", "sklearn")
#: Evaluation protocols (``--protocol``); the first is the default everywhere.
PROTOCOLS = ("release", "sklearn")
#: The estimator penalty each protocol uses.
PROTOCOL_PENALTY = {"release": "official", "sklearn": "sklearn"}
#: Human-readable objective per penalty (recorded in the probes' JSON outputs).
PENALTY_FORM = {"official": "mean CE + (0.5/C)·‖W‖₂ (Frobenius norm, not squared; bias unpenalised)",
                "sklearn": "mean CE + 0.5/(C·N)·‖W‖² (squared; bias unpenalised)"}
#: Below this many feature values (N·D) a fit runs on one thread (see ``n_threads``).
SMALL_PROBLEM = 1 << 22


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily use ``n`` intra-op threads (``None``: leave the setting alone)."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def penalty_for(protocol: str) -> str:
    """The estimator penalty of an evaluation protocol (``release`` → ``official``); ConfigError if unknown."""
    from panderm.errors import ConfigError

    if protocol not in PROTOCOL_PENALTY:
        raise ConfigError(f"unknown protocol '{protocol}'",
                          hint=f"use one of {', '.join(PROTOCOLS)} (release: the released linear_eval.py objective)")
    return PROTOCOL_PENALTY[protocol]


def default_tolerance_grad(penalty: str) -> float:
    """torch's 1e-7 for the release objective, scikit-learn's ``tol=1e-4`` for the sklearn one."""
    return 1e-7 if penalty == "official" else 1e-4


def default_C(n_features: int, n_classes: int) -> float:
    """The paper's fixed regularisation: ``C = D·K/100`` (no search)."""
    return n_features * n_classes / 100.0


class LBFGSLogisticRegression:
    """Softmax regression with the released PanDerm L-BFGS recipe (scikit-learn style API).

    Args:
        C: Inverse regularisation strength; ``None`` means ``D·K/100`` at fit time.
        penalty: ``"official"`` (default; the release protocol) or ``"sklearn"`` (see module docstring).
        seed: Seed for the ``Linear`` initialisation.
        max_iter: L-BFGS iterations (the single ``step`` call's ``max_iter``).
        dtype: ``torch.float32`` (like the release, and fast) or ``torch.float64``.
        tolerance_grad: Stop when max |gradient| ≤ this. ``None``: the release's torch
            default 1e-7 for ``"official"``; scikit-learn's default ``tol=1e-4`` for
            ``"sklearn"`` (scipy's L-BFGS-B uses the same max-|g| test), so each mode
            reproduces its reference's stopping rule as well as its objective.
        tolerance_change: L-BFGS loss/step change tolerance (torch default).
        history_size: L-BFGS memory (torch default).
        block_bytes: Rows of X are processed in blocks of about this size (speed only).
        n_threads: Intra-op threads during ``fit``, restored afterwards. ``None``: one
            thread when N·D < 4M, otherwise torch's setting as it is. Small fits gain
            nothing from threads, and on a busy machine each multi-threaded op can
            wait a whole scheduler slice (measured: 20 ms vs 0.6-2.4 s for a 600×30 fit).

    Attributes:
        classes_: Sorted distinct training labels; column order of ``predict_proba``.
        coef_: ``(K, D)`` weights. ``intercept_``: ``(K,)`` biases.
        n_iter_: L-BFGS iterations actually run. ``C_``: the C used. ``tolerance_grad_``: the
            gradient tolerance used. :meth:`solver_settings` collects them for reports.
    """

    def __init__(self, C: float | None = None, penalty: str = "official", seed: int = 0,
                 max_iter: int = 1000, dtype: torch.dtype = torch.float32,
                 tolerance_grad: float | None = None, tolerance_change: float = 1e-9, history_size: int = 100,
                 block_bytes: int = 2 << 20, n_threads: int | None = None):
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
        self.block_bytes = block_bytes
        self.n_threads = n_threads

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
        threads = self.n_threads if self.n_threads is not None else (1 if n * d < SMALL_PROBLEM else None)
        with _torch_threads(threads):
            self._fit(X, y_idx, n, d, k)
        return self

    def _fit(self, X: np.ndarray, y_idx: np.ndarray, n: int, d: int, k: int) -> None:

        torch.manual_seed(self.seed)
        linear = torch.nn.Linear(d, k)  # PyTorch default init, as in the release
        Xt = torch.as_tensor(X, dtype=self.dtype)
        # Centre the features and shift the bias to match: an exact reparametrisation
        # (the bias is unpenalised, so the objective and its minimiser in W are
        # unchanged) that removes the badly conditioned mean direction and cuts
        # L-BFGS iterations several-fold. Same starting point as the release.
        mu = Xt.mean(dim=0)  # any shift is exact (the bias absorbs it), so fp32 is fine
        Xt = Xt - mu
        W = linear.weight.detach().to(self.dtype).clone().requires_grad_(True)
        b = (linear.bias.detach().to(self.dtype) + W.detach() @ mu).reshape(k, 1).requires_grad_(True)
        y_t = torch.as_tensor(y_idx.reshape(-1), dtype=torch.long)
        onehot = torch.nn.functional.one_hot(y_t, k).t().to(self.dtype).contiguous()  # K×N
        # Row blocks small enough to stay in cache between the forward and the
        # gradient matmul: one pass over X per evaluation instead of two (the
        # skinny K-column matmuls are memory-bound, so this halves their cost).
        rows = max(256, self.block_bytes // (Xt.element_size() * d))
        blocks = list(zip(Xt.split(rows), onehot.split(rows, dim=1)))
        pen = 0.5 / self.C_ if self.penalty == "official" else 0.5 / (self.C_ * n)
        squared = self.penalty == "sklearn"
        W.grad = torch.zeros_like(W)
        b.grad = torch.zeros_like(b)

        def closure() -> torch.Tensor:
            # Analytic gradients instead of autograd (same values, far less overhead);
            # K×N logits so that the softmax reduces over contiguous rows.
            with torch.no_grad():
                W.grad.zero_()
                b.grad.zero_()
                total = torch.zeros((), dtype=torch.float64)
                for xb, ob in blocks:
                    logits = torch.addmm(b, W, xb.t())
                    m = logits.amax(dim=0)
                    true_logit = (logits * ob).sum()
                    p = logits.sub_(m).exp_()
                    s = p.sum(dim=0)
                    total += (s.log() + m).sum() - true_logit
                    resid = p.div_(s).sub_(ob)  # softmax - onehot
                    W.grad.addmm_(resid, xb)
                    b.grad.add_(resid.sum(dim=1, keepdim=True))
                W.grad.div_(n)
                b.grad.div_(n)
                loss = (total / n).to(self.dtype)
                if squared:
                    loss = loss + pen * W.pow(2).sum()
                    W.grad.add_(W, alpha=2 * pen)
                else:
                    norm = torch.linalg.vector_norm(W)
                    loss = loss + pen * norm
                    if norm > 0:  # the norm is not differentiable at W = 0
                        W.grad.add_(W, alpha=float(pen / norm))
            return loss

        tol = self.tolerance_grad if self.tolerance_grad is not None else default_tolerance_grad(self.penalty)
        self.tolerance_grad_ = float(tol)
        opt = torch.optim.LBFGS([W, b], lr=1, max_iter=self.max_iter, history_size=self.history_size,
                                tolerance_grad=tol, tolerance_change=self.tolerance_change,
                                line_search_fn="strong_wolfe")
        opt.step(closure)  # returns the *initial* loss; the final one is recomputed below
        self.n_iter_ = int(opt.state[opt._params[0]].get("n_iter", 0))
        self.loss_ = float(closure())
        self.coef_ = W.detach().numpy().copy()
        self.intercept_ = (b.detach().reshape(k) - W.detach() @ mu).numpy().copy()  # undo the centring

    def solver_settings(self) -> dict:
        """The settings this fit actually used, for ``metrics.json`` / ``probe.json`` (after ``fit``)."""
        return {"solver": "torch.optim.LBFGS (lr 1, strong_wolfe line search, one full-batch step)",
                "penalty": self.penalty, "penalty_form": PENALTY_FORM[self.penalty], "C": self.C_,
                "max_iter": self.max_iter, "tolerance_grad": self.tolerance_grad_,
                "tolerance_change": self.tolerance_change, "history_size": self.history_size,
                "dtype": str(self.dtype).replace("torch.", ""), "seed": self.seed, "n_iter": self.n_iter_}

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
        return float(loss.detach()), W.grad.numpy(), b.grad.numpy()

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
                                               "tolerance_change", "history_size", "block_bytes", "n_threads")}

    def __repr__(self) -> str:
        return f"LBFGSLogisticRegression(C={self.C}, penalty={self.penalty!r}, seed={self.seed})"
