"""Simulated Laue spots with exact ground truth: spot boxes for training the spot CNN
(:mod:`photonflow.laue.cnn`) and whole detector images for the flow and the benchmarks.

Conventions as :mod:`photonflow.laue`: 0-based ``[row, col]``, pixel centres at integers. Intensities
are detector counts (ADU = photons here).

Spot kinds (:data:`SPOT_KINDS`), each a sum of point-sampled 2D Gaussians
``a · exp(-u²/(2σ1²) - v²/(2σ2²))`` (``u, v`` = offsets along axes rotated by ``theta`` from the row
axis; ``theta = 0``: σ1 along rows, σ2 along columns, the fit model of :mod:`photonflow.laue.fit`):

* ``"single"`` — one Gaussian, σ 0.6–4 px, any aspect ratio, axis-aligned (half) or rotated;
* ``"double"`` — two overlapping Gaussians 1–6 px apart (intensity ratio 0.3–1);
* ``"irregular"`` — a streak (straight or arc, 3–10 px long), a cluster of 2–5 blobs, or a
  Gaussian with a tail of decaying Gaussians along a ray;
* ``"sharp"`` — one Gaussian with σ 0.15–0.45 px (undersampled spots, hot pixels: the point-sampled
  fit does not converge on them, see :func:`photonflow.laue.fit.fit_gaussians`);
* ``"empty"`` — background and noise only (no spot).

Every box / image gets a constant background plus a gentle gradient, Poisson noise, Gaussian read
noise, and is clipped at the saturation value (a fraction of spots is made bright enough to saturate).
Truth parameters (``centre``, σ1, σ2, θ, amplitude) are those of the spot's *main* component (the
brightest Gaussian; for ``"empty"`` NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SPOT_KINDS",
    "SimulatedSpots",
    "render_gaussians",
    "simulate_laue_image",
    "simulate_spots",
    "write_laue_scan",
]

SPOT_KINDS = ("single", "double", "irregular", "sharp", "empty")
DEFAULT_FRACTIONS = {"single": 0.5, "double": 0.2, "irregular": 0.2, "sharp": 0.05, "empty": 0.05}


def render_gaussians(shape, centres, sigma1, sigma2, theta, amplitude, origin=(0, 0), out=None) -> np.ndarray:
    """Sum of point-sampled rotated Gaussians on a ``shape`` grid whose pixel ``[0, 0]`` is at absolute
    ``origin`` (px). ``centres (k, 2)`` absolute ``[row, col]`` px; σ px; θ rad; amplitude counts."""
    R, C = shape
    out = np.zeros(shape, np.float64) if out is None else out
    rr = np.arange(R, dtype=np.float64)[:, None] + origin[0]
    cc = np.arange(C, dtype=np.float64)[None, :] + origin[1]
    for (r0, c0), s1, s2, th, a in zip(
        np.reshape(centres, (-1, 2)),
        np.atleast_1d(sigma1),
        np.atleast_1d(sigma2),
        np.atleast_1d(theta),
        np.atleast_1d(amplitude),
    ):
        dr, dc = rr - r0, cc - c0
        ct, st = np.cos(th), np.sin(th)
        u = ct * dr + st * dc
        v = -st * dr + ct * dc
        out += a * np.exp(-0.5 * (u * u / (s1 * s1) + v * v / (s2 * s2)))
    return out


def _sigmas(rng, lo=0.6, hi=4.0):
    """σ1, σ2 (px): a mean width log-uniform in [lo, hi] and an aspect ratio in [0.4, 1]."""
    s = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    asp = rng.uniform(0.4, 1.0)
    s1, s2 = s / np.sqrt(asp), s * np.sqrt(asp)
    s1, s2 = np.clip([s1, s2], lo, hi)
    return (s1, s2) if rng.random() < 0.5 else (s2, s1)


def _components(rng, kind: str, centre, sigma_range=(0.6, 4.0)):
    """Gaussian components of one spot: arrays centres (k, 2), s1, s2, theta, relative amplitude
    (the main component, index 0, has the largest amplitude 1)."""
    centre = np.asarray(centre, np.float64)
    s1, s2 = _sigmas(rng, *sigma_range)
    th = 0.0 if rng.random() < 0.5 else rng.uniform(-np.pi / 2, np.pi / 2)
    if kind == "sharp":
        s1, s2 = rng.uniform(0.15, 0.45, 2)
        kind = "single"
    if kind == "single":
        return centre[None], np.array([s1]), np.array([s2]), np.array([th]), np.array([1.0])
    if kind == "double":
        sep = rng.uniform(1.0, 6.0)
        phi = rng.uniform(0, 2 * np.pi)
        c2 = centre + sep * np.array([np.cos(phi), np.sin(phi)])
        t1, t2 = _sigmas(rng, sigma_range[0], min(sigma_range[1], 2.5))
        return (
            np.stack([centre, c2]),
            np.array([s1 if s1 < 2.5 else t1, t1]),
            np.array([s2 if s2 < 2.5 else t2, t2]),
            np.array([th, rng.uniform(-np.pi / 2, np.pi / 2)]),
            np.array([1.0, rng.uniform(0.3, 1.0)]),
        )
    if kind != "irregular":
        raise ValueError(f"unknown spot kind {kind!r}")
    style = rng.integers(3)
    if style == 0:  # streak, straight or arc
        length = rng.uniform(3.0, 10.0)
        phi = rng.uniform(0, np.pi)
        curv = rng.uniform(-0.25, 0.25) if rng.random() < 0.5 else 0.0  # 1/px
        t = np.linspace(-length / 2, length / 2, max(int(length / 0.5), 3))
        ang = phi + curv * t
        steps = np.stack([np.cos(ang), np.sin(ang)], 1) * (t[1] - t[0])
        path = np.cumsum(steps, 0)
        path -= path[len(path) // 2]
        k = len(path)
        w = rng.uniform(0.6, 1.5)
        amp = np.ones(k) * rng.uniform(0.7, 1.0, k)
        amp[k // 2] = 1.0
        order = np.r_[k // 2, np.delete(np.arange(k), k // 2)]
        return centre + path[order], np.full(k, w), np.full(k, w * rng.uniform(0.6, 1.0)), np.zeros(k), amp[order]
    if style == 1:  # cluster of blobs
        k = rng.integers(2, 6)
        rad = rng.uniform(1.5, 5.0, k)
        rad[0] = 0.0
        phi = rng.uniform(0, 2 * np.pi, k)
        c = centre + rad[:, None] * np.stack([np.cos(phi), np.sin(phi)], 1)
        a = rng.uniform(0.3, 1.0, k)
        a[0] = 1.0
        return c, rng.uniform(0.6, 2.0, k), rng.uniform(0.6, 2.0, k), np.zeros(k), a
    # Gaussian with a tail of decaying, widening Gaussians along a ray
    k = 8
    phi = rng.uniform(0, 2 * np.pi)
    decay = rng.uniform(2.0, 6.0)  # px
    d = np.arange(k) * 0.8
    c = centre + d[:, None] * np.array([np.cos(phi), np.sin(phi)])
    a = np.exp(-d / decay) * rng.uniform(0.3, 0.7)
    a[0] = 1.0
    base = min(s1, s2, 2.0)
    s = base * (1 + 0.15 * np.arange(k))
    return c, s, s, np.zeros(k), a


def _background_and_noise(rng, signal, background, gradient, read_noise, saturation):
    """Add background (+ plane gradient, counts/px), Poisson and read noise; clip at saturation."""
    R, C = signal.shape
    rr = np.arange(R)[:, None] - R / 2
    cc = np.arange(C)[None, :] - C / 2
    bg = background + gradient[0] * rr + gradient[1] * cc
    lam = np.clip(signal + bg, 0, None)
    img = rng.poisson(lam).astype(np.float64) + rng.normal(0.0, read_noise, lam.shape)
    return np.clip(img, 0, saturation)


@dataclass
class SimulatedSpots:
    """``n`` spot boxes of ``size`` × ``size`` px; the nominal seed is the box centre ``size // 2``."""

    data: np.ndarray  # (n, size, size) float32, counts, clipped at saturation
    saturation: float  # counts; pixels >= saturation are saturated
    kind: np.ndarray  # (n,) str, one of SPOT_KINDS
    centre: np.ndarray  # (n, 2) true [row, col] of the main component, box coordinates (px)
    sigma1: np.ndarray  # (n,) px (main component)
    sigma2: np.ndarray  # (n,) px
    theta: np.ndarray  # (n,) rad (0 = axis-aligned)
    amplitude: np.ndarray  # (n,) counts (main component, before clipping)
    background: np.ndarray  # (n,) counts/px at the box centre
    n_components: np.ndarray  # (n,) int

    @property
    def seed_index(self) -> int:
        return self.data.shape[1] // 2

    @property
    def valid(self) -> np.ndarray:
        """(n, size, size) bool: pixels below saturation."""
        return self.data < self.saturation


