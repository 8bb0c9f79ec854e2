"""Automatic good/bad labels by profile fitting (PADT's "sort by inflection points").

For each frame, the ROI (:class:`~photonflow.classify.features.Roi`) is projected onto its columns
(:func:`column_profile`: the mean of each column, a 1D profile along fs), a polynomial of order
``order`` (default 4) is fitted to the profile (:func:`fit_profiles`) and its inflection points, the
real roots of the second derivative inside the ROI's column range, are found
(:func:`inflection_points`). A detector artefact (a gain switch, a shadow, a stripe, a wrong
pedestal) changes the shape of the profile and moves its inflection points.

Decision (:func:`auto_label`), file by file
    1. The file's usual number of inflection points m is the mode of the per-frame counts (ties go
       to the smaller count). A frame with another number of inflection points is **bad**; so is a
       frame whose profile could not be fitted (non-finite values).
    2. The frames with m points are ordered by position (left to right) and the j-th inflection
       points of all of them form one distribution per j ("by index": pooling all points together
       would put the left and right points in one wide range and a point that moved from one to the
       other would pass). Tukey fences are computed for each j: ``[Q1 − k·IQR, Q3 + k·IQR]`` with
       k = 1.5, Q1 and Q3 numpy's linear-interpolation 25th and 75th percentiles
       (:func:`tukey_fences`).
    3. A frame is **good** when each of its m inflection points lies inside the fences of its index
       (bounds included). With m = 0 (profiles without inflection points), frames with none are
       good.
    4. A file with fewer than ``min_frames`` frames having m points gets no decision (``decided``
       False): quartiles of a handful of values say nothing.

**Assumption: most frames of each file are good.** The fences describe the bulk of the file; if
most frames are bad, the bad ones define "normal" and the good ones are flagged. Check the result
on contact sheets (:mod:`photonflow.classify.sheets`) before training on it.

Coordinates: the fit uses ``u = 2·(x − x0)/(x1 − x0) − 1`` ∈ [−1, 1] for the columns x0..x1 (scaled
for conditioning: a quartic in raw pixel numbers up to 1920 spans 13 orders of magnitude);
coefficients are numpy.polynomial power-series coefficients in u, lowest order first. Inflection
points are reported in column pixels: in :func:`auto_label` slab fs columns, the centre of column
``data[:, fs]`` being at ``fs`` (so an ROI's columns run from ``fs0`` to ``fs1 − 1``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.polynomial import polynomial as P

from ..io.images import iter_frame_refs
from .features import DEFAULT_BATCH, FeatureRecipe, ReadFailures, Roi, iter_roi_batches
from .labels import EventRef, write_label_list

__all__ = [
    "AutoLabels",
    "auto_label",
    "column_profile",
    "evaluate_fits",
    "fit_profiles",
    "inflection_points",
    "tukey_fences",
]

_IMAG_TOL = 1e-9


def column_profile(stack: np.ndarray) -> np.ndarray:
    """Mean of each column: ``(n, h, w)`` → ``(n, w)`` float64 (one ``(h, w)`` frame → ``(1, w)``)."""
    stack = np.asarray(stack)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3:
        raise ValueError(f"stack must be (n, rows, columns), got shape {stack.shape}")
    return stack.mean(axis=1, dtype=np.float64)


def _u(w: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, w) if w > 1 else np.zeros(1)


def fit_profiles(profiles: np.ndarray, order: int = 4) -> np.ndarray:
    """Least-squares polynomial of order ``order`` for each profile: ``(n, w)`` → ``(n, order + 1)``.

    Coefficients in the scaled column coordinate u ∈ [−1, 1] (first column −1, last +1), lowest order
    first (``numpy.polynomial.polynomial.polyval(u, c)``). Non-finite profile values are left out
    of that profile's fit; a profile with fewer than ``order + 1`` finite values gets NaN coefficients.
    """
    profiles = np.asarray(profiles, dtype=np.float64)
    if profiles.ndim == 1:
        profiles = profiles[None]
    order = int(order)
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    n, w = profiles.shape
    if w < order + 1:
        raise ValueError(f"{w} columns cannot fix a polynomial of order {order}")
    u = _u(w)
    coef = np.full((n, order + 1), np.nan)
    finite = np.isfinite(profiles)
    whole = finite.all(axis=1)
    if whole.any():
        coef[whole] = P.polyfit(u, profiles[whole].T, order).T
    for i in np.flatnonzero(~whole):
        ok = finite[i]
        if ok.sum() >= order + 1:
            coef[i] = P.polyfit(u[ok], profiles[i, ok], order)
    return coef


def evaluate_fits(coefficients: np.ndarray, w: int) -> np.ndarray:
    """The fitted profiles ``(n, w)`` at the ``w`` columns (u from −1 to 1)."""
    coefficients = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
    return (P.polyvander(_u(w), coefficients.shape[1] - 1) @ coefficients.T).T


def _roots_in_range(c2: np.ndarray) -> np.ndarray:
    """Real roots in [−1, 1] of the polynomial with coefficients ``c2`` (in u), sorted."""
    if not np.all(np.isfinite(c2)):
        return np.empty(0)
    scale = np.max(np.abs(c2)) if c2.size else 0.0
    if scale == 0.0:
        return np.empty(0)
    c2 = P.polytrim(c2, tol=scale * 1e-12)
    if len(c2) < 2:
        return np.empty(0)
    r = P.polyroots(c2)
    real = r[np.abs(r.imag) <= _IMAG_TOL * np.maximum(1.0, np.abs(r.real))].real
    return np.sort(real[(real >= -1.0) & (real <= 1.0)])


def inflection_points(coefficients: np.ndarray, x_range: tuple[float, float]) -> list[np.ndarray]:
    """Inflection points of each fitted profile, in column pixels, sorted left to right.

    ``coefficients``: ``(n, order + 1)`` from :func:`fit_profiles`. ``x_range = (x0, x1)``: the
    pixel columns of the profile's first and last samples (u = −1 and u = +1), e.g. ``(fs0, fs1 − 1)``
    for slab columns or ``(0, w − 1)`` for ROI columns. The points are the real roots of the second
    derivative that lie in that range (complex pairs are not inflection points; a double root, where
    the curvature touches zero without changing sign, is practically never exactly real and counts
    as none). NaN coefficients give no points.
    """
    coefficients = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
    x0, x1 = float(x_range[0]), float(x_range[1])
    half = 0.5 * (x1 - x0)
    out = []
    for c in coefficients:
        u = _roots_in_range(P.polyder(c, 2)) if len(c) > 2 else np.empty(0)
        out.append(x0 + (u + 1.0) * half)
    return out


def tukey_fences(values, k: float = 1.5) -> tuple[float, float]:
    """``(Q1 − k·IQR, Q3 + k·IQR)`` with numpy's (linear) 25th and 75th percentiles of ``values``."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return float("nan"), float("nan")
    q1, q3 = np.percentile(values, [25.0, 75.0])
    iqr = q3 - q1
    return float(q1 - k * iqr), float(q3 + k * iqr)


