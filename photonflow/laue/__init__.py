"""Laue microdiffraction spots: reading, LaueTools-style spot search, batched 2D Gaussian fits and
the spot descriptors of Kirstein et al., Materials 2023, 16, 3397 (CNN Laue spot paper).

Coordinate convention used throughout this package: 0-based pixel indices, pixel *centres* at
integer coordinates, positions given as ``[row, col]``.  LaueTools peak lists (``.dat``) are
1-based and give ``(X, Y) = (column, row)``: ``row = Y - 1``, ``col = X - 1``.
"""

from .fit import FitResult, cutouts, descriptors, fit_gaussians, fit_spots
from .spots import LaueImage, SearchParams, find_seeds, read_laue_image, read_lauetools_dat

__all__ = [
    "FitResult",
    "LaueImage",
    "SearchParams",
    "cutouts",
    "descriptors",
    "find_seeds",
    "fit_gaussians",
    "fit_spots",
    "read_laue_image",
    "read_lauetools_dat",
]
