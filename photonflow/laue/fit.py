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


def model_and_jacobian(p: np.ndarray, shape, rotated: bool = False, jac: bool = True):
    """Model ``(n, R, C)`` and Jacobian ``(n, R*C, k)`` for parameters ``p (n, k)``."""
    R, C = shape
    a, b, m1, m2, s1, s2 = (p[:, i] for i in range(6))
    r = _grid(R)[None, :] - m1[:, None]  # (n, R)
    c = _grid(C)[None, :] - m2[:, None]  # (n, C)
    if not rotated:
        # separable: G = gr (outer) gc
        gr = np.exp(-0.5 * (r / s1[:, None]) ** 2)
        gc = np.exp(-0.5 * (c / s2[:, None]) ** 2)
        G = gr[:, :, None] * gc[:, None, :]
        model = a[:, None, None] * G + b[:, None, None]
        if not jac:
            return model, None
        n = len(p)
        J = np.empty((n, R, C, 6))
        aG = a[:, None, None] * G
        fr = r / s1[:, None] ** 2  # d/dmu1 factor
        fc = c / s2[:, None] ** 2
        J[..., 0] = G
        J[..., 1] = 1.0
        J[..., 2] = aG * fr[:, :, None]
        J[..., 3] = aG * fc[:, None, :]
        J[..., 4] = aG * (fr * r / s1[:, None])[:, :, None]
        J[..., 5] = aG * (fc * c / s2[:, None])[:, None, :]
        return model, J.reshape(n, R * C, 6)
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
    """Moments-based start: beta = 10th percentile of valid pixels, alpha = max - beta,
    mu = brightest valid pixel refined by a 5×5 centroid, sigma from second moments (clipped)."""
    n, R, C = stack.shape
    valid = (weights > 0).reshape(n, -1)
    flat = stack.reshape(n, -1)
    srt = np.sort(np.where(valid, flat, np.inf), axis=1)
    nv = valid.sum(axis=1)
    beta = srt[np.arange(n), np.clip((nv - 1) // 10, 0, flat.shape[1] - 1)]  # ~10th percentile
    imax = np.argmax(np.where(valid, flat, -np.inf), axis=1)
    pr, pc = np.divmod(imax, C)
    alpha = np.maximum(flat[np.arange(n), imax] - beta, 1e-3)
    rows = _grid(R)
    cols = _grid(C)
    near = (np.abs(rows[None, :, None] - pr[:, None, None]) <= 2) & (np.abs(cols[None, None, :] - pc[:, None, None]) <= 2)
    wpos = np.where(near & (weights > 0), np.clip(stack - beta[:, None, None], 0, None), 0.0)
    tot = wpos.sum(axis=(1, 2))
    tot = np.where(tot > 0, tot, 1.0)
    mu1 = (wpos * rows[None, :, None]).sum(axis=(1, 2)) / tot
    mu2 = (wpos * cols[None, None, :]).sum(axis=(1, 2)) / tot
    v1 = (wpos * (rows[None, :, None] - mu1[:, None, None]) ** 2).sum(axis=(1, 2)) / tot
    v2 = (wpos * (cols[None, None, :] - mu2[:, None, None]) ** 2).sum(axis=(1, 2)) / tot
    s1 = np.clip(np.sqrt(v1), 0.5, 3.0)
    s2 = np.clip(np.sqrt(v2), 0.5, 3.0)
    cols_ = [alpha, beta, mu1, mu2, s1, s2]
    if rotated:
        cols_.append(np.zeros(n))
    return np.stack(cols_, axis=1)


# --------------------------------------------------------------------------- LM
# Separable normal equations (unrotated model).  Every Jacobian column is an outer product
# (row factor) x (column factor) times a scalar:
#   row factors  F0 = 1, F1 = gr, F2 = gr (r-mu1)/s1^2, F3 = gr (r-mu1)^2/s1^3   (same for columns)
#   alpha: (F1, F1, 1)  beta: (F0, F0, 1)  mu1: (F2, F1, a)  mu2: (F1, F2, a)  s1: (F3, F1, a)  s2: (F1, F3, a)
# so J^T W J and J^T W res are small batched matrix products instead of (n, R*C, 6) arrays.
_SEP_ROW = np.array([1, 0, 2, 1, 3, 1])
_SEP_COL = np.array([1, 0, 1, 2, 1, 3])


def _factors(p, R, C, with_derivatives=True):
    a, b, m1, m2, s1, s2 = (p[:, i] for i in range(6))
    r = _grid(R)[None, :] - m1[:, None]
    c = _grid(C)[None, :] - m2[:, None]
    gr = np.exp(-0.5 * (r / s1[:, None]) ** 2)
    gc = np.exp(-0.5 * (c / s2[:, None]) ** 2)
    if not with_derivatives:
        return gr, gc, None, None
    fr = gr * r / s1[:, None] ** 2
    fc = gc * c / s2[:, None] ** 2
    Fr = np.stack([np.ones_like(gr), gr, fr, fr * r / s1[:, None]], axis=1)  # (n, 4, R)
    Fc = np.stack([np.ones_like(gc), gc, fc, fc * c / s2[:, None]], axis=1)  # (n, 4, C)
    return gr, gc, Fr, Fc


class _Data:
    """Per-spot constants of the weighted least-squares problem (W, W·A, sums)."""

    def __init__(self, A, W):
        self.A, self.W = A, W
        self.WA = W * A
        self.sW = W.sum(axis=(1, 2))
        self.sWA = self.WA.sum(axis=(1, 2))
        self.sWAA = (self.WA * A).sum(axis=(1, 2))

    def take(self, idx):
        out = _Data.__new__(_Data)
        for key in ("A", "W", "WA", "sW", "sWA", "sWAA"):
            setattr(out, key, getattr(self, key)[idx])
        return out

    def take_lazy(self, idx, rotated):
        """Like take, without copying A where the separable (unrotated) path does not read it."""
        if rotated:
            return self.take(idx)
        out = _Data.__new__(_Data)
        for key in ("W", "WA", "sW", "sWA", "sWAA"):
            setattr(out, key, getattr(self, key)[idx])
        out.A = np.broadcast_to(np.empty((1, 1, 1)), (len(out.W),) + self.A.shape[1:])  # shape only
        return out


def _bilinear(x, M, y):
    """x_n^T M_n y_n for x (n,R), M (n,R,C), y (n,C)."""
    return np.matmul(np.matmul(x[:, None, :], M), y[:, :, None])[:, 0, 0]


def _cost(p, D: _Data, rotated):
    if rotated:
        m, _ = model_and_jacobian(p, D.A.shape[1:], True, jac=False)
        d = m - D.A
        return 0.5 * np.einsum("nij,nij->n", D.W * d, d)
    gr, gc, _, _ = _factors(p, *D.A.shape[1:], with_derivatives=False)
    a, b = p[:, 0], p[:, 1]
    X = np.matmul(np.stack([gr * gr, gr], axis=1), D.W)  # (n, 2, C)
    q_gg = np.einsum("nc,nc->n", X[:, 0], gc * gc)
    q_g = np.einsum("nc,nc->n", X[:, 1], gc)
    s_ga = _bilinear(gr, D.WA, gc)
    c2 = a * a * q_gg + 2 * a * b * q_g + b * b * D.sW - 2 * a * s_ga - 2 * b * D.sWA + D.sWAA
    return 0.5 * np.maximum(c2, 0.0)


def _normal_equations(p, D: _Data, rotated):
    """cost, J^T W J (n,k,k), J^T W (m - A) (n,k).  Unrotated: from separable factors only
    (bilinear forms with W and W·A), never building the (n, R*C, 6) Jacobian."""
    A, W = D.A, D.W
    n, R, C = A.shape
    if rotated:
        m, J = model_and_jacobian(p, (R, C), True)
        d = (m - A).reshape(n, -1)
        w = W.reshape(n, -1)
        JW = J * w[:, :, None]
        JTJ = np.matmul(JW.transpose(0, 2, 1), J)
        g = np.einsum("npk,np->nk", JW, d)
        return 0.5 * np.einsum("np,np->n", w * d, d), JTJ, g
    gr, gc, Fr, Fc = _factors(p, R, C)
    a, b = p[:, 0], p[:, 1]
    # gradient G4[i, j] = sum_rc W (a gr gc + b - A) Fr_i Fc_j
    X = np.matmul(np.concatenate([Fr * gr[:, None, :], Fr], axis=1), W)  # (n, 8, C)
    Y = np.matmul(Fr, D.WA)  # (n, 4, C)
    FcT = Fc.transpose(0, 2, 1)
    G4 = (a[:, None, None] * np.matmul(X[:, :4], (Fc * gc[:, None, :]).transpose(0, 2, 1))
          + b[:, None, None] * np.matmul(X[:, 4:], FcT) - np.matmul(Y, FcT))
    scale = np.ones((n, 6))
    scale[:, 2:] = a[:, None]
    g = G4[:, _SEP_ROW, _SEP_COL] * scale
    # cost from the same pieces: sum W m^2 - 2 sum W m A + sum W A^2, with m = a gr gc + b
    q_gg = np.einsum("nc,nc->n", np.matmul((gr * gr)[:, None, :], W)[:, 0], gc * gc)
    q_g = np.einsum("nc,nc->n", X[:, 5], gc)  # X[:, 5] = Fr_1 W = gr W
    s_ga = np.einsum("nc,nc->n", Y[:, 1], gc)
    c2 = a * a * q_gg + 2 * a * b * q_g + b * b * D.sW - 2 * a * s_ga - 2 * b * D.sWA + D.sWAA
    cost = 0.5 * np.maximum(c2, 0.0)
    # Hessian: M[(ra,rb),(ca,cb)] = sum_rc W Fr_ra Fr_rb Fc_ca Fc_cb
    Pr = (Fr[:, :, None, :] * Fr[:, None, :, :]).reshape(n, 16, R)
    Pc = (Fc[:, :, None, :] * Fc[:, None, :, :]).reshape(n, 16, C)
    # spots without excluded pixels (W == 1): M factorises into (sum_r Pr) (sum_c Pc)^T
    full = D.sW == R * C
    M = Pr.sum(axis=2)[:, :, None] * Pc.sum(axis=2)[:, None, :]  # (n, 16, 16)
    if not full.all():
        part = ~full
        M[part] = np.matmul(np.matmul(Pr[part], W[part]), Pc[part].transpose(0, 2, 1))
    ri = _SEP_ROW[:, None] * 4 + _SEP_ROW[None, :]
    ci = _SEP_COL[:, None] * 4 + _SEP_COL[None, :]
    JTJ = M[:, ri, ci] * scale[:, :, None] * scale[:, None, :]
    return cost, JTJ, g


def fit_gaussians(stack, weights, *, max_iter: int = 50, tol: float = 1e-8, rotated: bool = False,
                  p0: np.ndarray | None = None, lambda0: float = 1e-3) -> FitResult:
    """Batched Levenberg–Marquardt (Marquardt diagonal scaling, per-spot damping λ) over all cutouts.

    Minimises ``0.5 * sum(w * (m - A)^2)`` with the analytic Jacobian; for the unrotated model the
    normal equations are assembled from the separable row/column factors.  A spot has converged
    when an accepted step lowers its cost by < ``tol`` (relative) or moves μ, σ by < 1e-6 px, or
    when its gradient vanishes.  Steps making a σ non-positive are rejected (λ × 10).
    """
    A_all = np.asarray(stack, dtype=np.float64)
    W_all = np.asarray(weights, dtype=np.float64)
    n, R, C = A_all.shape
    k = 7 if rotated else 6
    p = initial_guess(A_all, W_all, rotated) if p0 is None else np.array(p0, dtype=np.float64)
    lam = np.full(n, lambda0)
    converged = np.zeros(n, bool)
    n_iter = np.zeros(n, int)
    reason = [""] * n
    D_all = _Data(A_all, W_all)
    cost, JTJ, g = _normal_equations(p, D_all, rotated)
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
            D = D_all.take_lazy(active, rotated)
        cn = _cost(pn, D, rotated)
        c0 = cost[active]
        accept = (~bad) & (cn <= c0)
        rel = (c0 - cn) / np.maximum(c0, 1e-300)
        small_step = np.max(np.abs(step[:, 2:6]), axis=1) < 1e-6  # px
        done = accept & ((rel < tol) | small_step)
        done |= np.max(np.abs(g[active]), axis=1) <= 1e-12 * np.maximum(c0, 1.0)
        done |= (~accept) & (lam[active] > 1e12)  # stalled: no downhill step at any damping
        if accept.any():
            acc = active[accept]
            p[acc] = pn[accept]
            lam[acc] = np.maximum(lam[acc] / 10.0, 1e-12)
            cost[acc], JTJ[acc], g[acc] = _normal_equations(p[acc], D if accept.all() else D.take_lazy(accept, rotated), rotated)
        lam[active[~accept]] *= 10.0
        converged[active[done]] = True
        if done.any():
            active = active[~done]
            D = None
    for i in active:
        if min(abs(p[i, 4]), abs(p[i, 5])) < 0.5:
            # sharper than a pixel: the point-sampled model is degenerate (sigma -> 0, alpha -> inf)
            reason[i] = f"not converged in {max_iter} iterations: sigma collapsing (< 0.5 px, undersampled spot)"
        else:
            reason[i] = f"not converged in {max_iter} iterations"
    p[:, 4:6] = np.abs(p[:, 4:6])
    if rotated:
        p = canonical_rotation(p)
    oob = converged & ((p[:, 0] <= 0) | (p[:, 4] > R) | (p[:, 5] > C) | (p[:, 2] < -0.5) | (p[:, 2] > R - 0.5)
                       | (p[:, 3] < -0.5) | (p[:, 3] > C - 0.5))
    for i in np.flatnonzero(oob):
        converged[i] = False
        reason[i] = "fit out of bounds (alpha<=0, sigma>box or mu outside cutout)"
    return FitResult(params=p, converged=converged, n_iter=n_iter, cost=cost, reason=reason)


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


def descriptors(stack, weights, result: FitResult, origins, seeds, quality_sim: float = 0.5,
                quality_dist: float = 0.9, ok=None, reasons=None) -> dict:
    """Sim0 (normalised cross-correlation = Pearson correlation of cutout and fitted model over
    valid pixels), Sim, Pos = origin + mu (absolute [row, col]; equivalently s + mu relative to the
    seed), Asp = min σ / max σ, Area = π σ1 σ2, quality = Sim > quality_sim and |Pos - s| <=
    quality_dist, status ("ok" or the reason the spot was not fitted / did not converge)."""
    stack = np.asarray(stack, dtype=np.float64)
    n, R, C = stack.shape
    p = result.params
    rotated = p.shape[1] == 7
    model, _ = model_and_jacobian(p, (R, C), rotated, jac=False)
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
    return {"Sim0": sim0, "Sim": sim, "Pos": pos, "Asp": asp, "Area": area, "dist": dist,
            "quality": quality, "status": np.array(status, dtype=object)}


def fit_spots(image, seeds, *, size: int = 32, mask=None, saturation=None, rotated: bool = False,
              max_iter: int = 50, tol: float = 1e-8, quality_sim: float = 0.5, quality_dist: float = 0.9) -> dict:
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
        res = fit_gaussians(stack[idx], weights[idx], max_iter=max_iter, tol=tol, rotated=rotated)
        params[idx] = res.params
        conv[idx] = res.converged
        n_iter[idx] = res.n_iter
        cost[idx] = res.cost
        for j, i in enumerate(idx):
            freason[i] = res.reason[j]
    full = FitResult(params=np.nan_to_num(params, nan=1.0), converged=conv, n_iter=n_iter, cost=cost, reason=freason)
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
