"""Projection stitching: known integer and sub-pixel offsets are found; the blend is seamless."""

import numpy as np
import pytest
from scipy import ndimage

from photonflow.tomo.stitch import StitchError, blend, find_offset, offset_guesses, stitch_offsets


def _wide(n=12, rows=16, width=330, seed=0):
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.normal(size=(n, rows, width)), (0, 1.5, 3.0))
    return (1.0 + img / np.abs(img).max()).astype(np.float64)


def _cut(wide, start: float, cols: int):
    """Columns start .. start + cols − 1 of the wide projections (sub-pixel by cubic splines)."""
    if float(start).is_integer():
        return wide[..., int(start) : int(start) + cols].copy()
    shifted = ndimage.shift(wide, (0, 0, -start), order=3, mode="nearest")
    return shifted[..., :cols]


def test_integer_offsets_found_exactly_and_blend_is_seamless():
    wide = _wide()
    starts = [0, 100, 205]
    scans = [_cut(wide, s, 125) for s in starts]
    res = stitch_offsets(scans, guesses=[93.0, 111.0])  # motors off by 7 and 6 px
    assert res.offsets == [100.0, 105.0]
    assert res.width == 330
    out = blend(scans, res.offsets)
    assert np.abs(out - wide[..., :330]).max() < 1e-6


@pytest.mark.parametrize("method", ["difference", "phase"])
def test_subpixel_offsets_within_a_tenth_of_a_pixel(method):
    wide = _wide(seed=1)
    starts = [0.0, 100.3, 195.75]
    scans = [_cut(wide, s, 125) for s in starts]
    res = stitch_offsets(scans, guesses=[95.0, 99.0], method=method)
    err = np.abs(np.array(res.offsets) - np.diff(starts))
    print(method, res.offsets, err)
    assert err.max() < 0.1
    out = blend(scans, res.offsets)
    inner = slice(5, 300)
    assert np.abs(out[..., inner] - wide[..., inner]).max() < 0.05 * np.ptp(wide)


def test_guesses_from_motors_and_errors():
    assert np.allclose(offset_guesses([0.0, 0.65, 1.3], pixel_size_um=6.5), [100.0, 100.0])
    wide = _wide()
    a, b = _cut(wide, 0, 100), _cut(wide, 60, 100)
    with pytest.raises(StitchError, match="no overlap"):
        find_offset(a, b, guess=300, window=5)
    with pytest.raises(StitchError, match="need 1 offset"):
        stitch_offsets([a, b], guesses=[])
    with pytest.raises(StitchError, match="differ"):
        stitch_offsets([a, b[:3]], guesses=[60])
