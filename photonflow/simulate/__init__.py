"""Synthetic data with exact ground truth, for the demo, the tests and the benchmarks.

* :mod:`photonflow.simulate.saxs` — SAXS/WAXS detector images of a known I(q) on any
  :class:`~photonflow.geometry.Geometry` (tilts included), Pilatus module gaps and bad pixels,
  Poisson noise, frame series in TIFF/EDF/CBF/HDF5, and SAXSDOG calibration files.
"""

from .saxs import (
    GroundTruthCurve,
    SimulatedImage,
    SimulatedSeries,
    geometry_from_saxsdog,
    ground_truth_curve,
    guinier_porod,
    module_gaps,
    pilatus1m_gaps,
    pixel_average,
    powder_rings,
    saxsdog_calibration_dict,
    saxsdog_fit2d_params,
    simulate_image,
    sphere_form_factor,
    write_demo_dataset,
    write_series,
)

__all__ = [
    "GroundTruthCurve",
    "SimulatedImage",
    "SimulatedSeries",
    "geometry_from_saxsdog",
    "ground_truth_curve",
    "guinier_porod",
    "module_gaps",
    "pilatus1m_gaps",
    "pixel_average",
    "powder_rings",
    "saxsdog_calibration_dict",
    "saxsdog_fit2d_params",
    "simulate_image",
    "sphere_form_factor",
    "write_demo_dataset",
    "write_series",
]
