"""Projection stitching of side-by-side scans (the DanMAX paper's Fig. 3b).

Scans ``0 .. k-1`` of the same angles cover the sample side by side, each overlapping the next.
The horizontal offset of scan ``i+1`` relative to scan ``i`` (the column of scan ``i`` where scan
``i+1``'s column 0 lies, px) starts from the motor positions and is refined in a search window
(default ±20 px) by minimising the normalised squared difference in the overlap, refined to sub-pixel
by a parabola through the minimum (or by phase correlation). The stitched projections blend the
overlaps with weights that fall linearly from each scan's edge and sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from photonflow.errors import InputError


class StitchError(InputError, ValueError):
    """Scans that cannot be stitched (shapes, no overlap, a search leaving the scans)."""


@dataclass
class StitchResult:
    offsets: list[float]  # px, scan i+1's column 0 in scan i's columns
    guesses: list[float]  # px, from the motor positions
    costs: list[float]  # normalised difference at the optimum (0 = identical overlaps)
    width: int  # px, stitched projection width

    def to_dict(self) -> dict:
        return {"offsets_px": self.offsets, "guesses_px": self.guesses, "costs": self.costs, "width_px": self.width}


def stitched_width(offsets, last_cols: int) -> int:
    """Columns of the stitched projections: up to the last whole column the last scan covers."""
    return int(np.floor(float(np.sum(offsets)) + last_cols - 1 + 1e-9)) + 1


def offset_guesses(motor_positions_mm, pixel_size_um: float) -> list[float]:
    """Offsets (px) between consecutive scans from their horizontal motor positions (mm): a move of
    the sample by +d shows the next scan's field d further along the detector."""
    pos = np.asarray(motor_positions_mm, dtype=np.float64) * 1e3 / pixel_size_um
    return list(np.diff(pos))


def overlap_cost(a, b, offset: int) -> float:
    """Normalised squared difference ``Σ(A − B)² / Σ(A² + B²)`` of scan ``a``'s columns from
    ``offset`` on and scan ``b``'s first columns, over all given rows/projections."""
    w = a.shape[-1] - offset
    if offset < 1 or w < 2 or w > b.shape[-1]:
        return np.inf
    A = a[..., offset:]
    B = b[..., :w]
    den = float(np.sum(A * A) + np.sum(B * B))
    return float(np.sum((A - B) ** 2)) / den if den > 0 else np.inf


def _parabola_vertex(c_minus, c0, c_plus) -> float:
    den = c_minus - 2 * c0 + c_plus
    return 0.0 if den <= 0 else float(np.clip(0.5 * (c_minus - c_plus) / den, -0.5, 0.5))


def _shift_columns(x, shift: float):
    """Shift along the last axis by ``shift`` px (linear interpolation; out of range = edge)."""
    if shift == 0:
        return x
    return ndimage.shift(x, [0] * (x.ndim - 1) + [shift], order=1, mode="nearest")


