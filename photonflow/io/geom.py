"""CrystFEL detector geometry (``.geom``): parser, writer, pixel maps and ray projection.

Frames
    Lab frame (CrystFEL): origin at the interaction point, +z along the beam
    (away from the source), +y towards the ceiling, +x completing a right-handed
    frame. Slab (data) frame: a frame is ``data[ss, fs]``; each panel is the
    inclusive rectangle ``min_fs..max_fs`` × ``min_ss..max_ss`` of the slab.

Two pixel conventions
    * CrystFEL: ``corner_x, corner_y`` is the outer corner of the panel's first
      pixel; panel-continuous coordinate ``u`` runs from 0 to ``width``, so the
      centre of pixel ``fs`` is at ``u = fs + 0.5``.
    * Cheetah / OM / CXI peak lists / :class:`~photonflow.peaks.peaklist.PeakList`:
      the centre of pixel ``data[ss, fs]`` is at integer ``(fs, ss)``. CrystFEL
      adds 0.5 to CXI peak positions when it reads them.

    :meth:`DetectorGeometry.pixel_maps` follows ``cfelpyutils.geometry.compute_pix_maps``
    and OM exactly: ``x[ss, fs] = corner_x + fs·fs_x + ss·ss_x`` with panel-relative
    integer ``fs, ss``, i.e. the CrystFEL position of the pixel's *first corner*
    (CrystFEL's own bad-region x/y test uses the same value). ``pixel_maps(centre=True)``
    adds half a pixel along fs and ss: the CrystFEL pixel centre, which is where
    the Cheetah coordinate ``(fs, ss)`` lands. :meth:`~DetectorGeometry.project`,
    :meth:`~DetectorGeometry.slab_to_lab` and the 2θ / resolution / q maps use
    these pixel centres, so they agree with what CrystFEL computes for the same
    peak read from a CXI file.

Units: corner and map x, y in pixels of the panel; ``res`` in pixels per metre;
``clen``, ``coffset`` and map z in metres; photon energy in eV; wavelength and
d-spacing in Å; q in nm⁻¹; angles in radians.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text

__all__ = [
    "HC_EV_A",
    "AsicLayout",
    "BadRegion",
    "DetectorGeometry",
    "GeometryError",
    "Panel",
    "load_geometry",
    "parse_geometry",
    "simulated_detector",
    "write_geometry",
]

HC_EV_A = 12398.419843320026
"""h·c in eV·Å: wavelength (Å) = HC_EV_A / photon energy (eV)."""

_DEFAULT_DIMS = ("ss", "fs")


class GeometryError(ValueError):
    """A geometry file (or a frame checked against it) is wrong; the message names file and line."""


# --------------------------------------------------------------------------------------------
# data classes


@dataclass
class Panel:
    """One detector panel (a rectangle of the slab with its own lab position).

    min/max fs/ss: inclusive slab indices. corner_x, corner_y: lab position of
    the panel's outer first corner, pixels. fs, ss: lab vectors of one pixel step
    along fast/slow scan, pixels (x, y, z). res: pixels per metre. clen: camera
    length, metres (None when it comes from a data-file path, kept in
    ``clen_path``, whose values are in ``clen_path_unit``). coffset: extra z
    offset, metres.
    """

    name: str
    min_fs: int
    max_fs: int
    min_ss: int
    max_ss: int
    corner_x: float
    corner_y: float
    fs: tuple[float, float, float]
    ss: tuple[float, float, float]
    res: float
    clen: float | None = None
    clen_path: str | None = None
    clen_path_unit: str = "mm"
    coffset: float = 0.0
    adu_per_photon: float | None = None
    adu_per_eV: float | None = None
    max_adu: float | None = None
    no_index: bool = False
    data: str | None = None
    dim_structure: tuple = _DEFAULT_DIMS
    mask: str | None = None
    mask_file: str | None = None
    mask_good: int | None = None
    mask_bad: int | None = None
    extra: dict = field(default_factory=dict)
    line: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        for key in ("min_fs", "max_fs", "min_ss", "max_ss"):
            setattr(self, key, int(getattr(self, key)))
        self.fs = tuple(float(v) for v in self.fs)
        self.ss = tuple(float(v) for v in self.ss)
        if len(self.fs) != 3 or len(self.ss) != 3:
            raise ValueError(f"panel {self.name}: fs and ss need three components (x, y, z)")
        self.corner_x = float(self.corner_x)
        self.corner_y = float(self.corner_y)
        self.res = float(self.res)
        self.coffset = float(self.coffset)
        self.dim_structure = tuple(self.dim_structure)

    @property
    def width(self) -> int:
        """Pixels along fs."""
        return self.max_fs - self.min_fs + 1

    @property
    def height(self) -> int:
        """Pixels along ss."""
        return self.max_ss - self.min_ss + 1

    @property
    def pixel_size_m(self) -> float:
        """Pixel size, metres (1 / res)."""
        return 1.0 / self.res

    @property
    def slab_slices(self) -> tuple[slice, slice]:
        """``(ss slice, fs slice)`` of this panel in a slab frame."""
        return slice(self.min_ss, self.max_ss + 1), slice(self.min_fs, self.max_fs + 1)


@dataclass
class BadRegion:
    """A bad region (name starting with ``bad``), in slab fs/ss (inclusive) or lab x/y (pixels).

    fs/ss regions use slab indices (as panels' min_fs...); with ``panel`` they are
    restricted to that panel. x/y regions compare the pixel's lab x, y
    (``pixel_maps()`` values, inclusive); a missing x/y bound is unbounded, as in
    CrystFEL. ``panel``: restrict either kind to one panel.
    """

    name: str
    min_fs: int | None = None
    max_fs: int | None = None
    min_ss: int | None = None
    max_ss: int | None = None
    min_x: float | None = None
    max_x: float | None = None
    min_y: float | None = None
    max_y: float | None = None
    panel: str | None = None
    line: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not self.name.startswith("bad"):
            raise ValueError(f"bad region name {self.name!r} must start with 'bad' (CrystFEL rule)")
        fsss = [self.min_fs, self.max_fs, self.min_ss, self.max_ss]
        xy = [self.min_x, self.max_x, self.min_y, self.max_y]
        if any(v is not None for v in fsss) and any(v is not None for v in xy):
            raise ValueError(f"bad region {self.name}: cannot mix fs/ss and x/y bounds")
        if not any(v is not None for v in fsss + xy):
            raise ValueError(f"bad region {self.name}: give min_fs..max_ss or min_x..max_y")
        if self.is_fsss and any(v is None for v in fsss):
            raise ValueError(f"bad region {self.name}: an fs/ss region needs min_fs, max_fs, min_ss and max_ss")

    @property
    def is_fsss(self) -> bool:
        """True for a slab fs/ss region, False for a lab x/y region."""
        return any(v is not None for v in (self.min_fs, self.max_fs, self.min_ss, self.max_ss))


@dataclass(frozen=True)
class AsicLayout:
    """Uniform ASIC grid of a slab, as OM/Cheetah peakfinder8 needs it (pixels, counts)."""

    asic_nx: int
    asic_ny: int
    nasics_x: int
    nasics_y: int


# --------------------------------------------------------------------------------------------
# the detector


class DetectorGeometry:
    """A detector: panels, bad regions and beam energy, with pixel maps and ray projection.

    See the module docstring for the frames and the two pixel conventions.
    """

    def __init__(
        self,
        panels: Sequence[Panel],
        bad_regions: Sequence[BadRegion] = (),
        photon_energy_eV: float | None = None,
        *,
        photon_energy_path: str | None = None,
        photon_energy_scale: float | None = None,
        bandwidth: float | None = None,
        peak_list: str | None = None,
        peak_list_type: str | None = None,
        mask_good: int | None = None,
        mask_bad: int | None = None,
        unsupported: dict | None = None,
        source_path: str | os.PathLike | None = None,
        warnings: Sequence[str] = (),
    ):
        self.panels: list[Panel] = list(panels)
        self.bad_regions: list[BadRegion] = list(bad_regions)
        self.photon_energy_eV = None if photon_energy_eV is None else float(photon_energy_eV)
        self.photon_energy_path = photon_energy_path
        self.photon_energy_scale = photon_energy_scale
        self.bandwidth = bandwidth
        self.peak_list = peak_list
        self.peak_list_type = peak_list_type
        self.mask_good = mask_good
        self.mask_bad = mask_bad
        self.unsupported = dict(unsupported or {})  # kept verbatim: electron_voltage, detector_shift_x/y
        self.source_path = None if source_path is None else Path(source_path)
        self.warnings: list[str] = list(warnings)
        self._validate()

    # ---- description

    def __repr__(self) -> str:
        n_ss, n_fs = self.slab_shape
        src = f", source={str(self.source_path)!r}" if self.source_path else ""
        return (
            f"DetectorGeometry({len(self.panels)} panels, slab {n_ss}x{n_fs}, "
            f"{len(self.bad_regions)} bad regions, photon_energy_eV={self.photon_energy_eV}{src})"
        )

    @property
    def _label(self) -> str:
        return str(self.source_path) if self.source_path else "<geometry>"

    def _where(self, line: int | None) -> str:
        return f"{self._label} line {line}" if line else self._label

    def _validate(self) -> None:
        if not self.panels:
            raise GeometryError(f"{self._label}: no panels")
        names = set()
        for p in self.panels:
            where = self._where(p.line)
            if p.name in names:
                raise GeometryError(f"{where}: duplicate panel name {p.name!r}")
            names.add(p.name)
            if p.min_fs < 0 or p.min_ss < 0 or p.max_fs < p.min_fs or p.max_ss < p.min_ss:
                raise GeometryError(
                    f"{where}: panel {p.name}: bad pixel range fs {p.min_fs}..{p.max_fs}, ss {p.min_ss}..{p.max_ss}"
                )
            if not (p.res > 0 and math.isfinite(p.res)):
                raise GeometryError(f"{where}: panel {p.name}: res must be a positive number of pixels per metre")
            if np.linalg.norm(np.cross(p.fs, p.ss)) == 0.0:
                raise GeometryError(f"{where}: panel {p.name}: fs {p.fs} and ss {p.ss} are parallel (singular)")
        # overlaps in the slab
        order = sorted(self.panels, key=lambda q: (q.min_ss, q.min_fs))
        for i, a in enumerate(order):
            for b in order[i + 1 :]:
                if b.min_ss > a.max_ss:
                    break
                if a.min_fs <= b.max_fs and b.min_fs <= a.max_fs and a.min_ss <= b.max_ss and b.min_ss <= a.max_ss:
                    raise GeometryError(
                        f"{self._where(b.line)}: panel {b.name} overlaps panel {a.name} in the slab "
                        f"(max_fs/max_ss are inclusive)"
                    )
        for r in self.bad_regions:
            where = self._where(r.line)
            if r.panel is not None and r.panel not in names:
                raise GeometryError(f"{where}: bad region {r.name}: no panel named {r.panel!r}")
            if r.is_fsss and (min(r.min_fs, r.min_ss) < 0 or r.max_fs < r.min_fs or r.max_ss < r.min_ss):
                raise GeometryError(
                    f"{where}: bad region {r.name}: bad range fs {r.min_fs}..{r.max_fs}, ss {r.min_ss}..{r.max_ss}"
                )
            if r.is_fsss and r.panel is not None:
                p = self.panel(r.panel)
                if r.min_fs < p.min_fs or r.max_fs > p.max_fs or r.min_ss < p.min_ss or r.max_ss > p.max_ss:
                    raise GeometryError(f"{where}: bad region {r.name} lies outside its panel {p.name}")

    def panel(self, name: str) -> Panel:
        """The panel called ``name``."""
        for p in self.panels:
            if p.name == name:
                return p
        raise KeyError(f"{self._label}: no panel named {name!r}")

    @property
    def wavelength_A(self) -> float | None:
        """Wavelength, Å (None when the photon energy is not a number in the file)."""
        return HC_EV_A / self.photon_energy_eV if self.photon_energy_eV else None

    @property
    def clen_m(self) -> float | None:
        """Camera length shared by all panels, metres (None if they differ or come from a path)."""
        values = {p.clen for p in self.panels}
        if len(values) == 1:
            (value,) = values
            return value
        return None

    @property
    def slab_shape(self) -> tuple[int, int]:
        """``(n_ss, n_fs)`` of a frame: (max(max_ss) + 1, max(max_fs) + 1)."""
        return (max(p.max_ss for p in self.panels) + 1, max(p.max_fs for p in self.panels) + 1)

    def with_clen(self, clen_m: float) -> DetectorGeometry:
        """A copy with every panel's camera length set to ``clen_m`` metres (e.g. read from a data file)."""
        other = copy.deepcopy(self)
        for p in other.panels:
            p.clen = float(clen_m)
            p.clen_path = None
        return other

    def with_photon_energy(self, photon_energy_eV: float) -> DetectorGeometry:
        """A copy with the photon energy set, eV."""
        other = copy.deepcopy(self)
        other.photon_energy_eV = float(photon_energy_eV)
        other.photon_energy_path = None
        return other

    # ---- maps

    def _grids(self, p: Panel, centre: bool) -> tuple[np.ndarray, np.ndarray]:
        ss, fs = np.meshgrid(np.arange(p.height, dtype=np.float64), np.arange(p.width, dtype=np.float64),
                             indexing="ij")
        if centre:
            ss += 0.5
            fs += 0.5
        return ss, fs

    def pixel_maps(self, centre: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lab position of every slab pixel: ``(x, y, z)`` float64 arrays of slab shape.

        x, y in pixels of the pixel's panel, z in metres (clen + coffset, plus the
        z component of tilted panels). ``centre=False`` (default) gives
        cfelpyutils' ``compute_pix_maps`` / OM values, ``corner + fs·fs_vec + ss·ss_vec``
        (the CrystFEL position of the pixel's first corner); ``centre=True`` gives
        the pixel centres (+0.5 pixel along fs and ss). NaN where no panel covers
        the slab (z is NaN too on panels whose clen comes from a data-file path).
        """
        shape = self.slab_shape
        x = np.full(shape, np.nan)
        y = np.full(shape, np.nan)
        z = np.full(shape, np.nan)
        for p in self.panels:
            ss, fs = self._grids(p, centre)
            sl = p.slab_slices
            # same operation order as cfelpyutils/OM, so the float32 casts agree bit for bit
            x[sl] = ss * p.ss[0] + fs * p.fs[0] + p.corner_x
            y[sl] = ss * p.ss[1] + fs * p.fs[1] + p.corner_y
            z0 = np.nan if p.clen is None else p.clen + p.coffset
            z[sl] = z0 + (fs * p.fs[2] + ss * p.ss[2]) / p.res
        return x, y, z

    def res_map(self) -> np.ndarray:
        """Pixels per metre of each slab pixel's panel (NaN off panels)."""
        out = np.full(self.slab_shape, np.nan)
        for p in self.panels:
            out[p.slab_slices] = p.res
        return out

    def lab_maps_m(self, centre: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, Y, Z)`` lab position of each pixel (centre by default), metres."""
        x, y, z = self.pixel_maps(centre=centre)
        res = self.res_map()
        return x / res, y / res, z

    def radius_map(self) -> np.ndarray:
        """sqrt(x² + y²) of :meth:`pixel_maps`, float32 pixels, 0 off panels — OM's ``radius`` map.

        Built as OM builds it (x, y cast to float32 first, then the root in float32),
        so it is equal bit for bit to ``GeometryInformation.get_pixel_maps()["radius"]``
        and can be passed to peakfinder8 as its radius map.
        """
        x, y, _ = self.pixel_maps()
        x32 = np.nan_to_num(x, nan=0.0).astype(np.float32)
        y32 = np.nan_to_num(y, nan=0.0).astype(np.float32)
        return np.sqrt(np.square(x32) + np.square(y32))

    def panel_map(self) -> np.ndarray:
        """Index into ``panels`` of each slab pixel, int32; -1 where no panel covers the slab."""
        out = np.full(self.slab_shape, -1, dtype=np.int32)
        for i, p in enumerate(self.panels):
            out[p.slab_slices] = i
        return out

    def has_file_masks(self) -> bool:
        """Whether any panel takes a mask from an HDF5 dataset (``mask``, optionally ``mask_file``)."""
        return any(p.mask for p in self.panels)

    def file_mask(self, data_file: str | os.PathLike | None = None, event: int | None = None) -> np.ndarray:
        """True for pixels the geometry's HDF5 masks call good (CrystFEL's rule: good when
        ``value & mask_good == mask_good`` and ``value & mask_bad == 0``).

        Each panel with a ``mask`` dataset reads it from ``mask_file`` (relative to the geometry
        file's directory) or, without one, from ``data_file`` (event ``event`` of a 3-D mask
        dataset; a 2-D one serves every event). Panels without a mask are all True. A missing
        file or dataset raises GeometryError naming the geometry, the panel and the file.
        """
        import h5py

        good = np.ones(self.slab_shape, dtype=bool)
        cache: dict[tuple[str, str], np.ndarray] = {}
        for p in self.panels:
            if not p.mask:
                continue
            if p.mask_file:
                path = Path(p.mask_file)
                if not path.is_absolute() and self.source_path is not None:
                    path = self.source_path.parent / path
            elif data_file is not None:
                path = Path(data_file)
            else:
                raise GeometryError(f"{self._label}: panel {p.name}: mask {p.mask} is in the data files; "
                                    "give the data file to read it from")
            key = (str(path), p.mask)
            if key not in cache:
                try:
                    with h5py.File(path, "r") as f:
                        ds = f[p.mask]
                        values = ds[()] if ds.ndim == 2 else ds[0 if event is None else int(event)]
                except (OSError, KeyError, IndexError) as exc:
                    raise GeometryError(f"{self._label}: panel {p.name}: cannot read mask {p.mask} from {path}: "
                                        f"{exc}") from None
                if values.shape != tuple(self.slab_shape):
                    raise GeometryError(f"{self._label}: panel {p.name}: mask {p.mask} in {path} has shape "
                                        f"{values.shape}, the slab is {tuple(self.slab_shape)}")
                cache[key] = np.asarray(values).astype(np.int64)
            block = cache[key][p.slab_slices]
            mask_good = int(p.mask_good if p.mask_good is not None else (self.mask_good or 0))
            mask_bad = int(p.mask_bad if p.mask_bad is not None else (self.mask_bad or 0))
            good[p.slab_slices] = ((block & mask_good) == mask_good) & ((block & mask_bad) == 0)
        return good

    def good_pixel_mask(self) -> np.ndarray:
        """True for usable pixels; False in bad regions, on no_index panels and off panels.

        Follows CrystFEL: fs/ss regions are inclusive slab ranges (limited to their
        panel if one is named); x/y regions are inclusive ranges of :meth:`pixel_maps` x, y.
        Masks stored in HDF5 files (``mask``, ``mask_file``) are read by :meth:`file_mask`.
        """
        pmap = self.panel_map()
        good = pmap >= 0
        for i, p in enumerate(self.panels):
            if p.no_index:
                good[pmap == i] = False
        xy_regions = [r for r in self.bad_regions if not r.is_fsss]
        x = y = None
        if xy_regions:
            x, y, _ = self.pixel_maps()
        for r in self.bad_regions:
            if r.is_fsss:
                sel = np.zeros_like(good)
                sel[r.min_ss : r.max_ss + 1, r.min_fs : r.max_fs + 1] = True
            else:
                lo_x = -np.inf if r.min_x is None else r.min_x
                hi_x = np.inf if r.max_x is None else r.max_x
                lo_y = -np.inf if r.min_y is None else r.min_y
                hi_y = np.inf if r.max_y is None else r.max_y
                with np.errstate(invalid="ignore"):
                    sel = (x >= lo_x) & (x <= hi_x) & (y >= lo_y) & (y <= hi_y)
            if r.panel is not None:
                sel &= pmap == self.panels.index(self.panel(r.panel))
            good[sel] = False
        return good

    def asic_layout(self) -> AsicLayout | None:
        """The ASIC grid when the panels tile the slab as equal rectangles in a regular grid, else None."""
        p0 = self.panels[0]
        w, h = p0.width, p0.height
        n_ss, n_fs = self.slab_shape
        if n_fs % w or n_ss % h:
            return None
        nx, ny = n_fs // w, n_ss // h
        if len(self.panels) != nx * ny:
            return None
        cells = set()
        for p in self.panels:
            if p.width != w or p.height != h or p.min_fs % w or p.min_ss % h:
                return None
            cells.add((p.min_ss // h, p.min_fs // w))
        if len(cells) != nx * ny:
            return None
        return AsicLayout(asic_nx=w, asic_ny=h, nasics_x=nx, nasics_y=ny)

    def _need_wavelength(self, wavelength_A: float | None) -> float:
        if wavelength_A is not None:
            return float(wavelength_A)
        if self.wavelength_A is None:
            raise GeometryError(
                f"{self._label}: no photon energy as a number (photon_energy_path={self.photon_energy_path!r}); "
                "pass wavelength_A or use with_photon_energy()"
            )
        return self.wavelength_A

    def _need_clen(self) -> None:
        missing = [p.name for p in self.panels if p.clen is None]
        if missing:
            raise GeometryError(
                f"{self._label}: camera length of panel(s) {', '.join(missing[:4])} comes from a data-file path "
                f"({self.panels[0].clen_path!r}); use with_clen(clen_m)"
            )

    def two_theta_map(self) -> np.ndarray:
        """Scattering angle 2θ of each pixel centre, radians (NaN off panels)."""
        self._need_clen()
        X, Y, Z = self.lab_maps_m(centre=True)
        return np.arctan2(np.hypot(X, Y), Z)

    def resolution_map(self, wavelength_A: float | None = None) -> np.ndarray:
        """d-spacing λ / (2 sin θ) of each pixel centre, Å (inf at 2θ = 0, NaN off panels).

        Uses the geometry's photon energy unless ``wavelength_A`` is given.
        """
        lam = self._need_wavelength(wavelength_A)
        s = np.sin(self.two_theta_map() / 2.0)
        with np.errstate(divide="ignore"):
            return lam / (2.0 * s)

    def q_map(self, wavelength_A: float | None = None) -> np.ndarray:
        """Momentum transfer q = 4π sin θ / λ of each pixel centre, nm⁻¹ (NaN off panels)."""
        lam_nm = self._need_wavelength(wavelength_A) / 10.0
        return 4.0 * np.pi * np.sin(self.two_theta_map() / 2.0) / lam_nm

    # ---- rays

    def _panel_frames(self):
        """Per panel: corner C, step vectors F, S (metres) and the plane normal N."""
        self._need_clen()
        out = []
        for p in self.panels:
            C = np.array([p.corner_x / p.res, p.corner_y / p.res, p.clen + p.coffset])
            F = np.asarray(p.fs) / p.res
            S = np.asarray(p.ss) / p.res
            out.append((C, F, S, np.cross(F, S)))
        return out

    def project(self, directions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where rays from the sample hit the detector, in slab pixel coordinates.

        directions: (n, 3) lab vectors from the sample (beam along +z; any positive
        length). Returns ``(panel_index int64, fs, ss)``: the nearest panel hit and
        the Cheetah slab coordinates (pixel ``data[ss, fs]`` has its centre at
        integer ``(fs, ss)`` and covers ±0.5 around it); panel -1 and fs, ss NaN
        for rays that miss (gaps, off the detector, backwards). Inverse of
        :meth:`slab_to_lab` and consistent with ``pixel_maps(centre=True)``.
        """
        d = np.asarray(directions, dtype=np.float64)
        single = d.ndim == 1
        d = d.reshape(-1, 3)
        n = len(d)
        best_t = np.full(n, np.inf)
        index = np.full(n, -1, dtype=np.int64)
        fs_out = np.full(n, np.nan)
        ss_out = np.full(n, np.nan)
        for i, (p, (C, F, S, N)) in enumerate(zip(self.panels, self._panel_frames())):
            denom = d @ N
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (C @ N) / denom
            ok = np.isfinite(t) & (t > 0) & (t < best_t)
            if not ok.any():
                continue
            R = t[ok, None] * d[ok] - C
            SxN = np.cross(S, N)
            NxF = np.cross(N, F)
            u = (R @ SxN) / (F @ SxN)
            v = (R @ NxF) / (S @ NxF)
            inside = (u >= 0) & (u < p.width) & (v >= 0) & (v < p.height)
            rows = np.flatnonzero(ok)[inside]
            best_t[rows] = t[rows]
            index[rows] = i
            fs_out[rows] = p.min_fs + u[inside] - 0.5
            ss_out[rows] = p.min_ss + v[inside] - 0.5
        if single:
            return index[0], fs_out[0], ss_out[0]
        return index, fs_out, ss_out

    def slab_to_lab(self, fs, ss) -> np.ndarray:
        """Lab position (n, 3), metres, of Cheetah slab coordinates ``(fs, ss)`` (NaN off panels).

        The panel is the one holding pixel ``(round(fs), round(ss))``; the inverse of :meth:`project`.
        """
        fs = np.atleast_1d(np.asarray(fs, dtype=np.float64))
        ss = np.atleast_1d(np.asarray(ss, dtype=np.float64))
        out = np.full((len(fs), 3), np.nan)
        pmap = self.panel_map()
        n_ss, n_fs = pmap.shape
        ifs = np.floor(fs + 0.5).astype(np.int64)
        iss = np.floor(ss + 0.5).astype(np.int64)
        inside = (ifs >= 0) & (ifs < n_fs) & (iss >= 0) & (iss < n_ss)
        pidx = np.full(len(fs), -1)
        pidx[inside] = pmap[iss[inside], ifs[inside]]
        frames = self._panel_frames()
        for i in np.unique(pidx[pidx >= 0]):
            p = self.panels[i]
            C, F, S, _ = frames[i]
            rows = pidx == i
            u = fs[rows] - p.min_fs + 0.5
            v = ss[rows] - p.min_ss + 0.5
            out[rows] = C + u[:, None] * F + v[:, None] * S
        return out

    def check_frame(self, shape, path=None, event=None) -> None:
        """Raise :class:`GeometryError` (naming file and event) unless ``shape[-2:]`` is the slab shape."""
        shape = tuple(int(s) for s in shape)
        if len(shape) >= 2 and shape[-2:] == self.slab_shape:
            return
        where = str(path) if path is not None else "frame"
        if event is not None:
            where += f" event {event}"
        raise GeometryError(
            f"{where}: frame shape {shape} does not match the detector geometry {self._label} "
            f"(slab {self.slab_shape[0]}x{self.slab_shape[1]} ss x fs)"
        )


# --------------------------------------------------------------------------------------------
# parsing

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_TERM = re.compile(rf"([+-]?)({_NUMBER})?([xyz])")
_PANEL_FLOATS = {"corner_x", "corner_y", "res", "coffset", "adu_per_eV", "adu_per_photon", "max_adu"}
_PANEL_INTS = {"min_fs", "max_fs", "min_ss", "max_ss"}
_PANEL_STRINGS = {"data", "mask", "mask_file"}
_PANEL_EXTRA = {
    "saturation_map", "saturation_map_file", "badrow_direction", "mask_edge_pixels", "flag_lessthan",
    "flag_morethan", "flag_equal", "rail_direction", "clen_for_centering",
}
_MASK_N = re.compile(r"mask\d+_(data|file|goodbits|badbits)$")


def _parse_vector(value: str) -> tuple[float, float, float]:
    """``+1.0x -0.0y``, ``x``, ``-y``, ``0.5x+0.5y+0.1z`` → (x, y, z); repeated axes add up (CrystFEL)."""
    text = "".join(value.split())
    if not text:
        raise ValueError("empty direction")
    comp = {"x": 0.0, "y": 0.0, "z": 0.0}
    pos = 0
    while pos < len(text):
        m = _TERM.match(text, pos)
        if m is None or (pos > 0 and not m.group(1)):
            raise ValueError("not a sum of terms like +0.5x -1y")
        sign = -1.0 if m.group(1) == "-" else 1.0
        comp[m.group(3)] += sign * (float(m.group(2)) if m.group(2) else 1.0)
        pos = m.end()
    return comp["x"], comp["y"], comp["z"]


def _parse_int(value: str) -> int:
    v = float(value)
    if not v.is_integer():
        raise ValueError("not an integer")
    return int(v)


def _parse_bits(value: str) -> int:
    v = value.strip()
    return int(v, 16) if v.lower().startswith("0x") else int(v)


def _parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "false"):
        return v == "true"
    return int(v) != 0