def _draw_kinds(rng, n, fractions):
    kinds = list(fractions)
    p = np.array([fractions[k] for k in kinds], np.float64)
    return np.array(kinds, dtype=object)[rng.choice(len(kinds), size=n, p=p / p.sum())]


def simulate_spots(
    n: int,
    seed: int = 0,
    *,
    size: int = 39,
    fractions: dict | None = None,
    max_offset: float = 1.0,
    sigma_range=(0.6, 4.0),
    amplitude_range=(50.0, 30000.0),
    background_range=(20.0, 1000.0),
    read_noise: float = 3.0,
    saturation: float = 65535.0,
    p_saturated: float = 0.05,
) -> SimulatedSpots:
    """``n`` independent spot boxes. The main component's centre is the box centre plus a uniform
    offset of at most ``max_offset`` px per axis; amplitude log-uniform in ``amplitude_range``
    (counts; with probability ``p_saturated`` 1.1–3 × the saturation instead), background uniform
    in ``background_range`` (counts/px) with a gradient of up to 2 % of it per px."""
    rng = np.random.default_rng(seed)
    kinds = _draw_kinds(rng, n, fractions or DEFAULT_FRACTIONS)
    data = np.empty((n, size, size), np.float32)
    centre = np.full((n, 2), np.nan)
    s1 = np.full(n, np.nan)
    s2 = np.full(n, np.nan)
    th = np.full(n, np.nan)
    amp = np.full(n, np.nan)
    bgs = np.empty(n)
    ncomp = np.zeros(n, int)
    h = size // 2
    for i, kind in enumerate(kinds):
        bg = rng.uniform(*background_range)
        grad = rng.uniform(-0.02, 0.02, 2) * bg
        signal = np.zeros((size, size))
        if kind != "empty":
            c0 = h + rng.uniform(-max_offset, max_offset, 2)
            cs, a1, a2, t, rel = _components(rng, kind, c0, sigma_range)
            if rng.random() < p_saturated:
                a = saturation * rng.uniform(1.1, 3.0)
            else:
                a = np.exp(rng.uniform(*np.log(amplitude_range)))
            shape = render_gaussians((size, size), cs, a1, a2, t, rel)
            signal = shape * (a / max(shape.max(), 1e-12))
            centre[i], s1[i], s2[i], th[i] = cs[0], a1[0], a2[0], t[0]
            amp[i] = a * rel[0] / max(shape.max(), 1e-12)
            ncomp[i] = len(cs)
        data[i] = _background_and_noise(rng, signal, bg, grad, read_noise, saturation)
        bgs[i] = bg
    return SimulatedSpots(
        data=data,
        saturation=float(saturation),
        kind=kinds.astype(str),
        centre=centre,
        sigma1=s1,
        sigma2=s2,
        theta=th,
        amplitude=amp,
        background=bgs,
        n_components=ncomp,
    )


