"""Detector geometry: pyFAI's PONI model, the FIT2D tilt model, and maps of 2θ, χ and q.

Conventions
-----------
* Images are indexed ``[row, col]``; row 0 is the first row stored in the file.
* Pixel ``(i, j)`` covers ``[i, i+1) × [j, j+1)`` in pixel units; its centre is ``(i+0.5, j+0.5)``.
* PONI model (pyFAI): axis 1 runs along rows, axis 2 along columns, axis 3 along the beam.
  ``dist`` is the orthogonal sample–detector distance, ``poni1``/``poni2`` the point of normal
  incidence measured from the detector corner, ``rot1``/``rot2``/``rot3`` in radians.
* FIT2D model: ``distance`` is measured along the beam to the beam centre, ``center_x``/``center_y``
  the beam centre in pixels, ``tilt`` the angle between the detector normal and the beam, and
  ``tilt_plane_rotation`` the direction of the tilt plane measured from the x (column) axis towards y.
  FIT2D counts y from the bottom of the image: for an array read from a TIFF (row 0 on top),
  ``y_origin="bottom"`` converts (y → rows − y, tilt-plane rotation → −rotation). With
  ``y_origin="array"`` y is the array's row coordinate (pyFAI's ``setFit2D`` convention).

Units: distances in mm, pixel sizes in µm, wavelength in Å, angles in radians inside the code
(degrees in configs and in the FIT2D constructor), q in nm⁻¹.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["Geometry", "q_from_two_theta", "two_theta_from_q", "read_poni"]


def q_from_two_theta(two_theta, wavelength_A: float):
    """Scattering vector q = 4π sin(2θ/2)/λ in nm⁻¹ for 2θ in radians and λ in Å."""
    return 4.0e1 * np.pi * np.sin(np.asarray(two_theta) / 2.0) / wavelength_A


def two_theta_from_q(q_nm, wavelength_A: float):
    """Scattering angle 2θ in radians for q in nm⁻¹ and λ in Å."""
    return 2.0 * np.arcsin(np.asarray(q_nm) * wavelength_A / (4.0e1 * np.pi))


@dataclass(frozen=True)
class Geometry:
    """A flat detector in pyFAI's PONI parameterisation (mm, µm, rad, Å)."""

    shape: tuple[int, int]
    pixel1_um: float
    pixel2_um: float
    dist_mm: float
    poni1_mm: float
    poni2_mm: float
    rot1: float = 0.0
    rot2: float = 0.0
    rot3: float = 0.0
    wavelength_A: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))
        problems = []
        if self.dist_mm <= 0:
            problems.append(f"distance must be > 0 mm, got {self.dist_mm}")
        if self.pixel1_um <= 0 or self.pixel2_um <= 0:
            problems.append(f"pixel sizes must be > 0 µm, got {self.pixel1_um}, {self.pixel2_um}")
        if self.wavelength_A <= 0:
            problems.append(f"wavelength must be > 0 Å, got {self.wavelength_A}")
        if min(self.shape) <= 0:
            problems.append(f"image shape must be positive, got {self.shape}")
        if problems:
            raise ValueError("invalid geometry: " + "; ".join(problems))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_fit2d(
        cls,
        distance_mm: float,
        center_x: float,
        center_y: float,
        tilt_deg: float = 0.0,
        tilt_plane_rotation_deg: float = 0.0,
        pixel_x_um: float = 172.0,
        pixel_y_um: float | None = None,
        shape: tuple[int, int] = (1, 1),
        wavelength_A: float = 1.0,
        y_origin: str = "array",
    ) -> "Geometry":
        """Geometry from FIT2D parameters (beam centre in pixels, angles in degrees).

        ``y_origin="bottom"``: ``center_y`` is counted from the bottom edge of the image as
        displayed with row 0 on top (FIT2D and SAXSDOG on TIFF files);
        ``y_origin="array"``: ``center_y`` is along increasing row index (pyFAI's ``setFit2D``).
        """
        if pixel_y_um is None:
            pixel_y_um = pixel_x_um
        if y_origin == "bottom":
            center_y = shape[0] - center_y
            tilt_plane_rotation_deg = -tilt_plane_rotation_deg
        elif y_origin != "array":
            raise ValueError(f"y_origin must be 'bottom' or 'array', got {y_origin!r}")
        tau = np.radians(tilt_deg)
        phi = np.radians(tilt_plane_rotation_deg)
        # A unit in-plane displacement at angle ψ (from x towards y) moves along the beam by
        # sin τ cos(ψ − φ). In the PONI model that component is sin(rot2)·u1 − cos(rot2)sin(rot1)·u2.
        sin_rot2 = np.sin(tau) * np.sin(phi)
        rot2 = float(np.arcsin(sin_rot2))
        rot1 = float(np.arcsin(np.clip(-np.sin(tau) * np.cos(phi) / np.cos(rot2), -1.0, 1.0)))
        dist = distance_mm * np.cos(tau)
        poni1 = center_y * pixel_y_um * 1e-3 - distance_mm * np.sin(rot2)
        poni2 = center_x * pixel_x_um * 1e-3 + distance_mm * np.cos(rot2) * np.sin(rot1)
        return cls(
            shape=shape,
            pixel1_um=pixel_y_um,
            pixel2_um=pixel_x_um,
            dist_mm=float(dist),
            poni1_mm=float(poni1),
            poni2_mm=float(poni2),
            rot1=rot1,
            rot2=rot2,
            rot3=0.0,
            wavelength_A=wavelength_A,
        )

    @classmethod
    def from_poni_file(cls, path, shape: tuple[int, int] | None = None) -> "Geometry":
        """Geometry from a pyFAI PONI file (SI units inside; converted to mm, µm, Å)."""
        p = read_poni(path)
        if shape is None:
            shape = p.get("shape")
        if shape is None:
            raise ValueError(f"{path}: the PONI file gives no detector shape; pass shape=")
        return cls(
            shape=tuple(shape),
            pixel1_um=p["pixel1"] * 1e6,
            pixel2_um=p["pixel2"] * 1e6,
            dist_mm=p["distance"] * 1e3,
            poni1_mm=p["poni1"] * 1e3,
            poni2_mm=p["poni2"] * 1e3,
            rot1=p["rot1"],
            rot2=p["rot2"],
            rot3=p["rot3"],
            wavelength_A=p["wavelength"] * 1e10,
        )

    def to_fit2d(self) -> dict:
        """FIT2D parameters (y along increasing row index, angles in degrees, distance in mm)."""
        c1, c2 = np.cos(self.rot1), np.cos(self.rot2)
        s1, s2 = np.sin(self.rot1), np.sin(self.rot2)
        tau = np.arccos(np.clip(c1 * c2, -1, 1))
        phi = np.arctan2(s2, -c2 * s1) if tau > 0 else 0.0
        direct = self.dist_mm / (c1 * c2)
        return {
            "distance_mm": float(direct),
            "center_x": float((self.poni2_mm - direct * c2 * s1) / (self.pixel2_um * 1e-3)),
            "center_y": float((self.poni1_mm + direct * s2) / (self.pixel1_um * 1e-3)),
            "tilt_deg": float(np.degrees(tau)),
            "tilt_plane_rotation_deg": float(np.degrees(phi)),
            "pixel_x_um": self.pixel2_um,
            "pixel_y_um": self.pixel1_um,
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    # ------------------------------------------------------------------ maps
    def _rotation(self) -> np.ndarray:
        """Matrix M with lab position t = M · (p1, p2, L) (pyFAI's rotation order)."""
        c1, c2, c3 = np.cos([self.rot1, self.rot2, self.rot3])
        s1, s2, s3 = np.sin([self.rot1, self.rot2, self.rot3])
        return np.array(
            [
                [c2 * c3, c3 * s1 * s2 - c1 * s3, -(c1 * c3 * s2 + s1 * s3)],
                [c2 * s3, c1 * c3 + s1 * s2 * s3, -(-c3 * s1 + c1 * s2 * s3)],
                [s2, -c2 * s1, c1 * c2],
            ]
        )

    def pixel_centres(self, oversampling: int = 1, rows: slice | None = None):
        """Row and column coordinates (pixel units) of the sub-pixel centres.

        With ``oversampling`` ov, each pixel is split in ov × ov sub-pixels; the returned arrays
        are 1D (rows·ov,) and (cols·ov,) in pixel units, e.g. 0.5/ov, 1.5/ov, …
        """
        ov = int(oversampling)
        nr, nc = self.shape
        r = (np.arange(nr * ov, dtype=np.float64) + 0.5) / ov
        c = (np.arange(nc * ov, dtype=np.float64) + 0.5) / ov
        if rows is not None:
            r = r[rows]
        return r, c

    def lab_positions(self, row_coord, col_coord):
        """Lab coordinates t1, t2, t3 (mm) of points at the given pixel coordinates (broadcast)."""
        p1 = np.asarray(row_coord, dtype=np.float64) * (self.pixel1_um * 1e-3) - self.poni1_mm
        p2 = np.asarray(col_coord, dtype=np.float64) * (self.pixel2_um * 1e-3) - self.poni2_mm
        m = self._rotation()
        L = self.dist_mm
        t1 = m[0, 0] * p1 + m[0, 1] * p2 + m[0, 2] * L
        t2 = m[1, 0] * p1 + m[1, 1] * p2 + m[1, 2] * L
        t3 = m[2, 0] * p1 + m[2, 1] * p2 + m[2, 2] * L
        return t1, t2, t3

    def two_theta_chi(self, row_coord, col_coord):
        """(2θ, χ) in radians at pixel coordinates; χ = atan2(t1, t2) as in pyFAI."""
        t1, t2, t3 = self.lab_positions(row_coord, col_coord)
        return np.arctan2(np.hypot(t1, t2), t3), np.arctan2(t1, t2)

    def two_theta_array(self, oversampling: int = 1) -> np.ndarray:
        """2θ (rad) at every (sub-)pixel centre, shape (rows·ov, cols·ov)."""
        r, c = self.pixel_centres(oversampling)
        return self.two_theta_chi(r[:, None], c[None, :])[0]

    def chi_array(self, oversampling: int = 1) -> np.ndarray:
        """Azimuth χ (rad, in (−π, π]) at every (sub-)pixel centre."""
        r, c = self.pixel_centres(oversampling)
        return self.two_theta_chi(r[:, None], c[None, :])[1]

    def q_array(self, oversampling: int = 1) -> np.ndarray:
        """q (nm⁻¹) at every (sub-)pixel centre."""
        return q_from_two_theta(self.two_theta_array(oversampling), self.wavelength_A)

    def solid_angle_array(self) -> np.ndarray:
        """Solid angle of each pixel relative to a pixel at the PONI: cos³ of the incidence angle.

        The same first-order model pyFAI uses for its solid-angle correction (dist³ / |t|³).
        """
        r, c = self.pixel_centres(1)
        t1, t2, t3 = self.lab_positions(r[:, None], c[None, :])
        return (self.dist_mm / np.sqrt(t1 * t1 + t2 * t2 + t3 * t3)) ** 3

    def polarization_array(self, factor: float, axis_offset_rad: float = 0.0) -> np.ndarray:
        """Polarisation factor P(2θ, χ) as pyFAI defines it.

        P = ½ [1 + cos²2θ − f cos(2(χ − offset)) sin²2θ]; f = 1 for a beam fully polarised in the
        horizontal plane, 0 for unpolarised. Intensities are divided by P.
        """
        r, c = self.pixel_centres(1)
        tth, chi = self.two_theta_chi(r[:, None], c[None, :])
        cos2 = np.cos(tth) ** 2
        return 0.5 * (1.0 + cos2 - factor * np.cos(2.0 * (chi - axis_offset_rad)) * (1.0 - cos2))

    def beam_centre_px(self) -> tuple[float, float]:
        """Where the direct beam hits the detector, (row, col) in pixel units."""
        f = self.to_fit2d()
        return f["center_y"], f["center_x"]


def read_poni(path) -> dict:
    """Parse a pyFAI PONI file (versions 1 and 2): SI units as in the file.

    Returns keys distance, poni1, poni2, rot1, rot2, rot3 (m, rad), wavelength (m), pixel1,
    pixel2 (m) and, when the detector config gives it, shape (rows, cols).
    """
    import json

    path = Path(path)
    values: dict = {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read PONI file: {exc}") from exc
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        values[key.strip().lower()] = value.strip()
    out: dict = {}
    try:
        for key in ("distance", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength"):
            out[key] = float(values[key])
        if "detector_config" in values:
            det = json.loads(values["detector_config"])
            out["pixel1"] = float(det["pixel1"])
            out["pixel2"] = float(det["pixel2"])
            if det.get("max_shape"):
                out["shape"] = tuple(int(v) for v in det["max_shape"])
            orientation = int(det.get("orientation", 3))
            if orientation != 3:
                raise ValueError(f"detector orientation {orientation} is not supported (only 3)")
        else:
            out["pixel1"] = float(values["pixelsize1"])
            out["pixel2"] = float(values["pixelsize2"])
    except KeyError as exc:
        raise ValueError(f"{path}: PONI file lacks field {exc.args[0]!r}") from None
    except (ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: invalid PONI file: {exc}") from None
    return out
