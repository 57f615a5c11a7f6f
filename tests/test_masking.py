"""Patch-mask generators for CAE v2 pretraining: exact counts, block structure, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from panderm.train.masking import BlockMaskGenerator, RandomMaskGenerator


def _adjacent_pairs(mask: np.ndarray, grid: int = 14) -> int:
    m = mask.reshape(grid, grid)
    return int((m[:, 1:] & m[:, :-1]).sum() + (m[1:] & m[:-1]).sum())


@pytest.mark.parametrize("num_masked", [1, 16, 30, 98, 118, 190])
def test_block_mask_has_exact_count(num_masked):
    gen = BlockMaskGenerator(num_masked=num_masked)
    rng = np.random.default_rng(num_masked)
    for _ in range(200):
        mask = gen(rng)
        assert mask.dtype == bool and mask.shape == (196,)
        assert mask.sum() == num_masked


def test_block_mask_random_fill_when_stalled():
    # With a huge minimum block nothing fits once a few patches remain: the fallback must finish exactly.
    gen = BlockMaskGenerator(num_masked=150, min_block=120, stall_rounds=5)
    rng = np.random.default_rng(0)
    assert all(gen(rng).sum() == 150 for _ in range(20))


def test_masks_are_deterministic_given_the_rng():
    for gen in (BlockMaskGenerator(), RandomMaskGenerator()):
        a = [gen(np.random.default_rng(7)) for _ in range(3)]
        assert all(np.array_equal(a[0], m) for m in a)
        b = gen(np.random.default_rng(8))
        assert not np.array_equal(a[0], b)


def test_block_masks_are_more_clustered_than_random():
    block, rand = BlockMaskGenerator(num_masked=98), RandomMaskGenerator(num_masked=98)
    rng = np.random.default_rng(0)
    block_pairs = np.mean([_adjacent_pairs(block(rng)) for _ in range(200)])
    rand_pairs = np.mean([_adjacent_pairs(rand(rng)) for _ in range(200)])
    # Random 50 % masks have ~0.25 · 364 ≈ 91 adjacent masked pairs; blocks share far more edges.
    assert 80 < rand_pairs < 105
    assert block_pairs > 1.3 * rand_pairs


def test_block_mask_covers_the_grid_evenly():
    gen = BlockMaskGenerator(num_masked=98)
    rng = np.random.default_rng(1)
    freq = np.mean([gen(rng) for _ in range(400)], axis=0)
    assert freq.mean() == pytest.approx(0.5)
    # Every position gets masked sometimes and left visible sometimes. Block masking (as in BEiT/CAE)
    # masks corners less often than the centre, so only loose bounds hold.
    assert freq.min() > 0.02 and freq.max() < 0.95
    grid = freq.reshape(14, 14)
    assert grid[4:10, 4:10].mean() > grid[[0, 0, -1, -1], [0, -1, 0, -1]].mean()


def test_random_mask_exact_count():
    gen = RandomMaskGenerator(grid=14, num_masked=118)
    rng = np.random.default_rng(0)
    assert all(gen(rng).sum() == 118 for _ in range(50))


@pytest.mark.parametrize("kwargs", [dict(num_masked=197), dict(num_masked=-1), dict(grid=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        BlockMaskGenerator(**kwargs)
    with pytest.raises(ValueError):
        RandomMaskGenerator(**kwargs)
