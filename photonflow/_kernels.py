"""Compiled kernel (numba) for the integration hot loop.

The weight matrix is stored pixel by pixel (CSC); frames are visited in memory order, a tile of
TILE pixels × all frames at a time, so each weight is loaded once per batch and applied to every
frame of the batch with vector instructions. Sums are accumulated in float32 (relative rounding
about 1e-6, far below counting noise). The fast-math flags allow fused multiply–adds and
reassociation but not the assumption that values are finite, so NaN/inf pixels are still caught.
"""

from __future__ import annotations

import numba
import numpy as np

TILE = 64
FASTMATH = {"contract", "arcp", "nsz", "reassoc", "afn"}


@numba.njit(cache=True, nogil=True, fastmath=FASTMATH)
def accumulate(frames, indptr, indices, weights, weights_var, norm, dark, has_dark, signal, variance, removed):
    """Sparse accumulation for a batch: frames (n, npix) of any real dtype.

    For every pixel j and its entries p in indptr[j]:indptr[j+1] (bin indices[p], weight w_p):
    signal[k, f] += w (x − dark_j), variance[k, f] += w_var x. A pixel negative or not finite in
    frame f is left out of that frame and its Σ w·norm_j goes to removed[k, f], which the caller
    subtracts from the bin's normalisation.
    """
    n, npix = frames.shape
    tile = np.empty((TILE, n), dtype=np.float32)
    for j0 in range(0, npix, TILE):
        j1 = min(npix, j0 + TILE)
        for j in range(j0, j1):
            row = tile[j - j0]
            for f in range(n):
                row[f] = frames[f, j]
        for j in range(j0, j1):
            p0 = indptr[j]
            p1 = indptr[j + 1]
            if p0 == p1:
                continue
            t = tile[j - j0]
            d = dark[j] if has_dark else np.float32(0.0)
            good = True
            for f in range(n):
                v = t[f]
                if not (v >= 0.0 and v < np.inf):
                    good = False
            if good:
                for p in range(p0, p1):
                    srow = signal[indices[p]]
                    vrow = variance[indices[p]]
                    a = weights[p]
                    b = weights_var[p]
                    for f in range(n):
                        x = t[f]
                        srow[f] += a * (x - d)
                        vrow[f] += b * x
            else:
                for f in range(n):
                    v = t[f]
                    if v >= 0.0 and v < np.inf:
                        for p in range(p0, p1):
                            signal[indices[p], f] += weights[p] * (v - d)
                            variance[indices[p], f] += weights_var[p] * v
                    else:
                        for p in range(p0, p1):
                            removed[indices[p], f] += weights[p] * norm[j]
