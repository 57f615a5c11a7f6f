"""Benchmark: PanDerm L-BFGS probe vs scikit-learn LogisticRegression(lbfgs), same C, same data.

Synthetic but realistic features: 7 class means on a random low-rank subspace plus
isotropic noise, scaled so that a linear probe reaches roughly 80-90% test accuracy.

Usage::

    python benchmarks/probe.py                 # 10,000 x 1,024, 7 classes, 80/20 split
    python benchmarks/probe.py --n 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def make_features(n: int, d: int, k: int, seed: int, separation: float) -> tuple[np.ndarray, np.ndarray]:
    """Class means + correlated noise, mildly imbalanced classes (float32 like extracted features)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(k, 3.0))
    y = rng.choice(k, size=n, p=weights)
    means = rng.normal(size=(k, d)) * separation / np.sqrt(d)
    # Low-rank shared structure (features of real encoders are far from isotropic).
    basis = rng.normal(size=(32, d)) / np.sqrt(32)
    noise = rng.normal(size=(n, d)) + rng.normal(size=(n, 32)) @ basis * 2.0
    x = means[y] + noise + 0.5
    return x.astype(np.float32), y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=1024)
    parser.add_argument("--k", type=int, default=7)
    parser.add_argument("--separation", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="best-of-N timings")
    parser.add_argument("--threads", type=int, default=None,
                        help="n_threads for our fit (default: torch's setting); 1 is far faster on a busy machine")
    parser.add_argument("--reference", action="store_true", help="also fit sklearn to tol 1e-8 (slow)")
    args = parser.parse_args()

    import torch
    from sklearn.linear_model import LogisticRegression

    from panderm.eval.linear import PROTOCOLS, LBFGSLogisticRegression, default_C, penalty_for

    x, y = make_features(args.n, args.d, args.k, args.seed, args.separation)
    n_train = int(0.8 * args.n)
    xtr, ytr, xte, yte = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    C = default_C(args.d, args.k)
    print(f"data: {args.n} x {args.d}, {args.k} classes, train {n_train}, test {args.n - n_train}; "
          f"C = {C:g}; torch threads = {torch.get_num_threads()}")

    def timed(make):
        best, model = float("inf"), None
        for _ in range(args.repeat):
            model = make()
            t0 = time.perf_counter()
            model.fit(xtr, ytr)
            best = min(best, time.perf_counter() - t0)
        return best, model

    t_sk, sk = timed(lambda: LogisticRegression(solver="lbfgs", C=C, max_iter=1000))
    acc_sk = float((sk.predict(xte) == yte).mean())
    print(f"sklearn lbfgs (tol 1e-4) : {t_sk:7.2f} s  acc {100 * acc_sk:.2f}%  n_iter {int(sk.n_iter_[0])}")
    if args.reference:  # sklearn run to (near) convergence: where its objective's optimum really is
        t_ref, ref = timed(lambda: LogisticRegression(solver="lbfgs", C=C, max_iter=5000, tol=1e-8))
        print(f"sklearn lbfgs (tol 1e-8) : {t_ref:7.2f} s  acc {100 * (ref.predict(xte) == yte).mean():.2f}%  "
              f"n_iter {int(ref.n_iter_[0])}  (reference optimum, not timed against)")
    for protocol in PROTOCOLS:  # release (the default): the released linear_eval.py objective
        penalty = penalty_for(protocol)
        t_ours, ours = timed(lambda: LBFGSLogisticRegression(penalty=penalty, seed=0, n_threads=args.threads))
        acc = float((ours.predict(xte) == yte).mean())
        ratio = t_sk / t_ours
        diff = 100 * (acc - acc_sk)
        print(f"ours --protocol {protocol:7s}: {t_ours:7.2f} s  acc {100 * acc:.2f}%  n_iter {ours.n_iter_}  "
              f"speed-up {ratio:.1f}x ({'ok' if ratio >= 3 else 'below'} 3x target)  "
              f"acc diff {diff:+.2f} pts ({'ok' if abs(diff) <= 0.5 else 'above'} 0.5 target)")


if __name__ == "__main__":
    main()
