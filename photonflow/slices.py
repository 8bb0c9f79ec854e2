"""GISAXS slices: horizontal and vertical cuts through the detector image.

Definitions (detector frame, no grazing-incidence refraction correction):

* For a pixel at lab position t (axis 1 along rows, pointing down; axis 2 along columns; axis 3
  along the beam) the outgoing wave vector is k·t/|t| with k = 2π/λ. The in-plane and vertical
  components of the scattering vector are

      q_H = k · t2 / |t|          (horizontal, along detector x / columns)
      q_V = −k · t1 / |t|         (vertical, positive above the direct beam)

  in nm⁻¹ (λ in Å, k = 2π / (0.1 λ)).
* A slice with ``Direction`` "x" is a horizontal strip of rows, "y" a vertical strip of columns.
  ``Position`` is the strip's centre in pixels — for "x" a FIT2D y coordinate counted from the
  bottom edge as SAXSDOG's BeamCenter, for "y" a column — and ``Margin`` its half-width in pixels.
* ``Plane`` selects the abscissa: "InPlane" → the curve is I(q_H), "Vertical" → I(q_V).
* Bins are uniform, about ``PixelPerRadialElement`` pixels wide (Δq = k·pixel/distance·PPRE), and
  span the abscissa range covered by the strip. Pixels are split into ov × ov sub-pixels as in the
  radial integration, and the mask of the referenced ``Masks`` entry applies.
"""

from __future__ import annotations

import numpy as np

from .calibration import Calibration, SliceSpec
from .geometry import Geometry
from .integrate import Corrections, Integrator, RadialBins, assemble_integrator, point_matrix

__all__ = ["q_h_q_v", "build_slice_integrator"]


def q_h_q_v(geometry: Geometry, row_coord, col_coord):
    """(q_H, q_V) in nm⁻¹ at pixel coordinates (see the module docstring)."""
    t1, t2, t3 = geometry.lab_positions(row_coord, col_coord)
    k = 2.0 * np.pi / (0.1 * geometry.wavelength_A)
    norm = np.sqrt(t1 * t1 + t2 * t2 + t3 * t3)
    return k * t2 / norm, -k * t1 / norm


def build_slice_integrator(
    geometry: Geometry,
    spec: SliceSpec,
    oversampling: int = 1,
    pixel_per_element: float = 1.0,
    mask: np.ndarray | None = None,
    corrections: Corrections | None = None,
    error_model: str = "poisson",
) -> Integrator:
    """An Integrator whose bins run along q_H or q_V over the slice's strip of pixels."""
    if spec.direction not in ("x", "y"):
        raise ValueError(f"slice {spec.name!r}: Direction must be 'x' or 'y', got {spec.direction!r}")
    if spec.plane not in ("InPlane", "Vertical"):
        raise ValueError(f"slice {spec.name!r}: Plane must be 'InPlane' or 'Vertical', got {spec.plane!r}")
    if spec.margin < 0:
        raise ValueError(f"slice {spec.name!r}: Margin must be ≥ 0, got {spec.margin}")
    ov = int(oversampling)
    nr, nc = geometry.shape
    static_mask = np.zeros(geometry.shape, bool) if mask is None else np.asarray(mask, bool)
    r, c = geometry.pixel_centres(ov)
    if spec.direction == "x":
        centre = nr - spec.position  # FIT2D y (from the bottom) → row coordinate
        in_strip = (np.abs(r - centre) <= spec.margin)[:, None] & np.ones(c.size, bool)[None, :]
    else:
        centre = spec.position
        in_strip = np.ones(r.size, bool)[:, None] & (np.abs(c - centre) <= spec.margin)[None, :]
    if not in_strip.any():
        raise ValueError(f"slice {spec.name!r}: the strip at {spec.position} ± {spec.margin} px lies outside the image")
    qh, qv = q_h_q_v(geometry, r[:, None], c[None, :])
    abscissa = qh if spec.plane == "InPlane" else qv
    k = 2.0 * np.pi / (0.1 * geometry.wavelength_A)
    dq = k * (geometry.pixel2_um * 1e-3) / geometry.dist_mm * pixel_per_element
    lo, hi = float(abscissa[in_strip].min()), float(abscissa[in_strip].max())
    n_bins = max(1, int(np.ceil((hi - lo) / dq)))
    bins = RadialBins(lo + dq * np.arange(n_bins + 1))
    bins = RadialBins(np.append(bins.edges[:-1], max(bins.edges[-1], hi + 1e-9 * dq)))
    matrix = point_matrix(abscissa, bins, ov, static_mask, selected=in_strip)
    return assemble_integrator(matrix, bins, geometry, static_mask, corrections or Corrections(), error_model)


def calibration_slice_integrators(calibration: Calibration) -> list[Integrator]:
    """One Integrator per slice of a calibration, using the referenced mask's settings."""
    corrections = calibration.corrections()
    out = []
    for spec in calibration.slices:
        radial = calibration.radial[spec.mask_ref]
        out.append(
            build_slice_integrator(
                calibration.geometry,
                spec,
                oversampling=radial.oversampling,
                pixel_per_element=radial.pixel_per_radial_element,
                mask=calibration.mask_for(radial),
                corrections=corrections,
                error_model=calibration.error_model,
            )
        )
    return out