def find_offset(a, b, guess: float, window: int = 20, method: str = "difference") -> tuple[float, float]:
    """Offset (px, sub-pixel) of ``b`` relative to ``a`` near ``guess`` (± ``window``) and its cost.

    ``a``, ``b``: (…, cols) — a few projections or rows of the two scans (the same ones).
    method: "difference" (the integer offset of least normalised squared difference) or "phase"
    (the integer offset from phase correlation of the strips, insensitive to a brightness change
    between the scans); both refined to sub-pixel by a parabola through the difference costs."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    g = int(round(guess))
    lo, hi = max(1, g - window), min(a.shape[-1] - 2, g + window)
    costs = {o: overlap_cost(a, b, o) for o in range(lo, hi + 1)}
    if not costs or not np.isfinite(min(costs.values())):
        raise StitchError(f"no overlap between the scans for offsets {g - window}..{g + window} px")
    if method == "phase":
        best = int(np.clip(_phase_integer_offset(a, b, lo), lo, hi))
    elif method == "difference":
        best = min(costs, key=costs.get)
    else:
        raise StitchError(f"method must be 'difference' or 'phase', got {method!r}")
    neighbours = [costs.get(best - 1, np.inf), costs.get(best + 1, np.inf)]
    frac = 0.0
    if costs[best] <= 1e-9 * min(neighbours):
        frac = 0.0  # an exact match: the overlaps agree at this integer offset
    elif np.all(np.isfinite(neighbours)):
        frac = _parabola_vertex(neighbours[0], costs[best], neighbours[1])
    return best + frac, costs[best]


def _phase_integer_offset(a, b, start: int) -> int:
    """Integer offset from phase correlation of ``a``'s columns from ``start`` on with as many
    first columns of ``b`` (rows averaged in the cross-power spectrum)."""
    w = min(a.shape[-1] - start, b.shape[-1])
    A = a[..., start : start + w].reshape(-1, w)
    B = b[..., :w].reshape(-1, w)
    n = 2 * w  # zero-padded: linear, not circular, correlation
    FA = np.fft.fft(A - A.mean(axis=1, keepdims=True), n=n, axis=1)
    FB = np.fft.fft(B - B.mean(axis=1, keepdims=True), n=n, axis=1)
    cross = np.sum(FA * np.conj(FB), axis=0)
    corr = np.real(np.fft.ifft(cross / np.maximum(np.abs(cross), 1e-30)))
    k = int(np.argmax(corr[:w]))  # b starts at or right of `start`
    return start + k


def stitch_offsets(
    scans, guesses, window: int = 20, method: str = "difference", sample: slice | None = None
) -> StitchResult:
    """Offsets between consecutive scans. ``scans``: list of (n, rows, cols_i) arrays with the same
    n and rows; ``guesses``: k−1 offsets (px) from the motors; ``sample``: projections used for
    the search (default every 10th)."""
    if len(scans) < 2:
        raise StitchError("stitching needs at least two scans")
    if len(guesses) != len(scans) - 1:
        raise StitchError(f"{len(scans)} scans need {len(scans) - 1} offset guesses, got {len(guesses)}")
    shapes = {s.shape[:2] for s in scans}
    if len(shapes) != 1:
        raise StitchError(f"scans differ in projections or rows: {sorted(shapes)}")
    pick = sample or slice(None, None, max(1, scans[0].shape[0] // 10))
    offsets, costs = [], []
    for i in range(len(scans) - 1):
        o, c = find_offset(scans[i][pick], scans[i + 1][pick], guesses[i], window, method)
        offsets.append(float(o))
        costs.append(float(c))
    width = stitched_width(offsets, scans[-1].shape[-1])
    return StitchResult(offsets=offsets, guesses=[float(g) for g in guesses], costs=costs, width=width)


def blend(scans, offsets) -> np.ndarray:
    """Stitched projections ``(n, rows, width)``: scan i placed at the sum of the offsets before it
    (fractional parts by linear interpolation), overlaps blended with weights that fall linearly
    from each scan's edge and sum to 1."""
    starts = np.concatenate([[0.0], np.cumsum(offsets)])
    width = stitched_width(offsets, scans[-1].shape[-1])
    n, rows = scans[0].shape[:2]
    total = np.zeros((n, rows, width), np.float64)
    weight = np.zeros(width)
    for i, scan in enumerate(scans):
        s0 = int(np.floor(starts[i]))
        frac = starts[i] - s0
        cols = scan.shape[-1]
        placed = _shift_columns(np.asarray(scan, np.float64), frac)  # content moved right by frac
        # weight: a ramp over the overlaps with the neighbours, 1 elsewhere
        w = np.ones(cols)
        if i > 0:
            ov = int(np.ceil(starts[i - 1] + scans[i - 1].shape[-1] - starts[i]))
            if ov > 0:
                w[:ov] = np.minimum(w[:ov], (np.arange(ov) + 0.5) / ov)
        if i < len(scans) - 1:
            ov = int(np.ceil(starts[i] + cols - starts[i + 1]))
            if ov > 0:
                w[cols - ov :] = np.minimum(w[cols - ov :], (ov - np.arange(ov) - 0.5) / ov)
        if frac > 0:
            w[0] = 0.0  # the first column after a fractional shift is extrapolated
        stop = min(width, s0 + cols)
        total[:, :, s0:stop] += placed[:, :, : stop - s0] * w[None, None, : stop - s0]
        weight[s0:stop] += w[: stop - s0]
    return (total / np.where(weight > 0, weight, 1.0)[None, None, :]).astype(np.float32)
