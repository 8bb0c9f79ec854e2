"""Azimuthal integration with a precomputed sparse (CSR) pixel → radial-bin matrix.

The method follows SAXSDOG (Burian et al., J. Appl. Cryst. 2022, 55, 677): each pixel is split into
ov × ov sub-pixels; each sub-pixel adds a weight of 1/ov² to the radial bin its centre falls in, so
a pixel contributes fractional weights w_kj to the bins it straddles. The matrix W (bins × pixels)
is built once per calibration, cached on disk under a hash of everything it depends on, and a batch of
frames is integrated with one sparse × dense product.

Per bin k, for a frame x with dark d and per-pixel normalisation n_j = flat_j · Ω_j · P_j
(solid angle Ω, polarisation P; 1 where switched off) and monitor m:

    I_k = Σ_j w_kj (x_j − d_j) / (m · Σ_j w_kj n_j)

which is pyFAI's definition (a ratio of sums). Masked pixels (the static mask, and any pixel < 0
or non-finite in a given frame, e.g. Pilatus gaps −1 and bad pixels −2) take no part in either sum.
Bins with no unmasked pixel are NaN, never 0.

Error models (Poisson: var(x_j) = max(x_j, 0) counts):

* ``"poisson"`` (default): σ_k = sqrt(Σ_j w_kj² x_j) / (m · Σ_j w_kj n_j). This is the propagation of
  independent pixel variances through the weighted sum, pyFAI's model. It is the default because it
  is the statistically correct variance of the estimator for independent pixels.
* ``"saxsdog"``: σ_k = sqrt(Σ_j w_kj x_j) / (m · Σ_j w_kj n_j), as SAXSDOG writes (Σw instead of Σw²).
  A split pixel is counted as if its full counts fell in each bin it touches, so this is larger:
  about 22 % at ov = 3 on typical SAXS images. Identical to "poisson" when ov = 1.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .geometry import Geometry

__all__ = [
    "RadialBins",
    "Corrections",
    "Integrator",
    "IntegrationResult",
    "build_integrator",
    "integral_parameters",
    "saxsdog_bins",
]

ERROR_MODELS = ("poisson", "saxsdog")


@dataclass(frozen=True)
class RadialBins:
    """Radial bins in q (nm⁻¹): ``edges`` has one more entry than there are bins."""

    edges: np.ndarray

    @classmethod
    def linear(cls, q_min: float, q_max: float, n_bins: int) -> "RadialBins":
        if not (q_max > q_min) or n_bins < 1:
            raise ValueError(f"invalid radial bins: q from {q_min} to {q_max} in {n_bins} bins")
        return cls(np.linspace(q_min, q_max, n_bins + 1))

    @property
    def centres(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1

    def index(self, q: np.ndarray) -> np.ndarray:
        """Bin index of each q (−1 outside the bins); uniform bins use arithmetic, not search."""
        e = self.edges
        step = (e[-1] - e[0]) / (len(e) - 1)
        if np.allclose(np.diff(e), step, rtol=1e-9, atol=0):
            k = np.floor((q - e[0]) / step).astype(np.int64)
        else:
            k = np.searchsorted(e, q, side="right") - 1
        k[(q < e[0]) | (q >= e[-1]) | ~np.isfinite(q)] = -1
        k[k >= len(e) - 1] = -1
        return k


def saxsdog_bins(geometry: Geometry, oversampling: int, pixel_per_radial_element: float) -> RadialBins:
    """SAXSDOG's radial grid: bins from q = 0 whose width spans about ``pixel_per_radial_element``
    pixels at the largest radius (Δq = q_max · PPRE / r_max, r_max in pixels)."""
    r, c = geometry.pixel_centres(oversampling)
    row0, col0 = geometry.beam_centre_px()
    corners_r = np.array([r[0], r[0], r[-1], r[-1]])
    corners_c = np.array([c[0], c[-1], c[0], c[-1]])
    r_max = np.max(np.hypot(corners_r - row0, corners_c - col0))
    q_max = float(np.max(geometry.q_array(oversampling)))
    dq = q_max * pixel_per_radial_element / r_max
    n_bins = int(np.floor(q_max / dq)) + 1
    return RadialBins(np.arange(n_bins + 1) * dq)


@dataclass(frozen=True)
class Corrections:
    """Optional corrections (all off by default).

    ``polarization_factor`` f in [−1, 1] as pyFAI (0.95–0.99 at synchrotrons), with the axis
    offset in degrees; ``flat`` divides, ``dark`` is subtracted, both arrays of the image shape.
    """

    solid_angle: bool = False
    polarization_factor: float | None = None
    polarization_offset_deg: float = 0.0
    flat: np.ndarray | None = field(default=None, repr=False)
    dark: np.ndarray | None = field(default=None, repr=False)

    def key(self) -> dict:
        def digest(a):
            return None if a is None else hashlib.sha1(np.ascontiguousarray(a)).hexdigest()

        return {
            "solid_angle": self.solid_angle,
            "polarization_factor": self.polarization_factor,
            "polarization_offset_deg": self.polarization_offset_deg,
            "flat": digest(self.flat),
            "dark": digest(self.dark),
        }


@dataclass
class IntegrationResult:
    """Curves for a batch: ``intensity`` and ``sigma`` are (n_frames, n_bins); q in nm⁻¹."""

    q: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray


class Integrator:
    """A CSR pixel → bin matrix with its normalisation; integrates batches of frames."""

    def __init__(
        self,
        matrix: sp.csr_matrix,
        bins: RadialBins,
        shape: tuple[int, int],
        static_mask: np.ndarray,
        normalisation: np.ndarray,
        dark: np.ndarray | None = None,
        error_model: str = "poisson",
        key: str = "",
    ):
        if error_model not in ERROR_MODELS:
            raise ValueError(f"error_model must be one of {ERROR_MODELS}, got {error_model!r}")
        self.matrix = matrix.tocsr()
        self.matrix.sort_indices()
        self.bins = bins
        self.shape = tuple(shape)
        self.static_mask = static_mask
        self.normalisation = normalisation.astype(np.float64).ravel()
        self.dark = None if dark is None else np.asarray(dark, dtype=np.float32).ravel()
        self.error_model = error_model
        self.key = key
        self._csc = None
        self._denominator_static = self.matrix.astype(np.float64) @ self.normalisation

    @property
    def q(self) -> np.ndarray:
        return self.bins.centres

    @property
    def n_bins(self) -> int:
        return self.bins.n_bins

    def integrate(self, frames, monitor=None, chunk: int = 32) -> IntegrationResult:
        """Integrate frames (n, rows, cols) or one frame (rows, cols); ``monitor`` scalar or (n,).

        Pixels that are negative or non-finite in a frame are masked in that frame only.
        Works in chunks of ``chunk`` frames to bound memory.
        """
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        if frames.shape[1:] != self.shape:
            raise ValueError(f"frame shape {frames.shape[1:]} differs from the calibration's {self.shape}")
        n = frames.shape[0]
        mon = np.ones(n) if monitor is None else np.broadcast_to(np.asarray(monitor, float), (n,))
        intensity = np.empty((n, self.n_bins))
        sigma = np.empty((n, self.n_bins))
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            self._integrate_chunk(frames[start:stop], mon[start:stop], intensity[start:stop], sigma[start:stop])
        return IntegrationResult(self.q.copy(), intensity, sigma)

    def _pixel_major(self):
        """The matrix stored pixel by pixel (CSC): the kernel streams the frames in memory order."""
        if self._csc is None:
            csc = self.matrix.tocsc()
            csc.sort_indices()
            w = csc.data.astype(np.float32)
            w_var = w * w if self.error_model == "poisson" else w.copy()
            self._csc = (csc.indptr.astype(np.int64), csc.indices.astype(np.int32), w, w_var)
            self._has_weight = np.diff(csc.indptr) > 0
        return self._csc

    def _integrate_chunk(self, frames, monitor, out_i, out_s):
        from ._kernels import accumulate, accumulate_suspect

        n = frames.shape[0]
        flat = frames.reshape(n, -1)
        if (
            flat.dtype.kind not in "iuf"
            or not flat.dtype.isnative
            or flat.dtype.itemsize > 8
            or flat.dtype == np.float16
        ):
            flat = flat.astype(np.float32)  # big-endian or exotic types: the kernel takes native numbers
        indptr, indices, w, w_var = self._pixel_major()
        width = n if n == 1 else -(-n // 8) * 8  # whole 8-float vectors in the kernel's inner loop
        signal = np.zeros((self.n_bins, width), np.float32)
        variance = np.zeros((self.n_bins, width), np.float32)
        removed = np.zeros((self.n_bins, n))
        dark = self.dark if self.dark is not None else np.zeros(1, np.float32)
        has_dark = self.dark is not None
        suspect = np.zeros(flat.shape[1], np.uint8)  # pixels negative or not finite in some frame
        if accumulate(flat, indptr, indices, w, w_var, suspect, dark, has_dark, signal, variance):
            accumulate_suspect(
                flat,
                np.flatnonzero(suspect),
                indptr,
                indices,
                w,
                w_var,
                self.normalisation,
                dark,
                has_dark,
                signal,
                variance,
                removed,
            )
        signal = signal[:, :n].astype(np.float64)
        variance = variance[:, :n].astype(np.float64)
        weight = self._denominator_static[:, None] - removed
        # a bin whose every pixel was left out keeps only round-off: empty
        empty = weight <= 1e-9 * np.maximum(self._denominator_static[:, None], 1e-300)
        denom = weight * monitor[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            out_i[:] = np.where(empty, np.nan, signal / denom).T
            out_s[:] = np.where(empty, np.nan, np.sqrt(np.maximum(variance, 0.0)) / denom).T

    # ------------------------------------------------------------------ cache
    def save(self, path) -> None:
        """Store the matrix and its metadata as one .npz (atomic)."""
        from .io.atomic import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    data=self.matrix.data,
                    indices=self.matrix.indices,
                    indptr=self.matrix.indptr,
                    edges=self.bins.edges,
                    shape=np.array(self.shape),
                    static_mask=np.packbits(self.static_mask.ravel()),
                    normalisation=self.normalisation,
                    dark=np.array([]) if self.dark is None else self.dark,
                    error_model=np.array(self.error_model),
                    key=np.array(self.key),
                )

    @classmethod
    def load(cls, path) -> "Integrator":
        z = np.load(path, allow_pickle=False)
        shape = tuple(int(v) for v in z["shape"])
        npix = shape[0] * shape[1]
        matrix = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=(len(z["edges"]) - 1, npix))
        mask = np.unpackbits(z["static_mask"])[:npix].astype(bool).reshape(shape)
        dark = z["dark"] if z["dark"].size else None
        return cls(
            matrix, RadialBins(z["edges"]), shape, mask, z["normalisation"], dark, str(z["error_model"]), str(z["key"])
        )


def assemble_integrator(matrix, bins, geometry, static_mask, corrections, error_model="poisson", key=""):
    """An Integrator from a weight matrix, with the per-pixel normalisation n = flat · Ω · P."""
    normalisation = np.ones(geometry.shape)
    if corrections.flat is not None:
        normalisation = normalisation * np.asarray(corrections.flat, float)
    if corrections.solid_angle:
        normalisation = normalisation * geometry.solid_angle_array()
    if corrections.polarization_factor is not None:
        normalisation = normalisation * geometry.polarization_array(
            corrections.polarization_factor, np.radians(corrections.polarization_offset_deg)
        )
    bad_norm = ~np.isfinite(normalisation) | (normalisation <= 0)
    if bad_norm.any():  # a flat of 0 or NaN masks that pixel
        static_mask = static_mask | bad_norm
        matrix = (matrix @ sp.diags((~bad_norm).ravel().astype(np.float32))).tocsr()
        normalisation = np.where(bad_norm, 1.0, normalisation)
    return Integrator(matrix, bins, geometry.shape, static_mask, normalisation, corrections.dark, error_model, key)


def point_matrix(coordinate: np.ndarray, bins: RadialBins, ov: int, static_mask: np.ndarray, selected=None):
    """Weights (bins × pixels) from a per-sub-pixel coordinate (rows·ov, cols·ov): each sub-pixel
    adds 1/ov² to the bin its coordinate falls in; ``selected`` (same shape) restricts sub-pixels."""
    nr, nc = static_mask.shape
    k = bins.index(coordinate)
    ok = k >= 0
    if selected is not None:
        ok &= selected
    pix = np.arange(nr).repeat(ov)[:, None] * nc + np.repeat(np.arange(nc), ov)[None, :]
    ok &= ~static_mask.ravel()[pix]
    vals = np.full(int(ok.sum()), 1.0 / (ov * ov))
    m = sp.coo_matrix((vals, (k[ok], pix[ok])), shape=(bins.n_bins, nr * nc)).tocsr()
    m.sum_duplicates()
    m.data = m.data.astype(np.float32)
    return m


def _sector_ok(chi: np.ndarray, sector_deg) -> np.ndarray:
    """Sub-pixels whose χ (rad) lies in the sector [start, stop) degrees (wrapping allowed)."""
    start, stop = (np.radians(v) for v in sector_deg)
    width = (stop - start) % (2 * np.pi)
    if width == 0 and stop != start:
        width = 2 * np.pi
    return ((chi - start) % (2 * np.pi)) < width


def build_integrator(
    geometry: Geometry,
    bins: RadialBins,
    oversampling: int = 1,
    mask: np.ndarray | None = None,
    corrections: Corrections | None = None,
    sector_deg: tuple[float, float] | None = None,
    error_model: str = "poisson",
    split: bool = True,
    cache_dir=None,
) -> Integrator:
    """Build (or load from ``cache_dir``) the integrator for a geometry, bins and mask.

    ``mask``: bool image, True = masked. ``sector_deg``: azimuthal range of χ (pyFAI's χ, degrees).
    ``split=False`` assigns each pixel whole to the bin of its centre (``oversampling`` ignored).
    """
    corrections = corrections or Corrections()
    ov = int(oversampling)
    if ov < 1:
        raise ValueError(f"oversampling must be ≥ 1, got {oversampling}")
    shape = geometry.shape
    static_mask = np.zeros(shape, bool) if mask is None else np.asarray(mask, bool)
    if static_mask.shape != shape:
        raise ValueError(f"mask shape {static_mask.shape} differs from the calibration's {shape}")
    for name, arr in (("flat", corrections.flat), ("dark", corrections.dark)):
        if arr is not None and np.shape(arr) != shape:
            raise ValueError(f"{name} shape {np.shape(arr)} differs from the calibration's {shape}")

    key_data = {
        "version": 1,
        "geometry": geometry.to_dict(),
        "edges": hashlib.sha1(np.ascontiguousarray(bins.edges)).hexdigest(),
        "oversampling": ov,
        "mask": hashlib.sha1(np.packbits(static_mask)).hexdigest(),
        "corrections": corrections.key(),
        "sector": None if sector_deg is None else list(sector_deg),
        "error_model": error_model,
        "split": bool(split),
    }
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:32]
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"integrator-{key}.npz"
        if cache_path.exists():
            try:
                return Integrator.load(cache_path)
            except Exception:  # a damaged cache entry is rebuilt
                pass

    if split:
        matrix = _weight_matrix(geometry, bins, ov, static_mask, sector_deg)
    else:
        matrix = _centre_matrix(geometry, bins, static_mask, sector_deg)
    integrator = assemble_integrator(matrix, bins, geometry, static_mask, corrections, error_model, key)
    if cache_path is not None:
        os.makedirs(cache_path.parent, exist_ok=True)
        integrator.save(cache_path)
    return integrator


def _weight_matrix(geometry, bins, ov, static_mask, sector_deg, rows_per_block: int = 32) -> sp.csr_matrix:
    """Sparse weights (bins × pixels).

    Each pixel is split in ov × ov sub-pixels of weight 1/ov². A sub-pixel's weight is spread
    uniformly over the q interval spanned by its four corners and shared among the bins that
    interval overlaps ("bounding-box" splitting at the sub-pixel level). With ov = 1 and
    ``split=False`` semantics (see ``build_integrator``) each pixel goes whole to the bin of its centre.
    """
    nr, nc = geometry.shape
    npix = nr * nc
    edges = bins.edges
    wl = geometry.wavelength_A
    sub_c = (np.arange(nc * ov, dtype=np.float64) + 0.5) / ov
    corner_c = np.arange(nc * ov + 1, dtype=np.float64) / ov
    pix_col = np.repeat(np.arange(nc), ov)
    valid_pix = ~static_mask.ravel()
    parts = []
    for r0 in range(0, nr, rows_per_block):
        r1 = min(nr, r0 + rows_per_block)
        sub_r = (np.arange(r0 * ov, r1 * ov, dtype=np.float64) + 0.5) / ov
        corner_r = np.arange(r0 * ov, r1 * ov + 1, dtype=np.float64) / ov
        qc = _q(geometry.two_theta_chi(corner_r[:, None], corner_c[None, :])[0], wl)
        q4 = np.stack([qc[:-1, :-1], qc[:-1, 1:], qc[1:, :-1], qc[1:, 1:]])
        lo = q4.min(axis=0)
        hi = q4.max(axis=0)
        pix = np.arange(r0, r1).repeat(ov)[:, None] * nc + pix_col[None, :]
        ok = valid_pix[pix] & (hi > edges[0]) & (lo < edges[-1])
        if sector_deg is not None:
            chi = geometry.two_theta_chi(sub_r[:, None], sub_c[None, :])[1]
            ok &= _sector_ok(chi, sector_deg)
        lo, hi, pix = lo[ok], hi[ok], pix[ok]
        width = hi - lo
        k_lo = np.clip(np.searchsorted(edges, lo, side="right") - 1, 0, bins.n_bins - 1)
        k_hi = np.clip(np.searchsorted(edges, hi, side="right") - 1, 0, bins.n_bins - 1)
        for step in range(int((k_hi - k_lo).max(initial=0)) + 1):
            k = k_lo + step
            sel = k <= k_hi
            kk = k[sel]
            overlap = np.minimum(hi[sel], edges[kk + 1]) - np.maximum(lo[sel], edges[kk])
            w = np.where(width[sel] > 0, np.clip(overlap, 0, None) / np.where(width[sel] > 0, width[sel], 1), 1.0)
            keep = w > 0
            parts.append((kk[keep], pix[sel][keep], w[keep]))
    rows = np.concatenate([p[0] for p in parts])
    cols = np.concatenate([p[1] for p in parts])
    vals = np.concatenate([p[2] for p in parts]) / (ov * ov)
    m = sp.coo_matrix((vals, (rows, cols)), shape=(bins.n_bins, npix)).tocsr()
    m.sum_duplicates()
    m.data = m.data.astype(np.float32)
    return m


def _centre_matrix(geometry, bins, static_mask, sector_deg) -> sp.csr_matrix:
    """Unsplit weights: each pixel goes whole to the bin of its centre (pyFAI's "no" splitting)."""
    nr, nc = geometry.shape
    r, c = geometry.pixel_centres(1)
    tth, chi = geometry.two_theta_chi(r[:, None], c[None, :])
    k = bins.index(_q(tth, geometry.wavelength_A)).ravel()
    ok = (k >= 0) & ~static_mask.ravel()
    if sector_deg is not None:
        ok &= _sector_ok(chi, sector_deg).ravel()
    pix = np.flatnonzero(ok)
    return sp.csr_matrix((np.ones(pix.size, np.float32), (k[ok], pix)), shape=(bins.n_bins, nr * nc))


def _q(two_theta, wavelength_A):
    return 4.0e1 * np.pi * np.sin(two_theta / 2.0) / wavelength_A


def integral_parameters(q, intensity, q_start: float, q_stop: float) -> dict:
    """SAXSDOG's integral parameters of curves between q_start and q_stop (nm⁻¹).

    With Δq the bin width and the sums over bins with q_start ≤ q_k < q_stop (NaN bins skipped):

        I0 = Σ I_k Δq            integral intensity
        I1 = Σ I_k q_k Δq
        I2 = Σ I_k q_k² Δq       invariant (Porod's Q for an isotropic pattern, up to 2π²)
        correlation_length = π I1 / I2  (nm; Porod's correlation length l_c)

    ``intensity`` may be (n_bins,) or (n_frames, n_bins); returns arrays of matching leading shape.
    """
    q = np.asarray(q, float)
    intensity = np.asarray(intensity, float)
    if q_stop > q.max():
        q_stop = q.max() + 1e-12
    sel = (q >= q_start) & (q < q_stop)
    dq = q[1] - q[0] if len(q) > 1 else 1.0
    i = intensity[..., sel]
    qs = q[sel]
    i0 = np.nansum(i, axis=-1) * dq
    i1 = np.nansum(i * qs, axis=-1) * dq
    i2 = np.nansum(i * qs * qs, axis=-1) * dq
    with np.errstate(invalid="ignore", divide="ignore"):
        lc = np.pi * i1 / i2
    return {"I0": i0, "I1": i1, "I2": i2, "correlation_length": lc}