def simulate_laue_image(
    shape=(1024, 1024),
    n_spots: int = 150,
    seed: int = 0,
    *,
    fractions: dict | None = None,
    sigma_range=(0.6, 4.0),
    amplitude_range=(200.0, 30000.0),
    background: float = 300.0,
    read_noise: float = 3.0,
    saturation: float = 65535.0,
    p_saturated: float = 0.03,
    margin: int = 24,
    min_distance: float = 12.0,
    dtype=np.uint16,
    amplitude_scale: float = 1.0,
    shift=(0.0, 0.0),
    noise_seed: int | None = None,
):
    """A whole detector image with ``n_spots`` spots at random positions (at least ``margin`` px from
    the edges and ``min_distance`` px apart; fewer spots if they do not fit).

    Returns ``(image, truth)``: ``image`` of ``dtype`` (uint16 by default, float32 possible) in
    counts, clipped at ``saturation``; ``truth`` a dict of per-spot arrays: ``pos (n, 2)`` absolute
    ``[row, col]`` px of the main component, ``sigma1``, ``sigma2`` (px), ``theta`` (rad),
    ``amplitude`` (counts), ``kind`` (str), ``n_components``, ``saturated`` (bool: the spot has
    saturated pixels). Background: ``background`` counts/px with a ±20 % large-scale gradient.

    For a scan of one crystal: the same ``seed`` gives the same spots; ``amplitude_scale`` scales
    every spot, ``shift`` (px) moves them all, ``noise_seed`` draws other noise (default: from ``seed``).
    """
    rng = np.random.default_rng(seed)
    H, W = shape
    fr = dict(fractions or DEFAULT_FRACTIONS)
    fr.pop("empty", None)
    kinds = _draw_kinds(rng, n_spots, fr)
    pos = []
    for _ in range(n_spots * 50):
        if len(pos) == n_spots:
            break
        p = rng.uniform([margin, margin], [H - 1 - margin, W - 1 - margin])
        if not pos or np.min(np.hypot(*(np.asarray(pos) - p).T)) >= min_distance:
            pos.append(p)
    n = len(pos)
    kinds = kinds[:n]
    signal = np.zeros(shape)
    truth = {k: np.full(n, np.nan) for k in ("sigma1", "sigma2", "theta", "amplitude")}
    pos = [p + np.asarray(shift, np.float64) for p in pos]
    truth["pos"] = np.asarray(pos, np.float64).reshape(n, 2)
    truth["kind"] = kinds.astype(str)
    truth["n_components"] = np.zeros(n, int)
    for i, kind in enumerate(kinds):
        cs, a1, a2, t, rel = _components(rng, kind, pos[i], sigma_range)
        sat = rng.random() < p_saturated
        a = saturation * rng.uniform(1.1, 3.0) if sat else np.exp(rng.uniform(*np.log(amplitude_range)))
        a *= amplitude_scale
        ext = int(np.ceil(4 * max(a1.max(), a2.max()) + np.max(np.abs(cs - cs[0])))) + 2
        r0, c0 = np.floor(cs[0]).astype(int) - ext
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r0 + 2 * ext + 2, H), min(c0 + 2 * ext + 2, W)
        box = render_gaussians((r1 - r0, c1 - c0), cs, a1, a2, t, rel, origin=(r0, c0))
        peak = max(box.max(), 1e-12)
        signal[r0:r1, c0:c1] += box * (a / peak)
        truth["sigma1"][i], truth["sigma2"][i], truth["theta"][i] = a1[0], a2[0], t[0]
        truth["amplitude"][i] = a * rel[0] / peak
        truth["n_components"][i] = len(cs)
    grad = rng.uniform(-0.2, 0.2, 2) * background / np.array([H, W])
    if noise_seed is not None:
        rng = np.random.default_rng(noise_seed)
    img = _background_and_noise(rng, signal, background, grad, read_noise, saturation)
    sat_img = img >= saturation
    pr = np.clip(np.round(truth["pos"]).astype(int), 0, [H - 1, W - 1])
    truth["saturated"] = np.array([sat_img[max(r - 3, 0) : r + 4, max(c - 3, 0) : c + 4].any() for r, c in pr], bool)
    if np.issubdtype(np.dtype(dtype), np.integer):
        img = np.round(img)
    return img.astype(dtype), truth


