"""Synthetic data with exact ground truth, for the demo, the tests and the benchmarks.

* :mod:`photonflow.simulate.saxs` — SAXS/WAXS detector images of a known I(q) on any
  :class:`~photonflow.geometry.Geometry` (tilts included), Pilatus module gaps and bad pixels,
  Poisson noise, frame series in TIFF/EDF/CBF/HDF5, and SAXSDOG calibration files.
* :mod:`photonflow.simulate.sfx` — serial-crystallography frames on a CrystFEL ``.geom`` detector:
  Bragg spots of a random crystal on the Ewald sphere, water ring, artifact rings and streaks, hot
  and dead pixels, noise; the true peak list and a per-pixel label map; multi-event CXI datasets.
* :mod:`photonflow.simulate.padt` — frames with the artefacts PADT screens out (a gain-switching
  miscalibration when the water ring crosses the switching threshold, shadows, a misaligned
  window) on a small ePix10k-like detector; good/bad truth, CXI datasets and CrystFEL label lists.
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
from .sfx import (
    LABEL_ARTIFACT,
    LABEL_BACKGROUND,
    LABEL_PEAK,
    SfxConfig,
    SfxDataset,
    SfxDefects,
    SfxFrame,
    SfxTruth,
    SfxTruthSet,
    read_sfx_truth,
    simulate_sfx_frame,
    simulate_sfx_frames,
    write_sfx_dataset,
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
    "LABEL_ARTIFACT",
    "LABEL_BACKGROUND",
    "LABEL_PEAK",
    "SfxConfig",
    "SfxDataset",
    "SfxDefects",
    "SfxFrame",
    "SfxTruth",
    "SfxTruthSet",
    "read_sfx_truth",
    "simulate_sfx_frame",
    "simulate_sfx_frames",
    "write_sfx_dataset",
]

# PADT (Pixel Anomaly Detector Tool) artefacts: gain-switch miscalibration, shadows, misaligned window
from .padt import (  # noqa: E402
    ARTEFACTS,
    BAD,
    GOOD,
    PadtConfig,
    PadtDataset,
    PadtFrame,
    PadtTruth,
    epix_detector,
    iter_padt_frames,
    padt_roi,
    read_padt_truth,
    simulate_padt_frame,
    simulate_padt_frames,
    write_padt_dataset,
)

__all__ += [
    "ARTEFACTS",
    "BAD",
    "GOOD",
    "PadtConfig",
    "PadtDataset",
    "PadtFrame",
    "PadtTruth",
    "epix_detector",
    "iter_padt_frames",
    "padt_roi",
    "read_padt_truth",
    "simulate_padt_frame",
    "simulate_padt_frames",
    "write_padt_dataset",
]
