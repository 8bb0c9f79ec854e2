"""Batched 2D Gaussian fits of Laue spot cutouts and the descriptors of Kirstein et al. (2023).

Model on a cutout grid (rows r, cols c, 0-based pixel centres of the cutout):

    m = alpha * exp(-(r - mu1)^2 / (2 sigma1^2) - (c - mu2)^2 / (2 sigma2^2)) + beta

(``rotated=True``: the Gaussian axes are rotated by ``theta`` from the row axis.)
All spots of an image are fitted at once by a vectorised Levenberg–Marquardt (numpy) with an
analytic Jacobian and per-spot damping; saturated / masked pixels carry weight 0.
Parameters are returned in cutout coordinates; ``Pos = origin + mu`` is absolute ``[row, col]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARAM_NAMES = ("alpha", "beta", "mu1", "mu2", "sigma1", "sigma2", "theta")


@dataclass
class FitResult:
    params: np.ndarray  # (n, 6) or (n, 7): alpha, beta, mu1 (row), mu2 (col), sigma1, sigma2 [, theta]
    converged: np.ndarray  # (n,) bool
    n_iter: np.ndarray  # (n,) int
    cost: np.ndarray  # (n,) 0.5 * sum(w * (m - A)^2)
    reason: list  # "" when converged, else why not
    pixel_integrated: bool = False  # which profile was fitted (see _axis_factors)


# --------------------------------------------------------------------------- cutouts
def cutouts(image, seeds, size: int = 32, mask=None, saturation=None):
    """Cut ``size`` × ``size`` boxes with the seed at index ``size // 2`` (origin = seed - size//2).

    Returns ``stack (n,size,size) float64``, ``weights`` (1 valid, 0 saturated/masked/outside),
    ``origins (n,2)``, ``ok (n,) bool`` and ``reasons`` (``"edge"`` when the box leaves the image,
    ``"no valid pixels"`` …, ``""`` when fine).
    """
    from .spots import LaueImage

    if isinstance(image, LaueImage):
        if saturation is None:
            saturation = image.saturation
        image = image.data
    data = np.asarray(image)
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1, 2)
    n = len(seeds)
    h = size // 2
    origins = seeds - h
    H, W = data.shape
    ok = (origins[:, 0] >= 0) & (origins[:, 1] >= 0) & (origins[:, 0] + size <= H) & (origins[:, 1] + size <= W)
    # pad so that every box can be taken; padded pixels get weight 0
    pad = size
    padded = np.pad(data.astype(np.float64, copy=False), pad, mode="constant")
    valid = np.ones(data.shape, bool)
    if mask is not None:
        valid &= ~np.asarray(mask, bool)
    if saturation is not None:
        valid &= data < saturation
    vpad = np.pad(valid, pad, mode="constant", constant_values=False)
    rr = origins[:, 0, None] + pad + np.arange(size)[None, :]  # (n, size)
    cc = origins[:, 1, None] + pad + np.arange(size)[None, :]
    rr = np.clip(rr, 0, padded.shape[0] - 1)
    cc = np.clip(cc, 0, padded.shape[1] - 1)
    stack = padded[rr[:, :, None], cc[:, None, :]]
    weights = vpad[rr[:, :, None], cc[:, None, :]].astype(np.float64)
    reasons = []
    for i in range(n):
        if not ok[i]:
            reasons.append("edge")
        elif weights[i].sum() < 16:
            ok[i] = False
            reasons.append("no valid pixels")
        else:
            reasons.append("")
    return stack, weights, origins, ok, reasons


# --------------------------------------------------------------------------- model
def _grid(size):
    return np.arange(size, dtype=np.float64)


SQRT_HALF_PI = np.sqrt(np.pi / 2)


def _axis_factors(d, s, pixel_integrated=False):
    """1D profile along one axis and its derivatives: ``g``, ``dg/dmu``, ``dg/dsigma`` for offsets
    ``d = x - mu`` (n, L) px and widths ``s`` (n,) px.

    Point-sampled (the paper's model): ``g = exp(-d^2 / 2 s^2)``.  Pixel-integrated:
    ``g = ∫_{d-1/2}^{d+1/2} exp(-t^2 / 2 s^2) dt`` (the same Gaussian averaged over each pixel; well
    defined for spots sharper than a pixel, where the sampled model degenerates to sigma -> 0).
    In both, ``alpha`` is the peak of the continuous Gaussian and the integral is 2 pi alpha s1 s2.
    """
    s = s[:, None]
    if not pixel_integrated:
        g = np.exp(-0.5 * (d / s) ** 2)
        dmu = g * d / s**2
        return g, dmu, dmu * d / s
    from scipy.special import erf

    k = 1.0 / (np.sqrt(2.0) * s)
    lo, hi = d - 0.5, d + 0.5
    g = s * SQRT_HALF_PI * (erf(hi * k) - erf(lo * k))
    el, eh = np.exp(-((lo * k) ** 2)), np.exp(-((hi * k) ** 2))
    return g, el - eh, (g + lo * el - hi * eh) / s


def model_and_jacobian(p: np.ndarray, shape, rotated: bool = False, jac: bool = True, pixel_integrated: bool = False):
    """Model ``(n, R, C)`` and Jacobian ``(n, R*C, k)`` for parameters ``p (n, k)``."""
    R, C = shape
    a, b, m1, m2, s1, s2 = (p[:, i] for i in range(6))
    r = _grid(R)[None, :] - m1[:, None]  # (n, R)
    c = _grid(C)[None, :] - m2[:, None]  # (n, C)
    if not rotated:
        # separable: G = gr (outer) gc
        gr, dr_mu, dr_s = _axis_factors(r, s1, pixel_integrated)
        gc, dc_mu, dc_s = _axis_factors(c, s2, pixel_integrated)
        G = gr[:, :, None] * gc[:, None, :]
        model = a[:, None, None] * G + b[:, None, None]
        if not jac:
            return model, None
        n = len(p)
        J = np.empty((n, R, C, 6))
        A = a[:, None, None]
        J[..., 0] = G
        J[..., 1] = 1.0
        J[..., 2] = A * dr_mu[:, :, None] * gc[:, None, :]
        J[..., 3] = A * gr[:, :, None] * dc_mu[:, None, :]
        J[..., 4] = A * dr_s[:, :, None] * gc[:, None, :]
        J[..., 5] = A * gr[:, :, None] * dc_s[:, None, :]
        return model, J.reshape(n, R * C, 6)
    if pixel_integrated:
        raise ValueError("the pixel-integrated model is axis-aligned only (rotated=False)")
    th = p[:, 6]
    ct, st = np.cos(th)[:, None, None], np.sin(th)[:, None, None]
    dr = r[:, :, None]
    dc = c[:, None, :]
    u = ct * dr + st * dc
    v = -st * dr + ct * dc
    is1 = 1.0 / s1[:, None, None] ** 2
    is2 = 1.0 / s2[:, None, None] ** 2
    G = np.exp(-0.5 * (u * u * is1 + v * v * is2))
    model = a[:, None, None] * G + b[:, None, None]
    if not jac:
        return model, None
    n = len(p)
    aG = a[:, None, None] * G
    J = np.empty((n, R, C, 7))
    J[..., 0] = G
    J[..., 1] = 1.0
    J[..., 2] = aG * (u * is1 * ct - v * is2 * st)
    J[..., 3] = aG * (u * is1 * st + v * is2 * ct)
    J[..., 4] = aG * u * u * is1 / s1[:, None, None]
    J[..., 5] = aG * v * v * is2 / s2[:, None, None]
    J[..., 6] = aG * u * v * (is2 - is1)
    return model, J.reshape(n, R * C, 7)


def initial_guess(stack: np.ndarray, weights: np.ndarray, rotated: bool = False) -> np.ndarray:
    """Moments-based start: beta = 10th percentile of valid pixels (of every other row and column),
    alpha = max - beta,
    mu = brightest valid pixel refined by a 5×5 centroid, sigma from its second moments (clipped
    to 0.5–3 px)."""
    n, R, C = stack.shape
    valid = (weights > 0).reshape(n, -1)
    flat = stack.reshape(n, -1)
    full = valid.all(axis=1)
    # background: ~10th percentile of the valid pixels on every other row and column
    sub = stack[:, ::2, ::2].reshape(n, -1)
    vsub = valid.reshape(n, R, C)[:, ::2, ::2].reshape(n, -1)
    beta = np.empty(n)
    k0 = (sub.shape[1] - 1) // 10
    if full.any():  # the common case: one partition at a fixed rank
        beta[full] = np.partition(sub[full], k0, axis=1)[:, k0]
    part = np.flatnonzero(~full)
    if len(part):
        nv = np.maximum(vsub[part].sum(axis=1), 1)
        srt = np.sort(np.where(vsub[part], sub[part], np.inf), axis=1)
        beta[part] = srt[np.arange(len(part)), (nv - 1) // 10]
        beta[part] = np.where(
            np.isfinite(beta[part]), beta[part], np.nanmin(np.where(valid[part], flat[part], np.nan), axis=1)
        )
    imax = np.argmax(flat, axis=1)
    if len(part):
        imax[part] = np.argmax(np.where(valid[part], flat[part], -np.inf), axis=1)
    pr, pc = np.divmod(imax, C)
    alpha = np.maximum(flat[np.arange(n), imax] - beta, 1e-3)
    # 5×5 window around the brightest pixel (clipped to the cutout)
    off = np.arange(-2, 3)
    rr = np.clip(pr[:, None] + off, 0, R - 1)  # (n, 5)
    cc = np.clip(pc[:, None] + off, 0, C - 1)
    win = stack[np.arange(n)[:, None, None], rr[:, :, None], cc[:, None, :]]
    wv = weights[np.arange(n)[:, None, None], rr[:, :, None], cc[:, None, :]] > 0
    # a clipped index repeats an edge pixel: count each pixel once
    dup = np.zeros((n, 5, 5), bool)
    dup |= (np.diff(rr, axis=1, prepend=-1) == 0)[:, :, None]
    dup |= (np.diff(cc, axis=1, prepend=-1) == 0)[:, None, :]
    wpos = np.where(wv & ~dup, np.clip(win - beta[:, None, None], 0, None), 0.0)
    tot = wpos.sum(axis=(1, 2))
    tot = np.where(tot > 0, tot, 1.0)
    wr, wc = wpos.sum(axis=2), wpos.sum(axis=1)  # (n, 5) marginals
    mu1 = (wr * rr).sum(axis=1) / tot
    mu2 = (wc * cc).sum(axis=1) / tot
    v1 = (wr * (rr - mu1[:, None]) ** 2).sum(axis=1) / tot
    v2 = (wc * (cc - mu2[:, None]) ** 2).sum(axis=1) / tot
    s1 = np.clip(np.sqrt(v1), 0.5, 3.0)
    s2 = np.clip(np.sqrt(v2), 0.5, 3.0)
    cols_ = [alpha, beta, mu1, mu2, s1, s2]
    if rotated:
        cols_.append(np.zeros(n))
    return np.stack(cols_, axis=1)


# --------------------------------------------------------------------------- LM
# Separable normal equations (unrotated model).  Every Jacobian column is an outer product
# (row factor) x (column factor) times a scalar:
#   row factors  F0 = 1, F1 = gr, F2 = d gr/d mu1, F3 = d gr/d s1   (same for columns)
#   alpha: (F1, F1, 1)  beta: (F0, F0, 1)  mu1: (F2, F1, a)  mu2: (F1, F2, a)  s1: (F3, F1, a)  s2: (F1, F3, a)
# With the weighted moments M[(i,k),(j,l)] = sum_rc W Fr_i Fr_k Fc_j Fc_l and Z[i,j] = sum_rc W A Fr_i Fc_j,
#   J^T W J = M[(row_p,row_q),(col_p,col_q)] * scale_p * scale_q,
#   J^T W (m - A) = (a M[(i,1),(j,1)] + b M[(i,0),(j,0)] - Z[i,j]) at (row_p, col_p), times scale_p,
#   2 cost = a^2 M[(1,1),(1,1)] + 2ab M[(1,0),(1,0)] + b^2 M[(0,0),(0,0)] - 2a Z[1,1] - 2b Z[0,0] + sum W A^2.
# For a spot without excluded pixels (W == 1, the common case) M factorises into
# (sum_r Fr_i Fr_k)(sum_c Fc_j Fc_l): a few 4 x 4 matrices per spot instead of (n, R*C, 6) arrays.
_SEP_ROW = np.array([1, 0, 2, 1, 3, 1])
_SEP_COL = np.array([1, 0, 1, 2, 1, 3])
_RI = _SEP_ROW[:, None] * 4 + _SEP_ROW[None, :]
_CI = _SEP_COL[:, None] * 4 + _SEP_COL[None, :]


def _factors(p, R, C, with_derivatives=True, pixel_integrated=False):
    m1, m2, s1, s2 = p[:, 2], p[:, 3], p[:, 4], p[:, 5]
    gr, dr_mu, dr_s = _axis_factors(_grid(R)[None, :] - m1[:, None], s1, pixel_integrated)
    gc, dc_mu, dc_s = _axis_factors(_grid(C)[None, :] - m2[:, None], s2, pixel_integrated)
    if not with_derivatives:
        return gr, gc, None, None
    Fr = np.stack([np.ones_like(gr), gr, dr_mu, dr_s], axis=1)  # (n, 4, R)
    Fc = np.stack([np.ones_like(gc), gc, dc_mu, dc_s], axis=1)  # (n, 4, C)
    return gr, gc, Fr, Fc


class _Data:
    """Per-spot constants of the weighted least-squares problem: W·A, sum W·A², which spots have
    W == 1 (``full``) and, for the others only, their W (shared between subsets via ``wrow``).
    The rotated (non-separable) path keeps A and W whole."""

    def __init__(self, A, W, rotated=False):
        self.WA = W * A
        self.sWAA = np.einsum("nij,nij->n", self.WA, A)
        self.full = (W == 1).all(axis=(1, 2))
        part = np.flatnonzero(~self.full)
        self.W_part = W[part]
        self.wrow = np.full(len(A), -1)
        self.wrow[part] = np.arange(len(part))
        self.A, self.W = (A, W) if rotated else (None, None)
        self.shape = A.shape[1:]

    def take(self, idx):
        out = _Data.__new__(_Data)
        out.WA, out.sWAA, out.full, out.wrow = self.WA[idx], self.sWAA[idx], self.full[idx], self.wrow[idx]
        out.W_part, out.shape = self.W_part, self.shape
        out.A, out.W = (None, None) if self.A is None else (self.A[idx], self.W[idx])
        return out

    def weights_of(self, rows):
        """W of the given (non-full) spots."""
        return self.W_part[self.wrow[rows]]


def _weighted_moments(Fr, Fc, D: _Data):
    """M (n, K*K, K*K): sum_rc W Fr_i Fr_k Fc_j Fc_l, indexed [(i,k), (j,l)], for factors (n, K, R/C)."""
    n, K, _ = Fr.shape
    Sr = np.einsum("nir,nkr->nik", Fr, Fr).reshape(n, K * K)
    Sc = np.einsum("nic,nkc->nik", Fc, Fc).reshape(n, K * K)
    M = Sr[:, :, None] * Sc[:, None, :]
    if not D.full.all():
        part = np.flatnonzero(~D.full)
        Pr = (Fr[part, :, None, :] * Fr[part, None, :, :]).reshape(len(part), K * K, -1)
        Pc = (Fc[part, :, None, :] * Fc[part, None, :, :]).reshape(len(part), K * K, -1)
        M[part] = np.matmul(np.matmul(Pr, D.weights_of(part)), Pc.transpose(0, 2, 1))
    return M


def _cost_from(a, b, M, Z, D: _Data, i1, i0):
    """0.5 * sum W (m - A)^2 from the moments (i1, i0: flat indices of (1,1) and (1,0) ... see above)."""
    c2 = (
        a * a * M[:, i1, i1]
        + 2 * a * b * M[:, i0, i0]
        + b * b * M[:, 0, 0]
        - 2 * a * Z[:, 1, 1]
        - 2 * b * Z[:, 0, 0]
        + D.sWAA
    )
    return 0.5 * np.maximum(c2, 0.0)


def _cost(p, D: _Data, rotated, pixel_integrated=False):
    if rotated:
        m, _ = model_and_jacobian(p, D.shape, True, jac=False)
        d = m - D.A
        return 0.5 * np.einsum("nij,nij->n", D.W * d, d)
    gr, gc, _, _ = _factors(p, *D.shape, with_derivatives=False, pixel_integrated=pixel_integrated)
    Fr = np.stack([np.ones_like(gr), gr], axis=1)  # (n, 2, R)
    Fc = np.stack([np.ones_like(gc), gc], axis=1)
    M = _weighted_moments(Fr, Fc, D)  # (n, 4, 4), index (i,k) -> 2 i + k
    Z = np.matmul(np.matmul(Fr, D.WA), Fc.transpose(0, 2, 1))  # (n, 2, 2)
    return _cost_from(p[:, 0], p[:, 1], M, Z, D, 3, 2)


def _normal_equations(p, D: _Data, rotated, pixel_integrated=False):
    """cost, J^T W J (n,k,k), J^T W (m - A) (n,k).  Unrotated: from the separable factors only
    (see the comment above), never building the (n, R*C, 6) Jacobian."""
    if rotated:
        A, W = D.A, D.W
        n = len(A)
        m, J = model_and_jacobian(p, D.shape, True)
        d = (m - A).reshape(n, -1)
        w = W.reshape(n, -1)
        JW = J * w[:, :, None]
        JTJ = np.matmul(JW.transpose(0, 2, 1), J)
        g = np.einsum("npk,np->nk", JW, d)
        return 0.5 * np.einsum("np,np->n", w * d, d), JTJ, g
    n = len(p)
    _, _, Fr, Fc = _factors(p, *D.shape, pixel_integrated=pixel_integrated)
    a, b = p[:, 0], p[:, 1]
    M = _weighted_moments(Fr, Fc, D)  # (n, 16, 16), index (i,k) -> 4 i + k
    Z = np.matmul(np.matmul(Fr, D.WA), Fc.transpose(0, 2, 1))  # (n, 4, 4)
    i4 = np.arange(4) * 4
    G4 = (
        a[:, None, None] * M[:, (i4 + 1)[:, None], (i4 + 1)[None, :]]
        + b[:, None, None] * M[:, i4[:, None], i4[None, :]]
        - Z
    )
    scale = np.ones((n, 6))
    scale[:, 2:] = a[:, None]
    g = G4[:, _SEP_ROW, _SEP_COL] * scale
    cost = _cost_from(a, b, M, Z, D, 5, 4)
    JTJ = M[:, _RI, _CI] * scale[:, :, None] * scale[:, None, :]
    return cost, JTJ, g


def fit_gaussians(
    stack,
    weights,
    *,
    max_iter: int = 50,
    tol: float = 1e-8,
    rotated: bool = False,
    p0: np.ndarray | None = None,
    lambda0: float = 1e-3,
    pixel_integrated: bool = False,
    sigma_floor: float | None = None,
    backend: str = "numpy",
    device: str = "auto",
) -> FitResult:
    """Batched Levenberg–Marquardt (Marquardt diagonal scaling, per-spot damping λ) over all cutouts.

    Minimises ``0.5 * sum(w * (m - A)^2)`` with the analytic Jacobian; for the unrotated model the
    normal equations are assembled from the separable row/column factors.  A spot has converged
    when an accepted step lowers its cost by < ``tol`` (relative) or moves μ, σ by < 1e-6 px, or
    when its gradient vanishes.  Steps making a σ non-positive are rejected (λ × 10).  A spot whose
    σ falls below ``sigma_floor`` px (default 0.35 px for the sampled model, whose minimum does not
    exist below that; 0.2 px for the pixel-integrated one, where mu and sigma stop being separable)
    is stopped as undersampled (not converged).
    ``pixel_integrated``: fit the pixel-integrated Gaussian instead of the point-sampled one (the
    paper's); needed for spots sharper than about 0.5 px (axis-aligned only).
    ``backend="torch"``: the same fit in torch on ``device`` (a GPU when "auto" finds one; axis-aligned
    model only), see :mod:`photonflow.laue.fit_torch`.
    """
    if backend == "torch":
        if rotated:
            raise ValueError("the torch backend fits the axis-aligned model only (rotated=False)")
        from .fit_torch import fit_gaussians_torch

        return fit_gaussians_torch(
            stack,
            weights,
            max_iter=max_iter,
            tol=tol,
            p0=p0,
            lambda0=lambda0,
            pixel_integrated=pixel_integrated,
            sigma_floor=sigma_floor,
            device=device,
        )
    if backend != "numpy":
        raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")
    if pixel_integrated and rotated:
        raise ValueError("the pixel-integrated model is axis-aligned only (rotated=False)")
    if sigma_floor is None:
        sigma_floor = 0.2 if pixel_integrated else 0.35
    A_all = np.asarray(stack, dtype=np.float64)
    W_all = np.asarray(weights, dtype=np.float64)
    n, R, C = A_all.shape
    k = 7 if rotated else 6
    p = initial_guess(A_all, W_all, rotated) if p0 is None else np.array(p0, dtype=np.float64)
    lam = np.full(n, lambda0)
    converged = np.zeros(n, bool)
    n_iter = np.zeros(n, int)
    undersampled = np.zeros(n, bool)
    D_all = _Data(A_all, W_all, rotated)
    cost, JTJ, g = _normal_equations(p, D_all, rotated, pixel_integrated)
    eye = np.eye(k)
    active = np.arange(n)
    D = D_all
    for _ in range(max_iter):
        if len(active) == 0:
            break
        n_iter[active] += 1
        H = JTJ[active]
        dg = np.diagonal(H, axis1=1, axis2=2)
        Hd = H + (lam[active, None, None] * np.maximum(dg, 1e-12)[:, :, None]) * eye
        try:
            step = -np.linalg.solve(Hd, g[active][:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = np.stack([-np.linalg.lstsq(Hd[j], g[i], rcond=None)[0] for j, i in enumerate(active)])
        pn = p[active] + step
        bad = ~np.all(np.isfinite(pn), axis=1) | (pn[:, 4] <= 1e-3) | (pn[:, 5] <= 1e-3)
        pn = np.where(bad[:, None], p[active], pn)
        if D is None:
            D = D_all.take(active)
        cn = _cost(pn, D, rotated, pixel_integrated)
        c0 = cost[active]
        accept = (~bad) & (cn <= c0)
        rel = (c0 - cn) / np.maximum(c0, 1e-300)
        small_step = np.max(np.abs(step[:, 2:6]), axis=1) < 1e-6  # px
        done = accept & ((rel < tol) | small_step)
        done |= np.max(np.abs(g[active]), axis=1) <= 1e-12 * np.maximum(c0, 1.0)
        done |= (~accept) & (lam[active] > 1e12)  # stalled: no downhill step at any damping
        # a spot sharper than a pixel: sigma runs to 0 and alpha to infinity (no minimum); stop early
        collapsed = accept & (np.minimum(pn[:, 4], pn[:, 5]) < sigma_floor)
        done &= ~collapsed
        if accept.any():
            acc = active[accept]
            p[acc] = pn[accept]
            lam[acc] = np.maximum(lam[acc] / 10.0, 1e-12)
            cost[acc], JTJ[acc], g[acc] = _normal_equations(
                p[acc], D if accept.all() else D.take(accept), rotated, pixel_integrated
            )
        lam[active[~accept]] *= 10.0
        converged[active[done]] = True
        undersampled[active[collapsed]] = True
        finished = done | collapsed
        if finished.any():
            active = active[~finished]
            D = None
    unfinished = np.zeros(n, bool)
    unfinished[active] = True
    p, converged, reason = fit_outcome(p, converged, undersampled, unfinished, max_iter, sigma_floor, (R, C))
    return FitResult(
        params=p, converged=converged, n_iter=n_iter, cost=cost, reason=reason, pixel_integrated=pixel_integrated
    )


def fit_outcome(p, converged, undersampled, unfinished, max_iter, sigma_floor, shape):
    """Final parameters (|σ|, canonical rotation), converged flags and reasons ("" when converged):
    undersampled, not converged in max_iter, or out of bounds (α ≤ 0, σ larger than the cutout,
    μ outside it)."""
    R, C = shape
    p = np.array(p, dtype=np.float64)
    converged = np.array(converged, bool)
    reason = [""] * len(p)
    for i in np.flatnonzero(undersampled):
        reason[i] = f"undersampled spot: sigma < {sigma_floor} px (sharper than a pixel)"
    for i in np.flatnonzero(unfinished):
        reason[i] = f"not converged in {max_iter} iterations"
    p[:, 4:6] = np.abs(p[:, 4:6])
    if p.shape[1] == 7:
        p = canonical_rotation(p)
    oob = converged & (
        (p[:, 0] <= 0)
        | (p[:, 4] > R)
        | (p[:, 5] > C)
        | (p[:, 2] < -0.5)
        | (p[:, 2] > R - 0.5)
        | (p[:, 3] < -0.5)
        | (p[:, 3] > C - 0.5)
    )
    for i in np.flatnonzero(oob):
        converged[i] = False
        reason[i] = "fit out of bounds (alpha<=0, sigma>box or mu outside cutout)"
    return p, converged, reason


def canonical_rotation(p: np.ndarray) -> np.ndarray:
    """Rotated parameters to the canonical form theta in [-pi/4, pi/4): (s1, s2, theta) and
    (s2, s1, theta + pi/2) describe the same Gaussian."""
    p = np.array(p, dtype=np.float64)
    th = np.mod(p[:, 6] + np.pi / 4, np.pi) - np.pi / 4  # [-pi/4, 3pi/4)
    swap = th >= np.pi / 4
    th[swap] -= np.pi / 2
    p[swap, 4], p[swap, 5] = p[swap, 5].copy(), p[swap, 4].copy()
    p[:, 6] = th
    return p


# --------------------------------------------------------------------------- descriptors
SIM_THRESHOLD = 0.85


def sim_from_sim0(sim0):
    """Paper's mapping: 0 below 0.85, else (Sim0 - 0.85) / 0.15."""
    sim0 = np.asarray(sim0, dtype=np.float64)
    return np.where(sim0 < SIM_THRESHOLD, 0.0, (sim0 - SIM_THRESHOLD) / (1.0 - SIM_THRESHOLD))


def descriptors(
    stack,
    weights,
    result: FitResult,
    origins,
    seeds,
    quality_sim: float = 0.5,
    quality_dist: float = 0.9,
    ok=None,
    reasons=None,
) -> dict:
    """Sim0 (normalised cross-correlation = Pearson correlation of cutout and fitted model over
    valid pixels), Sim, Pos = origin + mu (absolute [row, col]; equivalently s + mu relative to the
    seed), Asp = min σ / max σ, Area = π σ1 σ2, quality = Sim > quality_sim and |Pos - s| <=
    quality_dist, status ("ok" or the reason the spot was not fitted / did not converge)."""
    stack = np.asarray(stack, dtype=np.float64)
    n, R, C = stack.shape
    p = result.params
    rotated = p.shape[1] == 7
    model, _ = model_and_jacobian(p, (R, C), rotated, jac=False, pixel_integrated=result.pixel_integrated)
    w = np.asarray(weights, dtype=np.float64)
    nw = np.maximum(w.sum(axis=(1, 2)), 1.0)
    ma = (w * stack).sum(axis=(1, 2)) / nw
    mm = (w * model).sum(axis=(1, 2)) / nw
    da = stack - ma[:, None, None]
    dm = model - mm[:, None, None]
    num = (w * da * dm).sum(axis=(1, 2))
    den = np.sqrt((w * da * da).sum(axis=(1, 2)) * (w * dm * dm).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        sim0 = np.where(den > 0, num / den, 0.0)
    sim = sim_from_sim0(sim0)
    pos = np.asarray(origins, dtype=np.float64) + p[:, 2:4]
    s1, s2 = p[:, 4], p[:, 5]
    asp = np.minimum(s1, s2) / np.maximum(s1, s2)
    area = np.pi * s1 * s2
    dist = np.hypot(*(pos - np.asarray(seeds, dtype=np.float64)).T)
    ok = np.ones(n, bool) if ok is None else np.asarray(ok, bool)
    good = ok & result.converged
    quality = good & (sim > quality_sim) & (dist <= quality_dist)
    status = []
    for i in range(n):
        if reasons is not None and reasons[i]:
            status.append(reasons[i])
        elif not result.converged[i]:
            status.append(result.reason[i] or "not converged")
        else:
            status.append("ok")
    return {
        "Sim0": sim0,
        "Sim": sim,
        "Pos": pos,
        "Asp": asp,
        "Area": area,
        "dist": dist,
        "quality": quality,
        "status": np.array(status, dtype=object),
    }


def fit_spots(
    image,
    seeds,
    *,
    size: int = 32,
    mask=None,
    saturation=None,
    rotated: bool = False,
    max_iter: int = 50,
    tol: float = 1e-8,
    quality_sim: float = 0.5,
    quality_dist: float = 0.9,
    pixel_integrated: bool = False,
    backend: str = "numpy",
    device: str = "auto",
) -> dict:
    """Cut out, fit (only cutouts that are ok) and describe every seed. Returns a dict of arrays,
    one row per seed (in seed order): seed, origin, alpha, beta, mu1, mu2, sigma1, sigma2
    [, theta], converged, n_iter, cost, Sim0, Sim, Pos, Asp, Area, dist, quality, status."""
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1, 2)
    stack, weights, origins, ok, reasons = cutouts(image, seeds, size=size, mask=mask, saturation=saturation)
    n = len(seeds)
    k = 7 if rotated else 6
    params = np.full((n, k), np.nan)
    conv = np.zeros(n, bool)
    n_iter = np.zeros(n, int)
    cost = np.full(n, np.nan)
    freason = ["not fitted"] * n
    idx = np.flatnonzero(ok)
    if len(idx):
        res = fit_gaussians(
            stack[idx],
            weights[idx],
            max_iter=max_iter,
            tol=tol,
            rotated=rotated,
            pixel_integrated=pixel_integrated,
            backend=backend,
            device=device,
        )
        params[idx] = res.params
        conv[idx] = res.converged
        n_iter[idx] = res.n_iter
        cost[idx] = res.cost
        for j, i in enumerate(idx):
            freason[i] = res.reason[j]
    full = FitResult(
        params=np.nan_to_num(params, nan=1.0),
        converged=conv,
        n_iter=n_iter,
        cost=cost,
        reason=freason,
        pixel_integrated=pixel_integrated,
    )
    desc = descriptors(stack, weights, full, origins, seeds, quality_sim, quality_dist, ok=ok, reasons=reasons)
    for key in ("Sim0", "Sim", "Asp", "Area", "dist"):
        desc[key] = np.where(ok, desc[key], np.nan)
    desc["Pos"] = np.where(ok[:, None], desc["Pos"], np.nan)
    table = {"seed": seeds, "origin": origins}
    for j in range(k):
        table[PARAM_NAMES[j]] = params[:, j]
    table.update({"converged": conv, "n_iter": n_iter, "cost": cost})
    table.update(desc)
    return table
