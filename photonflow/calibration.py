"""Calibrations: SAXSDOG's calibration JSON (as SAXSDOG writes it) and pyFAI PONI files.

A `Calibration` holds the detector geometry and the list of integrations to run on each frame: one
radial integration per entry of SAXSDOG's ``Masks`` (each with its mask file, oversampling, radial
grid and qStart/qStop for the integral parameters) and the GISAXS ``Slices``.

SAXSDOG conventions kept here (units: mm, µm, Å, degrees, q in nm⁻¹):

* ``Geometry.BeamCenter`` is [y, x] in pixels, y counted from the bottom edge (FIT2D), so the beam
  centre row of a TIFF-ordered array is ``Imagesize[0] − y``;
* the tilt is FIT2D's: ``TiltAngleDeg`` between detector normal and beam, ``TiltRotDeg`` the tilt
  plane direction; ``DedectorDistanceMM`` (SAXSDOG's spelling) is measured along the beam;
* only ``PixelSizeMicroM[0]`` is used, for both directions, as SAXSDOG does; a second entry, when
  present and different, is used for the rows;
* SAXSDOG's radial grid starts at q = 0 with bins about ``PixelPerRadialElement`` pixels wide;
* mask files: nonzero = masked; FIT2D ``.msk`` files are flipped to TIFF row order on reading;
* ``Slices`` {Direction, Plane, CutPosition, CutMargin, IncidentAngle, MaskRef}: see photonflow.slices;
* ``PolarizationCorrection`` {Fraction F, Angle A}: SAXSDOG's factor equals pyFAI's with
  f = 1 − 2F and axis offset A − 90°.

photonflow extensions (optional keys): ``Dark``, ``Flat`` (image paths), ``SolidAngleCorrection``,
``ErrorModel`` ("poisson" | "saxsdog"), ``MonitorKey`` (intensities divided by that header value or
HDF5 dataset of each frame), and per mask ``Sector`` {ChiStartDeg, ChiStopDeg}.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from photonflow.errors import InputError

from .geometry import Geometry, read_poni
from .integrate import Corrections, RadialBins, build_integrator, saxsdog_bins

__all__ = ["Calibration", "RadialSpec", "SliceSpec", "load_calibration", "CalibrationError"]


class CalibrationError(InputError, ValueError):
    """An invalid calibration: the message names the file and the field."""


@dataclass
class RadialSpec:
    """One radial integration (a SAXSDOG ``Masks`` entry)."""

    name: str
    mask_file: str | None
    oversampling: int = 3
    pixel_per_radial_element: float = 1.0
    q_start: float = 0.0
    q_stop: float = float("inf")
    sector_deg: tuple[float, float] | None = None
    npt: int | None = None  # explicit number of bins (PONI runs); None = SAXSDOG grid
    q_range: tuple[float, float] | None = None


@dataclass
class SliceSpec:
    """A GISAXS cut (a SAXSDOG ``Slices`` entry); see photonflow.slices for the definitions."""

    name: str
    direction: str  # "x": horizontal strip, "y": vertical strip
    plane: str  # "InPlane": abscissa q_H, "Vertical": abscissa q_V
    position: float  # pixels: row (direction x) or column (direction y), FIT2D y from the bottom
    margin: float  # pixels: half-width of the strip
    mask_ref: int = 0  # index into the radial specs; −1 = no mask
    incident_angle_deg: float = 0.0  # grazing angle of incidence (enters q_V)


@dataclass
class Calibration:
    geometry: Geometry
    radial: list[RadialSpec]
    slices: list[SliceSpec] = field(default_factory=list)
    polarization: tuple[float, float] | None = None  # pyFAI (factor, offset_deg)
    solid_angle: bool = False
    dark_file: str | None = None
    flat_file: str | None = None
    error_model: str = "poisson"
    overwrite: bool = False
    monitor_key: str | None = None  # header key / HDF5 dataset of the beam monitor
    source: str = "<dict>"
    raw: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.geometry.shape

    def digest(self) -> str:
        """Hash of everything that changes results (used for caches and ledgers)."""
        payload = json.dumps({"raw": self.raw, "geometry": self.geometry.to_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def corrections(self) -> Corrections:
        from .io.images import read_frame

        dark = None if self.dark_file is None else np.asarray(read_frame(self.dark_file), np.float32)
        flat = None if self.flat_file is None else np.asarray(read_frame(self.flat_file), np.float64)
        factor, offset = self.polarization if self.polarization else (None, 0.0)
        return Corrections(
            solid_angle=self.solid_angle,
            polarization_factor=factor,
            polarization_offset_deg=offset,
            flat=flat,
            dark=dark,
        )

    def mask_for(self, spec: RadialSpec) -> np.ndarray:
        from .io.masks import read_mask

        if spec.mask_file is None:
            return np.zeros(self.shape, bool)
        return read_mask(spec.mask_file, shape=self.shape)

    def bins_for(self, spec: RadialSpec) -> RadialBins:
        if spec.npt is not None:
            if spec.q_range is not None:
                lo, hi = spec.q_range
            else:
                q = self.geometry.q_array(1)
                lo, hi = float(q.min()), float(q.max())
            return RadialBins.linear(lo, hi, spec.npt)
        return saxsdog_bins(self.geometry, spec.oversampling, spec.pixel_per_radial_element)

    def build_integrators(self, cache_dir=None) -> list:
        """One Integrator per radial spec (cached on disk under a hash when cache_dir is given)."""
        corrections = self.corrections()
        out = []
        for spec in self.radial:
            out.append(
                build_integrator(
                    self.geometry,
                    self.bins_for(spec),
                    oversampling=spec.oversampling,
                    mask=self.mask_for(spec),
                    corrections=corrections,
                    sector_deg=spec.sector_deg,
                    error_model=self.error_model,
                    split=spec.oversampling > 1,
                    cache_dir=cache_dir,
                )
            )
        return out


def _resolve(base: Path, name):
    if name is None:
        return None
    p = Path(name)
    return str(p if p.is_absolute() else (base / p))


def calibration_from_saxsdog(data: dict, source: str = "<dict>") -> Calibration:
    """Build a Calibration from a (schema-validated) SAXSDOG calibration dict."""
    base = Path(source).parent if source != "<dict>" else Path.cwd()
    try:
        geo = data["Geometry"]
        rows, cols = (int(v) for v in geo["Imagesize"])
        pix = geo["PixelSizeMicroM"]
        pix = [pix] if isinstance(pix, (int, float)) else list(pix)
        by, bx = (float(v) for v in geo["BeamCenter"])
        tilt = geo.get("Tilt", {})
        geometry = Geometry.from_fit2d(
            distance_mm=float(geo["DedectorDistanceMM"]),
            center_x=bx,
            center_y=by,
            tilt_deg=float(tilt.get("TiltAngleDeg", 0.0)),
            tilt_plane_rotation_deg=float(tilt.get("TiltRotDeg", 0.0)),
            pixel_x_um=float(pix[0]),
            pixel_y_um=float(pix[1] if len(pix) > 1 else pix[0]),
            shape=(rows, cols),
            wavelength_A=float(data["Wavelength"]),
            y_origin="bottom",
        )
    except KeyError as exc:
        raise CalibrationError(f"{source}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{source}: Geometry: {exc}") from None
    radial = []
    for i, m in enumerate(data.get("Masks", [])):
        sector = m.get("Sector")
        radial.append(
            RadialSpec(
                name=str(m.get("Name", f"mask{i}")),
                mask_file=_resolve(base, m.get("MaskFile")),
                oversampling=int(m.get("Oversampling", 1)),
                pixel_per_radial_element=float(m.get("PixelPerRadialElement", 1.0)),
                q_start=float(m.get("qStart", 0.0)),
                q_stop=float(m.get("qStop", float("inf"))),
                sector_deg=None if not sector else (float(sector["ChiStartDeg"]), float(sector["ChiStopDeg"])),
            )
        )
    if not radial:
        raise CalibrationError(f"{source}: Masks: at least one mask entry is needed")
    slices = []
    for i, s in enumerate(data.get("Slices", []) or []):
        ref = int(s.get("MaskRef", 0))
        if not -1 <= ref < len(radial):
            raise CalibrationError(f"{source}: Slices[{i}].MaskRef: {ref} does not name a Masks entry")
        slices.append(
            SliceSpec(
                name=str(s.get("Name", f"slice{i}")),
                direction=str(s["Direction"]),
                plane=str(s["Plane"]),
                position=float(s["CutPosition"]),
                margin=float(s.get("CutMargin", 1)),
                mask_ref=ref,
                incident_angle_deg=float(s.get("IncidentAngle", 0.0)),
            )
        )
    pol = data.get("PolarizationCorrection")
    polarization = None
    if pol:
        polarization = (1.0 - 2.0 * float(pol["Fraction"]), float(pol.get("Angle", 0.0)) - 90.0)
    return Calibration(
        geometry=geometry,
        radial=radial,
        slices=slices,
        polarization=polarization,
        solid_angle=bool(data.get("SolidAngleCorrection", False)),
        dark_file=_resolve(base, data.get("Dark")),
        flat_file=_resolve(base, data.get("Flat")),
        error_model=str(data.get("ErrorModel", "poisson")),
        overwrite=bool(data.get("OverwriteFiles", False)),
        monitor_key=data.get("MonitorKey"),
        source=source,
        raw=data,
    )


def calibration_from_poni(
    path,
    shape: tuple[int, int] | None = None,
    npt: int = 1000,
    q_range: tuple[float, float] | None = None,
    oversampling: int = 1,
    mask_file: str | None = None,
    polarization_factor: float | None = None,
    solid_angle: bool = False,
    error_model: str = "poisson",
) -> Calibration:
    """A Calibration from a pyFAI PONI file with one radial integration of ``npt`` bins."""
    path = Path(path)
    if shape is None:
        shape = read_poni(path).get("shape")
    if shape is None:
        raise CalibrationError(f"{path}: the PONI file gives no detector shape; give the image shape")
    geometry = Geometry.from_poni_file(path, shape=shape)
    q_start, q_stop = q_range if q_range else (0.0, float("inf"))
    spec = RadialSpec(
        name="poni",
        mask_file=None if mask_file is None else str(mask_file),
        oversampling=int(oversampling),
        q_start=q_start,
        q_stop=q_stop,
        npt=int(npt),
        q_range=tuple(q_range) if q_range else None,
    )
    raw = {
        "PONI": str(path),
        "npt": npt,
        "q_range": list(q_range) if q_range else None,
        "oversampling": oversampling,
        "mask": mask_file,
        "polarization_factor": polarization_factor,
        "solid_angle": solid_angle,
        "Geometry": geometry.to_dict(),
    }
    return Calibration(
        geometry=geometry,
        radial=[spec],
        polarization=None if polarization_factor is None else (float(polarization_factor), 0.0),
        solid_angle=solid_angle,
        error_model=error_model,
        source=str(path),
        raw=raw,
    )


def load_calibration(path, shape=None, **poni_options) -> Calibration:
    """Load a SAXSDOG calibration JSON (validated against its JSON Schema) or a pyFAI PONI file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: calibration file not found")
    if path.suffix.lower() == ".poni":
        return calibration_from_poni(path, shape=shape, **poni_options)
    from .config import load_json_config

    data = load_json_config(path, "saxsdog_calibration")
    return calibration_from_saxsdog(data, source=str(path))
