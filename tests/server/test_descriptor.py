"""The descriptor's fast forms compute exactly what the original ones did, so existing indexes stay valid:
the colour histogram is numpy's histogramdd, the orientation histograms are the per-cell ones."""

from __future__ import annotations

import numpy as np
import pytest

from simages_server.embedders import _colour_histogram, _orientation_histograms


def _reference(hsv: np.ndarray, bins: tuple[int, int, int]) -> np.ndarray:
    hist, _ = np.histogramdd(hsv.reshape(-1, 3), bins=bins, range=((0, 1), (0, 1), (0, 1)))
    return np.sqrt(hist.ravel() / max(hist.sum(), 1.0))


@pytest.mark.parametrize("bins", [(8, 4, 4), (4, 3, 3)])
def test_same_counts_as_histogramdd_for_every_8_bit_value(bins):
    # Every value a decoded 8-bit channel can take, on each channel, edges (0, 85, 170, 255) included.
    levels = np.arange(256, dtype=np.float32) / 255.0
    rng = np.random.default_rng(0)
    hsv = np.stack([rng.permutation(levels) for _ in range(3)], axis=1).reshape(16, 16, 3)
    assert np.array_equal(_colour_histogram(hsv, bins), _reference(hsv, bins))


def test_same_counts_on_a_photo_like_image():
    rng = np.random.default_rng(1)
    hsv = (rng.integers(0, 256, size=(96, 96, 3)) / 255.0).astype(np.float32)
    hsv[:40, :40] = 1.0  # a saturated block: 1.0 belongs to the last bin
    assert np.array_equal(_colour_histogram(hsv, (8, 4, 4)), _reference(hsv, (8, 4, 4)))


def _orientation_reference(grey: np.ndarray, bins: int) -> np.ndarray:
    """The descriptor's original form: each cell cut out and differentiated on its own."""
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    index = np.minimum((angle / np.pi * bins).astype(int), bins - 1)
    hist = np.bincount(index.ravel(), weights=magnitude.ravel(), minlength=bins)
    return np.sqrt(hist / max(hist.sum(), 1e-12))


def test_orientation_histograms_are_the_per_cell_ones_bit_for_bit():
    rng = np.random.default_rng(2)
    grey = (rng.integers(0, 256, size=(96, 96)) / 255.0).astype(np.float32)
    grey[:24, :24] = 0.5  # a flat cell: no gradient, an all-zero histogram
    grey[30:60, 10:90] = np.linspace(0, 1, 80, dtype=np.float32)  # a ramp across cell borders
    side = 24
    cells = [grey[i * side : (i + 1) * side, j * side : (j + 1) * side] for i in range(4) for j in range(4)]
    expected = np.stack([_orientation_reference(cell, 8) for cell in cells])
    assert np.array_equal(_orientation_histograms(grey, 4, 8), expected)


def test_orientation_histograms_need_equal_cells():
    with pytest.raises(ValueError, match="equal cells"):
        _orientation_histograms(np.zeros((10, 12), np.float32), 4, 8)

