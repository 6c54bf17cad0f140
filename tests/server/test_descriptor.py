"""The descriptor's colour histogram is exactly numpy's histogramdd, so existing indexes stay valid."""

from __future__ import annotations

import numpy as np
import pytest

from simages_server.embedders import _colour_histogram


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