def _split_unit(value: str) -> tuple[str, str | None]:
    parts = value.split()
    if len(parts) == 2:
        return parts[0], parts[1]
    if len(parts) == 1:
        return parts[0], None
    raise ValueError("expected a value and an optional unit")


def _parse_clen(value: str) -> tuple[float | None, str | None, str]:
    """clen: ``0.1``, ``0.1 m``, ``100 mm`` → metres; a data path (unit mm unless given) → path."""
    v, unit = _split_unit(value)
    if unit not in (None, "m", "mm"):
        raise ValueError(f"unknown unit {unit!r} (m or mm)")
    if v.startswith("/"):
        return None, v, unit or "mm"
    metres = float(v) * (1e-3 if unit == "mm" else 1.0)
    return metres, None, "mm"


class _Parser:
    def __init__(self, text: str, source: str):
        self.source = source
        self.source_path = None if source.startswith("<") else Path(source)
        self.text = text
        self.defaults: dict = {}
        self.panels: dict[str, dict] = {}
        self.bad: dict[str, dict] = {}
        self.top: dict = {}
        self.warnings: list[str] = []
        self.global_clen: tuple | None = None
        self.pending_defaults: list[tuple[int, str]] = []

    def error(self, line: int, message: str) -> GeometryError:
        return GeometryError(f"{self.source} line {line}: {message}")

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(f"{self.source} line {line}: {message}")

    def parse(self) -> DetectorGeometry:
        for n, raw in enumerate(self.text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
            line = raw.split(";", 1)[0].strip()
            if not line:
                continue
            if "=" not in line:
                raise self.error(n, f"expected 'key = value', got {line!r}")
            key, value = (s.strip() for s in line.split("=", 1))
            if "/" in key:
                name, sub = key.split("/", 1)
                if not name or not sub:
                    raise self.error(n, f"bad key {key!r} (expected panel/key)")
                if name.startswith("bad"):
                    self._bad_field(n, name, sub, value)
                else:
                    if name not in self.panels:
                        state = copy.deepcopy(self.defaults)
                        state["_line"] = n
                        self.panels[name] = state
                        self.pending_defaults.clear()
                    self._panel_field(n, self.panels[name], f"{name}/{sub}", sub, value)
            else:
                self._toplevel(n, key, value)
        for n, key in self.pending_defaults:
            if key != "clen":
                self.warn(n, f"'{key}' comes after every panel and applies to none (CrystFEL applies "
                             "top-level values only to panels first mentioned later)")
        return self._build()

    def _toplevel(self, n: int, key: str, value: str) -> None:
        try:
            if key == "photon_energy":
                v, unit = _split_unit(value)
                if unit not in (None, "eV", "keV"):
                    raise ValueError(f"unknown unit {unit!r} (eV or keV)")
                scale = 1000.0 if unit == "keV" else 1.0
                if v.startswith("/"):
                    self.top.update(photon_energy_eV=None, photon_energy_path=v)
                    if unit == "keV":
                        self.top["photon_energy_scale"] = 1000.0
                else:
                    self.top.update(photon_energy_eV=float(v) * scale, photon_energy_path=None)
            elif key == "wavelength":
                v, unit = _split_unit(value)
                if unit not in ("m", "A"):
                    raise ValueError("wavelength needs a unit, m or A")
                if v.startswith("/"):
                    self.top.update(photon_energy_eV=None, photon_energy_path=v)
                    self.warn(n, "wavelength from a data-file path: kept as photon_energy_path")
                else:
                    lam_A = float(v) * (1e10 if unit == "m" else 1.0)
                    self.top.update(photon_energy_eV=HC_EV_A / lam_A, photon_energy_path=None)
            elif key == "photon_energy_scale":
                self.top["photon_energy_scale"] = float(value)
            elif key == "bandwidth":
                self.top["bandwidth"] = float(value)
            elif key in ("peak_list", "peak_info_location"):
                self.top["peak_list"] = value
            elif key == "peak_list_type":
                if value not in ("cxi", "list3", "auto"):
                    raise ValueError("expected cxi, list3 or auto")
                self.top["peak_list_type"] = value
            elif key in ("mask_good", "mask_bad"):
                self.top[key] = _parse_bits(value)
                self._panel_field(n, self.defaults, key, key, value)
                self._note_default(n, key)
            elif key.startswith(("rigid_group", "group_")) or key == "n_panels":
                pass  # panel hierarchy: accepted and ignored
            elif key in ("electron_voltage", "detector_shift_x", "detector_shift_y"):
                self.top.setdefault("unsupported", {})[key] = value
                self.warn(n, f"'{key}' is kept but not used by photonflow")
            else:
                self._panel_field(n, self.defaults, key, key, value)
                if key == "clen":
                    self.global_clen = _parse_clen(value)
                self._note_default(n, key)
        except GeometryError:
            raise
        except ValueError as exc:
            raise self.error(n, f"{key}: cannot parse {value!r} ({exc})") from None

    def _note_default(self, n: int, key: str) -> None:
        if self.panels:
            self.pending_defaults.append((n, key))

    def _panel_field(self, n: int, state: dict, label: str, key: str, value: str) -> None:
        try:
            if key in _PANEL_INTS:
                state[key] = _parse_int(value)
            elif key in _PANEL_FLOATS:
                state[key] = float(value)
            elif key in ("fs", "ss"):
                state[key] = _parse_vector(value)
            elif key == "clen":
                state["clen"], state["clen_path"], state["clen_path_unit"] = _parse_clen(value)
            elif key == "no_index":
                state[key] = _parse_bool(value)
            elif key in _PANEL_STRINGS:
                if key in ("data", "mask") and not value.startswith("/"):
                    raise ValueError("an HDF5 location must start with '/'")
                state[key] = value
            elif key in ("mask_good", "mask_bad"):
                state[key] = _parse_bits(value)
            elif key.startswith("dim"):
                index = int(key[3:])
                if value in ("fs", "ss", "%"):
                    entry = value
                else:
                    entry = int(value)
                    if entry < 0:
                        raise ValueError("a fixed index must be >= 0")
                dims = dict(state.get("_dims", {}))
                dims[index] = entry
                state["_dims"] = dims
            elif key in _PANEL_EXTRA or _MASK_N.match(key):
                state.setdefault("extra", {})[key] = value
            elif key == "rigid_group":
                pass
            else:
                self.warn(n, f"unknown key '{label}' ignored")
        except ValueError as exc:
            raise self.error(n, f"{label}: cannot parse {value!r} ({exc})") from None
        state.setdefault("_lines", {})[key] = n

    def _bad_field(self, n: int, name: str, key: str, value: str) -> None:
        state = self.bad.setdefault(name, {"_line": n})
        if key not in ("min_x", "max_x", "min_y", "max_y", "min_fs", "max_fs", "min_ss", "max_ss", "panel"):
            raise self.error(n, f"{name}/{key}: unknown bad-region key (min_x..max_y, min_fs..max_ss, panel)")
        try:
            if key in ("min_x", "max_x", "min_y", "max_y"):
                kind = "xy"
                state[key] = float(value)
            elif key in ("min_fs", "max_fs", "min_ss", "max_ss"):
                kind = "fsss"
                state[key] = _parse_int(value)
            else:
                kind = None
                state["panel"] = value
        except ValueError as exc:
            raise self.error(n, f"{name}/{key}: cannot parse {value!r} ({exc})") from None
        if kind is not None:
            if state.setdefault("_kind", kind) != kind:
                raise self.error(n, f"{name}/{key}: cannot mix x/y and fs/ss bounds in one bad region")

    def _build(self) -> DetectorGeometry:
        panels = []
        for name, st in self.panels.items():
            line = st["_line"]
            if "clen" not in st and self.global_clen is not None:
                st["clen"], st["clen_path"], st["clen_path_unit"] = self.global_clen
            for key in ("min_fs", "max_fs", "min_ss", "max_ss", "corner_x", "corner_y", "res"):
                if key not in st:
                    raise self.error(line, f"panel {name}: missing {name}/{key}")
            if "clen" not in st:
                raise self.error(line, f"panel {name}: no camera length (clen) given")
            for key, default in (("fs", (1.0, 0.0, 0.0)), ("ss", (0.0, 1.0, 0.0))):
                if key not in st:
                    st[key] = default
                    self.warn(line, f"panel {name}: no {key} direction, assuming {key} = "
                                    f"{'+x' if key == 'fs' else '+y'}")
            dims = st.get("_dims")
            if dims:
                if sorted(dims) != list(range(len(dims))):
                    raise self.error(line, f"panel {name}: dim entries {sorted(dims)} are not dim0..dim{len(dims) - 1}")
                dim_structure = tuple(dims[i] for i in range(len(dims)))
            else:
                dim_structure = _DEFAULT_DIMS
            if dim_structure.count("fs") != 1 or dim_structure.count("ss") != 1 or dim_structure.count("%") > 1:
                raise self.error(line, f"panel {name}: dims {dim_structure} need exactly one fs, one ss, at most one %")
            if dim_structure.index("ss") > dim_structure.index("fs"):
                raise self.error(line, f"panel {name}: the fs dimension must come after ss")
            try:
                panels.append(
                    Panel(
                        name=name,
                        min_fs=st["min_fs"], max_fs=st["max_fs"], min_ss=st["min_ss"], max_ss=st["max_ss"],
                        corner_x=st["corner_x"], corner_y=st["corner_y"], fs=st["fs"], ss=st["ss"],
                        res=st["res"], clen=st["clen"], clen_path=st.get("clen_path"),
                        clen_path_unit=st.get("clen_path_unit", "mm"), coffset=st.get("coffset", 0.0),
                        adu_per_photon=st.get("adu_per_photon"), adu_per_eV=st.get("adu_per_eV"),
                        max_adu=st.get("max_adu"), no_index=st.get("no_index", False), data=st.get("data"),
                        dim_structure=dim_structure, mask=st.get("mask"), mask_file=st.get("mask_file"),
                        mask_good=st.get("mask_good"), mask_bad=st.get("mask_bad"), extra=st.get("extra", {}),
                        line=line,
                    )
                )
            except ValueError as exc:
                raise self.error(line, f"panel {name}: {exc}") from None
        if not panels:
            raise GeometryError(f"{self.source}: no panels defined")
        bad = []
        for name, st in self.bad.items():
            fields = {k: v for k, v in st.items() if not k.startswith("_")}
            try:
                bad.append(BadRegion(name=name, line=st["_line"], **fields))
            except ValueError as exc:
                raise self.error(st["_line"], str(exc)) from None
        top = dict(self.top)
        return DetectorGeometry(
            panels, bad, top.pop("photon_energy_eV", None), source_path=self.source_path, warnings=self.warnings,
            **top
        )


def parse_geometry(text: str, source: str = "<string>") -> DetectorGeometry:
    """Parse CrystFEL geometry text; ``source`` names it in error messages.

    CrystFEL semantics: ``panel/key = value`` sets a panel's value; a top-level
    ``key = value`` sets the default for panels *first mentioned later* (``clen``
    also reaches panels that have none, as in CrystFEL ≥ 0.10); names starting
    with ``bad`` are bad regions; ``;`` starts a comment; rigid/group lines are
    ignored; unknown keys are listed in ``geometry.warnings``.
    """
    return _Parser(text, source).parse()


def load_geometry(path: str | os.PathLike) -> DetectorGeometry:
    """Read a CrystFEL ``.geom`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GeometryError(f"{path}: cannot read geometry file ({exc})") from None
    return parse_geometry(text, source=str(path))


# --------------------------------------------------------------------------------------------
# writing


def _num(v: float) -> str:
    """Shortest round-trip decimal without an exponent (CrystFEL's vector parser cannot take one)."""
    v = float(v)
    if v == 0.0:
        return "0"
    return np.format_float_positional(v, unique=True, trim="-")


def _vector(v: Sequence[float]) -> str:
    terms = []
    for value, axis in zip(v, "xyz"):
        if axis == "z" and value == 0.0:
            continue
        sign = "-" if value < 0 else "+"
        terms.append(f"{sign}{_num(abs(value))}{axis}")
    return " ".join(terms)


def _clen_text(p: Panel) -> str:
    if p.clen is not None:
        return _num(p.clen)
    return p.clen_path if p.clen_path_unit == "mm" else f"{p.clen_path} {p.clen_path_unit}"


def _format_geometry(g: DetectorGeometry) -> str:
    """CrystFEL .geom text that CrystFEL, cfelpyutils and OM read back (numbers without units)."""
    lines = ["; CrystFEL geometry written by photonflow.io.geom.write_geometry",
             f"; {len(g.panels)} panels, slab {g.slab_shape[0]} (ss) x {g.slab_shape[1]} (fs) pixels"]
    if g.photon_energy_eV is not None:
        lines.append(f"photon_energy = {_num(g.photon_energy_eV)}")
    elif g.photon_energy_path is not None:
        lines.append(f"photon_energy = {g.photon_energy_path}")
    if g.photon_energy_scale is not None:
        lines.append(f"photon_energy_scale = {_num(g.photon_energy_scale)}")
    if g.bandwidth is not None:
        lines.append(f"bandwidth = {_num(g.bandwidth)}")
    if g.peak_list is not None:
        lines.append(f"peak_list = {g.peak_list}")
    if g.peak_list_type is not None:
        lines.append(f"peak_list_type = {g.peak_list_type}")
    lines += [f"{k} = {v}" for k, v in g.unsupported.items()]

    def formatter(key: str):
        return {
            "res": lambda p: _num(p.res),
            "clen": _clen_text,
            "coffset": lambda p: _num(p.coffset),
            "adu_per_photon": lambda p: None if p.adu_per_photon is None else _num(p.adu_per_photon),
            "adu_per_eV": lambda p: None if p.adu_per_eV is None else _num(p.adu_per_eV),
            "max_adu": lambda p: None if p.max_adu is None else _num(p.max_adu),
            "data": lambda p: p.data,
            "mask": lambda p: p.mask,
            "mask_file": lambda p: p.mask_file,
            "mask_good": lambda p: None if p.mask_good is None else hex(p.mask_good),
            "mask_bad": lambda p: None if p.mask_bad is None else hex(p.mask_bad),
        }[key]

    shared_keys = ["res", "clen", "coffset", "adu_per_photon", "adu_per_eV", "max_adu", "data", "mask",
                   "mask_file", "mask_good", "mask_bad"]
    per_panel = []
    lines.append("")
    for key in shared_keys:
        values = {formatter(key)(p) for p in g.panels}
        if len(values) == 1:
            (value,) = values
            if value is not None:
                lines.append(f"{key} = {value}")
        else:
            per_panel.append(key)
    dims = {p.dim_structure for p in g.panels}
    shared_dims = len(dims) == 1
    if shared_dims:
        for i, entry in enumerate(next(iter(dims))):
            lines.append(f"dim{i} = {entry}")
    if "clen" in per_panel:
        lines.append("; per-panel clen: read by cfelpyutils, OM and CrystFEL < 0.10 (0.10+ wants one clen)")
    for p in g.panels:
        lines.append("")
        n = p.name
        lines += [f"{n}/min_fs = {p.min_fs}", f"{n}/max_fs = {p.max_fs}",
                  f"{n}/min_ss = {p.min_ss}", f"{n}/max_ss = {p.max_ss}",
                  f"{n}/corner_x = {_num(p.corner_x)}", f"{n}/corner_y = {_num(p.corner_y)}",
                  f"{n}/fs = {_vector(p.fs)}", f"{n}/ss = {_vector(p.ss)}"]
        for key in per_panel:
            value = formatter(key)(p)
            if value is not None:
                lines.append(f"{n}/{key} = {value}")
        if not shared_dims:
            lines += [f"{n}/dim{i} = {entry}" for i, entry in enumerate(p.dim_structure)]
        if p.no_index:
            lines.append(f"{n}/no_index = 1")
        lines += [f"{n}/{k} = {v}" for k, v in p.extra.items()]
    for r in g.bad_regions:
        lines.append("")
        keys = ("min_fs", "max_fs", "min_ss", "max_ss") if r.is_fsss else ("min_x", "max_x", "min_y", "max_y")
        for key in keys:
            value = getattr(r, key)
            if value is not None:
                lines.append(f"{r.name}/{key} = {value if r.is_fsss else _num(value)}")
        if r.panel is not None:
            lines.append(f"{r.name}/panel = {r.panel}")
    return "\n".join(lines) + "\n"


def write_geometry(geometry: DetectorGeometry, path: str | os.PathLike) -> Path:
    """Write ``geometry`` as a CrystFEL ``.geom`` file (atomically); return the path.

    Values shared by all panels are written once at the top (CrystFEL defaults),
    the rest per panel; numbers are exact (shortest round-trip decimals).
    """
    return atomic_write_text(path, _format_geometry(geometry))


# --------------------------------------------------------------------------------------------
# simulated detectors


def simulated_detector(
    n_asics_fs: int = 8,
    n_asics_ss: int = 8,
    asic_size: int = 240,
    pixel_size_um: float = 75.0,
    clen_mm: float = 100.0,
    gap_px: float = 4.0,
    photon_energy_eV: float = 9500.0,
    *,
    beam_fs_ss: tuple[float, float] | None = None,
    data: str = "/entry_1/data_1/data",
    dim_structure: Sequence = ("%", "ss", "fs"),
    adu_per_photon: float = 1.0,
    bad_regions: Sequence[BadRegion] = (),
    peak_list: str | None = "/entry_1/result_1",
) -> DetectorGeometry:
    """A slab of ``n_asics_ss`` × ``n_asics_fs`` square ASICs with physical gaps between them.

    ASICs are contiguous in the slab (panel ``p{k}``, k row-major) and spaced by
    ``gap_px`` pixels in the lab; fs = +x, ss = +y. The beam (lab x = y = 0) hits
    the slab at Cheetah coordinate ``beam_fs_ss``, by default
    ``(n_fs/2 + 1.3, n_ss/2 + 1.6)``: a pixel just past the middle gap, 0.3 and
    0.4 pixels off its centre.
    """
    a = int(asic_size)
    n_fs, n_ss = n_asics_fs * a, n_asics_ss * a
    if beam_fs_ss is None:
        beam_fs_ss = (n_fs / 2 + 1.3, n_ss / 2 + 1.6)
    bfs, bss = (float(v) for v in beam_fs_ss)
    if not (-0.5 <= bfs < n_fs - 0.5 and -0.5 <= bss < n_ss - 0.5):
        raise ValueError(f"beam_fs_ss {beam_fs_ss} is outside the {n_ss}x{n_fs} slab")
    col_b, row_b = int((bfs + 0.5) // a), int((bss + 0.5) // a)
    # CrystFEL panel coordinates of the beam; rounding to 1e-9 pixel keeps the file's numbers tidy
    u_b, v_b = round(bfs + 0.5 - col_b * a, 9), round(bss + 0.5 - row_b * a, 9)
    step = a + float(gap_px)
    res = 1e6 / float(pixel_size_um)
    panels = []
    for row in range(n_asics_ss):
        for col in range(n_asics_fs):
            panels.append(
                Panel(
                    name=f"p{row * n_asics_fs + col}",
                    min_fs=col * a, max_fs=col * a + a - 1, min_ss=row * a, max_ss=row * a + a - 1,
                    corner_x=round((col - col_b) * step - u_b, 9), corner_y=round((row - row_b) * step - v_b, 9),
                    fs=(1.0, 0.0, 0.0), ss=(0.0, 1.0, 0.0), res=res, clen=clen_mm / 1000.0,
                    adu_per_photon=adu_per_photon, data=data, dim_structure=tuple(dim_structure),
                )
            )
    return DetectorGeometry(panels, bad_regions, photon_energy_eV, peak_list=peak_list)
