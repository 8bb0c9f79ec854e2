"""CrystFEL detector geometry: the model (panels, bad regions, the detector), its pixel maps and ray projection.

Read and written by :mod:`photonflow.io.geom_parser` and :mod:`photonflow.io.geom_writer`;
:mod:`photonflow.io.geom` gathers all of it under one name.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from photonflow.errors import InputError

__all__ = ["HC_EV_A", "AsicLayout", "BadRegion", "DetectorGeometry", "GeometryError", "Panel"]

HC_EV_A = 12398.419843320026
"""h·c in eV·Å: wavelength (Å) = HC_EV_A / photon energy (eV)."""

_DEFAULT_DIMS = ("ss", "fs")


class GeometryError(InputError, ValueError):
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
        ss, fs = np.meshgrid(np.arange(p.height, dtype=np.float64), np.arange(p.width, dtype=np.float64), indexing="ij")
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
                raise GeometryError(
                    f"{self._label}: panel {p.name}: mask {p.mask} is in the data files; "
                    "give the data file to read it from"
                )
            key = (str(path), p.mask)
            if key not in cache:
                try:
                    with h5py.File(path, "r") as f:
                        ds = f[p.mask]
                        values = ds[()] if ds.ndim == 2 else ds[0 if event is None else int(event)]
                except (OSError, KeyError, IndexError) as exc:
                    raise GeometryError(
                        f"{self._label}: panel {p.name}: cannot read mask {p.mask} from {path}: {exc}"
                    ) from None
                if values.shape != tuple(self.slab_shape):
                    raise GeometryError(
                        f"{self._label}: panel {p.name}: mask {p.mask} in {path} has shape "
                        f"{values.shape}, the slab is {tuple(self.slab_shape)}"
                    )
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
