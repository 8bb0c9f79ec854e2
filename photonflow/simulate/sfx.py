"""Serial-crystallography (SFX/SSX) detector frames with exact ground truth.

A frame is drawn on any CrystFEL detector geometry (:class:`photonflow.io.geom.DetectorGeometry`,
used only through ``slab_shape``, ``panels``, ``panel_map()``, ``pixel_maps()``, ``project()`` and
``wavelength_A``). Slab pixel coordinates follow the Cheetah/OM convention of
:mod:`photonflow.peaks`: the centre of ``data[ss, fs]`` is at ``(fs, ss)``.

Crystal (hit frames)
    A unit cell (one of :data:`REAL_CELLS`, or a random triclinic cell) in a random orientation,
    uniform on SO(3). Its reciprocal basis in the lab frame is ``A = U·B`` (columns a*, b*, c*,
    Å⁻¹; the beam runs along +z, ``k_in = (0, 0, 1/λ)``). For every hkl with ``d = 1/|g| ≥ d_min``
    (``g = A·hkl``) the excitation error ``s = |k_in + g| − 1/λ`` (Å⁻¹) is computed; reflections
    with ``|s| ≤ excitation_cutoff_sigma · excitation_sigma_invA`` are kept, with partiality
    ``exp(−s²/2σ_s²)``. The diffracted ray ``k_in + g`` is projected through the geometry
    (``project``); rays that miss every panel (panel gaps, beyond the detector) are lost. The
    expected integrated intensity is
    ``crystal_scale · intensity_photons · |F|² · exp(−B/(2d²)) · partiality`` photons, with
    ``|F|²`` exponential (Wilson's acentric distribution, mean 1) and ``crystal_scale`` log-normal
    per frame: many weak spots and a few strong ones. No space-group absences (P1 lattice).

Spots
    An axis-aligned 2D Gaussian (σ_fs, σ_ss in pixels) centred on the projected ray, integrated
    exactly over each pixel (differences of ``erf``), in a window of ±(5σ + 1) pixels clipped to
    the panel the ray hits (no bleeding across panels). A spot with less than
    ``min_on_panel_fraction`` of its integral on that panel, or with an expected integral below
    ``min_spot_photons``, is neither drawn nor listed. The truth position (``fs``, ``ss``) is the
    intensity-weighted centre of the drawn, noise-free spot signal (exact by construction: the
    Gaussian is separable, so the centroid is computed from the per-axis pixel integrals); the
    ray's own position is kept as ``fs_bragg``, ``ss_bragg``. ``intensity`` is the drawn integral
    (photons).

Background and artifacts (photons per pixel, expected)
    Flat background ``background_photons · cos³2θ`` (solid angle) plus, times the polarisation
    factor ``1 − sin²2θ cos²φ`` (beam polarised along lab x), a low-q diffuse term
    ``diffuse_photons · exp(−q²/2q_d²)`` and the liquid-water (solvent) ring: the principal peak
    of ambient water at q ≈ 20 nm⁻¹ (2.0 Å⁻¹, d = 2π/q ≈ 3.1 Å; Hura et al., J. Chem. Phys. 113,
    9140 (2000)) with its shoulder at ≈ 30 nm⁻¹. The water ring is background. Artifacts, drawn
    per frame: sharp powder rings (hexagonal-ice d-spacings or random radii; Gaussian in q with
    a smooth azimuthal modulation) and streaks (a two-sided jet streak through the beam centre,
    near-horizontal, or a one-sided nozzle/shielding streak at a random angle, decaying
    exponentially outwards).

Detector
    Expected photons → Poisson counts → ``× adu_per_photon`` + Gaussian read noise (ADU) →
    clipped at ``saturation_adu``. Dead pixels read 0; hot pixels read a fixed high value (a
    fraction of saturation) plus read noise. Slab pixels on no panel read 0. Hot and dead pixels
    are a property of the detector: :func:`simulate_sfx_frames` draws them once per series.

Label map (uint8, slab shape)
    * :data:`LABEL_PEAK` where a spot's expected signal in the pixel is
      ``≥ max(peak_label_fraction · b, min(peak_label_photons, b))`` (b: the spot's brightest
      pixel, so every labelled spot has at least that pixel) and the spot's
      ``snr ≥ label_min_snr`` (fainter spots stay in the truth list and in the image, but are
      labelled background);
    * :data:`LABEL_ARTIFACT` where the expected ring + streak signal is ``≥ artifact_label_photons``
      (and not a peak pixel), and on every hot pixel (hot wins over peak);
    * :data:`LABEL_BACKGROUND` elsewhere, including the water ring, dead pixels and off-panel pixels.

Spot SNR (``SfxTruth.snr``)
    ``I / sqrt(I + n_eff · (b + σ_r²))`` with ``n_eff = 4π σ_fs σ_ss`` (the effective area of a
    Gaussian under optimal weighting), ``b`` the expected non-spot signal at the spot centre
    (photons/px) and ``σ_r = read_noise_adu / adu_per_photon``.

Units: q in nm⁻¹, d and cell lengths in Å, reciprocal vectors and excitation errors in Å⁻¹,
angles in degrees, positions and widths in slab pixels, intensities in photons, images in ADU.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.special import erf

from ._common import cached_per_geometry, check_dataset_args, water_profile, write_cxi_geometry

__all__ = [
    "LABEL_BACKGROUND",
    "LABEL_PEAK",
    "LABEL_ARTIFACT",
    "REAL_CELLS",
    "ICE_IH_D_A",
    "SfxConfig",
    "SfxDefects",
    "SfxTruth",
    "SfxFrame",
    "SfxDataset",
    "SfxTruthSet",
    "cell_reciprocal_basis",
    "random_rotation",
    "draw_defects",
    "simulate_sfx_frame",
    "simulate_sfx_frames",
    "write_sfx_dataset",
    "read_sfx_truth",
]

LABEL_BACKGROUND, LABEL_PEAK, LABEL_ARTIFACT = 0, 1, 2

#: Real protein-crystal cells (a, b, c in Å; α, β, γ in degrees).
REAL_CELLS: dict[str, tuple[float, float, float, float, float, float]] = {
    "lysozyme_tetragonal": (79.1, 79.1, 37.9, 90.0, 90.0, 90.0),  # P4₃2₁2
    "lysozyme_triclinic": (27.2, 31.9, 34.3, 88.5, 108.5, 111.9),  # P1
    "myoglobin": (64.1, 30.8, 34.8, 90.0, 105.8, 90.0),  # P2₁
    "proteinase_k": (68.3, 68.3, 108.4, 90.0, 90.0, 90.0),  # P4₃2₁2
    "thaumatin": (58.6, 58.6, 151.5, 90.0, 90.0, 90.0),  # P4₁2₁2
    "thermolysin": (92.8, 92.8, 130.4, 90.0, 90.0, 120.0),  # P6₁22
}

#: Hexagonal ice (Ih) powder-ring d-spacings, Å: (100), (002), (101), (102), (110), (103), (112).
ICE_IH_D_A = (3.897, 3.669, 3.441, 2.671, 2.249, 2.072, 1.918)

_HC_EV_A = 12398.419843320026  # h·c in eV·Å
_Q_BIN_NM = 0.01  # q bin of the ring-pixel index, nm⁻¹


# ---------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class SfxConfig:
    """Every knob of the SFX simulator (defaults: a 9.5 keV beam on a 100 mm, 75 µm detector).

    Crystal
        hit_fraction: probability that a frame is a hit (when ``hit`` is not forced).
        cells_A: cells (a, b, c Å, α, β, γ °) a hit draws from uniformly (default: all of
        :data:`REAL_CELLS`); ``random_cell=True`` draws a random triclinic cell instead, lengths
        uniform in ``cell_length_range_A``, angles in ``cell_angle_range_deg``.
        cell_jitter: relative standard deviation of each cell length per frame (0 = exact).
        d_min_A: resolution limit, Å.
        excitation_sigma_invA: width σ_s of the Gaussian partiality in the excitation error, Å⁻¹
        (mosaicity, bandwidth and divergence lumped together); reflections within
        ``excitation_cutoff_sigma`` · σ_s of the Ewald sphere are drawn.
        b_factor_A2: Wilson B factor, Å² (intensity falloff ``exp(−B/2d²)``).
        intensity_photons: mean fully recorded integrated intensity at d → ∞ for crystal_scale 1,
        photons; crystal_scale_sigma: σ of the per-frame log-normal crystal scale (median 1).
        spot_sigma_px: range of the spot Gaussian σ, pixels (uniform per spot);
        spot_anisotropy: σ_ss/σ_fs = exp(U(−a, a)).
        min_spot_photons: reflections with a smaller expected integral are not drawn;
        min_on_panel_fraction: spots with less of their integral on their panel are not drawn.
    Background (expected photons per pixel)
        background_photons: flat level at 2θ = 0 (× cos³2θ);
        diffuse_photons, diffuse_q_nm: low-q jet/air scatter ``exp(−q²/2q_d²)``, q in nm⁻¹;
        water_photons: water-ring peak; water_q_nm, water_sigma_nm: its centre and Gaussian σ;
        water_shoulder: (relative height, q nm⁻¹, σ nm⁻¹) of its second maximum;
        background_jitter: σ of the per-frame log-normal scale of the solvent terms (jet thickness).
        polarization: apply ``1 − sin²2θ cos²φ`` (beam polarised along lab x).
    Artifacts (labelled LABEL_ARTIFACT)
        ring_probability, rings_max: a frame has 1..rings_max sharp rings with this probability;
        ring_ice_fraction: chance that a ring sits at an ice d-spacing (else at a random q);
        ring_sigma_nm: range of the radial Gaussian σ, nm⁻¹; ring_photons: log-uniform range of
        the peak level, photons/px; ring_modulation: depth of the smooth azimuthal modulation.
        streak_probability, streaks_max: a frame has 1..streaks_max streaks with this probability;
        streak_jet_fraction: chance that a streak is a two-sided, near-horizontal jet streak
        (within ±streak_jet_tilt_deg of lab x), else one-sided at a random angle;
        streak_photons: log-uniform range of the level at its start, photons/px;
        streak_width_px: range of the transverse Gaussian σ, pixels; streak_decay_px: range of
        the exponential decay length; streak_start_px: range of the distance from the beam
        centre where it starts, pixels.
    Detector
        hot_pixel_fraction, dead_pixel_fraction: of the on-panel pixels;
        hot_pixel_level: range of a hot pixel's value as a fraction of ``saturation_adu``.
        adu_per_photon, read_noise_adu (Gaussian σ, ADU), saturation_adu; poisson: draw
        Poisson counts (False with ``read_noise_adu=0`` gives the expected image × ADU/photon).
    Labels
        peak_label_photons, peak_label_fraction, label_min_snr, artifact_label_photons: see the
        module docstring.
    """

    hit_fraction: float = 0.5
    cells_A: tuple = tuple(REAL_CELLS.values())
    random_cell: bool = False
    cell_length_range_A: tuple = (30.0, 120.0)
    cell_angle_range_deg: tuple = (80.0, 110.0)
    cell_jitter: float = 0.0
    d_min_A: float = 2.0
    excitation_sigma_invA: float = 4.0e-4
    excitation_cutoff_sigma: float = 3.0
    b_factor_A2: float = 25.0
    intensity_photons: float = 400.0
    crystal_scale_sigma: float = 0.7
    spot_sigma_px: tuple = (0.7, 1.4)
    spot_anisotropy: float = 0.2
    min_spot_photons: float = 2.0
    min_on_panel_fraction: float = 0.5
    background_photons: float = 0.3
    diffuse_photons: float = 1.0
    diffuse_q_nm: float = 6.0
    water_photons: float = 2.0
    water_q_nm: float = 20.0
    water_sigma_nm: float = 2.5
    water_shoulder: tuple = (0.35, 30.0, 3.5)
    background_jitter: float = 0.25
    polarization: bool = True
    ring_probability: float = 0.25
    rings_max: int = 3
    ring_ice_fraction: float = 0.5
    ring_sigma_nm: tuple = (0.03, 0.08)
    ring_photons: tuple = (3.0, 30.0)
    ring_modulation: float = 0.5
    streak_probability: float = 0.25
    streaks_max: int = 2
    streak_jet_fraction: float = 0.5
    streak_jet_tilt_deg: float = 5.0
    streak_photons: tuple = (5.0, 50.0)
    streak_width_px: tuple = (0.6, 1.5)
    streak_decay_px: tuple = (100.0, 600.0)
    streak_start_px: tuple = (15.0, 120.0)
    hot_pixel_fraction: float = 1.0e-4
    dead_pixel_fraction: float = 2.0e-4
    hot_pixel_level: tuple = (0.2, 1.0)
    adu_per_photon: float = 10.0
    read_noise_adu: float = 3.0
    saturation_adu: float = 65535.0
    poisson: bool = True
    peak_label_photons: float = 1.0
    peak_label_fraction: float = 0.1
    label_min_snr: float = 3.0
    artifact_label_photons: float = 1.0

    def __post_init__(self):
        def check(ok, name, value, what):
            if not ok:
                raise ValueError(f"SfxConfig.{name} must be {what}, got {value!r}")

        for name in (
            "hit_fraction",
            "ring_probability",
            "streak_probability",
            "ring_ice_fraction",
            "streak_jet_fraction",
            "min_on_panel_fraction",
            "hot_pixel_fraction",
            "dead_pixel_fraction",
            "peak_label_fraction",
        ):
            v = getattr(self, name)
            check(0.0 <= v <= 1.0, name, v, "in [0, 1]")
        for name in (
            "d_min_A",
            "excitation_sigma_invA",
            "excitation_cutoff_sigma",
            "adu_per_photon",
            "saturation_adu",
            "water_sigma_nm",
            "diffuse_q_nm",
        ):
            v = getattr(self, name)
            check(v > 0, name, v, "> 0")
        for name in (
            "intensity_photons",
            "background_photons",
            "diffuse_photons",
            "water_photons",
            "read_noise_adu",
            "cell_jitter",
            "crystal_scale_sigma",
            "background_jitter",
            "b_factor_A2",
            "min_spot_photons",
            "peak_label_photons",
            "artifact_label_photons",
            "spot_anisotropy",
            "ring_modulation",
            "label_min_snr",
        ):
            v = getattr(self, name)
            check(v >= 0, name, v, "≥ 0")
        for name in (
            "spot_sigma_px",
            "ring_sigma_nm",
            "ring_photons",
            "streak_photons",
            "streak_width_px",
            "streak_decay_px",
            "streak_start_px",
            "hot_pixel_level",
            "cell_length_range_A",
            "cell_angle_range_deg",
        ):
            v = getattr(self, name)
            check(len(v) == 2 and 0 <= v[0] <= v[1], name, v, "a range (low, high) with 0 ≤ low ≤ high")
        check(self.spot_sigma_px[0] > 0, "spot_sigma_px", self.spot_sigma_px, "positive")
        if not self.random_cell:
            check(
                len(self.cells_A) > 0 and all(len(c) == 6 for c in self.cells_A),
                "cells_A",
                self.cells_A,
                "a non-empty sequence of (a, b, c, α, β, γ)",
            )

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "SfxConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"SfxConfig: unknown field(s) {sorted(unknown)}")
        kw = {}
        for k, v in d.items():
            if isinstance(v, list):
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            kw[k] = v
        return cls(**kw)


# ---------------------------------------------------------------------------------- results
@dataclass
class SfxDefects:
    """Hot and dead pixels of a detector: flat slab indices (``ss · n_fs + fs``), hot values in ADU."""

    hot_pixels: np.ndarray
    hot_adu: np.ndarray
    dead_pixels: np.ndarray


_PEAK_FIELDS = (
    ("fs", np.float64),
    ("ss", np.float64),
    ("intensity", np.float64),
    ("d_A", np.float64),
    ("panel", np.int32),
    ("fs_bragg", np.float64),
    ("ss_bragg", np.float64),
    ("partiality", np.float64),
    ("excitation_error_invA", np.float64),
    ("sigma_fs", np.float64),
    ("sigma_ss", np.float64),
    ("max_pixel", np.float64),
    ("background", np.float64),
    ("snr", np.float64),
)


@dataclass
class SfxTruth:
    """Ground truth of one frame; per-peak arrays have one entry per drawn spot.

    fs, ss: intensity-weighted centre of the noise-free spot signal (slab pixels);
    intensity: its expected integral on the panel (photons); hkl (n, 3); d_A (Å); panel index;
    fs_bragg, ss_bragg: where the diffracted ray meets the panel (the Gaussian's centre);
    partiality; excitation_error_invA (Å⁻¹); sigma_fs, sigma_ss (pixels); max_pixel: expected spot
    photons in its brightest pixel; background: expected non-spot photons/px at its centre; snr
    (module docstring). Per frame: is_hit, cell_A (a, b, c, α, β, γ; NaN if no hit),
    reciprocal_basis (3×3, columns a*, b*, c* in the lab frame, Å⁻¹), crystal_scale,
    background_scale, wavelength_A, hot_pixels and dead_pixels (flat slab indices), rings
    (q_nm, d_A, sigma_nm, photons, ice) and streaks (angle_deg, two_sided, photons, width_px,
    decay_px, start_px) as lists of dicts.
    """

    is_hit: bool
    fs: np.ndarray
    ss: np.ndarray
    intensity: np.ndarray
    hkl: np.ndarray
    d_A: np.ndarray
    panel: np.ndarray
    fs_bragg: np.ndarray
    ss_bragg: np.ndarray
    partiality: np.ndarray
    excitation_error_invA: np.ndarray
    sigma_fs: np.ndarray
    sigma_ss: np.ndarray
    max_pixel: np.ndarray
    background: np.ndarray
    snr: np.ndarray
    cell_A: np.ndarray = field(default_factory=lambda: np.full(6, np.nan))
    reciprocal_basis: np.ndarray = field(default_factory=lambda: np.full((3, 3), np.nan))
    crystal_scale: float = 0.0
    background_scale: float = 1.0
    wavelength_A: float = float("nan")
    hot_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dead_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rings: list = field(default_factory=list)
    streaks: list = field(default_factory=list)

    @property
    def n_peaks(self) -> int:
        return len(self.fs)

    def __len__(self) -> int:
        return len(self.fs)

    def positions(self) -> np.ndarray:
        """(n, 2) array of (fs, ss)."""
        return np.column_stack([self.fs, self.ss])

    def detectable(self, min_snr: float = 3.0) -> np.ndarray:
        """Boolean mask of the peaks with ``snr ≥ min_snr``."""
        return self.snr >= min_snr

    def peak_list(self, min_snr: float = 0.0, adu_per_photon: float = 1.0):
        """The true peaks with ``snr ≥ min_snr`` as a :class:`photonflow.peaks.PeakList` (intensity in ADU)."""
        from ..peaks.peaklist import PeakList

        k = self.snr >= min_snr
        npix = np.ceil(4.0 * np.pi * self.sigma_fs[k] * self.sigma_ss[k]).astype(np.int64)
        return PeakList(
            self.fs[k],
            self.ss[k],
            self.intensity[k] * adu_per_photon,
            npix=npix,
            max_intensity=self.max_pixel[k] * adu_per_photon,
            snr=self.snr[k],
        )

    @classmethod
    def empty(cls, **kw) -> "SfxTruth":
        arrays = {name: np.zeros(0, dt) for name, dt in _PEAK_FIELDS}
        arrays["hkl"] = np.zeros((0, 3), np.int32)
        arrays.update(kw)
        arrays.setdefault("is_hit", False)
        return cls(**arrays)


@dataclass
class SfxFrame:
    """One simulated frame: ``image`` (float32 ADU, slab shape), ``labels`` (uint8), ``truth``;
    ``expected``: the noise-free expected photons per pixel (float32, 0 off panels, hot and dead
    pixels not applied), when asked for."""

    image: np.ndarray
    labels: np.ndarray
    truth: SfxTruth
    expected: np.ndarray | None = None


# ---------------------------------------------------------------------------------- crystallography
def cell_reciprocal_basis(cell_A: Sequence[float]) -> np.ndarray:
    """Reciprocal basis B (3×3, columns a*, b*, c*, Å⁻¹) of a cell (a, b, c Å, α, β, γ °).

    Direct basis: a along x, b in the xy plane; ``B = (M⁻¹)ᵀ`` with M the direct basis
    (columns a, b, c), so that ``|B·hkl| = 1/d_hkl``.
    """
    a, b, c, al, be, ga = (float(v) for v in cell_A)
    al, be, ga = np.radians([al, be, ga])
    ca, cb, cg, sg = np.cos(al), np.cos(be), np.cos(ga), np.sin(ga)
    cy = (ca - cb * cg) / sg
    cz2 = 1.0 - cb * cb - cy * cy
    if not (a > 0 and b > 0 and c > 0) or cz2 <= 0:
        raise ValueError(f"invalid unit cell {tuple(cell_A)}")
    m = np.array([[a, b * cg, c * cb], [0.0, b * sg, c * cy], [0.0, 0.0, c * np.sqrt(cz2)]])
    return np.linalg.inv(m).T


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix uniform on SO(3) (a normalised 4D Gaussian quaternion)."""
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


_HKL_CACHE: dict = {}


def _hkl_in_sphere(cell_A, d_min_A: float):
    """All hkl ≠ 0 with d ≥ d_min for this cell: (hkl int16 (n, 3), g = B·hkl (n, 3) in the crystal
    frame, |g|² (n,)), Å⁻¹; cached (a few per process)."""
    key = (tuple(round(float(v), 6) for v in cell_A), round(float(d_min_A), 6))
    hit = _HKL_CACHE.get(key)
    if hit is not None:
        return hit
    bmat = cell_reciprocal_basis(cell_A)
    lengths = np.linalg.norm(np.linalg.inv(bmat.T), axis=0)  # |a|, |b|, |c| of the direct basis
    hmax = np.floor(lengths / d_min_A).astype(int)
    grids = np.meshgrid(*(np.arange(-m, m + 1, dtype=np.int16) for m in hmax), indexing="ij")
    hkl = np.stack([g.ravel() for g in grids], axis=1)
    g = hkl @ bmat.T
    g2 = np.einsum("ij,ij->i", g, g)
    keep = (g2 <= 1.0 / (d_min_A * d_min_A)) & np.any(hkl != 0, axis=1)
    entry = (np.ascontiguousarray(hkl[keep]), np.ascontiguousarray(g[keep]), g2[keep])
    if len(_HKL_CACHE) >= 8:
        _HKL_CACHE.pop(next(iter(_HKL_CACHE)))
    _HKL_CACHE[key] = entry
    return entry


def _draw_cell(rng: np.random.Generator, config: SfxConfig) -> np.ndarray:
    if config.random_cell:
        lo, hi = config.cell_length_range_A
        alo, ahi = config.cell_angle_range_deg
        for _ in range(100):
            cell = np.concatenate([rng.uniform(lo, hi, 3), rng.uniform(alo, ahi, 3)])
            try:
                cell_reciprocal_basis(cell)
                return cell
            except ValueError:
                continue
        raise ValueError(f"no valid cell with angles in {config.cell_angle_range_deg}")
    cell = np.array(config.cells_A[int(rng.integers(len(config.cells_A)))], dtype=np.float64)
    if config.cell_jitter > 0:
        cell[:3] *= 1.0 + config.cell_jitter * rng.standard_normal(3)
    return cell


# ---------------------------------------------------------------------------------- geometry cache
class _Maps:
    """Per-geometry quantities computed once (float32 unless noted)."""

    def __init__(self, geometry):
        self.shape = tuple(int(v) for v in geometry.slab_shape)
        self.wavelength_A = float(geometry.wavelength_A)
        pm = np.asarray(geometry.panel_map())
        self.panel_map = pm
        self.on_panel = pm >= 0
        self.on_flat = np.flatnonzero(self.on_panel.ravel())
        panels = list(geometry.panels)
        self.bounds = np.array([[p.min_fs, p.max_fs, p.min_ss, p.max_ss] for p in panels], dtype=np.int64)
        off = ~self.on_panel
        X, Y, Z = (np.asarray(a, dtype=np.float32) for a in geometry.lab_maps_m(centre=True))  # metres
        X[off], Y[off], Z[off] = 0.0, 0.0, 1.0
        tth = np.arctan2(np.hypot(X, Y), Z)
        res = np.float32(np.median([float(p.res) for p in panels]))  # pixels per metre
        self.x = X * res  # lab position from the beam axis, (typical) pixels
        self.y = Y * res
        self.q = np.sin(tth * np.float32(0.5)) * np.float32(40.0 * np.pi / self.wavelength_A)  # nm⁻¹
        self.q[off] = -1.0
        self.phi = np.arctan2(Y, X)
        cos2t = np.cos(tth)
        self.cos3 = cos2t * cos2t * cos2t  # relative solid angle of a pixel
        self.cos3[off] = 0.0
        self.pol = 1.0 - (1.0 - cos2t * cos2t) * np.cos(self.phi) ** 2  # polarised along lab x
        # on-panel pixels ordered by q bins of _Q_BIN_NM (a radix sort), to find a ring's pixels fast
        qv = self.q.ravel()[self.on_flat]
        qbin = (np.maximum(qv, 0.0) / _Q_BIN_NM).astype(np.int64)
        qbin = np.minimum(qbin, np.iinfo(np.uint16).max).astype(np.uint16)
        order = np.argsort(qbin, kind="stable")
        self.q_order = self.on_flat[order]
        self.q_bins_sorted = qbin[order]
        self.q_range = (float(np.percentile(qv, 2)), float(np.percentile(qv, 98))) if qv.size else (0.0, 0.0)
        #: smallest d on the detector, Å (reflections beyond it cannot hit a panel)
        self.d_detector_A = 20.0 * np.pi / float(qv.max()) if qv.size and qv.max() > 0 else 0.0
        self.off_flat = np.flatnonzero(off.ravel())
        self._templates: dict = {}

    def templates(self, config: SfxConfig):
        key = (
            config.diffuse_q_nm,
            config.water_q_nm,
            config.water_sigma_nm,
            tuple(config.water_shoulder),
            config.polarization,
        )
        t = self._templates.get(key)
        if t is None:
            q = self.q
            w = self.cos3 * self.pol if config.polarization else self.cos3
            diffuse = np.exp(np.float32(-0.5 / config.diffuse_q_nm**2) * q * q) * w
            water = water_profile(q, config.water_q_nm, config.water_sigma_nm, config.water_shoulder) * w
            t = (self.cos3, diffuse.astype(np.float32), water.astype(np.float32))
            self._templates = {key: t}
        return t


_MAPS: dict[int, tuple[Any, _Maps]] = {}


def _maps(geometry) -> _Maps:
    return cached_per_geometry(_MAPS, geometry, _Maps)


# ---------------------------------------------------------------------------------- pieces of a frame
def draw_defects(geometry, rng: np.random.Generator, config: SfxConfig | None = None) -> SfxDefects:
    """Hot and dead pixels among the on-panel pixels (disjoint), as fractions of the config."""
    config = config or SfxConfig()
    m = _maps(geometry)
    n = m.on_flat.size
    n_hot = int(rng.binomial(n, config.hot_pixel_fraction)) if n else 0
    n_dead = int(rng.binomial(n, config.dead_pixel_fraction)) if n else 0
    pick = rng.choice(n, size=min(n, n_hot + n_dead), replace=False) if n else np.zeros(0, np.int64)
    hot = np.sort(m.on_flat[pick[:n_hot]])
    dead = np.sort(m.on_flat[pick[n_hot:]])
    lo, hi = config.hot_pixel_level
    hot_adu = rng.uniform(lo, hi, hot.size) * config.saturation_adu
    return SfxDefects(hot.astype(np.int64), hot_adu, dead.astype(np.int64))


def _loguniform(rng, lo_hi) -> float:
    lo, hi = lo_hi
    return float(np.exp(rng.uniform(np.log(max(lo, 1e-12)), np.log(max(hi, 1e-12))))) if hi > 0 else 0.0


def _add_rings(rng, m: _Maps, config: SfxConfig, art_flat: np.ndarray) -> list:
    rings = []
    if rng.random() >= config.ring_probability or m.q_order.size == 0:
        return rings
    q_lo, q_hi = m.q_range
    ice_q = [20.0 * np.pi / d for d in ICE_IH_D_A if q_lo <= 20.0 * np.pi / d <= q_hi]
    for _ in range(int(rng.integers(1, config.rings_max + 1))):
        ice = bool(ice_q) and rng.random() < config.ring_ice_fraction
        q0 = float(ice_q[int(rng.integers(len(ice_q)))]) if ice else float(rng.uniform(q_lo, q_hi))
        sigma = float(rng.uniform(*config.ring_sigma_nm))
        height = _loguniform(rng, config.ring_photons)
        amp = rng.uniform(0.0, config.ring_modulation, 3) / np.arange(1, 4)
        phase = rng.uniform(0.0, 2 * np.pi, 3)
        b0, b1 = (int(max(v, 0.0) / _Q_BIN_NM) for v in (q0 - 5 * sigma, q0 + 5 * sigma))
        i0, i1 = np.searchsorted(m.q_bins_sorted, [b0, b1 + 1])
        sel = m.q_order[i0:i1]
        z = (m.q.ravel()[sel] - q0) / sigma
        phi = m.phi.ravel()[sel]
        mod = 1.0 + sum(a * np.cos((k + 1) * phi + p) for k, (a, p) in enumerate(zip(amp, phase)))
        art_flat[sel] += (height * np.exp(-0.5 * z * z) * np.maximum(mod, 0.1)).astype(np.float32)
        rings.append({"q_nm": q0, "d_A": 20.0 * np.pi / q0, "sigma_nm": sigma, "photons": height, "ice": ice})
    return rings


def _add_streaks(rng, m: _Maps, config: SfxConfig, art_flat: np.ndarray) -> list:
    streaks = []
    if rng.random() >= config.streak_probability or m.on_flat.size == 0:
        return streaks
    x = m.x.ravel()[m.on_flat]
    y = m.y.ravel()[m.on_flat]
    for _ in range(int(rng.integers(1, config.streaks_max + 1))):
        jet = rng.random() < config.streak_jet_fraction
        if jet:
            angle = float(rng.uniform(-config.streak_jet_tilt_deg, config.streak_jet_tilt_deg))
        else:
            angle = float(rng.uniform(-180.0, 180.0))
        height = _loguniform(rng, config.streak_photons)
        width = float(rng.uniform(*config.streak_width_px))
        decay = float(rng.uniform(*config.streak_decay_px))
        start = float(rng.uniform(*config.streak_start_px))
        c, s = np.float32(np.cos(np.radians(angle))), np.float32(np.sin(np.radians(angle)))
        u = y * c - x * s  # across the streak
        near = np.abs(u) < 5.0 * width
        t = x[near] * c + y[near] * s  # along it
        if jet:
            t = np.abs(t)
        un = u[near]
        val = height * np.exp(-(t - start) / decay - 0.5 * (un / width) ** 2)
        val = np.where(t >= start, val, 0.0).astype(np.float32)
        art_flat[m.on_flat[near]] += val
        streaks.append(
            {
                "angle_deg": angle,
                "two_sided": bool(jet),
                "photons": height,
                "width_px": width,
                "decay_px": decay,
                "start_px": start,
            }
        )
    return streaks


def _reflections(geometry, m: _Maps, config: SfxConfig, cell: np.ndarray, rot: np.ndarray):
    """Reflections near the Ewald sphere that hit a panel: dict of per-reflection arrays."""
    lam = m.wavelength_A
    k = 1.0 / lam
    d_min = max(config.d_min_A, 0.98 * m.d_detector_A)  # nothing beyond the detector's edge
    bmat = cell_reciprocal_basis(cell)
    if config.cell_jitter == 0 or config.random_cell:
        hkl, gc, g2 = _hkl_in_sphere(tuple(cell), d_min)
    else:  # enumerate on the nominal cell with a margin, compute g on the jittered one
        nominal = min(config.cells_A, key=lambda c: float(np.abs(np.asarray(c, float) - cell).sum()))
        margin = max(1.0 - 4.0 * config.cell_jitter, 0.5)
        hkl = _hkl_in_sphere(tuple(nominal), d_min * margin)[0]
        gc = hkl @ bmat.T
        g2 = np.einsum("ij,ij->i", gc, gc)
    amat = rot @ bmat
    # |k_in + g|² = |g|² + 2k·g_z + k², with g_z = (rot·gc)_z
    gz = gc @ rot[2]
    s = np.sqrt(np.maximum(g2 + 2.0 * k * gz + k * k, 0.0)) - k
    cut = config.excitation_cutoff_sigma * config.excitation_sigma_invA
    keep = np.flatnonzero((np.abs(s) <= cut) & (g2 <= 1.0 / d_min**2))
    hkl, s, g2 = hkl[keep], s[keep], g2[keep]
    g = hkl @ amat.T
    kout = g + np.array([0.0, 0.0, k])
    directions = kout / np.linalg.norm(kout, axis=1, keepdims=True)
    if len(directions):
        panel, fs, ss = (np.asarray(a) for a in geometry.project(directions))
    else:
        panel, fs, ss = np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    hitp = panel >= 0
    d = 1.0 / np.sqrt(g2[hitp])
    s = s[hitp]
    return {
        "hkl": hkl[hitp].astype(np.int32),
        "d_A": d,
        "excitation_error_invA": s,
        "partiality": np.exp(-0.5 * (s / config.excitation_sigma_invA) ** 2),
        "panel": panel[hitp].astype(np.int32),
        "fs_bragg": fs[hitp].astype(np.float64),
        "ss_bragg": ss[hitp].astype(np.float64),
        "reciprocal_basis": amat,
    }


def _render_spots(m: _Maps, cx, cy, sx, sy, total, panel):
    """Pixel-integrated Gaussians clipped to their panels.

    Returns (on-panel fraction of each integral, drawn integral, centroid fs, centroid ss,
    brightest pixel value, flat slab indices (n, W, W), values (n, W, W), zero off the panel).
    """
    n = len(cx)
    h = int(np.ceil(5.0 * max(float(sx.max()), float(sy.max())))) + 1
    offs = np.arange(-h, h + 1)
    b = m.bounds[panel]

    def axis(c, sig, lo, hi):
        idx = np.rint(c).astype(np.int64)[:, None] + offs
        scale = 1.0 / (np.sqrt(2.0) * sig[:, None])
        w = 0.5 * (erf((idx + 0.5 - c[:, None]) * scale) - erf((idx - 0.5 - c[:, None]) * scale))
        w *= (idx >= lo[:, None]) & (idx <= hi[:, None])
        return idx, w

    ix, wx = axis(cx, sx, b[:, 0], b[:, 1])
    iy, wy = axis(cy, sy, b[:, 2], b[:, 3])
    sum_x, sum_y = wx.sum(1), wy.sum(1)
    frac = sum_x * sum_y
    with np.errstate(invalid="ignore", divide="ignore"):
        cfs = (wx * ix).sum(1) / sum_x
        css = (wy * iy).sum(1) / sum_y
    values = total[:, None, None] * wy[:, :, None] * wx[:, None, :]
    flat = iy[:, :, None] * m.shape[1] + ix[:, None, :]
    peak = values.reshape(n, -1).max(axis=1) if n else np.zeros(0)
    return frac, total * frac, cfs, css, peak, flat, values


# ---------------------------------------------------------------------------------- frames
def simulate_sfx_frame(
    geometry,
    rng: np.random.Generator | int | None = None,
    config: SfxConfig | None = None,
    hit: bool | None = None,
    defects: SfxDefects | None = None,
    return_expected: bool = False,
) -> SfxFrame:
    """Simulate one frame on ``geometry`` (see the module docstring).

    ``rng``: a :class:`numpy.random.Generator` (or a seed); ``hit``: force a hit (True) or a
    non-hit (False), else a hit with probability ``config.hit_fraction``; ``defects``: the
    detector's hot/dead pixels (default: drawn from ``rng``); ``return_expected``: keep the
    noise-free expected photons per pixel in :attr:`SfxFrame.expected`.
    """
    config = config or SfxConfig()
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    m = _maps(geometry)
    if defects is None:
        defects = draw_defects(geometry, rng, config)
    is_hit = bool(rng.random() < config.hit_fraction) if hit is None else bool(hit)
    n_pix = m.shape[0] * m.shape[1]

    # background (expected photons per pixel)
    flat_t, diffuse_t, water_t = m.templates(config)
    bscale = float(np.exp(config.background_jitter * rng.standard_normal())) if config.background_jitter else 1.0
    expected = flat_t * np.float32(config.background_photons)
    if config.diffuse_photons:
        expected += diffuse_t * np.float32(config.diffuse_photons * bscale)
    if config.water_photons:
        expected += water_t * np.float32(config.water_photons * bscale)
    exp_flat = expected.ravel()

    # artifacts
    art_flat = np.zeros(n_pix, np.float32)
    rings = _add_rings(rng, m, config, art_flat)
    streaks = _add_streaks(rng, m, config, art_flat)
    labels = np.zeros(n_pix, np.uint8)
    if rings or streaks:
        labels[art_flat >= config.artifact_label_photons] = LABEL_ARTIFACT
        exp_flat += art_flat

    truth_kw = dict(
        wavelength_A=m.wavelength_A,
        background_scale=bscale,
        hot_pixels=defects.hot_pixels,
        dead_pixels=defects.dead_pixels,
        rings=rings,
        streaks=streaks,
    )
    if is_hit:
        truth = _draw_crystal(rng, geometry, m, config, exp_flat, labels, truth_kw)
    else:
        truth = SfxTruth.empty(is_hit=False, **truth_kw)

    if m.off_flat.size:
        exp_flat[m.off_flat] = 0.0
    # detector
    if config.poisson:
        image = rng.poisson(expected).astype(np.float32)
    else:
        image = expected.copy()
    image *= np.float32(config.adu_per_photon)
    img_flat = image.ravel()
    if config.read_noise_adu > 0:
        img_flat += rng.standard_normal(n_pix, dtype=np.float32) * np.float32(config.read_noise_adu)
    np.minimum(img_flat, np.float32(config.saturation_adu), out=img_flat)
    if m.off_flat.size:
        img_flat[m.off_flat] = 0.0
    if defects.hot_pixels.size:
        hot_val = defects.hot_adu.astype(np.float32)
        if config.read_noise_adu > 0:
            hot_val = hot_val + rng.standard_normal(hot_val.size, dtype=np.float32) * np.float32(config.read_noise_adu)
        img_flat[defects.hot_pixels] = np.minimum(hot_val, np.float32(config.saturation_adu))
        labels[defects.hot_pixels] = LABEL_ARTIFACT
    if defects.dead_pixels.size:
        img_flat[defects.dead_pixels] = 0.0
        labels[defects.dead_pixels] = LABEL_BACKGROUND
    return SfxFrame(
        image=image, labels=labels.reshape(m.shape), truth=truth, expected=expected if return_expected else None
    )


def _draw_crystal(rng, geometry, m: _Maps, config: SfxConfig, exp_flat, labels, truth_kw) -> SfxTruth:
    cell = _draw_cell(rng, config)
    rot = random_rotation(rng)
    cscale = float(np.exp(config.crystal_scale_sigma * rng.standard_normal())) if config.crystal_scale_sigma else 1.0
    refl = _reflections(geometry, m, config, cell, rot)
    n = len(refl["d_A"])
    f2 = rng.exponential(1.0, n)
    lo, hi = config.spot_sigma_px
    sig = rng.uniform(lo, hi, n)
    aniso = (
        np.exp(rng.uniform(-config.spot_anisotropy, config.spot_anisotropy, n))
        if config.spot_anisotropy
        else np.ones(n)
    )
    sx, sy = sig / np.sqrt(aniso), sig * np.sqrt(aniso)
    full = (
        cscale
        * config.intensity_photons
        * f2
        * np.exp(-config.b_factor_A2 / (2.0 * refl["d_A"] ** 2))
        * refl["partiality"]
    )
    keep = full >= config.min_spot_photons
    crystal_kw = dict(cell_A=cell, reciprocal_basis=refl["reciprocal_basis"], crystal_scale=cscale)
    if not keep.any():
        return SfxTruth.empty(is_hit=True, **crystal_kw, **truth_kw)
    sel = {k: v[keep] for k, v in refl.items() if k != "reciprocal_basis"}
    sx, sy, full = sx[keep], sy[keep], full[keep]
    frac, total, cfs, css, peak, flat, values = _render_spots(
        m, sel["fs_bragg"], sel["ss_bragg"], sx, sy, full, sel["panel"]
    )
    ok = frac >= config.min_on_panel_fraction
    flat, values = flat[ok], values[ok]
    inside = values > 0
    # background under each spot (before the spots are added)
    centre = np.rint(css[ok]).astype(np.int64) * m.shape[1] + np.rint(cfs[ok]).astype(np.int64)
    bg = exp_flat[centre].astype(np.float64)
    np.add.at(exp_flat, flat[inside], values[inside].astype(np.float32))
    s_r2 = (config.read_noise_adu / config.adu_per_photon) ** 2
    tot = total[ok]
    snr = tot / np.sqrt(tot + 4.0 * np.pi * sx[ok] * sy[ok] * (bg + s_r2))
    pk = peak[ok]
    thr = np.maximum(config.peak_label_fraction * pk, np.minimum(config.peak_label_photons, pk))
    lab = inside & (values >= thr[:, None, None]) & (snr >= config.label_min_snr)[:, None, None]
    labels[flat[lab]] = LABEL_PEAK
    arrays = {k: v[ok] for k, v in sel.items()}
    arrays.update(
        fs=cfs[ok],
        ss=css[ok],
        intensity=tot,
        sigma_fs=sx[ok],
        sigma_ss=sy[ok],
        max_pixel=peak[ok],
        background=bg,
        snr=snr,
    )
    return SfxTruth(is_hit=True, **arrays, **crystal_kw, **truth_kw)


def _frame_seeds(seed, n_frames: int):
    root = np.random.SeedSequence(seed)
    defects_seed = np.random.SeedSequence(root.entropy, spawn_key=(0,))
    return defects_seed, [np.random.SeedSequence(root.entropy, spawn_key=(i + 1,)) for i in range(n_frames)]


def simulate_sfx_frames(
    geometry, n_frames: int, seed: int | None = 0, config: SfxConfig | None = None, return_expected: bool = False
) -> list[SfxFrame]:
    """``n_frames`` frames with the same hot/dead pixels (drawn from child 0 of
    ``SeedSequence(seed)``); frame i draws from child i + 1, so it does not depend on ``n_frames``."""
    config = config or SfxConfig()
    defects_seed, seeds = _frame_seeds(seed, int(n_frames))
    defects = draw_defects(geometry, np.random.default_rng(defects_seed), config)
    return [
        simulate_sfx_frame(geometry, np.random.default_rng(s), config, defects=defects, return_expected=return_expected)
        for s in seeds
    ]


# ---------------------------------------------------------------------------------- files
@dataclass
class SfxDataset:
    """What :func:`write_sfx_dataset` wrote: CXI files, the geometry copy, the truth file."""

    cxi_files: list[Path]
    geometry_path: Path
    truth_path: Path
    n_frames: int
    n_hits: int

    @property
    def refs(self) -> list[tuple[Path, int]]:
        """(cxi path, event) of every frame, in order."""
        return [(p, i) for p in self.cxi_files for i in range(_frames_in(p))]


def _frames_in(path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return int(f["/entry_1/data_1/data"].shape[0])


@dataclass
class SfxTruthSet:
    """A truth file read back: one :class:`SfxTruth` per frame, where each frame lives, the
    geometry path, the simulator config (dict) and, if asked for, the label maps (n, ss, fs)."""

    truths: list[SfxTruth]
    refs: list[tuple[Path, int]]
    geometry_path: Path | None
    config: dict
    labels: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.truths)


def write_sfx_dataset(
    directory: str | os.PathLike,
    geometry,
    n_frames: int,
    frames_per_file: int = 50,
    seed: int | None = 0,
    config: SfxConfig | None = None,
    compression: str | None = "bitshuffle",
    dtype=np.int32,
    prefix: str = "sfx",
    labels: bool = True,
) -> SfxDataset:
    """Write ``n_frames`` simulated frames as multi-event CXI files plus their geometry and truth.

    * ``{prefix}_{k:04d}.cxi``: ``/entry_1/data_1/data`` (n, ss, fs) in ADU, ``dtype`` int32
      (rounded; compresses about 3×) or float32 (exact, but its read-noise mantissas hardly
      compress), one chunk per frame, compressed with ``compression`` ("bitshuffle":
      Bitshuffle/LZ4 via hdf5plugin, as Eiger/Jungfrau writers do; "lz4"; "gzip"; None), also
      linked as ``/entry_1/instrument_1/detector_1/data``; per-event photon energy (eV) in
      ``/LCLS/photon_energy_eV``, the detector distance (m, median panel clen) in
      ``/entry_1/instrument_1/detector_1/distance``;
    * ``{prefix}.geom``: the CrystFEL geometry;
    * ``{prefix}_truth.h5``: the ground truth, read back with :func:`read_sfx_truth`.

    Frames are the same as :func:`simulate_sfx_frames` with the same seed and config. Every file
    is written atomically.
    """
    from ..io.cxi import write_cxi_frames

    config = config or SfxConfig()
    directory, n_frames, frames_per_file, dtype = check_dataset_args(
        directory, n_frames, frames_per_file, dtype, compression
    )
    m = _maps(geometry)
    shape = m.shape
    defects_seed, seeds = _frame_seeds(seed, n_frames)
    defects = draw_defects(geometry, np.random.default_rng(defects_seed), config)
    energy_eV = float(getattr(geometry, "photon_energy_eV", _HC_EV_A / m.wavelength_A))
    clen = float(np.median([float(p.clen) for p in geometry.panels]))

    geom_path = write_cxi_geometry(
        geometry, directory / f"{prefix}.geom", config.adu_per_photon, max_adu=config.saturation_adu
    )
    truths: list[SfxTruth] = []
    label_maps = np.zeros((n_frames, *shape), np.uint8) if labels else None
    cxi_files, refs = [], []

    def draw(i: int) -> np.ndarray:
        fr = simulate_sfx_frame(geometry, np.random.default_rng(seeds[i]), config, defects=defects)
        truths.append(fr.truth)
        if label_maps is not None:
            label_maps[i] = fr.labels
        return fr.image if dtype == np.float32 else np.rint(fr.image).astype(np.int32)

    for k, start in enumerate(range(0, n_frames, frames_per_file)):
        count = min(frames_per_file, n_frames - start)
        path = directory / f"{prefix}_{k:04d}.cxi"
        write_cxi_frames(
            path,
            (draw(start + j) for j in range(count)),
            count,
            shape,
            dtype,
            photon_energy_eV=energy_eV,
            distance_m=clen,
            compression=compression,
        )
        refs += [(path.name, j) for j in range(count)]
        cxi_files.append(path)

    truth_path = directory / f"{prefix}_truth.h5"
    _write_truth(truth_path, truths, refs, geom_path.name, config, seed, defects, label_maps, shape, m, energy_eV)
    return SfxDataset(cxi_files, geom_path, truth_path, n_frames, sum(t.is_hit for t in truths))


def _write_truth(path, truths, refs, geom_name, config, seed, defects, label_maps, shape, m, energy_eV):
    import h5py

    from ..io.atomic import atomic_path
    from ..io.compression import dataset_compression

    n = len(truths)
    counts = np.array([t.n_peaks for t in truths], dtype=np.int64)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(
            {
                "format": "photonflow.sfx_truth/1",
                "n_frames": n,
                "seed": -1 if seed is None else int(seed),
                "geometry": geom_name,
                "wavelength_A": m.wavelength_A,
                "photon_energy_eV": energy_eV,
                "slab_shape": np.array(shape),
                "adu_per_photon": config.adu_per_photon,
                "config": json.dumps(config.to_dict()),
                "labels": "0 background, 1 peak, 2 artifact",
            }
        )
        ev = f.create_group("events")
        ev["file"] = np.array([r[0] for r in refs], dtype=h5py.string_dtype())
        ev["event"] = np.array([r[1] for r in refs], dtype=np.int64)
        ev["is_hit"] = np.array([t.is_hit for t in truths], dtype=bool)
        ev["n_peaks"] = counts
        ev["peak_offset"] = np.concatenate([[0], np.cumsum(counts)])
        ev["cell_A"] = np.array([t.cell_A for t in truths], dtype=np.float64).reshape(n, 6)
        ev["reciprocal_basis"] = np.array([t.reciprocal_basis for t in truths], dtype=np.float64).reshape(n, 3, 3)
        ev["crystal_scale"] = np.array([t.crystal_scale for t in truths])
        ev["background_scale"] = np.array([t.background_scale for t in truths])
        ev["artifacts"] = np.array(
            [json.dumps({"rings": t.rings, "streaks": t.streaks}) for t in truths], dtype=h5py.string_dtype()
        )
        pk = f.create_group("peaks")
        for name, dt in _PEAK_FIELDS:
            pk[name] = np.concatenate([np.asarray(getattr(t, name), dt) for t in truths]) if n else np.zeros(0, dt)
        pk["hkl"] = np.concatenate([t.hkl for t in truths]).astype(np.int32).reshape(-1, 3)
        det = f.create_group("detector")
        det["hot_pixels"] = defects.hot_pixels
        det["hot_adu"] = defects.hot_adu
        det["dead_pixels"] = defects.dead_pixels
        if label_maps is not None:
            f.create_dataset("labels", data=label_maps, chunks=(1, *shape), **dataset_compression("gzip"))


def read_sfx_truth(path: str | os.PathLike, labels: bool = False) -> SfxTruthSet:
    """Read a truth file written by :func:`write_sfx_dataset` (``labels=True`` also loads the label maps)."""
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != "photonflow.sfx_truth/1":
            raise ValueError(f"{path}: not a photonflow SFX truth file (format {f.attrs.get('format')!r})")
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
        ev = f["events"]
        files = [s.decode() if isinstance(s, bytes) else str(s) for s in ev["file"][()]]
        events = ev["event"][()]
        is_hit = ev["is_hit"][()]
        off = ev["peak_offset"][()]
        cells, bases = ev["cell_A"][()], ev["reciprocal_basis"][()]
        cscale, bscale = ev["crystal_scale"][()], ev["background_scale"][()]
        arts = [json.loads(s.decode() if isinstance(s, bytes) else s) for s in ev["artifacts"][()]]
        pk = {name: f["peaks"][name][()] for name, _ in _PEAK_FIELDS}
        hkl = f["peaks"]["hkl"][()]
        hot, dead = f["detector"]["hot_pixels"][()], f["detector"]["dead_pixels"][()]
        label_maps = f["labels"][()] if labels and "labels" in f else None
    truths = []
    for i in range(len(files)):
        a, b = int(off[i]), int(off[i + 1])
        truths.append(
            SfxTruth(
                is_hit=bool(is_hit[i]),
                hkl=hkl[a:b],
                **{k: v[a:b] for k, v in pk.items()},
                cell_A=cells[i],
                reciprocal_basis=bases[i],
                crystal_scale=float(cscale[i]),
                background_scale=float(bscale[i]),
                wavelength_A=float(attrs["wavelength_A"]),
                hot_pixels=hot,
                dead_pixels=dead,
                rings=arts[i]["rings"],
                streaks=arts[i]["streaks"],
            )
        )
    refs = [(path.parent / fn, int(e)) for fn, e in zip(files, events)]
    geom = path.parent / attrs["geometry"] if attrs.get("geometry") else None
    return SfxTruthSet(truths, refs, geom, json.loads(attrs["config"]), label_maps, attrs)
