"""Synthetic parallel-beam tomography with exact ground truth.

Geometry (the convention of :mod:`photonflow.tomo`)
    A phantom slice of ``n × n`` pixels has its pixel ``[j, i]`` (row, column) at
    ``x = i − (n−1)/2`` (right), ``y = (n−1)/2 − j`` (up), in pixels; the volume ``[k, j, i]`` has
    its slice k at height ``z = (nz−1)/2 − k`` (up). The rotation axis is the z axis through the
    slice centre. At rotation angle θ (degrees in the public arguments, radians inside) the ray
    through detector column ``u`` (0-based, pixel centres at integers) and detector row k is
    ``x cos θ + y sin θ = u − center_px`` at height z of row k: the projection is the line
    integral of μ along ``(−sin θ, cos θ)``. Detector row k sees slice k (same number of rows).

Phantom
    A sum of ellipsoids (:class:`Ellipsoid`), each adding a constant attenuation μ (1/px: the
    line integral of μ over a path in pixels is dimensionless, −ln of the transmission) inside
    ``((x'−x0)/a)² + ((y'−y0)/b)² + ((z−z0)/c)² ≤ 1`` (x', y' rotated by φ about the z axis).
    Centres and semi-axes are normalised by the half-width ``R = n/2`` of the slice on all three
    axes, so a sphere stays a sphere. :func:`shepp_logan_ellipsoids` gives the modified
    Shepp–Logan phantom (Toft) extended to 3D; its central plane is the 2D modified Shepp–Logan.

Analytic projections
    A plane z cuts an ellipsoid in an ellipse with semi-axes ``A s, B s``, ``s = √(1 − ((z−z0)/C)²)``,
    and the line integral through an ellipse of semi-axes A, B rotated by φ and centred at
    (X0, Y0) is exact: ``p(u) = 2 μ A B √(r² − d²) / r²`` for ``|d| < r``, where
    ``r² = A² cos²(θ−φ) + B² sin²(θ−φ)`` and ``d = u − center_px − (X0 cos θ + Y0 sin θ)``.
    :func:`phantom_projections` evaluates it at the pixel centres (``oversample=1``) or averages
    ``ov × ov`` sub-pixel line integrals per detector pixel; :func:`phantom_volume` gives the
    voxelised phantom (voxel-centre samples, or the mean of ``ov³`` sub-voxel samples) for
    the RMSE of reconstructions. Nothing here is a discretised re-projection.

Scan (:func:`simulate_scan`)
    Expected counts ``photons · beam(row, col, t) · i0[k] · exp(−p)`` with a slowly varying beam
    (a parabolic profile that drifts horizontally with time t ∈ [0, 1]: flats before at t = 0,
    after at t = 1, projections in between), top-up I0 drops (some projections scaled by a factor
    in ``i0_drop_range``; all factors recorded; optional monitor counts), Poisson noise, a dark
    level with Gaussian read noise, dead columns (they read only the dark signal, in flats too),
    hot columns (a gain ``hot_gain`` in the projections that the flats do not have) and zingers
    (single pixels with ``zinger_counts`` extra counts). Counts are uint16 (clipped at 65535).

Other generators: :func:`phase_contrast_projections` (Fresnel propagation of the exit wave of a
phase object, for Paganin retrieval), :func:`overlapping_scans` (side-by-side scans cut from a
wider detector with known integer and sub-pixel offsets, for stitching), 360° half-acquisition
scans (``angle_range_deg=360`` and ``center_px`` near one detector edge; see
:func:`half_acquisition_center`).

Files: :func:`write_tomo_scan` writes a scan as DXchange HDF5 (optional hdf5plugin compression,
optional external links to a separate data file) with :func:`photonflow.tomo.dxchange.write_dxchange`;
``write_dxchange``, ``read_dxchange`` and ``DXchangeData`` are importable from here too.

Units: distances in mm, pixel sizes in µm, energies in keV, angles in degrees in the public
arguments (radians inside), attenuation μ in 1/px, photons per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..tomo.dxchange import DXchangeData, image_compression, read_dxchange, write_dxchange

__all__ = [
    "Ellipsoid",
    "shepp_logan_ellipsoids",
    "scale_ellipsoids",
    "phantom_volume",
    "phantom_projections",
    "ellipse_chord",
    "TomoScan",
    "simulate_scan",
    "half_acquisition_center",
    "phase_contrast_projections",
    "fresnel_propagate",
    "wavelength_um",
    "overlapping_scans",
    "write_dxchange",
    "read_dxchange",
    "DXchangeData",
]

#: h·c in keV·Å (CODATA): wavelength λ [Å] = HC_KEV_A / E [keV].
HC_KEV_A = 12.398419843320026


# ----------------------------------------------------------------------------------- phantom
@dataclass(frozen=True)
class Ellipsoid:
    """One ellipsoid of a phantom.

    ``mu``: attenuation added inside (1/px; negative values subtract). ``a, b, c``: semi-axes along
    x, y, z and ``x0, y0, z0``: centre, all in units of the slice half-width ``n/2``.
    ``phi_deg``: rotation about the vertical (rotation) axis, counter-clockwise from +x, degrees.
    """

    mu: float
    a: float
    b: float
    c: float
    x0: float = 0.0
    y0: float = 0.0
    z0: float = 0.0
    phi_deg: float = 0.0


# Modified Shepp–Logan (Toft 1996) in 2D; the z semi-axes follow Kak & Slaney's 3D version.
_SHEPP_LOGAN = (
    # value,  a,      b,      c,     x0,    y0,     z0,  phi
    (1.0, 0.69, 0.92, 0.81, 0.0, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.78, 0.0, -0.0184, 0.0, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.22, 0.0, 0.0, -18.0),
    (-0.2, 0.16, 0.41, 0.28, -0.22, 0.0, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.41, 0.0, 0.35, 0.0, 0.0),
    (0.1, 0.046, 0.046, 0.05, 0.0, 0.1, 0.0, 0.0),
    (0.1, 0.046, 0.046, 0.05, 0.0, -0.1, 0.0, 0.0),
    (0.1, 0.046, 0.023, 0.05, -0.08, -0.605, 0.0, 0.0),
    (0.1, 0.023, 0.023, 0.02, 0.0, -0.606, 0.0, 0.0),
    (0.1, 0.023, 0.046, 0.02, 0.06, -0.605, 0.0, 0.0),
)


def shepp_logan_ellipsoids(mu_scale: float = 0.01) -> list[Ellipsoid]:
    """The 3D modified Shepp–Logan phantom; μ values are the usual (1, −0.8, −0.2, 0.1) × ``mu_scale``
    (1/px), so the outer shell has μ = ``mu_scale`` and the brain 0.2 × ``mu_scale``."""
    return [Ellipsoid(v * mu_scale, a, b, c, x0, y0, z0, phi) for v, a, b, c, x0, y0, z0, phi in _SHEPP_LOGAN]


def scale_ellipsoids(ellipsoids: Sequence[Ellipsoid], factor: float) -> list[Ellipsoid]:
    """The ellipsoids with every μ multiplied by ``factor``."""
    return [replace(e, mu=e.mu * factor) for e in ellipsoids]


def _slice_heights(n_rows: int, oversample: int) -> np.ndarray:
    """Heights z (px, up) of the ``n_rows × ov`` sub-rows, shape (n_rows, ov)."""
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    k = np.arange(n_rows)[:, None] + sub[None, :]
    return (n_rows - 1) / 2.0 - k


def _cross_section(e: Ellipsoid, z: np.ndarray, half_width: float):
    """Semi-axes (px) of the ellipse cut by planes z (px); 0 where the plane misses."""
    big_c = e.c * half_width
    t = 1.0 - ((z - e.z0 * half_width) / big_c) ** 2 if big_c > 0 else np.zeros_like(z)
    s = np.sqrt(np.clip(t, 0.0, None))
    return e.a * half_width * s, e.b * half_width * s


def ellipse_chord(a_px, b_px, phi_rad, x0_px, y0_px, theta_rad, d_px):
    """Exact line integral (px) through a uniform ellipse (μ = 1), at detector coordinate ``d_px``
    relative to the rotation axis. Arrays broadcast."""
    dth = theta_rad - phi_rad
    r2 = (a_px * np.cos(dth)) ** 2 + (b_px * np.sin(dth)) ** 2
    s0 = x0_px * np.cos(theta_rad) + y0_px * np.sin(theta_rad)
    t = r2 - (d_px - s0) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(
            (t > 0) & (r2 > 0), 2.0 * a_px * b_px * np.sqrt(np.clip(t, 0.0, None)) / np.where(r2 > 0, r2, 1.0), 0.0
        )
    return out


def phantom_projections(
    shape: tuple[int, int],
    theta_deg,
    ellipsoids: Sequence[Ellipsoid] | None = None,
    *,
    n_cols: int | None = None,
    center_px: float | None = None,
    oversample: int = 1,
    dtype=np.float32,
) -> np.ndarray:
    """Analytic parallel-beam projections (line integrals of μ, dimensionless), (n_angles, rows, n_cols).

    ``shape``: (rows, n) — the phantom has ``rows`` slices of ``n × n`` px (ellipsoid units: n/2).
    ``n_cols``: detector width (default n); ``center_px``: the rotation axis on the detector
    (0-based column, default ``(n_cols−1)/2``). ``oversample``: average of ov × ov sub-pixel rays
    per detector pixel (1: the exact line integral through the pixel centre).
    """
    rows, n = int(shape[0]), int(shape[1])
    n_cols = n if n_cols is None else int(n_cols)
    center_px = (n_cols - 1) / 2.0 if center_px is None else float(center_px)
    ellipsoids = shepp_logan_ellipsoids() if ellipsoids is None else list(ellipsoids)
    theta = np.deg2rad(np.asarray(theta_deg, dtype=np.float64)).reshape(-1)
    ov = max(1, int(oversample))
    half = n / 2.0
    z = _slice_heights(rows, ov)  # (rows, ov)
    sub = (np.arange(ov) + 0.5) / ov - 0.5
    d = (np.arange(n_cols)[:, None] + sub[None, :] - center_px).reshape(-1)  # (n_cols*ov,)
    out = np.zeros((theta.size, rows, n_cols), dtype=np.float64)
    for e in ellipsoids:
        big_a, big_b = _cross_section(e, z, half)  # (rows, ov)
        hit_rows = np.nonzero((big_a > 0).any(axis=1))[0]
        if hit_rows.size == 0 or e.mu == 0:
            continue
        phi = np.deg2rad(e.phi_deg)
        x0, y0 = e.x0 * half, e.y0 * half
        for k in hit_rows:
            acc = np.zeros((theta.size, n_cols), dtype=np.float64)
            for s in range(ov):
                if big_a[k, s] <= 0:
                    continue
                p = ellipse_chord(big_a[k, s], big_b[k, s], phi, x0, y0, theta[:, None], d[None, :])
                acc += p.reshape(theta.size, n_cols, ov).sum(axis=2)
            out[:, k, :] += e.mu * acc / (ov * ov)
    return out.astype(dtype, copy=False)


def phantom_volume(
    shape: tuple[int, int, int],
    ellipsoids: Sequence[Ellipsoid] | None = None,
    *,
    oversample: int = 1,
    dtype=np.float32,
) -> np.ndarray:
    """Voxelised phantom μ (1/px), (nz, n, n): voxel-centre samples (``oversample=1``) or the mean
    of ov³ sub-voxel samples. ``shape[1]`` must equal ``shape[2]`` (square slices)."""
    nz, ny, nx = (int(v) for v in shape)
    if ny != nx:
        raise ValueError(f"phantom_volume: slices must be square, got shape {shape}")
    n = nx
    ellipsoids = shepp_logan_ellipsoids() if ellipsoids is None else list(ellipsoids)
    ov = max(1, int(oversample))
    half = n / 2.0
    z = _slice_heights(nz, ov)
    sub = (np.arange(ov) + 0.5) / ov - 0.5
    coord = (np.arange(n)[:, None] + sub[None, :]).reshape(-1) - (n - 1) / 2.0  # (n*ov,)
    xs = coord  # x grows with column
    ys = -coord  # y grows upwards (row index down)
    vol = np.zeros((nz, n, n), dtype=np.float64)
    for e in ellipsoids:
        if e.mu == 0:
            continue
        big_a, big_b = _cross_section(e, z, half)
        phi = np.deg2rad(e.phi_deg)
        cph, sph = np.cos(phi), np.sin(phi)
        x0, y0 = e.x0 * half, e.y0 * half
        rmax = max(e.a, e.b) * half + 1.0
        ci = np.nonzero(np.abs(xs - x0) <= rmax)[0]
        rj = np.nonzero(np.abs(ys - y0) <= rmax)[0]
        if ci.size == 0 or rj.size == 0:
            continue
        j0, j1 = rj[0] // ov, rj[-1] // ov + 1
        i0, i1 = ci[0] // ov, ci[-1] // ov + 1
        # pad the sub-sample block to whole voxels
        rj_full = np.arange(j0 * ov, j1 * ov)
        ci_full = np.arange(i0 * ov, i1 * ov)
        dx = xs[ci_full][None, :] - x0
        dy = ys[rj_full][:, None] - y0
        xr = dx * cph + dy * sph
        yr = -dx * sph + dy * cph
        for k in range(nz):
            for s in range(ov):
                if big_a[k, s] <= 0:
                    continue
                inside = (xr / big_a[k, s]) ** 2 + (yr / big_b[k, s]) ** 2 <= 1.0
                block = inside.reshape(j1 - j0, ov, i1 - i0, ov).sum(axis=(1, 3))
                vol[k, j0:j1, i0:i1] += e.mu * block / ov**3
    return vol.astype(dtype, copy=False)


# -------------------------------------------------------------------------------------- scan
@dataclass
class TomoScan:
    """A simulated scan and its truth.

    Measured (what a beamline writes): ``data`` (n_proj, rows, cols) uint16, ``flats``
    (n_flats_before + n_flats_after, rows, cols) uint16, ``darks`` (n_darks, rows, cols) uint16,
    ``theta_deg`` (n_proj,), ``monitor`` (n_proj,) counts or None.

    Truth: ``line_integrals`` (n_proj, rows, cols) float32 — the exact projections of μ;
    ``expected_flat_before`` / ``expected_flat_after`` — the open-beam photons per pixel without the
    dark signal (t = 0 and t = 1); ``time`` (n_proj,) — t of each projection; ``i0_factor`` (n_proj,)
    — 1 or the top-up drop factor; ``dark_level`` (counts); ``dead_columns``, ``hot_columns``;
    ``zingers`` (n, 3) int — (projection, row, col); ``center_px``; ``object_shape`` (rows, n);
    ``ellipsoids``.
    """

    data: np.ndarray
    flats: np.ndarray
    darks: np.ndarray
    theta_deg: np.ndarray
    monitor: np.ndarray | None
    line_integrals: np.ndarray
    expected_flat_before: np.ndarray
    expected_flat_after: np.ndarray
    time: np.ndarray
    i0_factor: np.ndarray
    dark_level: float
    dead_columns: tuple[int, ...]
    hot_columns: tuple[int, ...]
    hot_gain: float
    zingers: np.ndarray
    center_px: float
    object_shape: tuple[int, int]
    ellipsoids: list[Ellipsoid] = field(default_factory=list)
    n_flats_before: int = 0


def _beam_profile(rows: int, cols: int, t: float, amplitude: float, drift_px: float) -> np.ndarray:
    """Relative beam intensity (1 at the beam centre): a parabola in both directions whose centre
    moves horizontally by ``drift_px`` from t = 0 to t = 1."""
    c0 = (cols - 1) / 2.0 + drift_px * (t - 0.5)
    r0 = (rows - 1) / 2.0
    xc = (np.arange(cols) - c0) / max(cols / 2.0, 1.0)
    yr = (np.arange(rows) - r0) / max(rows / 2.0, 1.0)
    return 1.0 - amplitude * (xc[None, :] ** 2 + 0.5 * yr[:, None] ** 2)


def simulate_scan(
    n_rows: int = 4,
    n_cols: int = 256,
    n_angles: int = 360,
    *,
    angle_range_deg: float = 180.0,
    object_width_px: int | None = None,
    center_px: float | None = None,
    ellipsoids: Sequence[Ellipsoid] | None = None,
    max_attenuation: float | None = 2.0,
    oversample: int = 2,
    photons: float = 5000.0,
    noise: bool = True,
    dark_level: float = 100.0,
    read_noise: float = 2.0,
    n_flats_before: int = 10,
    n_flats_after: int = 10,
    n_darks: int = 10,
    beam_amplitude: float = 0.2,
    beam_drift_px: float = 3.0,
    i0_drop_fraction: float = 0.02,
    i0_drop_range: tuple[float, float] = (0.90, 0.97),
    monitor_counts: float | None = 1.0e6,
    dead_columns: Sequence[int] = (),
    hot_columns: Sequence[int] = (),
    hot_gain: float = 1.08,
    zinger_probability: float = 0.0,
    zinger_counts: float = 20000.0,
    seed: int = 0,
) -> TomoScan:
    """A parallel-beam scan of an ellipsoid phantom with flats, darks and detector artefacts.

    ``n_angles`` projections at ``θ_k = k · angle_range_deg / n_angles`` (degrees; 360 for a
    half-acquisition scan). ``object_width_px``: phantom slice width n (default ``n_cols``; for
    half acquisition about ``2 · center_px``). ``max_attenuation``: if given, the ellipsoids' μ are
    scaled so the largest line integral is this (−ln of the lowest transmission); None keeps μ.
    ``photons``: expected open-beam photons per pixel at the beam centre. ``i0_drop_fraction``:
    fraction of projections whose intensity drops by a factor drawn from ``i0_drop_range``.
    ``zinger_probability``: chance per projection pixel of a zinger. All randomness from ``seed``.
    """
    rng = np.random.default_rng(seed)
    n_obj = n_cols if object_width_px is None else int(object_width_px)
    center = (n_cols - 1) / 2.0 if center_px is None else float(center_px)
    theta_deg = np.arange(n_angles) * (float(angle_range_deg) / n_angles)
    ells = shepp_logan_ellipsoids() if ellipsoids is None else list(ellipsoids)
    proj = phantom_projections(
        (n_rows, n_obj), theta_deg, ells, n_cols=n_cols, center_px=center, oversample=oversample, dtype=np.float64
    )
    if max_attenuation is not None:
        peak = float(proj.max())
        if peak > 0:
            factor = float(max_attenuation) / peak
            proj *= factor
            ells = scale_ellipsoids(ells, factor)

    time = (np.arange(n_angles) + 0.5) / n_angles
    flat0 = photons * _beam_profile(n_rows, n_cols, 0.0, beam_amplitude, beam_drift_px)
    flat1 = photons * _beam_profile(n_rows, n_cols, 1.0, beam_amplitude, beam_drift_px)

    i0 = np.ones(n_angles)
    n_drop = int(round(i0_drop_fraction * n_angles))
    if n_drop > 0:
        idx = rng.choice(n_angles, size=n_drop, replace=False)
        i0[idx] = rng.uniform(i0_drop_range[0], i0_drop_range[1], size=n_drop)

    gain = np.ones(n_cols)  # applied to projections only (hot columns)
    dead = tuple(sorted(int(c) for c in dead_columns))
    hot = tuple(sorted(int(c) for c in hot_columns))
    for c in hot:
        gain[c] = hot_gain
    alive = np.ones(n_cols)
    for c in dead:
        alive[c] = 0.0

    def _counts(expected: np.ndarray) -> np.ndarray:
        expected = np.clip(expected, 0.0, None)
        signal = rng.poisson(expected).astype(np.float64) if noise else expected
        dark = dark_level + (rng.normal(0.0, read_noise, size=expected.shape) if noise else 0.0)
        return np.clip(np.rint(signal + dark), 0, 65535).astype(np.uint16)

    data = np.empty((n_angles, n_rows, n_cols), dtype=np.uint16)
    for k in range(n_angles):
        beam = photons * _beam_profile(n_rows, n_cols, time[k], beam_amplitude, beam_drift_px)
        expected = beam * i0[k] * np.exp(-proj[k]) * gain[None, :] * alive[None, :]
        data[k] = _counts(expected)
    flats = np.concatenate(
        [
            np.stack([_counts(flat0 * alive[None, :]) for _ in range(n_flats_before)])
            if n_flats_before
            else np.empty((0, n_rows, n_cols), np.uint16),
            np.stack([_counts(flat1 * alive[None, :]) for _ in range(n_flats_after)])
            if n_flats_after
            else np.empty((0, n_rows, n_cols), np.uint16),
        ]
    )
    darks = (
        np.stack([_counts(np.zeros((n_rows, n_cols))) for _ in range(n_darks)])
        if n_darks
        else np.empty((0, n_rows, n_cols), np.uint16)
    )

    zingers = np.empty((0, 3), dtype=np.int64)
    if zinger_probability > 0:
        hit = rng.random(data.shape) < zinger_probability
        zingers = np.argwhere(hit)
        vals = data[hit].astype(np.float64) + zinger_counts
        data[hit] = np.clip(vals, 0, 65535).astype(np.uint16)

    monitor = None if monitor_counts is None else (monitor_counts * i0).astype(np.float64)
    return TomoScan(
        data=data,
        flats=flats,
        darks=darks,
        theta_deg=theta_deg,
        monitor=monitor,
        line_integrals=proj.astype(np.float32),
        expected_flat_before=flat0,
        expected_flat_after=flat1,
        time=time,
        i0_factor=i0,
        dark_level=float(dark_level),
        dead_columns=dead,
        hot_columns=hot,
        hot_gain=float(hot_gain),
        zingers=zingers,
        center_px=center,
        object_shape=(n_rows, n_obj),
        ellipsoids=ells,
        n_flats_before=int(n_flats_before),
    )


def half_acquisition_center(n_cols: int, overlap_px: float, side: str = "right") -> float:
    """Rotation-axis column for a 360° half-acquisition scan whose two halves overlap by
    ``overlap_px`` columns: ``n_cols − 1 − (overlap_px − 1)/2`` on the right (0-based), or
    ``(overlap_px − 1)/2`` on the left. The stitched 180° slice is ``2·n_cols − overlap_px`` wide."""
    if side == "right":
        return n_cols - 1 - (overlap_px - 1) / 2.0
    if side == "left":
        return (overlap_px - 1) / 2.0
    raise ValueError(f"half_acquisition_center: side must be 'left' or 'right', got {side!r}")


# ------------------------------------------------------------------------- phase contrast
def wavelength_um(energy_kev: float) -> float:
    """X-ray wavelength in µm for a photon energy in keV."""
    return HC_KEV_A / float(energy_kev) * 1e-4


def fresnel_propagate(
    wave: np.ndarray, energy_kev: float, distance_mm: float, pixel_um: float, pad: int | None = None
) -> np.ndarray:
    """Fresnel propagation of a complex wave (…, rows, cols) over ``distance_mm``, by the transfer
    function ``exp(−iπλz(fx² + fy²))`` (the constant phase ``exp(ikz)`` dropped); fx, fy in 1/µm.
    The wave is edge-padded by ``pad`` px on every side (default: a quarter of the size) to keep
    the periodic FFT from wrapping fringes around."""
    lam = wavelength_um(energy_kev)
    z_um = float(distance_mm) * 1e3
    rows, cols = wave.shape[-2:]
    if pad is None:
        pad = max(rows, cols) // 4 + 8
    widths = [(0, 0)] * (wave.ndim - 2) + [(pad, pad), (pad, pad)]
    padded = np.pad(wave, widths, mode="edge")
    fy = np.fft.fftfreq(padded.shape[-2], d=pixel_um)
    fx = np.fft.fftfreq(padded.shape[-1], d=pixel_um)
    h = np.exp(-1j * np.pi * lam * z_um * (fy[:, None] ** 2 + fx[None, :] ** 2))
    out = np.fft.ifft2(np.fft.fft2(padded) * h)
    return out[..., pad : pad + rows, pad : pad + cols]


def phase_contrast_projections(
    shape: tuple[int, int],
    theta_deg,
    ellipsoids: Sequence[Ellipsoid] | None = None,
    *,
    energy_kev: float = 20.0,
    distance_mm: float = 100.0,
    pixel_um: float = 1.0,
    delta: float = 1e-6,
    beta: float = 1e-9,
    oversample: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Flat-normalised intensities of a homogeneous phase object after free-space propagation.

    The ellipsoids' μ is read as the volume fraction of one material (1: full) of refractive
    index ``n = 1 − δ + iβ``; the projected thickness T (µm) = line integral (px) × ``pixel_um``.
    Exit wave ``ψ = exp(−k β T − i k δ T)`` (``k = 2π/λ``, so the intensity attenuation is
    ``μ_lin = 2kβ``, i.e. ψ = exp(−μT/2 − ikδT)), propagated by :func:`fresnel_propagate` over
    ``distance_mm``. Returns (intensity (n_angles, rows, cols) float32, thickness_um float32).
    The ratio δ/β is what Paganin retrieval needs.
    """
    ells = shepp_logan_ellipsoids(1.0)[:1] if ellipsoids is None else list(ellipsoids)
    t_px = phantom_projections(shape, theta_deg, ells, oversample=oversample, dtype=np.float64)
    t_um = t_px * pixel_um
    k = 2.0 * np.pi / wavelength_um(energy_kev)
    wave = np.exp(-k * beta * t_um - 1j * k * delta * t_um)
    out = fresnel_propagate(wave, energy_kev, distance_mm, pixel_um)
    return (np.abs(out) ** 2).astype(np.float32), t_um.astype(np.float32)


