"""Projection preprocessing for parallel-beam tomography (pass 1 of the tomography flow).

Every function works on a chunk of projections ``(n_proj, rows, cols)`` (or one sinogram
``(n_angles, cols)`` for the stripe filters) in float32 and returns a new array:

* :func:`flat_dark_normalise` — ``(P − D) / (F − D)`` with the mean dark and the flats taken
  before (and optionally after) the scan, interpolated linearly in projection index;
* :func:`i0_factors` / :func:`apply_i0` — top-up (I0) correction from a monitor or an air region;
* :func:`remove_zingers` — isolated bright outliers replaced by the local median;
* :func:`remove_stripe_sorting`, :func:`remove_large_stripes`, :func:`remove_dead_stripes`,
  :func:`remove_all_stripes` — the stripe (ring-artifact) removal methods of Vo, Atwood and
  Drakopoulos, Opt. Express 26, 28396 (2018), applied to sinograms;
* :func:`air_correction` — each row divided by its mean over air columns;
* :func:`paganin_filter` — single-material phase retrieval (Paganin et al., J. Microsc. 206, 33
  (2002)) with δ/β, energy (keV), propagation distance (mm) and pixel size (µm).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from photonflow.errors import InputError

HC_KEV_ANGSTROM = 12.398419843320026  # h c in keV·Å


class PreprocessError(InputError, ValueError):
    """Bad input to a preprocessing step (shapes, missing flats/darks, non-finite values)."""


# --------------------------------------------------------------------------- flat / dark
def flat_dark_normalise(
    proj, flats, darks, flats_after=None, first_index: int = 0, n_total: int | None = None, floor: float = 1e-6
) -> np.ndarray:
    """``(P − D̄) / (F − D̄)`` per pixel.

    proj: (n, rows, cols) projections ``first_index .. first_index + n − 1`` of a scan of
    ``n_total`` projections; flats: (k, rows, cols) taken before the scan; flats_after: taken after
    it (then the flat of projection i is interpolated linearly between the two means, by i /
    (n_total − 1)); darks: (m, rows, cols). Denominators below ``floor`` are raised to it (dead pixels).
    """
    proj = np.asarray(proj, dtype=np.float32)
    if proj.ndim != 3:
        raise PreprocessError(f"projections must be (n, rows, cols), got shape {proj.shape}")
    for name, frames in (("flats", flats), ("darks", darks)):
        if frames is None or len(frames) == 0:
            raise PreprocessError(f"no {name}: flat/dark normalisation needs at least one of each")
        if np.asarray(frames).shape[1:] != proj.shape[1:]:
            raise PreprocessError(f"{name} have frames of {np.asarray(frames).shape[1:]}, projections {proj.shape[1:]}")
    dark = np.mean(np.asarray(darks, dtype=np.float32), axis=0)
    before = np.mean(np.asarray(flats, dtype=np.float32), axis=0) - dark
    out = proj - dark
    if flats_after is None or len(flats_after) == 0:
        return out / np.maximum(before, floor)
    after = np.mean(np.asarray(flats_after, dtype=np.float32), axis=0) - dark
    n_total = n_total or proj.shape[0]
    for k in range(proj.shape[0]):
        w = (first_index + k) / max(n_total - 1, 1)
        out[k] /= np.maximum((1 - w) * before + w * after, floor)
    return out


# --------------------------------------------------------------------------- I0 (top-up)
def i0_factors(proj=None, monitor=None, air_columns: tuple[int, int] | None = None, reference: float | None = None):
    """Per-projection intensity factors (1 = nominal), to divide the normalised projections by.

    From a monitor (counts per projection; the reference is its median unless given), or from an
    air region ``air_columns = (start, stop)`` of the normalised projections (mean of that region,
    which should be 1 without beam changes)."""
    if monitor is not None:
        m = np.asarray(monitor, dtype=np.float64)
        if not np.all(np.isfinite(m)) or np.any(m <= 0):
            raise PreprocessError("monitor values must be finite and positive")
        return m / (np.median(m) if reference is None else reference)
    if air_columns is None or proj is None:
        raise PreprocessError("I0 correction needs a monitor or an air region (air_columns) of the projections")
    a, b = air_columns
    region = np.asarray(proj)[:, :, a:b]
    if region.size == 0:
        raise PreprocessError(
            f"air region columns {a}:{b} are empty for projections of width {np.asarray(proj).shape[2]}"
        )
    f = region.mean(axis=(1, 2), dtype=np.float64)
    return f / (1.0 if reference is None else reference)


def apply_i0(proj, factors) -> np.ndarray:
    """Divide each projection by its I0 factor."""
    proj = np.asarray(proj, dtype=np.float32)
    f = np.asarray(factors, dtype=np.float32)
    if f.shape != (proj.shape[0],):
        raise PreprocessError(f"{f.shape[0] if f.ndim else 1} I0 factors for {proj.shape[0]} projections")
    return proj / f[:, None, None]


# --------------------------------------------------------------------------- zingers
def _reflect(index, n: int):
    """Indices outside 0..n-1 mirrored about the edge (ndimage's "reflect": d c b a | a b c d | d c b a)."""
    index = np.where(index < 0, -index - 1, index)
    return np.where(index >= n, 2 * n - index - 1, index)


def remove_zingers(proj, threshold: float = 0.1, size: int = 3) -> np.ndarray:
    """Replace pixels exceeding the median of their ``size`` × ``size`` neighbourhood (within the
    projection) by more than ``threshold`` (absolute, in the units of ``proj``) with that median
    (tomopy's ``remove_outlier``; on normalised projections 0.1 means 10 % of the beam).

    The median is computed only where it can matter: a pixel more than ``threshold`` above its
    median is more than that above the neighbourhood's minimum (a cheap separable filter), so only
    those candidates get a median — the same result as filtering everything, ~20× faster."""
    proj = np.asarray(proj, dtype=np.float32)
    low = ndimage.minimum_filter1d(
        ndimage.minimum_filter1d(proj, size, axis=1, mode="reflect"), size, axis=2, mode="reflect"
    )
    cand = np.argwhere(proj - low > threshold)
    out = proj.copy()
    if len(cand) == 0:
        return out
    k, r, c = cand.T
    off = np.arange(size) - size // 2
    rows = _reflect(r[:, None] + off[None, :], proj.shape[1])  # ndimage's "reflect" edge
    cols = _reflect(c[:, None] + off[None, :], proj.shape[2])
    windows = proj[k[:, None, None], rows[:, :, None], cols[:, None, :]]
    med = np.median(windows.reshape(len(cand), -1), axis=1).astype(np.float32)
    hit = proj[k, r, c] - med > threshold
    out[k[hit], r[hit], c[hit]] = med[hit]
    return out


# --------------------------------------------------------------------------- stripes (Vo et al. 2018)
def _sort_columns(sino):
    idx = np.argsort(sino, axis=0, kind="stable")
    return np.take_along_axis(sino, idx, axis=0), idx


def _unsort_columns(sorted_sino, idx):
    out = np.empty_like(sorted_sino)
    np.put_along_axis(out, idx, sorted_sino, axis=0)
    return out


_RUNNING_MEDIAN = None


def _running_median_kernel():
    """numba kernel: the median of every ``size``-long window of each row of a reflect-padded
    array, with a sorted window updated by one removal and one insertion per step (O(size))."""
    global _RUNNING_MEDIAN
    if _RUNNING_MEDIAN is None:
        import numba

        @numba.njit(cache=True)
        def running_median(padded, size, out):
            n_rows, n_out = out.shape
            h = size // 2
            window = np.empty(size, dtype=padded.dtype)
            for r in range(n_rows):
                window[:] = np.sort(padded[r, :size])
                out[r, 0] = window[h]
                for j in range(1, n_out):
                    old = padded[r, j - 1]
                    new = padded[r, j - 1 + size]
                    i = np.searchsorted(window, old)  # remove the value leaving the window
                    while i < size - 1:
                        window[i] = window[i + 1]
                        i += 1
                    i = size - 1  # insert the entering one, keeping the window sorted
                    while i > 0 and window[i - 1] > new:
                        window[i] = window[i - 1]
                        i -= 1
                    window[i] = new
                    out[r, j] = window[h]
            return out

        _RUNNING_MEDIAN = running_median
    return _RUNNING_MEDIAN


def median_filter_rows(x, size: int) -> np.ndarray:
    """``ndimage.median_filter(x, size=(1, size), mode="reflect")`` for a 2D float32 array (odd
    ``size``), computed with a running sorted window: the same values, ~10× faster for size 21."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if size % 2 == 0 or size < 1:
        raise ValueError(f"median window must be odd, got {size}")
    if size == 1 or x.shape[1] < size:
        return ndimage.median_filter(x, size=(1, size), mode="reflect")
    h = size // 2
    padded = np.pad(x, ((0, 0), (h, h)), mode="symmetric")  # ndimage's "reflect"
    return _running_median_kernel()(padded, size, np.empty_like(x))


def remove_stripe_sorting(sino, size: int = 21, dim: int = 1) -> np.ndarray:
    """Algorithm 3 (sorting-based, small and medium stripes): sort every detector column along the
    angles, median-filter across the detector (``dim=1``: 1D width ``size``; ``dim=2``: 2D
    ``size`` × ``size``), put the values back in their original order."""
    sino = np.asarray(sino, dtype=np.float32)
    s, idx = _sort_columns(sino)
    smooth = median_filter_rows(s, size) if dim == 1 else ndimage.median_filter(s, size=(size, size), mode="reflect")
    return _unsort_columns(smooth, idx)


def detect_stripes(values, snr: float = 3.0) -> np.ndarray:
    """Outliers of a normalised per-column profile (Vo et al.'s detection): a line is fitted to the
    middle half of the sorted values; the noise level is that line's rise over the profile; values
    more than ``snr``/2 noise levels beyond its ends are stripes. Returns a bool mask."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    srt = np.sort(v)
    x = np.arange(n)
    drop = int(0.25 * n)
    slope, intercept = np.polyfit(x[drop : n - drop - 1], srt[drop : n - drop - 1], 1)
    y_end = intercept + slope * x[-1]
    noise = max(abs(y_end - intercept), 1e-6)
    mask = np.zeros(n, bool)
    if abs(srt[-1] - y_end) / noise >= snr:
        mask |= v > y_end + noise * snr * 0.5
    if abs(intercept - srt[0]) / noise >= snr:
        mask |= v <= intercept - noise * snr * 0.5
    return mask


def remove_large_stripes(
    sino, snr: float = 3.0, size: int = 51, drop_ratio: float = 0.1, norm: bool = True
) -> np.ndarray:
    """Algorithm 5 (large stripes): columns whose mean (over sorted values, the brightest and
    darkest ``drop_ratio``/2 of the angles left out) stands out of its median-filtered profile are
    detected (:func:`detect_stripes`), optionally normalised by that ratio, and replaced by the
    sorting-based correction with a 2D median of width ``size``."""
    sino = np.asarray(sino, dtype=np.float32)
    n = sino.shape[0]
    drop = int(0.5 * drop_ratio * n)
    s, idx = _sort_columns(sino)
    profile = np.mean(s[drop : n - drop], axis=0)
    smooth = ndimage.median_filter(profile, size, mode="reflect")
    ratio = np.divide(profile, smooth, out=np.ones_like(profile), where=smooth != 0)
    mask = ndimage.binary_dilation(detect_stripes(ratio, snr), iterations=2)
    out = sino.copy()
    if norm:
        out = out / np.where(ratio != 0, ratio, 1.0)[None, :]
        s, idx = _sort_columns(out)
    corrected = _unsort_columns(median_filter_rows(s, size), idx)
    out[:, mask] = corrected[:, mask]
    return out


def remove_dead_stripes(sino, snr: float = 3.0, size: int = 51, residual: bool = True) -> np.ndarray:
    """Algorithm 6 (unresponsive and fluctuating stripes): a column that varies along the angles
    much less (dead) or more than its neighbours is detected from the ratio of its total variation
    to the median-filtered profile of that, and replaced by linear interpolation from the good
    columns; then (``residual``) :func:`remove_large_stripes`."""
    sino = np.asarray(sino, dtype=np.float32)
    smooth = ndimage.uniform_filter1d(sino, 10, axis=0, mode="reflect")
    variation = np.sum(np.abs(sino - smooth), axis=0)
    background = ndimage.median_filter(variation, size, mode="reflect")
    ratio = np.divide(background, variation, out=np.zeros_like(background), where=variation != 0)
    mask = detect_stripes(ratio, snr) | (variation == 0)
    mask = ndimage.binary_dilation(mask, iterations=1)
    mask[:2] = mask[-2:] = False  # the edges have no neighbours on one side
    out = sino.copy()
    good = np.flatnonzero(~mask)
    if mask.any() and len(good) > 1:
        cols = np.arange(sino.shape[1])
        for r in range(sino.shape[0]):
            out[r, mask] = np.interp(cols[mask], good, sino[r, good])
    return remove_large_stripes(out, snr, size) if residual else out


def remove_all_stripes(sino, snr: float = 3.0, la_size: int = 51, sm_size: int = 21) -> np.ndarray:
    """Dead, then large, then small-to-medium stripes (Vo et al.'s recommended combination)."""
    out = remove_dead_stripes(sino, snr, la_size, residual=False)
    out = remove_large_stripes(out, snr, la_size)
    return remove_stripe_sorting(out, sm_size)


STRIPE_METHODS = {
    "sorting": remove_stripe_sorting,
    "large": remove_large_stripes,
    "dead": remove_dead_stripes,
    "all": remove_all_stripes,
}


def remove_stripes_in_projections(proj, method: str = "all", **options) -> np.ndarray:
    """Apply a stripe method to every row's sinogram of a projection chunk ``(n_angles, rows, cols)``
    (the chunk must hold all angles of the scan)."""
    if method not in STRIPE_METHODS:
        raise PreprocessError(f"stripe method must be one of {', '.join(STRIPE_METHODS)}, got {method!r}")
    proj = np.asarray(proj, dtype=np.float32)
    out = np.empty_like(proj)
    for r in range(proj.shape[1]):
        out[:, r, :] = STRIPE_METHODS[method](proj[:, r, :], **options)
    return out


# --------------------------------------------------------------------------- air correction
def air_correction(proj, air_columns: tuple[int, int]) -> np.ndarray:
    """Divide every row of every projection by its mean over the air columns ``(start, stop)``
    (residual beam drifts along the rows)."""
    proj = np.asarray(proj, dtype=np.float32)
    a, b = air_columns
    ref = proj[:, :, a:b].mean(axis=2, keepdims=True)
    if ref.size == 0 or b <= a:
        raise PreprocessError(f"air region columns {a}:{b} are empty for projections of width {proj.shape[2]}")
    return proj / np.where(ref > 0, ref, 1.0)


# --------------------------------------------------------------------------- Paganin
def wavelength_m(energy_kev: float) -> float:
    """X-ray wavelength in m for a photon energy in keV."""
    return HC_KEV_ANGSTROM / float(energy_kev) * 1e-10


def paganin_kernel(shape, pixel_size_um: float, distance_mm: float, energy_kev: float, delta_beta: float) -> np.ndarray:
    """Fourier filter ``1 / (1 + π λ z (δ/β) |f|²)`` on the ``rfft2`` grid of ``shape`` (rows,
    cols), f in cycles/m. Note: tomopy's ``alpha`` is not δ/β (its filter is written with
    β/(4π²δ))."""
    rows, cols = shape
    px = pixel_size_um * 1e-6
    fy = np.fft.fftfreq(rows, d=px)
    fx = np.fft.rfftfreq(cols, d=px)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2
    return 1.0 / (1.0 + np.pi * wavelength_m(energy_kev) * distance_mm * 1e-3 * delta_beta * f2)


def paganin_pad(shape, pixel_size_um: float, distance_mm: float, energy_kev: float, delta_beta: float) -> int:
    """Padding (px per side) for the Paganin filter: the width at which its real-space kernel has
    fallen to 1e-3 of its peak, at least 8 px. The same number of neighbouring rows is the overlap a
    row-split chunk needs (the kernel is exponential: ``exp(-r / L) / r`` with ``L = sqrt(λ z δ/β / 4π)``)."""
    L = np.sqrt(wavelength_m(energy_kev) * distance_mm * 1e-3 * delta_beta / (4 * np.pi)) / (pixel_size_um * 1e-6)
    return int(max(8, np.ceil(7 * L)))


def _fft_filter(stack, kernel) -> np.ndarray:
    """``irfft2(rfft2(image) · kernel)`` for every image of a float32 stack, in single precision
    (scipy.fft keeps float32 as complex64: half the time of numpy's double-precision FFT)."""
    import scipy.fft

    spec = scipy.fft.rfft2(stack)
    spec *= kernel.astype(np.float32)[None]
    return scipy.fft.irfft2(spec, s=stack.shape[1:]).astype(np.float32, copy=False)


def paganin_filter(
    proj, pixel_size_um: float, distance_mm: float, energy_kev: float, delta_beta: float, pad: int | None = None
) -> np.ndarray:
    """Single-material phase retrieval of normalised projections ``(n, rows, cols)`` (or one
    projection): ``F⁻¹[ F[I/I₀] / (1 + π λ z (δ/β) |f|²) ]`` — the filtered transmission, whose −log
    is μ·t; pass 2 takes that log. ``pad`` px of edge padding per side (default :func:`paganin_pad`;
    0 = periodic, as in the analytic test)."""
    proj = np.asarray(proj, dtype=np.float32)
    single = proj.ndim == 2
    stack = proj[None] if single else proj
    if pad is None:
        pad = paganin_pad(stack.shape[1:], pixel_size_um, distance_mm, energy_kev, delta_beta)
    if pad:
        import scipy.fft

        rows, cols = stack.shape[1:]
        extra_r = scipy.fft.next_fast_len(rows + 2 * pad, real=True) - rows  # FFT-friendly sizes
        extra_c = scipy.fft.next_fast_len(cols + 2 * pad, real=True) - cols
        work = np.pad(
            stack, ((0, 0), (extra_r // 2, extra_r - extra_r // 2), (extra_c // 2, extra_c - extra_c // 2)), mode="edge"
        )
    else:
        work = stack
    out = _fft_filter(work, paganin_kernel(work.shape[1:], pixel_size_um, distance_mm, energy_kev, delta_beta))
    if pad:
        out = out[:, extra_r // 2 : extra_r // 2 + rows, extra_c // 2 : extra_c // 2 + cols]
    return out[0] if single else out