@dataclass
class AutoLabels:
    """Labels from :func:`auto_label`, one entry per frame that could be read (in input order).

    good: bool per frame. decided: False where the file had too few frames to judge (those frames
    are neither good nor bad: ``good`` is False, see ``reasons``). inflections: per frame, the
    inflection points in slab fs columns. coefficients: ``(n, order + 1)`` fits in u (module doc).
    profiles: ``(n, w)`` float32 column means. x_range: ``(fs0, fs1 − 1)``. fences: per file, ``(lo,
    hi)`` arrays, one bound per inflection-point index. modes: per file, its usual number of points.
    reasons: per frame, why it is good or bad. failures: frames that could not be read (file, event,
    reason). failed: their refs.
    """

    refs: list[EventRef]
    good: np.ndarray
    decided: np.ndarray
    inflections: list[np.ndarray]
    coefficients: np.ndarray
    profiles: np.ndarray
    x_range: tuple[int, int]
    fences: dict[str, tuple[np.ndarray, np.ndarray]]
    modes: dict[str, int]
    reasons: list[str]
    failures: list[str] = field(default_factory=list)
    failed: list[EventRef] = field(default_factory=list)
    order: int = 4
    k: float = 1.5
    roi: Roi | None = None

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def labels(self) -> np.ndarray:
        """int8 per frame: 1 good, 0 bad, −1 undecided."""
        out = np.where(self.good, 1, 0).astype(np.int8)
        out[~self.decided] = -1
        return out

    def counts(self) -> dict[str, int]:
        decided = self.decided
        n_good = int(np.count_nonzero(self.good & decided))
        return {
            "good": n_good,
            "bad": int(np.count_nonzero(decided)) - n_good,
            "undecided": int(np.count_nonzero(~decided)),
            "failed": len(self.failed),
            "total": len(self.refs),
        }

    def fitted_profiles(self) -> np.ndarray:
        """The polynomial fits evaluated at the ROI's columns, ``(n, w)``."""
        return evaluate_fits(self.coefficients, self.profiles.shape[1])

    def write_lists(
        self, good_path: str | os.PathLike, bad_path: str | os.PathLike, relative: bool = False
    ) -> tuple[Path, Path]:
        """Write the decided frames as PADT/CrystFEL good and bad lists (atomically)."""
        good = [r for r, g, d in zip(self.refs, self.good, self.decided) if d and g]
        bad = [r for r, g, d in zip(self.refs, self.good, self.decided) if d and not g]
        return write_label_list(good_path, good, relative=relative), write_label_list(bad_path, bad, relative=relative)


