"""Tomography: sinogram operations, centre of rotation and reconstruction (pure numpy/scipy/numba;
FINUFFT for the default gridding backend).

* :mod:`photonflow.tomo.preprocess` — pass 1: flat/dark, I0, zingers, Vo's stripe methods, air
  correction, Paganin; :mod:`photonflow.tomo.stitch`, :mod:`~photonflow.tomo.dxchange`,
  :mod:`~photonflow.tomo.plan`, :mod:`~photonflow.tomo.passes`, :mod:`~photonflow.tomo.report`:
  stitching, reading, the chunk plan, the two passes and their files, the PDF report.
* :mod:`photonflow.tomo.sino` — −log with a floor, 360° half-acquisition →
  180° sinograms, padding, ring removal and a ring metric, circular mask, conversion of
  float volumes to uint16/uint8 with a recorded range.
* :mod:`photonflow.tomo.center` — centre of rotation by Vo's Fourier-domain method, and the
  overlap/centre of 360° half-acquisition scans.
* :mod:`photonflow.tomo.recon` — :func:`reconstruct` with the "gridrec" (FINUFFT), "fbp" (numba
  reference), "algotom" and "tomopy" backends.

Convention: detector columns are 0-based with pixel centres at integers; ``center_px`` is the
column of the rotation axis; angles in degrees in the API; slices are μ in 1/px.
"""

from .center import find_center_360, find_center_vo
from .recon import FILTERS, available_backends, reconstruct
from .sino import (
    ScaledVolume,
    apply_circle_mask,
    minus_log,
    pad_sinogram,
    remove_offset_columns,
    remove_rings,
    ring_metric,
    sino_360_to_180,
    to_uint,
)

__all__ = [
    "FILTERS",
    "ScaledVolume",
    "apply_circle_mask",
    "available_backends",
    "find_center_360",
    "find_center_vo",
    "minus_log",
    "pad_sinogram",
    "reconstruct",
    "remove_offset_columns",
    "remove_rings",
    "ring_metric",
    "sino_360_to_180",
    "to_uint",
]
