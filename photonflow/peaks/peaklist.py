"""Peak lists shared by both peak finders, and matching against a true list.

Coordinates are slab pixels in the Cheetah/OM convention: the centre of pixel
``data[ss, fs]`` is at ``(fs, ss)`` (integers). CrystFEL reads these from CXI
``peakXPosRaw``/``peakYPosRaw`` (its default half-pixel shift puts them on its
corner-origin grid).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree


@dataclass
class PeakList:
    """Bragg peaks found on one frame (all arrays the same length).

    fs, ss: centre of mass, slab pixels; intensity: background-subtracted
    total, ADU; npix: pixels in the peak; max_intensity: brightest pixel above
    local background, ADU; snr: intensity / local background sigma.
    """

    fs: np.ndarray
    ss: np.ndarray
    intensity: np.ndarray
    npix: np.ndarray = field(default=None)
    max_intensity: np.ndarray = field(default=None)
    snr: np.ndarray = field(default=None)

    def __post_init__(self):
        n = len(self.fs)
        self.fs = np.asarray(self.fs, dtype=np.float64)
        self.ss = np.asarray(self.ss, dtype=np.float64)
        self.intensity = np.asarray(self.intensity, dtype=np.float64)
        self.npix = np.zeros(n, np.int64) if self.npix is None else np.asarray(self.npix, dtype=np.int64)
        self.max_intensity = (
            np.zeros(n) if self.max_intensity is None else np.asarray(self.max_intensity, dtype=np.float64)
        )
        self.snr = np.zeros(n) if self.snr is None else np.asarray(self.snr, dtype=np.float64)
        for name in ("ss", "intensity", "npix", "max_intensity", "snr"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"PeakList.{name} has {len(getattr(self, name))} entries, fs has {n}")

    def __len__(self) -> int:
        return len(self.fs)

    @classmethod
    def empty(cls) -> "PeakList":
        return cls(np.zeros(0), np.zeros(0), np.zeros(0))

    def positions(self) -> np.ndarray:
        """(n, 2) array of (fs, ss)."""
        return np.column_stack([self.fs, self.ss])


@dataclass
class MatchScore:
    """Counts of a one-to-one match of found peaks to true peaks."""

    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        true = self.true_positives + self.false_negatives
        return self.true_positives / true if true else 1.0

    def __add__(self, other: "MatchScore") -> "MatchScore":
        return MatchScore(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
        )


def match_peaks(found: np.ndarray, true: np.ndarray, radius: float = 1.5) -> MatchScore:
    """One-to-one match of found to true positions ((n, 2) arrays, pixels).

    A pair matches when its distance is at most ``radius`` pixels; among the
    pairs within reach, the assignment maximises the number of matches (and
    then minimises the total distance), so no true peak is counted twice.
    """
    found = np.asarray(found, dtype=float).reshape(-1, 2)
    true = np.asarray(true, dtype=float).reshape(-1, 2)
    if len(found) == 0 or len(true) == 0:
        return MatchScore(0, len(found), len(true))
    pairs = cKDTree(found).query_ball_tree(cKDTree(true), r=radius)
    rows = [i for i, js in enumerate(pairs) if js]
    cols = sorted({j for js in pairs for j in js})
    if not rows:
        return MatchScore(0, len(found), len(true))
    col_index = {j: k for k, j in enumerate(cols)}
    big = 1e6
    cost = np.full((len(rows), len(cols)), big)
    for r, i in enumerate(rows):
        for j in pairs[i]:
            cost[r, col_index[j]] = np.hypot(*(found[i] - true[j]))
    r_idx, c_idx = linear_sum_assignment(cost)
    tp = int(np.sum(cost[r_idx, c_idx] < big))
    return MatchScore(tp, len(found) - tp, len(true) - tp)