def _expand(inputs: Iterable, failures: ReadFailures) -> list[EventRef]:
    """Refs as given; a path (str/PathLike) stands for all frames of that file (or directory)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    refs: list[EventRef] = []
    for item in inputs:
        if isinstance(item, (str, os.PathLike)):
            try:
                refs.extend((r.path, r.event) for r in iter_frame_refs(item))
            except FileNotFoundError:
                failures.add_file([-1], os.fspath(item), [None], "no such file")
        else:
            refs.append((os.fspath(item[0]), None if item[1] is None else int(item[1])))
    return refs


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def auto_label(
    inputs: Sequence[EventRef] | Sequence[str | os.PathLike] | str | os.PathLike,
    roi: Roi | FeatureRecipe,
    order: int = 4,
    dataset: str | None = None,
    k: float = 1.5,
    min_frames: int = 5,
    batch: int = DEFAULT_BATCH,
) -> AutoLabels:
    """Label frames good or bad from the inflection points of their column profiles (module doc).

    ``inputs``: refs ``(path, event)`` and/or file paths (all frames of the file). ``roi``: a Roi or
    a FeatureRecipe (its ROI; binning does not apply: the profile uses every pixel). ``order``: the
    polynomial order (≥ 2 for inflection points to exist). ``k``: the Tukey factor. Fences are per
    file (path as given). **Assumes most frames of each file are good.** Frames that cannot be read
    are reported in ``failures`` and left out.
    """
    if int(order) < 2:
        raise ValueError(f"order must be >= 2 (a polynomial of order {order} has no inflection point)")
    roi = roi.roi if isinstance(roi, FeatureRecipe) else roi
    failures = ReadFailures()
    refs = _expand(inputs, failures)
    h, w = roi.shape
    profiles = np.full((len(refs), w), np.nan)
    ok = np.zeros(len(refs), bool)
    for positions, stack in iter_roi_batches(refs, roi, dataset, batch, failures):
        profiles[positions] = column_profile(stack)
        ok[positions] = True
    index = np.flatnonzero(ok)
    refs_ok = [refs[i] for i in index]
    profiles = profiles[index]
    coef = fit_profiles(profiles, order) if len(index) else np.empty((0, int(order) + 1))
    x_range = (roi.fs0, roi.fs1 - 1)
    points = inflection_points(coef, x_range) if len(index) else []
    n = len(refs_ok)
    good = np.zeros(n, bool)
    decided = np.ones(n, bool)
    reasons = [""] * n
    fences: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    modes: dict[str, int] = {}
    by_file: dict[str, list[int]] = {}
    for i, ref in enumerate(refs_ok):
        by_file.setdefault(ref[0], []).append(i)
    fitted = np.all(np.isfinite(coef), axis=1) if n else np.zeros(0, bool)
    for path, rows in by_file.items():
        counts = np.array([len(points[i]) if fitted[i] else -1 for i in rows])
        valid = counts[counts >= 0]
        if valid.size == 0:
            for i in rows:
                reasons[i] = "bad: profile could not be fitted (non-finite values)"
            continue
        m = int(np.bincount(valid).argmax())
        modes[path] = m
        same = [i for i, c in zip(rows, counts) if c == m]
        if len(same) < min_frames:
            for i in rows:
                decided[i] = False
                reasons[i] = (
                    f"undecided: only {len(same)} frame(s) of this file have its usual {m} inflection "
                    f"point(s); Tukey fences need at least {min_frames}"
                )
            continue
        pts = np.array([points[i] for i in same]).reshape(len(same), m)
        lo = np.empty(m)
        hi = np.empty(m)
        for j in range(m):
            lo[j], hi[j] = tukey_fences(pts[:, j], k)
        fences[path] = (lo, hi)
        for i, c in zip(rows, counts):
            if c < 0:
                reasons[i] = "bad: profile could not be fitted (non-finite values)"
            elif c != m:
                reasons[i] = f"bad: {c} inflection point(s), this file's usual number is {m}"
            else:
                p = points[i]
                out = [j for j in range(m) if not lo[j] <= p[j] <= hi[j]]
                if out:
                    reasons[i] = "bad: " + "; ".join(
                        f"inflection point {j + 1} of {m} at {_fmt(p[j])} px outside [{_fmt(lo[j])}, {_fmt(hi[j])}]"
                        for j in out
                    )
                else:
                    good[i] = True
                    reasons[i] = (
                        "good: inflection points " + ", ".join(_fmt(v) for v in p) + " px inside the fences"
                        if m
                        else "good: no inflection point, as most frames of this file"
                    )
    return AutoLabels(
        refs=refs_ok,
        good=good,
        decided=decided,
        inflections=points,
        coefficients=coef,
        profiles=profiles.astype(np.float32),
        x_range=x_range,
        fences=fences,
        modes=modes,
        reasons=reasons,
        failures=failures.messages(),
        failed=[item[1] for item in failures.items],
        order=int(order),
        k=float(k),
        roi=roi,
    )
