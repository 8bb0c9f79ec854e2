"""Parallel-beam reconstruction of sinograms: filtered back-projection by Fourier gridding.

Geometry (as :mod:`photonflow.simulate.tomo`)
    A slice ``[j, i]`` of ``width × width`` px has ``x = i − (width−1)/2`` (right) and
    ``y = (width−1)/2 − j`` (up); the rotation axis is the slice centre. The sinogram value at
    angle θ and detector column u (0-based, pixel centres at integers) is the line integral along
    ``x cos θ + y sin θ = u − center_px``. This is algotom's convention (its ``fbp_reconstruction``
    gives the same orientation). Angles: degrees in the API, radians inside.

Units
    Sinograms are line integrals of μ (−ln of the transmission, dimensionless) over paths
    measured in pixels, so the slices come out as μ in 1/px (divide by the pixel size to get 1/µm).

Inversion formula and its discretisation
    ``f(x) = ∫₀^π ∫ P̂_θ(ω) |ω| W(ω) e^{2πiω s} dω dθ`` with ``s = x cos θ + y sin θ`` and ω in
    cycles/px. Each projection is padded to ``n_pad ≈ 1.5·width`` (even, FFT-friendly; edge values with
    ``pad=True``, zeros otherwise; the padding also keeps the circular convolution with the filter
    from wrapping around), ``P̂(ω_m) = FFT(p)_m · e^{2πiω_m(center_px + pad_left)}`` with
    ``ω_m = m/n_pad``, and the θ integral uses per-angle weights ``Δθ_k`` (half the distance to the
    two neighbours modulo π; ``π/n`` for n uniform angles over 180°, ``π/n`` per angle pair over
    360°). Only ω ≥ 0 is used (the sinogram is real): ``f = 2 Re Σ_k Σ_m a_m Δθ_k/n_pad · H_m P̂_km
    e^{2πiω_m s}`` with ``a_0 = a_{n_pad/2} = 1/2``.

Filters (``H_m``, ``filter_name``; ω ∈ [0, ½] cycles/px; the names of tomopy's gridrec)
    ``H = R(ω) · W(ω)``: R is the DFT of the band-limited spatial ramp kernel of Kak & Slaney
    (``h_0 = 1/4``, ``h_n = −1/(πn)²`` for odd n, 0 for even n; R ≈ |ω| with the correct small
    DC value) and W the window: ramp 1; shepp ``sinc(ω) = sin(πω)/(πω)``; cosine ``cos(πω)``;
    hann ``½(1 + cos 2πω)``; hamming ``0.54 + 0.46 cos 2πω``; parzen with ``q = 2|ω|``:
    ``1 − 6q²(1−q)`` for q ≤ ½, ``2(1−q)³`` above.

Backends
    ``"gridrec"`` (default): the double sum above is a type-1 non-uniform FFT from the polar
    samples ``(2πω_m cos θ_k, −2πω_m sin θ_k)`` (column and row frequency, radians/px) to the
    Cartesian grid of pixel centres, computed by FINUFFT (single precision, tolerance ``eps``),
    several slices per call (``n_trans``). The half-pixel offset of an even-width grid from
    FINUFFT's integer mode indices is a phase factor on the samples. Exact up to ``eps``:
    projections are interpolated trigonometrically (no linear-interpolation blur).
    ``"fbp"``: the reference — the same filtered projections back-projected pixel by pixel with
    linear interpolation (numba; slow). ``"algotom"``: algotom's CPU FBP (``gpu=False``), rescaled
    to the same units (it assumes ``π/(n−1)`` per angle). ``"tomopy"``: tomopy's gridrec.
    :func:`available_backends` lists what is installed.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache

import numpy as np
import scipy.fft

__all__ = [
    "FILTERS",
    "BACKENDS",
    "available_backends",
    "reconstruct",
    "fourier_filter",
    "angle_weights",
    "validate_sinograms",
    "inscribed_circle",
    "padded_length",
    "GridrecPlan",
]

FILTERS = ("ramp", "shepp", "cosine", "hann", "hamming", "parzen")
BACKENDS = ("gridrec", "fbp", "torch", "algotom", "tomopy", "tomocupy")

_BACKEND_MODULES = {
    "gridrec": "finufft",
    "fbp": "numba",
    "torch": "torch",
    "algotom": "algotom",
    "tomopy": "tomopy",
    "tomocupy": "tomocupy",
}


def available_backends() -> list[str]:
    """The backends whose packages are installed (importlib lookup, nothing imported)."""
    return [b for b in BACKENDS if importlib.util.find_spec(_BACKEND_MODULES[b]) is not None]


def _window(filter_name: str, omega: np.ndarray) -> np.ndarray:
    w = np.abs(omega)
    if filter_name == "ramp":
        return np.ones_like(w)
    if filter_name == "shepp":
        return np.sinc(w)
    if filter_name == "cosine":
        return np.cos(np.pi * w)
    if filter_name == "hann":
        return 0.5 * (1.0 + np.cos(2.0 * np.pi * w))
    if filter_name == "hamming":
        return 0.54 + 0.46 * np.cos(2.0 * np.pi * w)
    if filter_name == "parzen":
        q = 2.0 * w
        return np.where(q <= 0.5, 1.0 - 6.0 * q**2 * (1.0 - q), 2.0 * (1.0 - q) ** 3)
    raise ValueError(f"unknown filter {filter_name!r}; choose one of {', '.join(FILTERS)}")


@lru_cache(maxsize=32)
def _fourier_filter_cached(n_pad: int, filter_name: str) -> np.ndarray:
    n = np.arange(n_pad)
    dist = np.minimum(n, n_pad - n)
    h = np.zeros(n_pad)
    h[0] = 0.25
    odd = dist % 2 == 1
    h[odd] = -1.0 / (np.pi * dist[odd]) ** 2
    ramp = np.real(np.fft.rfft(h))
    omega = np.arange(n_pad // 2 + 1) / n_pad
    out = ramp * _window(filter_name, omega)
    out.setflags(write=False)
    return out


def fourier_filter(n_pad: int, filter_name: str = "shepp") -> np.ndarray:
    """The filter ``H_m`` (float64, length ``n_pad//2 + 1``) at ``ω_m = m/n_pad`` cycles/px, m ≥ 0."""
    return _fourier_filter_cached(int(n_pad), str(filter_name))


def angle_weights(theta_rad: np.ndarray) -> np.ndarray:
    """Quadrature weights Δθ_k (radians) of the θ integral over [0, π): half the distance between
    each angle's two neighbours after folding all angles into [0, π) (periodic). Sum = π."""
    theta = np.asarray(theta_rad, dtype=np.float64)
    n = theta.size
    if n == 1:
        return np.array([np.pi])
    folded = np.mod(theta, np.pi)
    order = np.argsort(folded, kind="stable")
    s = folded[order]
    prev = np.roll(s, 1)
    prev[0] -= np.pi
    nxt = np.roll(s, -1)
    nxt[-1] += np.pi
    w = np.empty(n)
    w[order] = 0.5 * (nxt - prev)
    return w


def validate_sinograms(sinograms, theta_deg, center_px, *, name: str = "sinograms"):
    """Check and normalise the inputs: returns (float32 (n_slices, n_angles, width), theta radians,
    center). Raises ValueError naming the problem: wrong shape, theta length mismatch, a centre
    outside the detector, NaN/inf values."""
    sino = np.asarray(sinograms)
    if sino.ndim == 2:
        sino = sino[None]
    if sino.ndim != 3:
        raise ValueError(f"{name}: expected (n_slices, n_angles, width) or (n_angles, width), got shape {sino.shape}")
    sino = np.ascontiguousarray(sino, dtype=np.float32)
    n_slices, n_angles, width = sino.shape
    theta = np.asarray(theta_deg, dtype=np.float64).reshape(-1)
    if theta.size != n_angles:
        raise ValueError(f"{name}: theta has {theta.size} angles but the sinograms have {n_angles} rows (angles)")
    center = float(center_px)
    if not math.isfinite(center) or center < 0 or center > width - 1:
        raise ValueError(f"{name}: center_px={center_px} is outside the detector [0, {width - 1}] px")
    if not np.isfinite(theta).all():
        raise ValueError(f"{name}: theta contains NaN or inf")
    bad = ~np.isfinite(sino)
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise ValueError(
            f"{name}: {int(bad.sum())} NaN/inf values (first at slice {idx[0]}, angle {idx[1]}, "
            f"column {idx[2]}); apply sino.minus_log with a floor and remove dead pixels first"
        )
    return sino, np.deg2rad(theta), center


def inscribed_circle(width: int, ratio: float = 1.0) -> np.ndarray:
    """Boolean (width, width) mask of the pixels within ``ratio · width/2`` of the slice centre."""
    c = (width - 1) / 2.0
    yy, xx = np.mgrid[0:width, 0:width]
    return (xx - c) ** 2 + (yy - c) ** 2 <= (ratio * width / 2.0) ** 2


#: Padded detector length / width. ≥ √2 so the periodic (trigonometric) interpolation of the
#: filtered projections covers the slice corners; the filter's circular convolution wraps at
#: ≥ width/4 from the data (the ramp kernel decays as 1/n² there).
PAD_FACTOR = 1.5


def padded_length(width: int, factor: float = PAD_FACTOR) -> int:
    """Detector length after padding: the smallest even FFT-friendly length ≥ factor·width."""
    n = scipy.fft.next_fast_len(int(math.ceil(factor * int(width))), real=True)
    while n % 2:
        n = scipy.fft.next_fast_len(n + 1, real=True)
    return n


def _padded(sino: np.ndarray, pad: bool) -> tuple[np.ndarray, int]:
    """Pad the detector axis to n_pad = padded_length(width): edge values (pad=True) or zeros."""
    width = sino.shape[-1]
    n_pad = padded_length(width)
    left = (n_pad - width) // 2
    right = n_pad - width - left
    mode = "edge" if pad else "constant"
    widths = [(0, 0)] * (sino.ndim - 1) + [(left, right)]
    return np.pad(sino, widths, mode=mode), left


def _filtered_spectra(sino, theta, center, filter_name, pad, workers=1):
    """FFT of the padded projections times the filter, the centre phase and the angle weights:
    the coefficients ``c_km`` (complex64, (n_slices, n_angles, n_pad//2+1)) of
    ``f = Re Σ c_km e^{2πiω_m s}``, plus ω_m (float64)."""
    padded, left = _padded(sino, pad)
    n_pad = padded.shape[-1]
    spec = scipy.fft.rfft(padded, axis=-1, workers=workers)  # complex64 for float32 input
    omega = np.arange(n_pad // 2 + 1) / n_pad
    a = np.ones_like(omega)
    a[0] = 0.5
    if n_pad % 2 == 0:
        a[-1] = 0.5
    h = fourier_filter(n_pad, filter_name) * a * (2.0 / n_pad)
    phase = np.exp(2j * np.pi * omega * (center + left))
    per_m = (h * phase).astype(np.complex64)
    w = angle_weights(theta).astype(np.float32)
    spec *= per_m[None, None, :]
    spec *= w[None, :, None]
    return spec, omega


# --------------------------------------------------------------------------------- gridrec
class GridrecPlan:
    """A reusable FINUFFT type-1 plan for one geometry (angles, width, padding): the polar sample
    points are set once; :meth:`__call__` reconstructs batches of ``n_trans`` slices."""

    def __init__(
        self,
        theta_rad,
        width: int,
        n_pad: int,
        *,
        n_trans: int = 4,
        eps: float = 1e-4,
        nthreads: int = 1,
        upsampfac: float = 1.25,
    ):
        import finufft

        self.width = int(width)
        self.n_pad = int(n_pad)
        self.n_trans = int(n_trans)
        omega = np.arange(self.n_pad // 2 + 1) / self.n_pad
        theta = np.asarray(theta_rad, dtype=np.float64)
        kx = (2.0 * np.pi * omega[None, :] * np.cos(theta)[:, None]).ravel()  # column (x) frequency
        kr = (-2.0 * np.pi * omega[None, :] * np.sin(theta)[:, None]).ravel()  # row frequency (y up)
        # FINUFFT's mode k of an N-point axis is pixel k + N//2, whose coordinate is k + delta.
        delta = (self.width // 2) - (self.width - 1) / 2.0
        self.shift = np.exp(1j * delta * (kx + kr)).astype(np.complex64) if delta != 0 else None
        self.plan = finufft.Plan(
            1,
            (self.width, self.width),
            n_trans=self.n_trans,
            eps=eps,
            isign=1,
            dtype="complex64",
            nthreads=nthreads,
            upsampfac=upsampfac,
        )
        self.plan.setpts(kr.astype(np.float32), kx.astype(np.float32))

    def __call__(self, coeffs: np.ndarray) -> np.ndarray:
        """coeffs (n_trans, M) complex64 → slices (n_trans, width, width) float32 (real part)."""
        if self.shift is not None:
            coeffs = coeffs * self.shift[None, :]
        out = self.plan.execute(np.ascontiguousarray(coeffs, dtype=np.complex64))
        return np.ascontiguousarray(out.real, dtype=np.float32)


def _recon_gridrec(sino, theta, center, filter_name, pad, *, batch=4, eps=1e-4, nthreads=1, upsampfac=1.25):
    n_slices, n_angles, width = sino.shape
    out = np.empty((n_slices, width, width), dtype=np.float32)
    n_trans = max(1, min(int(batch), n_slices))
    plan = None
    for s0 in range(0, n_slices, n_trans):
        chunk = sino[s0 : s0 + n_trans]
        spec, _ = _filtered_spectra(chunk, theta, center, filter_name, pad)
        nb = chunk.shape[0]
        if plan is None:
            plan = GridrecPlan(
                theta, width, padded_length(width), n_trans=n_trans, eps=eps, nthreads=nthreads, upsampfac=upsampfac
            )
        coeffs = spec.reshape(nb, -1)
        if nb < n_trans:
            coeffs = np.concatenate([coeffs, np.zeros((n_trans - nb, coeffs.shape[1]), np.complex64)])
        out[s0 : s0 + nb] = plan(coeffs)[:nb]
    return out


# ------------------------------------------------------------------------- reference FBP
_backproject_numba = None


def _get_backprojector():
    global _backproject_numba
    if _backproject_numba is None:
        import numba

        @numba.njit(parallel=True, cache=True)
        def backproject(filtered, cos_t, sin_t, weights, offset, width):
            n_angles, n_pad = filtered.shape
            out = np.zeros((width, width), dtype=np.float64)
            c = (width - 1) / 2.0
            for j in numba.prange(width):
                y = c - j
                for k in range(n_angles):
                    ct = cos_t[k]
                    st = sin_t[k]
                    wk = weights[k]
                    base = y * st + offset - c * ct
                    for i in range(width):
                        s = base + i * ct
                        i0 = int(math.floor(s))
                        if i0 >= 0 and i0 < n_pad - 1:
                            t = s - i0
                            out[j, i] += wk * (filtered[k, i0] * (1.0 - t) + filtered[k, i0 + 1] * t)
            return out

        _backproject_numba = backproject
    return _backproject_numba


def _recon_fbp(sino, theta, center, filter_name, pad):
    n_slices, n_angles, width = sino.shape
    padded, left = _padded(sino, pad)
    n_pad = padded.shape[-1]
    h = fourier_filter(n_pad, filter_name)
    filtered = scipy.fft.irfft(scipy.fft.rfft(padded.astype(np.float64), axis=-1) * h, n=n_pad, axis=-1)
    w = angle_weights(theta)
    bp = _get_backprojector()
    out = np.empty((n_slices, width, width), dtype=np.float32)
    for s in range(n_slices):
        out[s] = bp(np.ascontiguousarray(filtered[s]), np.cos(theta), np.sin(theta), w, float(center + left), width)
    return out


# ------------------------------------------------------------------------------ peers
_ALGOTOM_FILTERS = {"ramp": None, "hann": "hann", "hamming": "hamming", "parzen": "parzen"}


def _recon_algotom(sino, theta, center, filter_name, pad):
    if filter_name not in _ALGOTOM_FILTERS:
        raise ValueError(f"backend 'algotom' has no {filter_name!r} filter; use one of {sorted(_ALGOTOM_FILTERS)}")
    from algotom.rec.reconstruction import fbp_reconstruction

    n_slices, n_angles, width = sino.shape
    out = np.empty((n_slices, width, width), dtype=np.float32)
    # algotom multiplies by π/(n−1); photonflow's weights sum to π over the angles.
    scale = (n_angles - 1) / n_angles
    for s in range(n_slices):
        rec = fbp_reconstruction(
            sino[s].copy(),
            center,
            angles=theta,
            ratio=None,
            filter_name=_ALGOTOM_FILTERS[filter_name],
            pad=None,
            pad_mode="edge" if pad else "constant",
            apply_log=False,
            gpu=False,
            ncore=1,
        )
        out[s] = np.asarray(rec, dtype=np.float32) * scale
    return out


def _recon_torch(sino, theta, center, filter_name, pad, *, device="auto", angle_batch: int = 8):
    """FBP with the back-projection in torch (the GPU path when ``device`` finds one): the same
    filtered projections as the ``fbp`` reference, linear interpolation, angles in batches."""
    import torch

    from photonflow.torch_device import resolve_device

    dev = resolve_device(device)
    n_slices, n_angles, width = sino.shape
    padded, left = _padded(sino, pad)
    n_pad = padded.shape[-1]
    h = fourier_filter(n_pad, filter_name)
    filtered = scipy.fft.irfft(scipy.fft.rfft(padded.astype(np.float64), axis=-1) * h, n=n_pad, axis=-1)
    proj = torch.as_tensor(filtered, dtype=torch.float32, device=dev)  # (S, A, P)
    weights = torch.as_tensor(angle_weights(theta), dtype=torch.float32, device=dev)
    cos_t = torch.as_tensor(np.cos(theta), dtype=torch.float32, device=dev)
    sin_t = torch.as_tensor(np.sin(theta), dtype=torch.float32, device=dev)
    c = (width - 1) / 2.0
    x = torch.arange(width, dtype=torch.float32, device=dev) - c  # column coordinate
    y = c - torch.arange(width, dtype=torch.float32, device=dev)  # row coordinate, up
    out = torch.zeros((n_slices, width * width), dtype=torch.float32, device=dev)
    with torch.inference_mode():
        for a0 in range(0, n_angles, angle_batch):
            a1 = min(a0 + angle_batch, n_angles)
            k = a1 - a0
            pos = (
                (center + left)
                + x[None, None, :] * cos_t[a0:a1, None, None]
                + y[None, :, None] * sin_t[a0:a1, None, None]
            )
            i0 = torch.floor(pos)
            t = (pos - i0).reshape(1, k, -1)
            i0 = i0.long().reshape(1, k, -1)
            inside = ((i0 >= 0) & (i0 < n_pad - 1)).to(torch.float32)
            i0 = i0.clamp(0, n_pad - 2).expand(n_slices, k, -1)
            f = proj[:, a0:a1, :]
            v = torch.gather(f, 2, i0) * (1 - t) + torch.gather(f, 2, i0 + 1) * t
            out += torch.einsum("skp,k->sp", v * inside, weights[a0:a1])
    return out.reshape(n_slices, width, width).cpu().numpy()


def _recon_tomocupy(sino, theta, center, filter_name, pad):  # pragma: no cover - conda-only, needs a GPU
    from tomocupy import rec  # noqa: F401 - its API takes a config object; not wired up here

    raise NotImplementedError(
        "the tomocupy backend is detected but not wired up: tomocupy runs as its own "
        "command-line reconstructor (tomocupy recon), not as a library call"
    )


def _recon_tomopy(sino, theta, center, filter_name, pad):  # pragma: no cover - tomopy is conda-only
    import tomopy

    tomo = np.ascontiguousarray(np.moveaxis(sino, 0, 1))  # (n_angles, n_slices, width)
    rec = tomopy.recon(tomo, theta, center=center, algorithm="gridrec", filter_name=filter_name, ncore=1)
    return np.asarray(rec, dtype=np.float32)


# ------------------------------------------------------------------------------- API
def reconstruct(
    sinograms,
    theta_deg,
    center_px: float,
    backend: str = "gridrec",
    filter_name: str = "shepp",
    pad: bool = True,
    circle_mask: bool = True,
    *,
    batch: int = 4,
    eps: float = 1e-4,
    nthreads: int = 1,
    device: str = "auto",
) -> np.ndarray:
    """Reconstruct sinograms (n_slices, n_angles, width) (line integrals; a single 2D sinogram is
    also accepted) at angles ``theta_deg`` (degrees) with the rotation axis at detector column
    ``center_px`` (0-based) → slices (n_slices, width, width) float32, μ in 1/px.

    ``backend``: "gridrec" (FINUFFT gridding, default), "fbp" (numba reference), "torch" (the
    same FBP with a torch back-projection on ``device``: the GPU path), "algotom", "tomopy". ``filter_name``: one of :data:`FILTERS`. ``pad``: edge padding (True) or zero
    padding (False) to :func:`padded_length` (≈ 1.5 × width) before filtering. ``circle_mask``: zero outside the
    inscribed circle. ``batch``: slices per FINUFFT call; ``eps``: its tolerance; ``nthreads``:
    FINUFFT threads.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown reconstruction backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if importlib.util.find_spec(_BACKEND_MODULES[backend]) is None:
        raise ImportError(
            f"reconstruction backend {backend!r} needs the package {_BACKEND_MODULES[backend]!r}, "
            f"which is not installed (installed backends: {', '.join(available_backends()) or 'none'})"
        )
    if filter_name not in FILTERS:
        raise ValueError(f"unknown filter {filter_name!r}; choose one of {', '.join(FILTERS)}")
    sino, theta, center = validate_sinograms(sinograms, theta_deg, center_px)
    if backend == "gridrec":
        out = _recon_gridrec(sino, theta, center, filter_name, pad, batch=batch, eps=eps, nthreads=nthreads)
    elif backend == "fbp":
        out = _recon_fbp(sino, theta, center, filter_name, pad)
    elif backend == "torch":
        out = _recon_torch(sino, theta, center, filter_name, pad, device=device)
    elif backend == "algotom":
        out = _recon_algotom(sino, theta, center, filter_name, pad)
    elif backend == "tomocupy":
        out = _recon_tomocupy(sino, theta, center, filter_name, pad)
    else:
        out = _recon_tomopy(sino, theta, center, filter_name, pad)
    if circle_mask:
        out *= inscribed_circle(out.shape[-1])[None]
    return out
