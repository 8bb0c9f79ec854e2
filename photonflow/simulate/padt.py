"""Detector frames with the artefacts PADT (Pixel Anomaly Detector Tool) screens out, with labels.

PADT sorts serial-crystallography frames into good and bad with a classifier (random forest)
that looks at one ASIC-sized region of interest (ROI) of an ePix10k/Jungfrau-type detector. This
module draws such frames on any CrystFEL geometry (:class:`photonflow.io.geom.DetectorGeometry`,
used through ``slab_shape``, ``panels``, ``lab_maps_m()`` and ``wavelength_A``) — by default the
small ePix10k-like detector of :func:`epix_detector` (``config/geometry/sim_epix.geom``) — and
writes them as multi-event CXI files with PADT-style ``good.lst`` / ``bad.lst`` label lists.

Benchmark ROI
    Every artefact is made to touch the *target panel* (:attr:`PadtConfig.target_panel`,
    default 0). On ``sim_epix.geom`` that is ASIC ``p0``, slab ``[0:176, 0:192]`` (ss × fs; one
    ePix10k ASIC): :func:`padt_roi` returns its slices. A classifier that looks only at that ROI
    sees every bad frame's artefact.

Scene (expected photons per pixel)
    ``background_photons · cos³2θ`` (flat, solid angle) + ``diffuse · exp(−q²/2q_d²) · w`` (low-q
    jet/air scatter; ``diffuse`` log-uniform per frame in ``diffuse_photons``) + ``ring_level ·
    W(q) · w / max(W · w)`` (the liquid-water ring: Gaussian principal peak at ``water_q_nm``
    ≈ 20 nm⁻¹ plus its shoulder at ≈ 30 nm⁻¹, as in :mod:`photonflow.simulate.sfx`), with
    ``w = cos³2θ · (1 − sin²2θ cos²φ)`` (solid angle × polarisation along lab x). The water-ring
    template is normalised once per geometry so that ``ring_level`` is exactly the expected
    water-ring photons in the brightest ring pixel of the detector. ``ring_level`` is log-uniform
    per frame in ``ring_photons`` (jet thickness and pulse energy vary a lot from shot to shot);
    good frames and shadow/window frames span the whole range, on both sides of the gain-switching
    threshold. Optionally (probability ``spot_probability``) a few Bragg-like Gaussian spots at
    random on-panel positions (a hit).

Detector (ePix10k/Jungfrau auto-ranging)
    Counts are Poisson (``poisson``). A pixel whose collected photons in this frame reach
    ``gain_switch_threshold`` switches to low gain: after calibration it reads the same photons
    but with the larger low-gain read noise ``low_gain_noise_adu``. Image (ADU) = photons ·
    ``adu_per_photon`` + Gaussian read noise (``read_noise_adu``; ``low_gain_noise_adu`` in total on
    switched pixels). Slab pixels on no panel read 0.

Artefacts (reasons of :data:`BAD` frames, :data:`ARTEFACTS`; the kind is drawn with weights
``artefact_mix``)
    ``"gain_switch"``
        A gain-switching miscalibration of the target panel: its low-gain constants are wrong in
        this event (a stale gain ratio / pedestal, as when the ring crosses the switching point and
        the panel's low-gain calibration was never validated), so *its* switched pixels read
        ``photons · g + offset`` instead of ``photons``, ``g`` uniform in ``gain_error`` (inverted,
        1/g, with probability ``gain_error_up_probability``: a step up), ``offset`` uniform in
        ``gain_error_offset_photons``. Only frames whose water ring crosses the threshold can show
        it: a gain-switch frame's ``ring_level`` is drawn log-uniform in
        ``[gain_switch_margin · gain_switch_threshold, max(ring_photons)]``, so a band of the ring
        in the ROI switches; the ring's radial profile in the ROI shows a step (a notch or a jump)
        where it crosses the threshold. Other panels, and the target panel on good frames, switch
        too but are calibrated correctly (level unchanged, only their noise rises).
    ``"shadow"``
        A soft-edged shadow of an object between the sample and the detector (nozzle, beam-stop
        holder, shield): the incident photons are multiplied by the transmission
        ``T = 1 − (1 − t)·Φ(s/σ)``, ``s`` the signed distance (pixels) into the shadow, ``Φ`` the
        normal CDF (σ uniform in ``shadow_edge_px``: the penumbra), ``t`` uniform in
        ``shadow_transmission``. The shape is a half-plane with a straight edge at a random angle
        or, with probability ``shadow_disk_probability``, a disk (centre uniform in the target
        panel's box widened by half its size each way); the edge is placed so that a fraction
        uniform in ``shadow_fraction`` of the target panel's pixels lies inside the edge
        (``T < (1 + t)/2``). The shadow extends to whatever other panels it reaches.
    ``"window"``
        A misaligned sample-chamber exit window: the window's circular aperture, normally wide
        enough to pass all the scattering to the detector, is shifted by a distance uniform in
        ``window_shift_px`` (lab pixels) in a direction within ``±window_angle_deg`` of "away from
        the target panel" (from its centre through the beam), so its rim cuts into the detector:
        pixels *outside* the circle are attenuated to a transmission uniform in
        ``window_transmission`` with a soft rim (σ uniform in ``window_edge_px``). The radius is set
        so that a fraction uniform in ``window_fraction`` of the target panel lies outside it: its
        outer corner loses the high-angle scattering (the shoulder and the outer ring) behind a
        curved edge.

Seeds
    :func:`simulate_padt_frames` and :func:`write_padt_dataset` draw frame i from child ``i`` of
    ``SeedSequence(seed)``: frame i does not depend on how many frames are drawn, and both give
    the same frames for the same seed and config.

Units: q in nm⁻¹, positions, distances and widths in pixels (lab pixels from the beam axis for
shapes), intensities in photons per pixel (expected), images in ADU, angles in degrees.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from scipy.special import ndtr

from ..classify.labels import BAD, GOOD
from ._common import cached_per_geometry, check_dataset_args, water_profile, write_cxi_geometry

__all__ = [
    "GOOD",
    "BAD",
    "ARTEFACTS",
    "EPIX_ASIC_SHAPE",
    "PadtConfig",
    "PadtFrame",
    "PadtDataset",
    "PadtTruth",
    "epix_detector",
    "padt_roi",
    "simulate_padt_frame",
    "simulate_padt_frames",
    "iter_padt_frames",
    "write_padt_dataset",
    "read_padt_truth",
]

#: Reasons a frame is :data:`BAD`.
ARTEFACTS = ("gain_switch", "shadow", "window")
#: One ePix10k ASIC, (ss, fs) pixels.
EPIX_ASIC_SHAPE = (176, 192)

_HC_EV_A = 12398.419843320026  # h·c in eV·Å


# ---------------------------------------------------------------------------------- detector
def epix_detector(
    clen_mm: float = 27.0,
    gap_px: float = 10.0,
    photon_energy_eV: float = 9500.0,
    pixel_size_um: float = 100.0,
    beam_offset_px: tuple[float, float] = (0.3, 0.4),
    *,
    data: str = "/entry_1/data_1/data",
    dim_structure=("%", "ss", "fs"),
    adu_per_photon: float = 1.0,
):
    """A small ePix10k-like detector: four 176 × 192 (ss × fs) ASICs of 100 µm pixels, 2 × 2 round the beam.

    Panels ``p0``..``p3`` (row-major in the slab: ``p0`` = slab ``[0:176, 0:192]``, ``p1`` =
    ``[0:176, 192:384]``, ``p2`` = ``[176:352, 0:192]``, ``p3`` = ``[176:352, 192:384]``; fs = +x,
    ss = +y, so ``p0`` is the −x, −y quadrant). The ASICs are separated by a cross-shaped gap of
    ``gap_px`` pixels whose centre is ``beam_offset_px`` (x, y pixels) off the beam axis. With the
    defaults (27 mm, 9.5 keV) the water ring (q = 20 nm⁻¹, 2θ ≈ 24°) has a radius of ≈ 120 pixels
    and crosses every ASIC in a quarter arc; its shoulder (≈ 30 nm⁻¹, ≈ 200 pixels) crosses their
    outer corners. This is ``config/geometry/sim_epix.geom``.
    """
    from ..io.geom import DetectorGeometry, Panel

    n_ss, n_fs = EPIX_ASIC_SHAPE
    half = float(gap_px) / 2.0
    ox, oy = (float(v) for v in beam_offset_px)
    res = 1e6 / float(pixel_size_um)
    panels = []
    for row in range(2):
        for col in range(2):
            panels.append(
                Panel(
                    name=f"p{2 * row + col}",
                    min_fs=col * n_fs,
                    max_fs=col * n_fs + n_fs - 1,
                    min_ss=row * n_ss,
                    max_ss=row * n_ss + n_ss - 1,
                    corner_x=round((half if col else -half - n_fs) - ox, 9),
                    corner_y=round((half if row else -half - n_ss) - oy, 9),
                    fs=(1.0, 0.0, 0.0),
                    ss=(0.0, 1.0, 0.0),
                    res=res,
                    clen=float(clen_mm) / 1000.0,
                    adu_per_photon=adu_per_photon,
                    data=data,
                    dim_structure=tuple(dim_structure),
                )
            )
    return DetectorGeometry(panels, (), photon_energy_eV, peak_list="/entry_1/result_1")


def padt_roi(geometry, panel: int | str = 0) -> tuple[slice, slice]:
    """``(ss slice, fs slice)`` of the classifier ROI: the panel (index or name) the artefacts target."""
    p = geometry.panel(panel) if isinstance(panel, str) else geometry.panels[int(panel)]
    return p.slab_slices


# ---------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class PadtConfig:
    """Every knob of the PADT-artefact simulator (see the module docstring for the model).

    Labels
        bad_fraction: probability that a frame is :data:`BAD` (when ``label`` is not forced).
        artefact_mix: relative weights of ``("gain_switch", "shadow", "window")`` among bad frames.
        target_panel: index of the panel every artefact touches (the classifier's ROI; 0 = ``p0``,
        slab ``[0:176, 0:192]`` on ``sim_epix.geom``). The miscalibrated panel of gain-switch frames.
    Scene (expected photons per pixel)
        ring_photons: (low, high) of the log-uniform per-frame water-ring level, photons/px in the
        brightest ring pixel (``PadtFrame.ring_level``).
        water_q_nm, water_sigma_nm: centre and Gaussian σ of the water ring, nm⁻¹;
        water_shoulder: (relative height, q nm⁻¹, σ nm⁻¹) of its second maximum.
        polarization: apply ``1 − sin²2θ cos²φ`` (beam polarised along lab x) to ring and diffuse.
        background_photons: flat level at 2θ = 0 (× cos³2θ), photons/px.
        diffuse_photons: (low, high) of the log-uniform per-frame low-q level at q = 0, photons/px;
        diffuse_q_nm: its Gaussian width in q, nm⁻¹.
        spot_probability: chance a frame has Bragg-like spots; spots_per_frame: (low, high) of
        their number (uniform integers, over the whole detector); spot_photons: (low, high) of the
        log-uniform integrated photons of a spot; spot_sigma_px: (low, high) of its Gaussian σ, px.
    Gain switching (photons/px)
        gain_switch_threshold: collected photons at which a pixel switches to low gain.
        gain_switch_margin: a gain-switch frame's ring level is ≥ margin × threshold (≥ 1).
        gain_error: (low, high) of the uniform gain error g of the miscalibrated panel's switched
        pixels (they read photons × g); gain_error_up_probability: chance that g is inverted (1/g,
        a step up instead of down); gain_error_offset_photons: (low, high) of a uniform offset
        added to them (a low-gain pedestal error), photons.
        low_gain_noise_adu: total Gaussian read noise of a switched pixel, ADU (≥ read_noise_adu).
    Shadows (distances in lab pixels)
        shadow_fraction: (low, high) of the fraction of the target panel inside the shadow edge;
        shadow_transmission: (low, high) of the transmission deep in the shadow (0 = opaque);
        shadow_edge_px: (low, high) of the penumbra σ; shadow_disk_probability: chance of a disk
        (else a half-plane).
    Misaligned window (distances in lab pixels)
        window_fraction: (low, high) of the fraction of the target panel outside the aperture;
        window_transmission: (low, high) of the transmission outside it; window_edge_px: (low,
        high) of the rim σ; window_shift_px: (low, high) of the aperture centre's offset from the
        beam; window_angle_deg: the offset's direction is within ± this of "away from the panel".
    Detector
        adu_per_photon; read_noise_adu: Gaussian σ of a high-gain pixel, ADU; poisson: Poisson
        counts (False with zero read noise gives the expected image: switching then happens on the
        expected photons).
    """

    bad_fraction: float = 0.35
    artefact_mix: tuple = (0.4, 0.3, 0.3)
    target_panel: int = 0
    ring_photons: tuple = (3.0, 300.0)
    water_q_nm: float = 20.0
    water_sigma_nm: float = 2.5
    water_shoulder: tuple = (0.35, 30.0, 3.5)
    polarization: bool = True
    background_photons: float = 0.2
    diffuse_photons: tuple = (0.3, 3.0)
    diffuse_q_nm: float = 6.0
    spot_probability: float = 0.4
    spots_per_frame: tuple = (5, 40)
    spot_photons: tuple = (30.0, 3000.0)
    spot_sigma_px: tuple = (0.7, 1.5)
    gain_switch_threshold: float = 30.0
    gain_switch_margin: float = 1.3
    gain_error: tuple = (0.7, 0.85)
    gain_error_up_probability: float = 0.25
    gain_error_offset_photons: tuple = (0.0, 0.0)
    low_gain_noise_adu: float = 10.0
    shadow_fraction: tuple = (0.15, 0.6)
    shadow_transmission: tuple = (0.0, 0.4)
    shadow_edge_px: tuple = (2.0, 12.0)
    shadow_disk_probability: float = 0.3
    window_fraction: tuple = (0.15, 0.6)
    window_transmission: tuple = (0.0, 0.3)
    window_edge_px: tuple = (3.0, 15.0)
    window_shift_px: tuple = (20.0, 150.0)
    window_angle_deg: float = 45.0
    adu_per_photon: float = 10.0
    read_noise_adu: float = 3.0
    poisson: bool = True

    def __post_init__(self):
        def check(ok, name, value, what):
            if not ok:
                raise ValueError(f"PadtConfig.{name} must be {what}, got {value!r}")

        for name in ("bad_fraction", "spot_probability", "gain_error_up_probability", "shadow_disk_probability"):
            v = getattr(self, name)
            check(0.0 <= v <= 1.0, name, v, "in [0, 1]")
        for name in ("water_q_nm", "water_sigma_nm", "diffuse_q_nm", "gain_switch_threshold", "adu_per_photon"):
            v = getattr(self, name)
            check(v > 0, name, v, "> 0")
        for name in ("background_photons", "read_noise_adu", "window_angle_deg"):
            v = getattr(self, name)
            check(v >= 0, name, v, "≥ 0")
        for name in (
            "ring_photons",
            "diffuse_photons",
            "spots_per_frame",
            "spot_photons",
            "spot_sigma_px",
            "gain_error",
            "gain_error_offset_photons",
            "shadow_fraction",
            "shadow_transmission",
            "shadow_edge_px",
            "window_fraction",
            "window_transmission",
            "window_edge_px",
            "window_shift_px",
        ):
            v = getattr(self, name)
            ok = len(v) == 2 and v[0] <= v[1] and (name == "gain_error_offset_photons" or v[0] >= 0)
            check(ok, name, v, "a range (low, high) with low ≤ high (and low ≥ 0)")
        for name in ("ring_photons", "spot_photons", "spot_sigma_px", "gain_error", "shadow_edge_px", "window_edge_px"):
            v = getattr(self, name)
            check(v[0] > 0, name, v, "a range of positive values")
        for name in ("shadow_fraction", "window_fraction"):
            v = getattr(self, name)
            check(0.0 < v[0] and v[1] < 1.0, name, v, "a range inside (0, 1)")
        for name in ("shadow_transmission", "window_transmission"):
            v = getattr(self, name)
            check(v[1] < 1.0, name, v, "a range inside [0, 1)")
        check(
            len(self.artefact_mix) == len(ARTEFACTS) and min(self.artefact_mix) >= 0 and sum(self.artefact_mix) > 0,
            "artefact_mix",
            self.artefact_mix,
            f"{len(ARTEFACTS)} weights ≥ 0, not all 0",
        )
        check(
            len(self.water_shoulder) == 3 and self.water_shoulder[2] > 0,
            "water_shoulder",
            self.water_shoulder,
            "(height, q nm⁻¹, σ nm⁻¹ > 0)",
        )
        check(self.gain_switch_margin >= 1.0, "gain_switch_margin", self.gain_switch_margin, "≥ 1")
        check(
            self.ring_photons[1] >= self.gain_switch_margin * self.gain_switch_threshold,
            "ring_photons",
            self.ring_photons,
            "a range reaching gain_switch_margin × gain_switch_threshold",
        )
        check(
            self.low_gain_noise_adu >= self.read_noise_adu,
            "low_gain_noise_adu",
            self.low_gain_noise_adu,
            "≥ read_noise_adu",
        )
        check(
            int(self.target_panel) == self.target_panel and self.target_panel >= 0,
            "target_panel",
            self.target_panel,
            "a panel index ≥ 0",
        )

    @property
    def artefact_probabilities(self) -> dict[str, float]:
        """Probability of each artefact among bad frames."""
        w = np.asarray(self.artefact_mix, dtype=np.float64)
        return dict(zip(ARTEFACTS, (w / w.sum()).tolist()))

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "PadtConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"PadtConfig: unknown field(s) {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ---------------------------------------------------------------------------------- results
@dataclass
class PadtFrame:
    """One simulated frame.

    image: float32 ADU, slab shape (or the ROI when simulated with ``roi``); label: :data:`GOOD`
    or :data:`BAD`; reason: None or one of :data:`ARTEFACTS`; ring_level: expected water-ring
    photons/px in the brightest ring pixel (before any shadow). gain_factor: g of the
    miscalibrated switched pixels (1.0 unless ``"gain_switch"``); switched_fraction: fraction of
    the target panel's pixels in low gain; attenuated_fraction: fraction of the target panel
    inside a shadow or outside the window (transmission below the edge's midpoint; 0 when none);
    details: the drawn parameters (JSON-able). With ``return_maps``: expected (float32 photons/px
    reaching the detector, after shadows, before noise and gain errors), transmission (float32,
    1 where nothing blocks), switched (bool, low-gain pixels), all of slab shape.
    """

    image: np.ndarray
    label: int
    reason: str | None
    ring_level: float
    gain_factor: float = 1.0
    switched_fraction: float = 0.0
    attenuated_fraction: float = 0.0
    details: dict = field(default_factory=dict)
    expected: np.ndarray | None = None
    transmission: np.ndarray | None = None
    switched: np.ndarray | None = None

    @property
    def is_good(self) -> bool:
        return self.label == GOOD


# ---------------------------------------------------------------------------------- geometry cache
class _Maps:
    """Per-geometry maps, computed once (float32, slab shape)."""

    def __init__(self, geometry):
        self.shape = tuple(int(v) for v in geometry.slab_shape)
        self.wavelength_A = float(geometry.wavelength_A)
        panels = list(geometry.panels)
        self.slices = [p.slab_slices for p in panels]
        pm = np.asarray(geometry.panel_map())
        off = pm < 0
        self.off = off if off.any() else None
        X, Y, Z = (np.asarray(a, dtype=np.float64) for a in geometry.lab_maps_m(centre=True))  # metres
        X[off], Y[off], Z[off] = 0.0, 0.0, 1.0
        res = float(np.median([float(p.res) for p in panels]))
        self.x = (X * res).astype(np.float32)  # lab pixels from the beam axis
        self.y = (Y * res).astype(np.float32)
        tth = np.arctan2(np.hypot(X, Y), Z)
        self.q = (np.sin(tth / 2.0) * (40.0 * np.pi / self.wavelength_A)).astype(np.float32)  # nm⁻¹
        cos2t = np.cos(tth)
        self.cos3 = (cos2t**3).astype(np.float32)
        self.pol = (1.0 - (1.0 - cos2t * cos2t) * np.cos(np.arctan2(Y, X)) ** 2).astype(np.float32)
        for a in (self.cos3, self.q):
            a[off] = 0.0
        self.centres = np.array([[float(self.x[s].mean()), float(self.y[s].mean())] for s in self.slices])
        self._templates: dict = {}

    def templates(self, config: PadtConfig):
        """(flat, diffuse, water) templates; water normalised to a maximum of 1 on the panels."""
        key = (
            config.water_q_nm,
            config.water_sigma_nm,
            tuple(config.water_shoulder),
            config.diffuse_q_nm,
            config.polarization,
        )
        t = self._templates.get(key)
        if t is None:
            q = self.q.astype(np.float64)
            w = self.cos3 * self.pol if config.polarization else self.cos3.astype(np.float64)
            water = water_profile(q, config.water_q_nm, config.water_sigma_nm, config.water_shoulder) * w
            diffuse = np.exp(-0.5 * q * q / config.diffuse_q_nm**2) * w
            if self.off is not None:
                water[self.off] = 0.0
                diffuse[self.off] = 0.0
            peak = float(water.max())
            water = water / peak if peak > 0 else water
            t = (self.cos3, diffuse.astype(np.float32), water.astype(np.float32))
            self._templates = {key: t}
        return t


_MAPS: dict[int, tuple[Any, _Maps]] = {}


def _maps(geometry) -> _Maps:
    return cached_per_geometry(_MAPS, geometry, _Maps)


# ---------------------------------------------------------------------------------- pieces of a frame
def _loguniform(rng, lo, hi) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _quantile(values: np.ndarray, fraction: float) -> float:
    """The value with ``fraction`` of ``values`` below it (a partial sort)."""
    n = values.size
    k = min(max(int(round(fraction * n)), 0), n - 1)
    return float(np.partition(values, k)[k])


def _edge_transmission(s: np.ndarray, t: float, sigma: float) -> np.ndarray:
    """``1 − (1 − t)·Φ(s/σ)``: t deep inside (s ≫ 0), 1 far outside, (1 + t)/2 on the edge."""
    out = ndtr(s * np.float32(1.0 / sigma))
    out *= np.float32(-(1.0 - t))
    out += np.float32(1.0)
    return out.astype(np.float32, copy=False)


def _shadow(rng, m: _Maps, config: PadtConfig, panel: int):
    sl = m.slices[panel]
    fraction = float(rng.uniform(*config.shadow_fraction))
    t = float(rng.uniform(*config.shadow_transmission))
    sigma = float(rng.uniform(*config.shadow_edge_px))
    if rng.random() < config.shadow_disk_probability:
        xs, ys = m.x[sl], m.y[sl]
        x0, x1, y0, y1 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
        wx, wy = x1 - x0, y1 - y0
        cx = float(rng.uniform(x0 - 0.5 * wx, x1 + 0.5 * wx))
        cy = float(rng.uniform(y0 - 0.5 * wy, y1 + 0.5 * wy))
        radius = _quantile(np.hypot(xs - np.float32(cx), ys - np.float32(cy)).ravel(), fraction)
        s = np.float32(radius) - np.hypot(m.x - np.float32(cx), m.y - np.float32(cy))
        details = {"shape": "disk", "centre_x_px": cx, "centre_y_px": cy, "radius_px": radius}
    else:
        angle = float(rng.uniform(0.0, 360.0))
        c, sn = np.float32(np.cos(np.radians(angle))), np.float32(np.sin(np.radians(angle)))
        offset = _quantile((m.x[sl] * c + m.y[sl] * sn).ravel(), 1.0 - fraction)
        s = m.x * c + m.y * sn - np.float32(offset)
        details = {"shape": "edge", "normal_angle_deg": angle, "offset_px": offset}
    details.update(transmission=t, edge_px=sigma, fraction=fraction)
    return _edge_transmission(s, t, sigma), details


def _window(rng, m: _Maps, config: PadtConfig, panel: int):
    sl = m.slices[panel]
    fraction = float(rng.uniform(*config.window_fraction))
    t = float(rng.uniform(*config.window_transmission))
    sigma = float(rng.uniform(*config.window_edge_px))
    shift = float(rng.uniform(*config.window_shift_px))
    px, py = m.centres[panel]
    away = np.degrees(np.arctan2(-py, -px))
    angle = float(away + rng.uniform(-config.window_angle_deg, config.window_angle_deg))
    cx, cy = shift * np.cos(np.radians(angle)), shift * np.sin(np.radians(angle))
    dist = np.hypot(m.x[sl] - np.float32(cx), m.y[sl] - np.float32(cy)).ravel()
    radius = _quantile(dist, 1.0 - fraction)
    s = np.hypot(m.x - np.float32(cx), m.y - np.float32(cy)) - np.float32(radius)
    details = {
        "shift_px": shift,
        "shift_angle_deg": angle,
        "centre_x_px": float(cx),
        "centre_y_px": float(cy),
        "radius_px": radius,
        "transmission": t,
        "edge_px": sigma,
        "fraction": fraction,
    }
    return _edge_transmission(s, t, sigma), details


def _add_spots(rng, m: _Maps, config: PadtConfig, expected: np.ndarray) -> int:
    lo, hi = (int(v) for v in config.spots_per_frame)
    n = int(rng.integers(lo, hi + 1))
    if n == 0:
        return 0
    n_ss, n_fs = m.shape
    panel = rng.integers(len(m.slices), size=n)
    bounds = np.array([[s.start, s.stop, f.start, f.stop] for s, f in m.slices])[panel]
    ss = bounds[:, 0] + rng.random(n) * (bounds[:, 1] - bounds[:, 0]) - 0.5
    fs = bounds[:, 2] + rng.random(n) * (bounds[:, 3] - bounds[:, 2]) - 0.5
    total = np.exp(rng.uniform(np.log(config.spot_photons[0]), np.log(config.spot_photons[1]), n))
    sig = rng.uniform(*config.spot_sigma_px, n)
    h = int(np.ceil(4.0 * config.spot_sigma_px[1]))
    offs = np.arange(-h, h + 1)
    iy = np.rint(ss).astype(np.int64)[:, None] + offs  # (n, W)
    ix = np.rint(fs).astype(np.int64)[:, None] + offs
    wy = np.exp(-0.5 * ((iy - ss[:, None]) / sig[:, None]) ** 2) * ((iy >= bounds[:, :1]) & (iy < bounds[:, 1:2]))
    wx = np.exp(-0.5 * ((ix - fs[:, None]) / sig[:, None]) ** 2) * ((ix >= bounds[:, 2:3]) & (ix < bounds[:, 3:4]))
    norm = 2.0 * np.pi * sig * sig  # the full Gaussian's integral: spots cut by a panel edge lose photons
    values = (total / norm)[:, None, None] * wy[:, :, None] * wx[:, None, :]
    flat = np.clip(iy, 0, n_ss - 1)[:, :, None] * n_fs + np.clip(ix, 0, n_fs - 1)[:, None, :]
    keep = values > 0
    np.add.at(expected.ravel(), flat[keep], values[keep].astype(np.float32))
    return n


# ---------------------------------------------------------------------------------- frames
def simulate_padt_frame(
    geometry,
    rng: np.random.Generator | int | None = None,
    config: PadtConfig | None = None,
    label: int | None = None,
    reason: str | None = None,
    *,
    return_maps: bool = False,
    roi: tuple[slice, slice] | None = None,
) -> PadtFrame:
    """Simulate one frame on ``geometry`` (see the module docstring).

    ``rng``: a :class:`numpy.random.Generator` (or a seed). ``label``/``reason`` force the
    outcome: ``reason`` (one of :data:`ARTEFACTS`) implies :data:`BAD`; ``label=BAD`` without a
    reason draws it from ``config.artefact_mix``; ``label=GOOD`` with a reason is an error;
    neither: bad with probability ``config.bad_fraction``. ``return_maps``: keep the expected,
    transmission and switched maps. ``roi``: ``(ss slice, fs slice)``; the frame's ``image`` is
    that crop (a copy; the whole frame is still drawn, so the crop equals the full frame's).
    """
    config = config or PadtConfig()
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    m = _maps(geometry)
    panel = int(config.target_panel)
    if panel >= len(m.slices):
        raise ValueError(f"PadtConfig.target_panel {panel} but the geometry has {len(m.slices)} panels")
    if reason is not None:
        if reason not in ARTEFACTS:
            raise ValueError(f"reason must be one of {ARTEFACTS}, got {reason!r}")
        if label == GOOD:
            raise ValueError(f"a GOOD frame has no artefact, got reason {reason!r}")
        label = BAD
    elif label is None:
        label = BAD if rng.random() < config.bad_fraction else GOOD
    elif label not in (GOOD, BAD):
        raise ValueError(f"label must be GOOD ({GOOD}) or BAD ({BAD}), got {label!r}")
    if label == BAD and reason is None:
        probs = config.artefact_probabilities
        reason = ARTEFACTS[int(rng.choice(len(ARTEFACTS), p=[probs[a] for a in ARTEFACTS]))]

    lo, hi = config.ring_photons
    if reason == "gain_switch":
        lo = max(lo, config.gain_switch_margin * config.gain_switch_threshold)
    ring = _loguniform(rng, lo, hi)
    diffuse = _loguniform(rng, *config.diffuse_photons)
    flat_t, diffuse_t, water_t = m.templates(config)
    expected = water_t * np.float32(ring)
    expected += diffuse_t * np.float32(diffuse)
    if config.background_photons:
        expected += flat_t * np.float32(config.background_photons)
    details: dict = {"diffuse_photons": diffuse}
    n_spots = _add_spots(rng, m, config, expected) if rng.random() < config.spot_probability else 0
    details["n_spots"] = n_spots

    transmission = None
    attenuated = 0.0
    if reason in ("shadow", "window"):
        transmission, d = (_shadow if reason == "shadow" else _window)(rng, m, config, panel)
        details.update(d)
        expected *= transmission
        attenuated = float(np.mean(transmission[m.slices[panel]] < np.float32(0.5 * (1.0 + d["transmission"]))))
    if m.off is not None:
        expected[m.off] = 0.0

    # detector: counts, gain switching, calibration, noise
    photons = rng.poisson(expected).astype(np.float32) if config.poisson else expected.copy()
    switched = photons >= np.float32(config.gain_switch_threshold)
    gain = 1.0
    if reason == "gain_switch":
        gain = float(rng.uniform(*config.gain_error))
        if rng.random() < config.gain_error_up_probability:
            gain = 1.0 / gain
        offset = float(rng.uniform(*config.gain_error_offset_photons))
        details.update(gain_factor=gain, offset_photons=offset)
        sub = photons[m.slices[panel]]
        sw = switched[m.slices[panel]]
        sub[sw] = sub[sw] * np.float32(gain) + np.float32(offset)
    image = photons
    image *= np.float32(config.adu_per_photon)
    if config.read_noise_adu > 0:
        image += rng.standard_normal(m.shape, dtype=np.float32) * np.float32(config.read_noise_adu)
    extra = float(np.sqrt(config.low_gain_noise_adu**2 - config.read_noise_adu**2))
    n_switched = int(np.count_nonzero(switched))
    if extra > 0 and n_switched:
        image[switched] += rng.standard_normal(n_switched, dtype=np.float32) * np.float32(extra)
    if m.off is not None:
        image[m.off] = 0.0
    switched_fraction = float(np.mean(switched[m.slices[panel]]))
    if roi is not None:
        image = np.ascontiguousarray(image[roi])
    return PadtFrame(
        image=image,
        label=int(label),
        reason=reason,
        ring_level=ring,
        gain_factor=gain,
        switched_fraction=switched_fraction,
        attenuated_fraction=attenuated,
        details=details,
        expected=expected if return_maps else None,
        transmission=(transmission if transmission is not None else np.ones(m.shape, np.float32))
        if return_maps
        else None,
        switched=switched if return_maps else None,
    )


def _frame_seeds(seed, n_frames: int) -> list[np.random.SeedSequence]:
    root = np.random.SeedSequence(seed)
    return [np.random.SeedSequence(root.entropy, spawn_key=(i,)) for i in range(n_frames)]


def iter_padt_frames(
    geometry,
    n: int,
    seed: int | None = 0,
    config: PadtConfig | None = None,
    *,
    return_maps: bool = False,
    roi: tuple[slice, slice] | None = None,
) -> Iterator[PadtFrame]:
    """The frames of :func:`simulate_padt_frames`, one at a time (constant memory)."""
    config = config or PadtConfig()
    for s in _frame_seeds(seed, int(n)):
        yield simulate_padt_frame(geometry, np.random.default_rng(s), config, return_maps=return_maps, roi=roi)


def simulate_padt_frames(
    geometry,
    n: int,
    seed: int | None = 0,
    config: PadtConfig | None = None,
    *,
    return_maps: bool = False,
    roi: tuple[slice, slice] | None = None,
) -> list[PadtFrame]:
    """``n`` frames; frame i draws from child i of ``SeedSequence(seed)`` (independent of ``n``).

    A full ``sim_epix.geom`` frame is 0.54 MB (float32): pass ``roi=padt_roi(geometry)`` to keep
    only the classifier's ROI (0.14 MB), or use :func:`iter_padt_frames`.
    """
    return list(iter_padt_frames(geometry, n, seed, config, return_maps=return_maps, roi=roi))


# ---------------------------------------------------------------------------------- files
@dataclass
class PadtTruth:
    """The truth of one written frame (a row of the truth CSV); ``path`` is absolute."""

    path: Path
    event: int
    label: int
    reason: str | None
    ring_level: float
    gain_factor: float = 1.0
    switched_fraction: float = 0.0
    attenuated_fraction: float = 0.0
    details: dict = field(default_factory=dict)


@dataclass
class PadtDataset:
    """What :func:`write_padt_dataset` wrote (paths absolute or as given for the directory)."""

    cxi_files: list[Path]
    geometry_path: Path
    truth_path: Path
    good_list: Path
    bad_list: Path
    n_frames: int
    n_bad: int
    manifest_path: Path | None = None

    @property
    def refs(self) -> list[tuple[Path, int]]:
        """(cxi path, event) of every frame, in order."""
        return [(t.path, t.event) for t in read_padt_truth(self.truth_path)]

    @property
    def n_good(self) -> int:
        return self.n_frames - self.n_bad

    def truth(self) -> list[PadtTruth]:
        return read_padt_truth(self.truth_path)


_TRUTH_COLUMNS = (
    "file",
    "event",
    "label",
    "reason",
    "ring_level",
    "gain_factor",
    "switched_fraction",
    "attenuated_fraction",
    "details",
)


def write_padt_dataset(
    directory: str | os.PathLike,
    geometry,
    n_frames: int,
    frames_per_file: int = 100,
    seed: int | None = 0,
    config: PadtConfig | None = None,
    compression: str | None = "bitshuffle",
    dtype=np.int32,
    prefix: str = "padt",
) -> PadtDataset:
    """Write ``n_frames`` frames as multi-event CXI files with their geometry, truth and label lists.

    * ``{prefix}_{k:04d}.cxi``: ``/entry_1/data_1/data`` (n, ss, fs) in ADU, ``dtype`` int32
      (default: rounded ADU, compresses ≈ 3×) or float32 (exact), one chunk per frame,
      compressed with ``compression`` ("bitshuffle": Bitshuffle/LZ4 via hdf5plugin; "lz4";
      "gzip"; None), also linked as ``/entry_1/instrument_1/detector_1/data``; per-event photon
      energy (eV) in ``/LCLS/photon_energy_eV``, the detector distance (m) in
      ``/entry_1/instrument_1/detector_1/distance``;
    * ``{prefix}.geom``: the CrystFEL geometry of the files;
    * ``{prefix}_truth.csv``: one row per frame, columns ``file`` (CXI name, relative to the
      directory), ``event``, ``label`` (1 good, 0 bad), ``reason`` (empty or one of
      :data:`ARTEFACTS`), ``ring_level`` (photons/px), ``gain_factor``, ``switched_fraction``,
      ``attenuated_fraction`` and ``details`` (JSON); read it with :func:`read_padt_truth`;
    * ``good.lst``, ``bad.lst``: PADT-style label lists in CrystFEL list syntax, ``file //event``
      per frame, file names relative to the directory (where the lists are);
    * ``{prefix}.json``: a manifest (format, seed, config, ROI, file names, counts).

    Frames are those of :func:`simulate_padt_frames` with the same seed and config. Every file is
    written atomically.
    """
    from ..io.atomic import atomic_path, atomic_write_text
    from ..io.cxi import write_cxi_frames, write_hit_list

    config = config or PadtConfig()
    directory, n_frames, frames_per_file, dtype = check_dataset_args(
        directory, n_frames, frames_per_file, dtype, compression
    )
    m = _maps(geometry)
    shape = m.shape
    seeds = _frame_seeds(seed, n_frames)
    energy_eV = float(geometry.photon_energy_eV or _HC_EV_A / m.wavelength_A)
    clens = [float(p.clen) for p in geometry.panels if p.clen is not None]
    clen = float(np.median(clens)) if clens else float("nan")

    geom_path = write_cxi_geometry(geometry, directory / f"{prefix}.geom", config.adu_per_photon)
    rows, cxi_files = [], []

    def draw(i: int, name: str, j: int) -> np.ndarray:
        fr = simulate_padt_frame(geometry, np.random.default_rng(seeds[i]), config)
        rows.append(
            (
                name,
                j,
                fr.label,
                fr.reason or "",
                repr(fr.ring_level),
                repr(fr.gain_factor),
                repr(fr.switched_fraction),
                repr(fr.attenuated_fraction),
                json.dumps(fr.details, sort_keys=True),
            )
        )
        return fr.image if dtype == np.float32 else np.rint(fr.image).astype(np.int32)

    for k, start in enumerate(range(0, n_frames, frames_per_file)):
        count = min(frames_per_file, n_frames - start)
        path = directory / f"{prefix}_{k:04d}.cxi"
        write_cxi_frames(
            path,
            (draw(start + j, path.name, j) for j in range(count)),
            count,
            shape,
            dtype,
            photon_energy_eV=energy_eV,
            distance_m=clen,
            compression=compression,
        )
        cxi_files.append(path)

    truth_path = directory / f"{prefix}_truth.csv"
    with atomic_path(truth_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(_TRUTH_COLUMNS)
        writer.writerows(rows)
    good_list = write_hit_list(directory / "good.lst", [(r[0], r[1]) for r in rows if r[2] == GOOD])
    bad_list = write_hit_list(directory / "bad.lst", [(r[0], r[1]) for r in rows if r[2] == BAD])
    n_bad = sum(r[2] == BAD for r in rows)
    panel = geometry.panels[int(config.target_panel)]
    manifest = {
        "format": "photonflow.padt/1",
        "seed": None if seed is None else int(seed),
        "n_frames": n_frames,
        "n_bad": n_bad,
        "n_good": n_frames - n_bad,
        "reasons": {a: sum(r[3] == a for r in rows) for a in ARTEFACTS},
        "geometry": geom_path.name,
        "truth": truth_path.name,
        "good_list": good_list.name,
        "bad_list": bad_list.name,
        "cxi_files": [p.name for p in cxi_files],
        "dtype": dtype.name,
        "photon_energy_eV": energy_eV,
        "adu_per_photon": config.adu_per_photon,
        "roi": {
            "panel": panel.name,
            "min_fs": panel.min_fs,
            "max_fs": panel.max_fs,
            "min_ss": panel.min_ss,
            "max_ss": panel.max_ss,
        },
        "config": config.to_dict(),
    }
    manifest_path = Path(atomic_write_text(directory / f"{prefix}.json", json.dumps(manifest, indent=1) + "\n"))
    return PadtDataset(cxi_files, geom_path, truth_path, good_list, bad_list, n_frames, n_bad, manifest_path)


def read_padt_truth(path: str | os.PathLike) -> list[PadtTruth]:
    """Read a truth CSV written by :func:`write_padt_dataset`; CXI paths are resolved against its directory."""
    path = Path(path)
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = set(_TRUTH_COLUMNS[:5]) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a PADT truth file (missing columns {sorted(missing)})")
        for n, row in enumerate(reader, start=2):
            try:
                reason = row["reason"] or None
                if reason is not None and reason not in ARTEFACTS:
                    raise ValueError(f"unknown reason {reason!r}")
                label = int(row["label"])
                if label not in (GOOD, BAD):
                    raise ValueError(f"label {label} is neither GOOD ({GOOD}) nor BAD ({BAD})")
                out.append(
                    PadtTruth(
                        path=path.parent / row["file"],
                        event=int(row["event"]),
                        label=label,
                        reason=reason,
                        ring_level=float(row["ring_level"]),
                        gain_factor=float(row.get("gain_factor") or 1.0),
                        switched_fraction=float(row.get("switched_fraction") or 0.0),
                        attenuated_fraction=float(row.get("attenuated_fraction") or 0.0),
                        details=json.loads(row["details"]) if row.get("details") else {},
                    )
                )
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path} line {n}: {exc}") from None
    return out
