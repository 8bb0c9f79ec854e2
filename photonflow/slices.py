"""GISAXS slices: horizontal and vertical cuts through the detector image.

Definitions (detector frame, no grazing-incidence refraction correction):

* For a pixel at lab position t (axis 1 along rows, pointing down; axis 2 along columns; axis 3
  along the beam) the outgoing direction is u = (u_up, u_h, u_beam) = (−t1, t2, t3)/|t|; "up" is
  towards row 0, the top of the image as TIFF viewers and SAXSDOG show it. With k = 2π/λ and the
  sample surface met by the beam at the grazing angle α_i (``IncidentAngle``; surface normal
  n = (cos α_i, 0, −sin α_i), the specular beam at 2α_i above the direct beam):

      q_H = k · u_h                                     (in the surface, across the beam)
      q_V = k · (u·n + sin α_i) = k (sin α_f + sin α_i)  (normal to the surface)

  in nm⁻¹ (λ in Å, k = 2π / (0.1 λ)); at α_i = 0, q_V = k·u_up. (pyFAI's fibre/GI units count the
  vertical axis towards increasing rows: the same numbers for the image flipped upside down.)
* A slice with ``Direction`` "x" is a horizontal strip of rows, "y" a vertical strip of columns.
  ``CutPosition`` is the strip's centre in pixels — for "x" a FIT2D y coordinate counted from the
  bottom edge as SAXSDOG's BeamCenter, for "y" a column — and ``CutMargin`` its half-width in pixels.
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


def q_h_q_v(geometry: Geometry, row_coord, col_coord, incident_angle_deg: float = 0.0):
    """(q_H, q_V) in nm⁻¹ at pixel coordinates (see the module docstring)."""
    t1, t2, t3 = geometry.lab_positions(row_coord, col_coord)
    k = 2.0 * np.pi / (0.1 * geometry.wavelength_A)
    norm = np.sqrt(t1 * t1 + t2 * t2 + t3 * t3)
    a = np.radians(incident_angle_deg)
    q_v = k * ((-t1 / norm) * np.cos(a) - (t3 / norm) * np.sin(a) + np.sin(a))
    return k * t2 / norm, q_v


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
        raise ValueError(f"slice {spec.name!r}: CutMargin must be ≥ 0, got {spec.margin}")
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
    qh, qv = q_h_q_v(geometry, r[:, None], c[None, :], spec.incident_angle_deg)
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
        radial = calibration.radial[max(spec.mask_ref, 0)]
        out.append(
            build_slice_integrator(
                calibration.geometry,
                spec,
                oversampling=radial.oversampling,
                pixel_per_element=radial.pixel_per_radial_element,
                mask=None if spec.mask_ref < 0 else calibration.mask_for(radial),
                corrections=corrections,
                error_model=calibration.error_model,
            )
        )
    return out
