"""Sampling and collation for every trainer: the seeded epoch sampler, seeded items and skip-aware collate.

Determinism contract (what makes ``--resume`` bit-identical): every random choice is a pure
function of ``(seed, epoch, sample index)``. :class:`EpochSampler` yields ``(index, epoch)`` keys
from a permutation seeded by ``(seed, epoch)``; :class:`SeededIndexDataset` seeds the global RNGs
from the key around each item. Nothing depends on worker scheduling.
"""

from __future__ import annotations

import random
from typing import Callable, Iterator, Sequence

import numpy as np

from panderm.errors import ConfigError

BALANCE_MODES = ("none", "modality", "weight")


def skip_collate(inner: Callable | None = None):
    """Collate that drops skip records: returns ``(batch or None, [(path, reason), ...])``."""
    from torch.utils.data import default_collate

    return _SkipCollate(inner or default_collate)


class _SkipCollate:  # a class, not a closure, so it pickles into spawn workers
    def __init__(self, inner):
        self.inner = inner

    def __call__(self, records):
        good = [r for r in records if not (isinstance(r, dict) and r.get("skip"))]
        skipped = [(r["path"], r.get("reason", "")) for r in records if isinstance(r, dict) and r.get("skip")]
        return (self.inner(good) if good else None), skipped


class SeededIndexDataset:
    """Adapts an ordinary ``dataset[index]`` to ``(index, epoch)`` keys.

    Each item is produced with the global ``random``/numpy/torch CPU RNGs seeded
    from ``(seed, epoch, index)`` and restored afterwards, so random transforms
    that use them (e.g. torchvision's) are a pure function of the key.
    """

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        import torch

        index, epoch = key
        s = np.random.SeedSequence([self.seed, int(epoch), int(index)]).generate_state(2, np.uint64)
        py, npy = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(s[0]) & (2**63 - 1))
            random.seed(int(s[1]))
            np.random.seed(int(s[1]) % 2**32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py)
                np.random.set_state(npy)


class EpochSampler:
    """Per-epoch permutation from ``(seed, epoch)``, sharded across ranks (drop_last), yielding ``(index, epoch)``.

    ``balance``: ``none`` (a permutation of all items), ``modality`` (each group
    — e.g. modality — drawn equally often; small groups are cycled through full
    permutations, large ones subsampled), ``weight`` (draws with replacement,
    probability ∝ ``weights``). The epoch has ``num_samples`` draws (default:
    the dataset size); each rank takes every ``world``-th draw of the first
    ``world * (num_samples // world)``. Call :meth:`set_epoch` before iterating;
    ``start`` skips the first ``start`` samples of this rank (resume).
    """

    def __init__(self, n: int, *, seed: int = 0, rank: int = 0, world: int = 1, balance: str = "none",
                 groups: Sequence[str] | None = None, weights: Sequence[float] | None = None,
                 num_samples: int | None = None):
        if balance not in BALANCE_MODES:
            raise ConfigError(f"unknown balance mode '{balance}'", hint=f"choose one of {', '.join(BALANCE_MODES)}")
        if balance == "weight":
            w = np.asarray(weights if weights is not None else [1.0] * n, dtype=np.float64)
            if len(w) != n or w.sum() <= 0:
                raise ConfigError("balance='weight' needs one weight ≥ 0 per item, not all zero")
            self.p = w / w.sum()
        if balance == "modality" and (groups is None or len(groups) != n):
            raise ConfigError("balance='modality' needs one modality per item")
        self.n, self.seed, self.rank, self.world, self.balance = n, int(seed), rank, world, balance
        self.groups = list(groups) if groups is not None else None
        self.num_samples = int(num_samples or n)
        self.per_rank = self.num_samples // world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return self.per_rank - self.start

    def epoch_order(self, epoch: int) -> np.ndarray:
        """All ``num_samples`` draws of ``epoch`` (before sharding)."""
        rng = np.random.default_rng([self.seed, int(epoch), 0x5EED])
        if self.balance == "weight":
            return rng.choice(self.n, size=self.num_samples, replace=True, p=self.p)
        if self.balance == "modality":
            names = sorted(set(self.groups))
            members = {g: np.array([i for i, x in enumerate(self.groups) if x == g]) for g in names}
            counts = np.full(len(names), self.num_samples // len(names))
            counts[rng.permutation(len(names))[: self.num_samples % len(names)]] += 1
            parts = []
            for g, c in zip(names, counts):
                idx = members[g]
                reps = [idx[rng.permutation(len(idx))] for _ in range(-(-c // len(idx)))]
                parts.append(np.concatenate(reps)[:c])
            order = np.concatenate(parts)
            return order[rng.permutation(len(order))]
        order = rng.permutation(self.n)
        if self.num_samples > self.n:
            extra = [rng.permutation(self.n) for _ in range(-(-self.num_samples // self.n) - 1)]
            order = np.concatenate([order, *extra])
        return order[: self.num_samples]

    def indices(self, epoch: int) -> np.ndarray:
        """This rank's sample indices for ``epoch``."""
        order = self.epoch_order(epoch)[: self.per_rank * self.world]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.indices(self.epoch)[self.start :]:
            yield int(i), self.epoch
