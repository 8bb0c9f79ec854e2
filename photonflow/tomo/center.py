"""Centre of rotation of parallel-beam scans.

Convention: the centre is the detector column of the rotation axis, 0-based, pixel centres at
integers (``(width−1)/2`` is the middle of the detector); the same ``center_px`` that
:func:`photonflow.tomo.recon.reconstruct` takes.

:func:`find_center_vo` — Vo, Atwood & Drakopoulos, Opt. Express 22, 19078 (2014). Over 180°, the
projection at θ + 180° is the mirror of the one at θ about the axis, so the sinogram stacked on its
left–right flipped copy, shifted by ``2·(center − (width−1)/2)`` columns, is a 360° sinogram, and
for the right centre its 2D Fourier transform is confined to a double wedge
(``|ν_angle| ≲ R·|ω_detector|`` for an object of radius R). The metric is the mean Fourier magnitude
outside the wedge; its minimum is the centre. A coarse search on integer centres (on a sinogram
downsampled to ≤ ~640 columns and ~900 rows, Gaussian-smoothed along the angles) is followed by a
fine search around the coarse minimum with sub-pixel shifts (cubic splines) of step ``step``.

:func:`find_center_360` — the axis of a 360° half-acquisition scan (axis near one detector edge):
the mean squared difference between the first half of the angles and the mirrored second half
(column u at θ + 180° is column ``2·center − u`` at θ) over their overlap, relative to their mean
square (so that faint edges of the object do not win), minimised over
half-pixel centres (where the mapping is exact) and refined by a parabola through the minimum.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage

__all__ = ["find_center_vo", "find_center_360", "double_wedge_mask", "vo_metric"]


def double_wedge_mask(
    height: int, width: int, radius_px: float, *, hor_drop: int | None = None, ver_drop: int = 1
) -> np.ndarray:
    """Mask (height, width) float32 of the fftshifted 2D spectrum of a 360° sinogram: 1 where a
    sinogram of an object of radius ``radius_px`` has (ideally) no energy, i.e. within
    ``|col − xc| ≤ ⌈|row − yc|·dv/(radius·du)⌉`` (``du = 1/width``, ``dv = (height−1)/(2π·height)``),
    0 on the ``2·hor_drop + 1`` centre rows (default min(20, 5 % of height)) and the
    ``2·ver_drop + 1`` centre columns (low frequencies, dominated by the mean)."""
    du = 1.0 / width
    dv = (height - 1.0) / (height * 2.0 * np.pi)
    ndrop = min(20, int(0.05 * height)) if hor_drop is None else int(np.clip(hor_drop, 1, height // 3))
    ver_drop = int(np.clip(ver_drop, 1, max(width // 3, 1)))
    yc = int(math.ceil((height - 1) / 2.0))
    xc = int(math.ceil((width - 1) / 2.0))
    rows = np.arange(height)
    num = np.abs(np.ceil(((rows - yc) * dv / radius_px) / du)).astype(np.int64)
    cols = np.arange(width)
    lo = np.clip(xc - num, 0, width - 1)
    hi = np.clip(xc + num, 0, width - 1)
    mask = ((cols[None, :] >= lo[:, None]) & (cols[None, :] <= hi[:, None])).astype(np.float32)
    mask[max(yc - ndrop, 0) : yc + ndrop + 1, :] = 0.0
    mask[:, max(xc - ver_drop, 0) : xc + ver_drop + 1] = 0.0
    return mask


def vo_metric(center: float, sino: np.ndarray, flipped: np.ndarray, filler: np.ndarray, mask: np.ndarray) -> float:
    """Vo's metric for one centre: mean |FFT2| × mask of the sinogram stacked on its flipped copy
    shifted by ``2·(center − (width−1)/2)`` columns (the uncovered columns filled from ``filler``,
    the sinogram flipped up–down)."""
    width = sino.shape[1]
    shift = 2.0 * (center - (width - 1) / 2.0)
    if shift == math.floor(shift):
        k = int(shift)
        moved = np.roll(flipped, k, axis=1)
        if k > 0:
            moved[:, :k] = filler[:, :k]
        elif k < 0:
            moved[:, k:] = filler[:, k:]
    else:
        moved = ndimage.shift(flipped, (0.0, shift), order=3, mode="constant", prefilter=True)
        if shift > 0:
            k = int(math.ceil(shift))
            moved[:, :k] = filler[:, :k]
        else:
            k = int(math.floor(shift))
            moved[:, k:] = filler[:, k:]
    mat = np.vstack((sino, moved))
    return float(np.mean(np.abs(np.fft.fftshift(np.fft.fft2(mat))) * mask))


def _search(sino, centers, ratio):
    nrow, ncol = sino.shape
    flipped = np.ascontiguousarray(sino[:, ::-1])
    filler = np.ascontiguousarray(sino[::-1, :])
    mask = double_wedge_mask(2 * nrow, ncol, 0.5 * ratio * ncol)
    metric = np.array([vo_metric(c, sino, flipped, filler, mask) for c in centers])
    return metric


def _downsample(sino, d_row, d_col):
    nrow, ncol = sino.shape
    r, c = nrow // d_row, ncol // d_col
    return sino[: r * d_row, : c * d_col].reshape(r, d_row, c, d_col).mean(axis=(1, 3))


def find_center_vo(
    sino,
    start: float | None = None,
    stop: float | None = None,
    *,
    step: float = 0.25,
    radius: float = 4.0,
    ratio: float = 0.5,
    downsample: bool = True,
) -> float:
    """Centre of rotation (px, 0-based) of a 180° sinogram (n_angles, width) by Vo's method.

    ``start``/``stop``: the search range (px; default ``width/2 ∓ width/16``); ``step``: the
    sub-pixel step of the fine search over ``±radius`` px around the coarse minimum; ``ratio``:
    the object's diameter as a fraction of the width (the wedge of the mask); ``downsample``:
    coarse search on a sinogram reduced to ≤ ~640 columns and ~900 rows. Warns when the minimum
    is at an end of the coarse range.
    """
    s = np.asarray(sino, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"find_center_vo: expected a 2D sinogram (n_angles, width), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("find_center_vo: the sinogram contains NaN or inf")
    nrow, ncol = s.shape
    start = ncol // 2 - ncol // 16 if start is None else start
    stop = ncol // 2 + ncol // 16 if stop is None else stop
    d_row = int(nrow // 900) if (downsample and nrow > 1000) else 1
    d_col = int(ncol // 640) if (downsample and ncol > 1000) else 1
    d_row, d_col = max(d_row, 1), max(d_col, 1)
    coarse_sino = ndimage.gaussian_filter(s, (3, 1), mode="reflect")
    if d_row > 1 or d_col > 1:
        coarse_sino = _downsample(coarse_sino, d_row, d_col)
    off = (d_col - 1) / 2.0  # centre of downsampled column J is J·d + (d−1)/2
    lo = int(np.clip(math.floor((start - off) / d_col), 0, coarse_sino.shape[1] - 1))
    hi = int(np.clip(math.ceil((stop - off) / d_col), 0, coarse_sino.shape[1] - 1))
    cands = np.arange(lo, hi + 1, dtype=np.float64)
    metric = _search(coarse_sino, cands, ratio)
    best = int(np.argmin(metric))
    if best in (0, len(cands) - 1) and len(cands) > 2:
        warnings.warn(
            f"find_center_vo: the metric's minimum is at the end of the search range [{start}, {stop}] px; widen it",
            stacklevel=2,
        )
    coarse = cands[best] * d_col + off
    radius = max(float(radius), float(d_col))
    fine_sino = ndimage.gaussian_filter(s, (2, 2), mode="reflect")
    fine = np.clip(coarse + np.arange(-radius, radius + step / 2, step), 0.0, ncol - 1.0)
    metric = _search(fine_sino, fine, ratio)
    return float(fine[int(np.argmin(metric))])


def find_center_360(sino, *, side: str | None = None, min_overlap: int = 8, max_overlap: int | None = None) -> float:
    """Rotation-axis column (px, 0-based) of a 360° half-acquisition sinogram (n_angles even, angles
    ``k·360°/n_angles``) with the axis near one edge. ``side``: "left"/"right" or None (both tried).
    Overlaps (``2·(width−1−center)+1`` columns on the right) from ``min_overlap`` to ``max_overlap``
    (default width/2) are searched."""
    s = np.asarray(sino, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] % 2:
        raise ValueError(f"find_center_360: expected a 2D sinogram with an even number of angles, got shape {s.shape}")
    nrow, ncol = s.shape
    half = nrow // 2
    a, b = s[:half], s[half : 2 * half][:, ::-1]  # b[:, v] = second half at column ncol−1−v
    max_overlap = ncol // 2 if max_overlap is None else int(max_overlap)
    sides = ("right", "left") if side is None else (side,)
    best = (np.inf, None)
    floor = 1e-3 * float(np.mean(s**2)) + 1e-30  # overlaps with (almost) no signal are not compared
    for sd in sides:
        if sd == "left":
            aa, bb = a[:, ::-1], b[:, ::-1]
        else:
            aa, bb = a, b
        # right side, overlap m columns: 2·center = 2·ncol − 1 − m, so first-half columns
        # ncol−m … ncol−1 meet second-half columns ncol−1 … ncol−m, i.e. bb[:, 0 … m−1] (exact for integer m).
        overlaps = np.arange(max(min_overlap, 2), max_overlap + 1)
        metric = np.empty(overlaps.size)
        for i, m in enumerate(overlaps):
            x, y = aa[:, ncol - m :], bb[:, :m]
            power = np.mean(x**2 + y**2)
            metric[i] = np.mean((x - y) ** 2) / power if power > floor else np.inf
        if not np.isfinite(metric).any():
            continue
        k = int(np.argmin(metric))
        m_best = float(overlaps[k])
        if 0 < k < overlaps.size - 1:
            y0, y1, y2 = metric[k - 1], metric[k], metric[k + 1]
            den = y0 - 2 * y1 + y2
            if np.isfinite(den) and den > 0:
                m_best += 0.5 * (y0 - y2) / den
        center = ncol - 1 - (m_best - 1) / 2.0
        if sd == "left":
            center = ncol - 1 - center
        if metric[k] < best[0]:
            best = (metric[k], center)
    if best[1] is None:
        raise ValueError("find_center_360: no overlap with signal found; is this a 360° half-acquisition sinogram?")
    return float(best[1])
