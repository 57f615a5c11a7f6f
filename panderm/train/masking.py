"""Patch masks for CAE v2 pretraining (docs/reference/pretraining.md#61-masking).

Both generators return a flat boolean mask over the patch grid in raster order
(``True`` = masked) with *exactly* ``num_masked`` patches set, because the
pretrainer gathers visible and masked tokens with a fixed count per row. They
draw only from the ``numpy.random.Generator`` passed in, so a seeded generator
gives reproducible masks (and per-worker generators keep data loading
deterministic).
"""

from __future__ import annotations

import math

import numpy as np


def _check(grid: int, num_masked: int) -> None:
    if grid < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    if not 0 <= num_masked <= grid * grid:
        raise ValueError(f"num_masked must be in [0, {grid * grid}], got {num_masked}")


class BlockMaskGenerator:
    """CAE/BEiT block-wise masking on a ``grid × grid`` patch grid.

    Each round samples up to 10 rectangles with area ``U(min_block, max_area)``
    (``max_area`` = the patches still to mask, capped by ``max_block``) and
    log-uniform aspect ratio in ``[min_aspect, 1/min_aspect]``; the first one that
    adds between 1 and ``max_area`` new patches is applied. Rounds repeat until
    exactly ``num_masked`` patches are masked.

    Deviation from CAE: CAE loops forever when no rectangle fits the last few
    patches (rare but possible, e.g. 1 patch left); after ``stall_rounds``
    rounds without progress we mask the remaining count uniformly at random
    among unmasked patches, so every call terminates with the exact count.

    Args:
        grid: Patches per side (14 for 224 px / patch 16).
        num_masked: Exact number of masked patches (98 = 50 %, CAE v2 Base and the
            PanDerm paper text; Extended Data Table 31 lists 118 for PanDerm-L).
        min_block: Smallest rectangle area sampled (CAE ``--min_mask_patches_per_block``).
        max_block: Largest rectangle area (default: ``num_masked``).
        min_aspect: Smallest aspect ratio; the largest is ``1 / min_aspect``.
        stall_rounds: Rounds without progress before the random fill.
    """

    def __init__(self, grid: int = 14, num_masked: int = 98, min_block: int = 16, max_block: int | None = None,
                 min_aspect: float = 0.3, stall_rounds: int = 100):
        _check(grid, num_masked)
        if not 0 < min_aspect <= 1:
            raise ValueError(f"min_aspect must be in (0, 1], got {min_aspect}")
        self.grid, self.num_masked, self.min_block = grid, num_masked, min_block
        self.max_block = num_masked if max_block is None else max_block
        self.log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
        self.stall_rounds = stall_rounds

    def __repr__(self) -> str:
        return (f"BlockMaskGenerator(grid={self.grid}, num_masked={self.num_masked}, "
                f"block=[{self.min_block}, {self.max_block}], aspect=exp{self.log_aspect})")

    def _place_block(self, mask: np.ndarray, max_area: int, rng: np.random.Generator) -> int:
        """One CAE round: up to 10 tries; returns the number of newly masked patches."""
        g = self.grid
        for _ in range(10):
            # Like Python's random.uniform, tolerate low > high (max_area < min_block near the end).
            target_area = self.min_block + (max_area - self.min_block) * rng.random()
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(target_area * aspect)))
            w = int(round(math.sqrt(target_area / aspect)))
            if w < g and h < g:  # strict, as in CAE: a block never spans the full grid
                top = int(rng.integers(0, g - h + 1))
                left = int(rng.integers(0, g - w + 1))
                window = mask[top: top + h, left: left + w]
                new = h * w - int(window.sum())
                if 0 < new <= max_area:
                    window[...] = True
                    return new
        return 0

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """Draw one mask: bool ``[grid * grid]``, raster order, ``True`` = masked."""
        mask = np.zeros((self.grid, self.grid), dtype=bool)
        count, stalled = 0, 0
        while count < self.num_masked:
            max_area = min(self.num_masked - count, self.max_block)
            delta = self._place_block(mask, max_area, rng)
            count += delta
            stalled = 0 if delta else stalled + 1
            if stalled >= self.stall_rounds:
                flat = mask.reshape(-1)
                free = np.flatnonzero(~flat)
                flat[rng.choice(free, size=self.num_masked - count, replace=False)] = True
                count = self.num_masked
        return mask.reshape(-1)


class RandomMaskGenerator:
    """Uniformly random patch masking with an exact count (CAE ``--ratio_mask_patches``).

    Args:
        grid: Patches per side.
        num_masked: Exact number of masked patches.
    """

    def __init__(self, grid: int = 14, num_masked: int = 98):
        _check(grid, num_masked)
        self.grid, self.num_masked = grid, num_masked

    def __repr__(self) -> str:
        return f"RandomMaskGenerator(grid={self.grid}, num_masked={self.num_masked})"

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """Draw one mask: bool ``[grid * grid]``, raster order, ``True`` = masked."""
        mask = np.zeros(self.grid * self.grid, dtype=bool)
        mask[rng.choice(mask.size, size=self.num_masked, replace=False)] = True
        return mask
