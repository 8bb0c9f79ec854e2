"""Sinogram operations before and after reconstruction.

Conventions as in :mod:`photonflow.tomo.recon`: sinograms are (n_angles, width) or
(n_slices, n_angles, width) arrays of line integrals (−ln transmission); detector columns are
0-based with pixel centres at integers; ``center_px`` is the rotation-axis column; angles in degrees.

* :func:`minus_log` — line integrals from transmission (flat/dark normalisation is
  :func:`photonflow.tomo.preprocess.flat_dark_normalise`), with a floor so dead pixels give a large
  finite value instead of inf/NaN.
* :func:`sino_360_to_180` — a 360° half-acquisition sinogram (axis near one detector edge) to a
  180° sinogram twice as wide, with a linear blend across the overlap.
* :func:`pad_sinogram` — edge padding to a given width.
* Ring removal on the sinogram: :func:`remove_offset_columns` (detect columns that sit at a
  constant offset from their neighbours in every row, replace them by interpolation from their
  neighbours; :func:`stripe_statistic`) for dead and hot columns; :func:`remove_rings` runs it and
  then Vo's sorting-based filter (:mod:`photonflow.tomo.preprocess`, which holds Vo et al. 2018's
  stripe methods).
* :func:`ring_metric` — how ringy a reconstructed slice is: the RMS of the fine radial structure
  of its azimuthal mean (the radial profile minus its median filter), in the slice's units.
* :func:`apply_circle_mask`, :func:`to_uint` (float → uint16/uint8 with a stated range).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "minus_log",
    "sino_360_to_180",
    "pad_sinogram",
    "remove_offset_columns",
    "stripe_statistic",
    "remove_rings",
    "ring_metric",
    "apply_circle_mask",
    "ScaledVolume",
    "to_uint",
]


def minus_log(transmission, floor: float = 1e-6) -> np.ndarray:
    """Line integrals ``−ln(max(T, floor))`` (float32); NaN transmissions also become −ln(floor)."""
    t = np.asarray(transmission, dtype=np.float32)
    t = np.where(np.isnan(t), floor, t)
    return -np.log(np.maximum(t, np.float32(floor)))


def sino_360_to_180(sino, center_px: float, *, side: str | None = None):
    """Convert a 360° sinogram (n_angles, width) or (n_slices, n_angles, width) with angles
    ``k · 360°/n_angles`` (n_angles even) to a 180° sinogram.

    The projection at θ + 180°, mirrored, continues the one at θ on the other side of the axis:
    its column u lands at ``2·center_px − u``. ``side``: where the axis is ("right": near the last
    column, "left": near column 0; default: the side of the detector centre it is on). The mirrored
    half is resampled (linear interpolation) when ``2·center_px`` is not an integer, and the two
    halves are blended linearly across the overlap. Returns ``(sino_180, center_180)``: the new
    sinogram (…, n_angles/2, new_width) float32 and the axis column in it.
    """
    s = np.asarray(sino, dtype=np.float32)
    squeeze = s.ndim == 2
    if squeeze:
        s = s[None]
    n_slices, n_angles, width = s.shape
    if n_angles % 2:
        raise ValueError(f"sino_360_to_180: need an even number of angles over 360°, got {n_angles}")
    c = float(center_px)
    if not 0 <= c <= width - 1:
        raise ValueError(f"sino_360_to_180: center_px={center_px} outside the detector [0, {width - 1}]")
    if side is None:
        side = "right" if c >= (width - 1) / 2.0 else "left"
    half = n_angles // 2
    first, second = s[:, :half], s[:, half : 2 * half]
    if side == "left":  # mirror the problem: axis on the right of the flipped detector
        first, second = first[..., ::-1], second[..., ::-1]
        c = width - 1 - c
    elif side != "right":
        raise ValueError(f"sino_360_to_180: side must be 'left' or 'right', got {side!r}")
    new_width = int(np.floor(2.0 * c)) + 1
    new_width = max(new_width, width)
    cols = np.arange(new_width, dtype=np.float64)
    # mirrored half: output column U takes second[2c − U]
    src = 2.0 * c - cols
    valid2 = (src >= 0) & (src <= width - 1)
    i0 = np.clip(np.floor(src).astype(np.int64), 0, width - 2)
    t = (src - i0).astype(np.float32)
    mirrored = second[..., i0] * (1 - t) + second[..., i0 + 1] * t
    valid1 = cols <= width - 1
    out = np.zeros((n_slices, half, new_width), dtype=np.float32)
    # weights: 1 where only one half sees the column, a linear ramp across the overlap
    overlap = valid1 & valid2
    w1 = valid1.astype(np.float64)
    if overlap.any():
        lo, hi = cols[overlap][0], cols[overlap][-1]
        ramp = (hi - cols) / max(hi - lo, 1.0)
        w1 = np.where(overlap, ramp, w1)
    w2 = np.where(valid2, 1.0 - w1, 0.0)
    w1 = w1.astype(np.float32)
    w2 = w2.astype(np.float32)
    out[..., :width] += first * w1[:width]
    out += mirrored * w2
    new_center = c
    if side == "left":
        out = out[..., ::-1]
        new_center = new_width - 1 - c
    out = np.ascontiguousarray(out)
    return (out[0] if squeeze else out), float(new_center)


def pad_sinogram(sino, width: int, *, mode: str = "edge"):
    """Pad the detector axis to ``width`` columns, half on each side (the extra one on the right),
    with numpy's ``mode`` (edge by default). Returns ``(padded, left)``: the rotation axis moves to
    ``center_px + left``."""
    s = np.asarray(sino)
    w = s.shape[-1]
    if width < w:
        raise ValueError(f"pad_sinogram: target width {width} is smaller than the sinogram width {w}")
    left = (width - w) // 2
    widths = [(0, 0)] * (s.ndim - 1) + [(left, width - w - left)]
    return np.pad(s, widths, mode=mode), left


def _per_sinogram(func, sino, *args, **kwargs):
    s = np.asarray(sino, dtype=np.float32)
    if s.ndim == 2:
        return func(s, *args, **kwargs)
    return np.stack([func(x, *args, **kwargs) for x in s])


def stripe_statistic(sino, size: int = 31) -> tuple[np.ndarray, np.ndarray]:
    """Per column j, the median over the angles of ``S[:, j] − (S[:, j−1] + S[:, j+1])/2`` (a stripe
    is a constant offset in every row; the object's own edges move with θ and mostly average out of
    the median), and its noise level per column: the larger of the pixel noise (1.2533 · 1.4826 ·
    MAD of the per-pixel values / √n_angles) and the local spread of the statistic itself (1.4826 ·
    median over ``size`` columns of its deviation from the local median), so that structure-rich
    regions need a larger offset. Returns (statistic (width,), sigma (width,))."""
    s = np.asarray(sino, dtype=np.float64)
    padded = np.pad(s, ((0, 0), (1, 1)), mode="edge")
    second = s - 0.5 * (padded[:, :-2] + padded[:, 2:])
    stat = np.median(second, axis=0)
    mad = np.median(np.abs(second - np.median(second))) * 1.4826
    pixel_sigma = 1.2533 * mad / np.sqrt(s.shape[0])
    local = 1.4826 * ndimage.median_filter(
        np.abs(stat - ndimage.median_filter(stat, size, mode="reflect")), size, mode="reflect"
    )
    return stat, np.maximum(local, pixel_sigma)


def _dead_2d(sino, snr, min_deviation):
    stat, sigma = stripe_statistic(sino)
    bad = np.abs(stat) > snr * np.maximum(sigma, min_deviation)
    bad = ndimage.binary_dilation(bad, iterations=1)
    if not bad.any() or bad.all():
        return sino.copy()
    good = np.nonzero(~bad)[0]
    out = sino.copy()
    badc = np.nonzero(bad)[0]
    for r in range(sino.shape[0]):
        out[r, badc] = np.interp(badc, good, sino[r, good])
    return out


def remove_offset_columns(sino, snr: float = 6.0, *, min_deviation: float = 1e-4) -> np.ndarray:
    """Find narrow stripes (dead, hot and miscalibrated columns, 1–2 px wide) with
    :func:`stripe_statistic` — columns whose median offset from their neighbours exceeds ``snr``
    times its noise level (at least ``min_deviation``; on the 256-px phantom with 5000 photons a 2-px
    pair of columns with gain 1.08 stands at 7.7σ, the clean data reach 4.2σ) — widen the set by one column each side and
    replace those columns in every row by linear interpolation between the nearest good columns."""
    return _per_sinogram(_dead_2d, sino, float(snr), float(min_deviation))


def remove_rings(sino, *, snr: float = 6.0, size_sorting: int = 21) -> np.ndarray:
    """Both stripe filters: :func:`remove_offset_columns`, then Vo's sorting-based filter
    (:func:`photonflow.tomo.preprocess.remove_stripe_sorting`) of width ``size_sorting``."""
    from .preprocess import remove_stripe_sorting

    return _per_sinogram(remove_stripe_sorting, remove_offset_columns(sino, snr=snr), int(size_sorting))


def ring_metric(recon, *, size: int = 9, r_min: float = 3.0, r_max: float | None = None) -> float:
    """Ring artefact level of a slice (width, width) (or the mean over a stack): the RMS, over
    integer radii ``r_min ≤ r ≤ r_max`` (px, default r_max = 0.95 · width/2), of the azimuthal mean
    minus its median filter over ``size`` radii. Same units as the slice (μ, 1/px). Rings are thin
    circles about the slice centre, so they stand out of the azimuthal mean; the object's own
    structure mostly averages out and is removed by the median filter."""
    img = np.asarray(recon, dtype=np.float64)
    if img.ndim == 3:
        return float(np.mean([ring_metric(x, size=size, r_min=r_min, r_max=r_max) for x in img]))
    n = img.shape[-1]
    c = (n - 1) / 2.0
    yy, xx = np.mgrid[0:n, 0:n]
    r = np.rint(np.hypot(xx - c, yy - c)).astype(np.int64)
    counts = np.bincount(r.ravel())
    sums = np.bincount(r.ravel(), weights=img.ravel())
    profile = sums / np.maximum(counts, 1)
    r_max = 0.95 * n / 2.0 if r_max is None else r_max
    resid = profile - ndimage.median_filter(profile, size=size, mode="nearest")
    radii = np.arange(profile.size)
    sel = (radii >= r_min) & (radii <= r_max)
    return float(np.sqrt(np.mean(resid[sel] ** 2)))


def apply_circle_mask(recon, ratio: float = 1.0, value: float = 0.0) -> np.ndarray:
    """Set the pixels outside the circle of radius ``ratio · width/2`` about the slice centre to
    ``value``; works on (width, width) or (n, width, width)."""
    out = np.array(recon, copy=True)
    n = out.shape[-1]
    c = (n - 1) / 2.0
    yy, xx = np.mgrid[0:n, 0:n]
    outside = (xx - c) ** 2 + (yy - c) ** 2 > (ratio * n / 2.0) ** 2
    out[..., outside] = value
    return out


@dataclass
class ScaledVolume:
    """An integer volume and the float range it stands for: value ``v`` maps to
    ``vmin + v · (vmax − vmin) / maxint``. ``n_low``/``n_high``: voxels clipped below/above."""

    data: np.ndarray
    vmin: float
    vmax: float
    n_low: int
    n_high: int

    def to_float(self) -> np.ndarray:
        """The float values (float32) the integers stand for."""
        maxint = np.iinfo(self.data.dtype).max
        return (self.vmin + self.data.astype(np.float32) * np.float32((self.vmax - self.vmin) / maxint)).astype(
            np.float32
        )


def to_uint(
    volume,
    vmin: float | None = None,
    vmax: float | None = None,
    *,
    dtype=np.uint16,
    percentiles: tuple[float, float] = (0.01, 99.99),
) -> ScaledVolume:
    """Scale a float volume linearly to ``dtype`` (uint16 or uint8): ``vmin`` → 0, ``vmax`` → the
    largest integer, values outside clipped (and counted). A missing bound is the given percentile
    of the finite values. NaN maps to 0. The range is recorded in the result."""
    v = np.asarray(volume, dtype=np.float32)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.uint16), np.dtype(np.uint8)):
        raise ValueError(f"to_uint: dtype must be uint16 or uint8, got {dtype}")
    finite = v[np.isfinite(v)]
    if vmin is None or vmax is None:
        if finite.size == 0:
            raise ValueError("to_uint: the volume has no finite values to take a range from")
        lo, hi = np.percentile(finite, percentiles)
        vmin = float(lo) if vmin is None else vmin
        vmax = float(hi) if vmax is None else vmax
    vmin, vmax = float(vmin), float(vmax)
    if not vmax > vmin:
        raise ValueError(f"to_uint: empty intensity range [{vmin}, {vmax}]")
    maxint = np.iinfo(dtype).max
    n_low = int(np.count_nonzero(v < vmin))
    n_high = int(np.count_nonzero(v > vmax))
    scaled = (np.nan_to_num(v, nan=vmin) - vmin) * (maxint / (vmax - vmin))
    data = np.clip(np.rint(scaled), 0, maxint).astype(dtype)
    return ScaledVolume(data=data, vmin=vmin, vmax=vmax, n_low=n_low, n_high=n_high)
