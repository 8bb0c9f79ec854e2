"""The batched 2D Gaussian Levenberg–Marquardt of :mod:`photonflow.laue.fit` in torch (for a GPU).

Same model, start, damping, stopping rules and results as the numpy fit (axis-aligned model,
point-sampled or pixel-integrated); the difference is the shape of the work: every spot stays in
the batch until all have finished (masks instead of a shrinking active set), and the weighted
moments are always assembled with the weights (no W == 1 shortcut), which suits a GPU.
float64 throughout, so results agree with the numpy backend to rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from photonflow.torch_device import resolve_device

from .fit import _SEP_COL, _SEP_ROW, FitResult, fit_outcome


def _axis_factors(d, s, pixel_integrated):
    """g, dg/dmu, dg/dsigma along one axis (see photonflow.laue.fit._axis_factors)."""
    s = s[:, None]
    if not pixel_integrated:
        g = torch.exp(-0.5 * (d / s) ** 2)
        dmu = g * d / s**2
        return g, dmu, dmu * d / s
    k = 1.0 / (math.sqrt(2.0) * s)
    lo, hi = d - 0.5, d + 0.5
    g = s * math.sqrt(math.pi / 2) * (torch.special.erf(hi * k) - torch.special.erf(lo * k))
    el, eh = torch.exp(-((lo * k) ** 2)), torch.exp(-((hi * k) ** 2))
    return g, el - eh, (g + lo * el - hi * eh) / s


class _Problem:
    """Constants of the weighted least-squares problem on the device."""

    def __init__(self, A, W, pixel_integrated):
        self.W, self.WA = W, W * A
        self.sWAA = torch.einsum("nij,nij->n", self.WA, A)
        n, R, C = A.shape
        self.rows = torch.arange(R, dtype=A.dtype, device=A.device)
        self.cols = torch.arange(C, dtype=A.dtype, device=A.device)
        self.pixel_integrated = pixel_integrated
        self.ri = torch.as_tensor(_SEP_ROW[:, None] * 4 + _SEP_ROW[None, :], device=A.device)
        self.ci = torch.as_tensor(_SEP_COL[:, None] * 4 + _SEP_COL[None, :], device=A.device)
        self.sr = torch.as_tensor(_SEP_ROW, device=A.device)
        self.sc = torch.as_tensor(_SEP_COL, device=A.device)

    def factors(self, p, derivatives=True):
        gr, dr_mu, dr_s = _axis_factors(self.rows[None, :] - p[:, 2:3], p[:, 4], self.pixel_integrated)
        gc, dc_mu, dc_s = _axis_factors(self.cols[None, :] - p[:, 3:4], p[:, 5], self.pixel_integrated)
        if not derivatives:
            one_r, one_c = torch.ones_like(gr), torch.ones_like(gc)
            return torch.stack([one_r, gr], 1), torch.stack([one_c, gc], 1)
        return (
            torch.stack([torch.ones_like(gr), gr, dr_mu, dr_s], 1),
            torch.stack([torch.ones_like(gc), gc, dc_mu, dc_s], 1),
        )

    def moments(self, Fr, Fc):
        """M (n, K², K²) = sum_rc W Fr_i Fr_k Fc_j Fc_l and Z (n, K, K) = sum_rc W A Fr_i Fc_j."""
        n, K, R = Fr.shape
        Pr = (Fr[:, :, None, :] * Fr[:, None, :, :]).reshape(n, K * K, R)
        Pc = (Fc[:, :, None, :] * Fc[:, None, :, :]).reshape(n, K * K, -1)
        M = Pr @ self.W @ Pc.transpose(1, 2)
        Z = Fr @ self.WA @ Fc.transpose(1, 2)
        return M, Z

    def _cost_from(self, a, b, M, Z, i1, i0):
        c2 = (
            a * a * M[:, i1, i1]
            + 2 * a * b * M[:, i0, i0]
            + b * b * M[:, 0, 0]
            - 2 * a * Z[:, 1, 1]
            - 2 * b * Z[:, 0, 0]
            + self.sWAA
        )
        return 0.5 * torch.clamp(c2, min=0.0)

    def cost(self, p):
        M, Z = self.moments(*self.factors(p, derivatives=False))
        return self._cost_from(p[:, 0], p[:, 1], M, Z, 3, 2)

    def normal_equations(self, p):
        M, Z = self.moments(*self.factors(p))
        a, b = p[:, 0], p[:, 1]
        i4 = torch.arange(4, device=p.device) * 4
        G4 = (
            a[:, None, None] * M[:, (i4 + 1)[:, None], (i4 + 1)[None, :]]
            + b[:, None, None] * M[:, i4[:, None], i4[None, :]]
            - Z
        )
        scale = torch.ones_like(p)
        scale[:, 2:] = a[:, None]
        g = G4[:, self.sr, self.sc] * scale
        JTJ = M[:, self.ri, self.ci] * scale[:, :, None] * scale[:, None, :]
        return self._cost_from(a, b, M, Z, 5, 4), JTJ, g


def initial_guess_torch(A, W):
    """The numpy start (photonflow.laue.fit.initial_guess) in torch: β = ~10th percentile of the
    valid pixels on every other row and column, α = max − β, μ = 5 × 5 centroid around the
    brightest valid pixel, σ from its second moments clipped to 0.5–3 px."""
    n, R, C = A.shape
    valid = W > 0
    sub = torch.where(valid[:, ::2, ::2], A[:, ::2, ::2], torch.inf).reshape(n, -1)
    nv = valid[:, ::2, ::2].reshape(n, -1).sum(1).clamp(min=1)
    beta = torch.sort(sub, dim=1).values.gather(1, ((nv - 1) // 10)[:, None])[:, 0]
    finite = torch.isfinite(beta)
    if not bool(finite.all()):  # no valid pixel on the sub-grid: the smallest valid pixel
        low = torch.where(valid, A, torch.inf).reshape(n, -1).min(1).values
        beta = torch.where(finite, beta, low)
    flat = torch.where(valid, A, -torch.inf).reshape(n, -1)
    amax, imax = flat.max(1)
    pr, pc = imax // C, imax % C
    alpha = (amax - beta).clamp(min=1e-3)
    off = torch.arange(-2, 3, device=A.device)
    rr = (pr[:, None] + off).clamp(0, R - 1)
    cc = (pc[:, None] + off).clamp(0, C - 1)
    idx = torch.arange(n, device=A.device)[:, None, None]
    win = A[idx, rr[:, :, None], cc[:, None, :]]
    wv = valid[idx, rr[:, :, None], cc[:, None, :]]
    first = torch.full((n, 1), -1, device=A.device)
    dup = (torch.diff(rr, dim=1, prepend=first) == 0)[:, :, None] | (torch.diff(cc, dim=1, prepend=first) == 0)[
        :, None, :
    ]
    wpos = torch.where(wv & ~dup, (win - beta[:, None, None]).clamp(min=0), torch.zeros_like(win))
    tot = wpos.sum((1, 2))
    tot = torch.where(tot > 0, tot, torch.ones_like(tot))
    wr, wc = wpos.sum(2), wpos.sum(1)
    mu1 = (wr * rr).sum(1) / tot
    mu2 = (wc * cc).sum(1) / tot
    s1 = torch.sqrt((wr * (rr - mu1[:, None]) ** 2).sum(1) / tot).clamp(0.5, 3.0)
    s2 = torch.sqrt((wc * (cc - mu2[:, None]) ** 2).sum(1) / tot).clamp(0.5, 3.0)
    return torch.stack([alpha, beta, mu1, mu2, s1, s2], 1)


@torch.inference_mode()
def fit_gaussians_torch(
    stack,
    weights,
    *,
    max_iter: int = 50,
    tol: float = 1e-8,
    p0=None,
    lambda0: float = 1e-3,
    pixel_integrated: bool = False,
    sigma_floor: float | None = None,
    device: str | torch.device = "auto",
) -> FitResult:
    """Batched LM fit of all cutouts on ``device`` (see :func:`photonflow.laue.fit.fit_gaussians`
    for the model, stopping rules and ``sigma_floor``); returns numpy results."""
    if sigma_floor is None:
        sigma_floor = 0.2 if pixel_integrated else 0.35
    dev = resolve_device(device)
    A = torch.as_tensor(np.asarray(stack), dtype=torch.float64, device=dev)
    W = torch.as_tensor(np.asarray(weights), dtype=torch.float64, device=dev)
    n, R, C = A.shape
    prob = _Problem(A, W, pixel_integrated)
    p = initial_guess_torch(A, W) if p0 is None else torch.as_tensor(np.asarray(p0), dtype=torch.float64, device=dev)
    lam = torch.full((n,), float(lambda0), dtype=torch.float64, device=dev)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    converged = torch.zeros_like(active)
    undersampled = torch.zeros_like(active)
    n_iter = torch.zeros(n, dtype=torch.int64, device=dev)
    cost, JTJ, g = prob.normal_equations(p)
    eye = torch.eye(6, dtype=torch.float64, device=dev)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        n_iter += active
        dg = torch.diagonal(JTJ, dim1=1, dim2=2).clamp(min=1e-12)
        Hd = JTJ + (lam[:, None, None] * dg[:, :, None]) * eye
        step = -torch.linalg.solve_ex(Hd, g[:, :, None])[0][:, :, 0]  # a singular system gives non-finite: rejected
        pn = p + step
        bad = ~torch.isfinite(pn).all(1) | (pn[:, 4] <= 1e-3) | (pn[:, 5] <= 1e-3)
        pn = torch.where(bad[:, None], p, pn)
        cn = prob.cost(pn)
        accept = active & ~bad & (cn <= cost)
        rel = (cost - cn) / cost.clamp(min=1e-300)
        small_step = step[:, 2:6].abs().max(1).values < 1e-6
        done = accept & ((rel < tol) | small_step)
        done |= active & (g.abs().max(1).values <= 1e-12 * cost.clamp(min=1.0))
        done |= active & ~accept & (lam > 1e12)
        collapsed = accept & (torch.minimum(pn[:, 4], pn[:, 5]) < sigma_floor)
        done &= ~collapsed
        p = torch.where(accept[:, None], pn, p)
        lam = torch.where(accept, (lam / 10.0).clamp(min=1e-12), torch.where(active, lam * 10.0, lam))
        c2, J2, g2 = prob.normal_equations(p)
        cost = torch.where(accept, c2, cost)
        JTJ = torch.where(accept[:, None, None], J2, JTJ)
        g = torch.where(accept[:, None], g2, g)
        converged |= done
        undersampled |= collapsed
        active &= ~(done | collapsed)
    p_np, conv, reason = fit_outcome(
        p.cpu().numpy(),
        converged.cpu().numpy(),
        undersampled.cpu().numpy(),
        active.cpu().numpy(),
        max_iter,
        sigma_floor,
        (R, C),
    )
    return FitResult(
        params=p_np,
        converged=conv,
        n_iter=n_iter.cpu().numpy(),
        cost=cost.cpu().numpy(),
        reason=reason,
        pixel_integrated=pixel_integrated,
    )