def write_laue_scan(
    out_dir,
    rows: int,
    cols: int,
    n_images: int | None = None,
    seed: int = 0,
    *,
    shape=(2018, 2016),
    n_spots: int = 120,
    step_um: float = 1.0,
    **kwargs,
) -> dict:
    """Write a ``rows`` × ``cols`` raster scan (the first ``n_images`` points, default all) of one
    crystal as 16-bit TIFFs ``scan_0000.tif`` … in ``out_dir``: the same spots in every image
    (:func:`simulate_laue_image` with ``seed``; ``kwargs`` passed on), their intensity falling
    smoothly from 1 to 0.2 across the map (a grain fading out) and shifted by up to 0.5 px
    (a strain gradient), fresh noise per image.

    Returns ``{"images": [paths], "positions": path, "truth": path}``: ``positions.csv`` has columns
    ``image, x, y`` (µm, ``x`` along columns, ``step_um`` apart); ``truth.csv`` has one row per spot
    and image: ``image, row, col`` (px), ``sigma1, sigma2`` (px), ``theta`` (rad), ``amplitude``
    (counts), ``kind``.
    """
    from pathlib import Path

    import tifffile

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = rows * cols if n_images is None else min(int(n_images), rows * cols)
    images, pos_lines, truth_lines = [], ["image,x,y"], ["image,row,col,sigma1,sigma2,theta,amplitude,kind"]
    for i in range(n):
        r, c = divmod(i, cols)
        u = (r / max(rows - 1, 1) + c / max(cols - 1, 1)) / 2  # 0 … 1 across the map
        img, truth = simulate_laue_image(
            shape,
            n_spots,
            seed,
            amplitude_scale=1.0 - 0.8 * u,
            shift=(0.5 * u, -0.5 * u),
            noise_seed=seed * 100003 + i + 1,
            **kwargs,
        )
        name = f"scan_{i:04d}.tif"
        tifffile.imwrite(out / name, img)
        images.append(out / name)
        pos_lines.append(f"{name},{c * step_um:g},{r * step_um:g}")
        for j in range(len(truth["pos"])):
            truth_lines.append(
                f"{name},{truth['pos'][j, 0]:.4f},{truth['pos'][j, 1]:.4f},{truth['sigma1'][j]:.4f},"
                f"{truth['sigma2'][j]:.4f},{truth['theta'][j]:.4f},{truth['amplitude'][j]:.2f},"
                f"{truth['kind'][j]}"
            )
    (out / "positions.csv").write_text("\n".join(pos_lines) + "\n")
    (out / "truth.csv").write_text("\n".join(truth_lines) + "\n")
    return {"images": images, "positions": out / "positions.csv", "truth": out / "truth.csv"}
