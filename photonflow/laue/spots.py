"""Reading Laue detector images (with the saturation value) and the LaueTools-style spot search.

Conventions: 0-based ``[row, col]``, pixel centres at integers (see ``photonflow.laue``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage


@dataclass
class LaueImage:
    data: np.ndarray  # float32, (rows, cols)
    saturation: float  # pixels >= saturation are saturated (excluded from fits)
    path: Path | None = None

    @property
    def saturated(self) -> np.ndarray:
        return self.data >= self.saturation


def _dtype_saturation(dtype: np.dtype) -> float:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return float("inf")


def read_laue_image(path, saturation: float | None = None, event: int | None = None) -> LaueImage:
    """Read an sCMOS TIFF, a MarCCD or any other fabio-readable image, or one event of an HDF5 file.

    ``saturation``: the detector's saturation value, ADU; default from the stored dtype (65535
    for 16-bit, 255 for 8-bit, +inf for float images).  Raises
    :class:`photonflow.io.FrameReadError` (naming file, event and reason) when it cannot be read.
    """
    from photonflow.io import read_frame

    raw = np.asarray(read_frame(path, event))
    sat = _dtype_saturation(raw.dtype) if saturation is None else float(saturation)
    return LaueImage(data=raw.astype(np.float32), saturation=sat, path=Path(path))


@dataclass
class SearchParams:
    """Spot-search parameters, named as in LaueTools' ``readmccd.PeakSearch`` where they exist.

    Defaults follow LaueTools' ``PeakSearch`` keyword defaults (as recalled from its source, not
    re-verified here): ``PixelNearRadius=5``, ``IntensityThreshold=400``, ``boxsize=15``
    (``local_maxima_search_method=0``: threshold on image minus a minimum-filter background,
    connected components, brightest pixel per blob, close peaks purged within PixelNearRadius).
    ``min_pixels`` (blob size in pixels, below which a blob is dropped) has no LaueTools
    counterpart; 1 keeps every blob.
    """

    PixelNearRadius: float = 5.0
    IntensityThreshold: float = 400.0
    boxsize: int = 15
    min_pixels: int = 1


def background_minimum_filter(data: np.ndarray, boxsize: int = 15) -> np.ndarray:
    """Background estimate: minimum filter over a ``boxsize`` × ``boxsize`` box."""
    return ndimage.minimum_filter(np.asarray(data, dtype=np.float32), size=int(boxsize), mode="nearest")


def _merge_close(seeds: np.ndarray, values: np.ndarray, radius: float) -> np.ndarray:
    """Greedy merge, brightest first: keep a seed unless a brighter kept seed lies within
    ``radius`` (strictly closer than)."""
    if len(seeds) == 0 or radius <= 0:
        return seeds
    from scipy.spatial import cKDTree

    order = np.argsort(-values, kind="stable")
    seeds = seeds[order]
    tree = cKDTree(seeds)
    pairs = tree.query_pairs(r=float(radius) - 1e-9, output_type="ndarray")
    keep = np.ones(len(seeds), bool)
    if len(pairs):
        neighbours: dict[int, list[int]] = {}
        for i, j in pairs:  # i < j; both indices are in brightness order
            a, b = (i, j) if i < j else (j, i)
            neighbours.setdefault(b, []).append(a)
        for b in range(len(seeds)):
            if b in neighbours and any(keep[a] for a in neighbours[b]):
                keep[b] = False
    return seeds[keep]


def find_seeds(image, params: SearchParams | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """Seeds ``(n, 2)`` int ``[row, col]``: brightest pixel per connected blob of
    ``image - minimum_filter(image, boxsize) > IntensityThreshold``, seeds closer than
    ``PixelNearRadius`` merged (the brightest kept).  ``mask``: True = bad pixel (ignored).
    Sorted by decreasing peak intensity."""
    params = params or SearchParams()
    data = image.data if isinstance(image, LaueImage) else np.asarray(image)
    data = np.asarray(data, dtype=np.float32)
    bg = background_minimum_filter(data, params.boxsize)
    above = (data - bg) > params.IntensityThreshold
    if mask is not None:
        above &= ~np.asarray(mask, bool)
    labels, n = ndimage.label(above, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    idx = np.arange(1, n + 1)
    pos = np.asarray(ndimage.maximum_position(data, labels, idx), dtype=np.int64).reshape(-1, 2)
    if params.min_pixels > 1:
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, idx)
        pos = pos[sizes >= params.min_pixels]
    vals = data[pos[:, 0], pos[:, 1]]
    seeds = _merge_close(pos, vals, params.PixelNearRadius)
    v = data[seeds[:, 0], seeds[:, 1]]
    return seeds[np.argsort(-v, kind="stable")]


def read_lauetools_dat(path) -> np.ndarray:
    """LaueTools peak list → ``(n, k)`` float array of its numeric rows (comments skipped).
    Columns: peak_X, peak_Y (1-based, X = column), peak_Itot, peak_Isub, fwaxmaj, fwaxmin, …"""
    rows = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts or line.lstrip().startswith("#"):
            continue
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            continue  # header line
    return np.asarray(rows, dtype=np.float64)
