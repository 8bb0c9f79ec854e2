"""Compiled kernels (numba) for the integration hot loop.

The weight matrix is stored pixel by pixel (CSC); frames are visited in memory order, a tile of
TILE pixels × all frames at a time, so each weight is loaded once per batch and applied to every
frame of the batch with vector instructions. Pixels that are negative or not finite in some frame of
the batch ("suspect" pixels, found beforehand with one vectorised pass) are left out of the fast loop
and handled one frame at a time by `accumulate_suspect`. Sums are accumulated in float32 (relative
rounding about 1e-6, far below counting noise). The fast-math flags allow fused multiply–adds and
reassociation but not the assumption that values are finite (NaN fails every comparison, so
``x >= 0`` is false for it).
"""

from __future__ import annotations

import numba
import numpy as np

TILE = 64
FASTMATH = {"contract", "arcp", "nsz", "reassoc", "afn"}


@numba.njit(cache=True, nogil=True, fastmath=FASTMATH)
def accumulate(frames, indptr, indices, weights, weights_var, suspect, dark, has_dark, signal, variance):
    """signal[k, f] += Σ w (x − dark_j), variance[k, f] += Σ w_var x over the pixels that are valid
    (≥ 0 and finite) in every frame of the batch; the others are flagged in ``suspect`` (uint8) for
    `accumulate_suspect`, and the number flagged is returned.

    frames (n, npix) of any real dtype; per pixel j the entries indptr[j]:indptr[j+1] give the bin
    (indices) and weights. signal and variance may have more columns than frames (a multiple of 8:
    whole vectors); the extra columns, fed with zeros, receive weights × (0 − dark) and are ignored.
    """
    n, npix = frames.shape
    flagged = 0
    if n == 1:  # no tile: read the frame directly
        for j in range(npix):
            p0 = indptr[j]
            p1 = indptr[j + 1]
            if p0 == p1:
                continue
            x = np.float32(frames[0, j])
            if not (x >= 0.0 and x < np.inf):
                suspect[j] = 1
                flagged += 1
                continue
            xd = x - dark[j] if has_dark else x
            for p in range(p0, p1):
                k = indices[p]
                signal[k, 0] += weights[p] * xd
                variance[k, 0] += weights_var[p] * x
        return flagged
    width = signal.shape[1]
    tile = np.zeros((TILE, width), dtype=np.float32)
    for j0 in range(0, npix, TILE):
        j1 = min(npix, j0 + TILE)
        if indptr[j0] == indptr[j1]:
            continue  # a tile without weights (masked rows, gaps)
        for j in range(j0, j1):
            row = tile[j - j0]
            invalid = 0
            for f in range(n):
                x = np.float32(frames[f, j])
                row[f] = x
                invalid += not (x >= 0.0 and x < np.inf)  # NaN fails both comparisons
            if invalid and indptr[j] != indptr[j + 1]:
                suspect[j] = 1
                flagged += 1
        for j in range(j0, j1):
            p0 = indptr[j]
            p1 = indptr[j + 1]
            if p0 == p1 or suspect[j]:
                continue
            t = tile[j - j0]
            d = dark[j] if has_dark else np.float32(0.0)
            for p in range(p0, p1):
                k = indices[p]
                a = weights[p]
                b = weights_var[p]
                for f in range(width):
                    x = t[f]
                    signal[k, f] += a * (x - d)
                    variance[k, f] += b * x
    return flagged


@numba.njit(cache=True, nogil=True)
def accumulate_suspect(
    frames, pixels, indptr, indices, weights, weights_var, norm, dark, has_dark, signal, variance, removed
):
    """The skipped pixels, frame by frame: a value negative or not finite leaves the pixel out of
    that frame (its Σ w·norm_j goes to removed[k, f]); a valid value is accumulated as usual."""
    n = frames.shape[0]
    for i in range(pixels.shape[0]):
        j = pixels[i]
        d = dark[j] if has_dark else np.float32(0.0)
        for f in range(n):
            v = np.float32(frames[f, j])
            if v >= 0.0 and v < np.inf:
                for p in range(indptr[j], indptr[j + 1]):
                    signal[indices[p], f] += weights[p] * (v - d)
                    variance[indices[p], f] += weights_var[p] * v
            else:
                for p in range(indptr[j], indptr[j + 1]):
                    removed[indices[p], f] += weights[p] * norm[j]