# -------------------------------------------------------------------------------- stitching
def overlapping_scans(
    shape: tuple[int, int],
    theta_deg,
    ellipsoids: Sequence[Ellipsoid] | None,
    n_cols: int,
    offsets_px: Sequence[float],
    *,
    center_px: float | None = None,
    oversample: int = 2,
) -> list[np.ndarray]:
    """Side-by-side scans cut from a wider detector: scan j's column u is column ``u + offsets_px[j]``
    of the wide frame (integer or sub-pixel offsets), whose rotation axis is at ``center_px``
    (default: the phantom centre ``(n−1)/2``). Each scan is computed analytically (no resampling),
    so sub-pixel offsets are exact. Returns a list of (n_angles, rows, n_cols) float32 line integrals."""
    n = int(shape[1])
    wide_center = (n - 1) / 2.0 if center_px is None else float(center_px)
    return [
        phantom_projections(
            shape, theta_deg, ellipsoids, n_cols=n_cols, center_px=wide_center - float(off), oversample=oversample
        )
        for off in offsets_px
    ]


# -------------------------------------------------------------------------------- DXchange
def write_tomo_scan(
    path, scan: TomoScan, *, compression: str | None = "blosc-lz4", external_links: bool = False
) -> Path:
    """A simulated scan as DXchange: :func:`write_dxchange` with the flats before the scan in
    ``data_white`` and those after it in ``/exchange/data_white_end``, and the monitor in
    ``/exchange/monitor``."""
    import h5py

    nb = scan.n_flats_before
    path = write_dxchange(
        path,
        scan.data,
        scan.flats[:nb],
        scan.darks,
        scan.theta_deg,
        compression=compression,
        monitor=scan.monitor,
        external_links=external_links,
    )
    if len(scan.flats) > nb:
        with h5py.File(path, "a") as f:
            f["exchange"].create_dataset(
                "data_white_end",
                data=scan.flats[nb:].astype(np.uint16),
                chunks=(1,) + scan.flats.shape[1:],
                **image_compression(compression),
            )
    return path
