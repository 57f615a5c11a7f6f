"""Benchmark ``panderm_kernels.ugly_duckling`` (Numba) against pandas groupby and a per-patient numpy loop.

Synthetic features: every patient has its own mean lesion plus Gaussian noise, and about 1%
of lesions are planted far away. All three implementations compute the Euclidean distance
to the patient's mean (float64 mean), the Tukey fence ``Q3 + 1.5 IQR`` and the outliers;
the script checks that they agree, then reports time, feature bytes read per second and
the fraction of the machine's memory read bandwidth (measured in the same run) reached.

Usage::

    python benchmarks/ugly_duckling.py                      # 1,000 patients x 500 lesions x 1,024-d (2 GB)
    python benchmarks/ugly_duckling.py --patients 100 --repeats 5
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

K, MIN_LESIONS = 1.5, 4


def make_features(patients: int, lesions: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``(patients * lesions, dim)``, generated patient chunk by chunk to bound temporaries."""
    rng = np.random.default_rng(seed)
    x = np.empty((patients * lesions, dim), np.float32)
    chunk = max(1, 64 * 1024 * 1024 // max(1, lesions * dim * 4))  # ~64 MB of rows at a time
    for p0 in range(0, patients, chunk):
        p1 = min(patients, p0 + chunk)
        block = x[p0 * lesions:p1 * lesions].reshape(p1 - p0, lesions, dim)
        rng.standard_normal(block.shape, dtype=np.float32, out=block)
        block += rng.standard_normal((p1 - p0, 1, dim), dtype=np.float32) * 2.0  # per-patient mean
        far = rng.random((p1 - p0, lesions)) < 0.01
        block[far] *= 1.5  # planted ugly ducklings
    return x, np.arange(patients + 1, dtype=np.int64) * lesions


def numpy_loop(x: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward implementation: one numpy pass per patient."""
    dist = np.zeros(x.shape[0])
    out = np.zeros(x.shape[0], bool)
    for a, b in itertools.pairwise(offsets):
        f = x[a:b]
        d = np.linalg.norm(f - f.mean(0, dtype=np.float64), axis=1)
        dist[a:b] = d
        if b - a >= MIN_LESIONS:
            q1, q3 = np.percentile(d, [25, 75])
            out[a:b] = d > q3 + K * (q3 - q1)
    return dist, out


def pandas_groupby(x: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Idiomatic pandas: groupby-transform means, row norms, groupby quantiles."""
    import pandas as pd

    patient = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    df = pd.DataFrame(x.astype(np.float64, copy=False))  # float64 mean, as the other two
    df["patient"] = patient
    groups = df.groupby("patient")
    means = groups.transform("mean")
    dist = np.sqrt(((df.drop(columns="patient") - means) ** 2).sum(axis=1))
    by_patient = dist.groupby(patient)
    q = by_patient.quantile([0.25, 0.75]).unstack()
    fence = (q[0.75] + K * (q[0.75] - q[0.25])).where(by_patient.size() >= MIN_LESIONS)
    out = dist > fence.reindex(patient).to_numpy()  # NaN fence compares False
    return dist.to_numpy(), np.asarray(out)


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def read_bandwidth(x: np.ndarray, threads: int, repeats: int) -> float:
    """GB/s of ``np.add.reduce`` over ``x`` (far larger than the caches), split over ``threads``."""
    parts = np.array_split(x, threads)
    with ThreadPoolExecutor(threads) as pool:  # ufunc reductions release the GIL
        t, _ = best_of(lambda: list(pool.map(lambda part: np.add.reduce(part, axis=None), parts)), repeats)
    return x.nbytes / t / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--lesions", type=int, default=500)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="best-of-N timings")
    parser.add_argument("--pandas-patients", type=int, default=100,
                        help="time pandas on the first N patients and scale linearly (0: all); "
                             "pandas needs several float64 copies of the features")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numba
    from panderm_kernels import ugly_duckling

    threads = numba.get_num_threads()
    t0 = time.perf_counter()
    x, offsets = make_features(args.patients, args.lesions, args.dim, args.seed)
    gb = x.nbytes / 1e9
    print(f"data: {args.patients} patients x {args.lesions} lesions x {args.dim}-d float32 = {gb:.2f} GB "
          f"(generated in {time.perf_counter() - t0:.1f} s); {os.cpu_count()} CPUs, numba threads {threads}")

    bw1 = read_bandwidth(x, 1, args.repeats)
    bwn = read_bandwidth(x, threads, args.repeats)
    print(f"memory read bandwidth (np.add.reduce over the features): {bw1:.1f} GB/s 1 thread, "
          f"{bwn:.1f} GB/s {threads} threads")

    t0 = time.perf_counter()
    ugly_duckling(x[:8], np.array([0, 8]), backend="numba")
    compile_s = time.perf_counter() - t0
    print(f"numba JIT compile (first call, incl. import): {compile_s:.2f} s")

    rows = {}
    rows["numba"] = best_of(lambda: ugly_duckling(x, offsets, k=K, min_lesions=MIN_LESIONS, backend="numba"),
                            args.repeats)
    numba.set_num_threads(1)
    rows["numba 1 thread"] = best_of(lambda: ugly_duckling(x, offsets, k=K, min_lesions=MIN_LESIONS, backend="numba"),
                                     args.repeats)
    numba.set_num_threads(threads)
    rows["numpy loop"] = best_of(lambda: numpy_loop(x, offsets), args.repeats)

    sub = args.pandas_patients if 0 < args.pandas_patients < args.patients else args.patients
    scale = args.patients / sub
    t_pd, res_pd = best_of(lambda: pandas_groupby(x[:offsets[sub]], offsets[:sub + 1]), 1)
    rows["pandas groupby"] = (t_pd * scale, res_pd)

    ref_d, ref_o = rows["numba"][1]
    print("\nagreement with numba (outliers flagged by numba: "
          f"{int(ref_o.sum())} of {ref_o.size}):")
    for name in ("numba 1 thread", "numpy loop", "pandas groupby"):
        d, o = rows[name][1]
        n = d.size
        rel = float(np.max(np.abs(d - ref_d[:n]) / ref_d[:n]))
        mismatch = int((o != ref_o[:n]).sum())
        print(f"  {name:15s} max rel distance diff {rel:.1e}, outlier mismatches {mismatch} of {n}")
        if mismatch or rel > 1e-6:
            raise SystemExit(f"{name} disagrees with the numba kernel")

    note = f" (timed on {sub} patients, scaled x{scale:g})" if scale != 1 else ""
    print(f"\n{'implementation':16s} {'time s':>9s} {'GB/s':>7s} {'of bw':>6s}")
    for name, (t, _) in rows.items():
        print(f"{name:16s} {t:9.3f} {gb / t:7.2f} {gb / t / bwn:6.1%}" + (note if name == "pandas groupby" else ""))
    tn = rows["numba"][0]
    print(f"\nspeed-up of numba: {rows['pandas groupby'][0] / tn:.1f}x vs pandas groupby (target >= 10x), "
          f"{rows['numpy loop'][0] / tn:.1f}x vs numpy loop (target >= 2x)")
    print(f"numba reaches {gb / tn / bwn:.0%} of the {threads}-thread read bandwidth ({bwn:.1f} GB/s)")


if __name__ == "__main__":
    main()
