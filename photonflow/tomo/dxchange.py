"""Reading DXchange tomography files: ``/exchange/data`` (projections), ``data_white`` (flats),
``data_dark`` (darks) and ``theta`` (degrees).

Optional: ``/exchange/data_white_end`` (flats taken after the scan; with it, ``data_white`` are the
flats before), a monitor dataset (I0 per projection, path given by the caller). Compressed
datasets are read through hdf5plugin; HDF5 external links are followed (beamlines often write a
master file that links into data files). Every problem is raised as :class:`DxchangeError` naming
the file, the dataset and the reason, before any work starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the compression filters
import numpy as np

DATA, FLATS, FLATS_END, DARKS, THETA = ("/exchange/data", "/exchange/data_white", "/exchange/data_white_end",
                                         "/exchange/data_dark", "/exchange/theta")


class DxchangeError(ValueError):
    """A DXchange file that cannot be used: names the file, dataset and reason."""


@dataclass
class DxchangeScan:
    """What a scan holds (shapes and metadata; the arrays stay on disk)."""

    path: str
    shape: tuple[int, int, int]  # (projections, rows, cols)
    dtype: str
    theta_deg: np.ndarray  # (projections,)
    n_flats: int
    n_flats_end: int
    n_darks: int
    monitor: str | None = None  # dataset path of the I0 monitor, if used

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict:
        return {"path": self.path, "shape": list(self.shape), "dtype": self.dtype, "n_flats": self.n_flats,
                "n_flats_end": self.n_flats_end, "n_darks": self.n_darks, "monitor": self.monitor,
                "theta_range_deg": [float(self.theta_deg.min()), float(self.theta_deg.max())],
                "raw_gib": self.nbytes / 2**30}


def _dataset(f: h5py.File, path: str, name: str, required: bool = True):
    try:
        obj = f.get(name)
    except (KeyError, OSError) as exc:  # a dangling external link: the linked file is missing
        raise DxchangeError(f"{path}: {name}: cannot be opened ({exc}); is an externally linked file missing?") from None
    if obj is None:
        link = f.get(name, getlink=True) if _parent_exists(f, name) else None
        if isinstance(link, h5py.ExternalLink):
            raise DxchangeError(f"{path}: {name}: external link to {link.filename}:{link.path} cannot be followed "
                                "(file or dataset missing)")
        if required:
            raise DxchangeError(f"{path}: {name}: not found (a DXchange file needs /exchange/data, data_white, "
                                "data_dark and theta)")
        return None
    if not isinstance(obj, h5py.Dataset):
        raise DxchangeError(f"{path}: {name}: is a group, not a dataset")
    return obj


def _parent_exists(f, name):
    parent = name.rsplit("/", 1)[0] or "/"
    return parent in f


def open_scan(path, monitor: str | None = None) -> DxchangeScan:
    """Check a DXchange file and describe it. Raises :class:`DxchangeError` for: a missing file or
    dataset (including unresolvable external links), projections that are not 3D, flats or darks
    missing or of another frame shape, non-finite flats, darks or (sampled: first, middle, last)
    float projections, theta of the wrong length or not finite, a monitor of the wrong length or
    with non-positive values. Pass 1 checks every projection it reads (:func:`read_projections`)."""
    path = os.fspath(path)
    if not Path(path).is_file():
        raise DxchangeError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DxchangeError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        data = _dataset(f, path, DATA)
        if data.ndim != 3:
            raise DxchangeError(f"{path}: {DATA}: expected (projections, rows, cols), got shape {data.shape}")
        n = data.shape[0]
        frames = {}
        for name, required in ((FLATS, True), (FLATS_END, False), (DARKS, True)):
            ds = _dataset(f, path, name, required)
            if ds is None:
                frames[name] = 0
                continue
            if ds.ndim != 3 or ds.shape[0] == 0:
                raise DxchangeError(f"{path}: {name}: expected at least one frame (k, rows, cols), got shape {ds.shape}")
            if ds.shape[1:] != data.shape[1:]:
                raise DxchangeError(f"{path}: {name}: frames are {ds.shape[1:]}, projections {data.shape[1:]}")
            frames[name] = ds.shape[0]
        theta = np.asarray(_dataset(f, path, THETA)[()], dtype=np.float64).ravel()
        if len(theta) != n:
            raise DxchangeError(f"{path}: {THETA}: {len(theta)} angles for {n} projections")
        if not np.all(np.isfinite(theta)):
            raise DxchangeError(f"{path}: {THETA}: non-finite angles")
        for name in (FLATS, FLATS_END, DARKS):
            if frames[name] and f[name].dtype.kind == "f" and not np.all(np.isfinite(f[name][()])):
                raise DxchangeError(f"{path}: {name}: contains NaN or inf")
        if data.dtype.kind == "f":  # sample first, middle and last projections (reading all could take hours)
            for k in sorted({0, n // 2, n - 1}):
                if not np.all(np.isfinite(data[k])):
                    raise DxchangeError(f"{path}: {DATA}: projection {k} contains NaN or inf")
        if monitor:
            m = np.asarray(_dataset(f, path, monitor)[()], dtype=np.float64).ravel()
            if len(m) != n:
                raise DxchangeError(f"{path}: {monitor}: {len(m)} monitor values for {n} projections")
            if not np.all(np.isfinite(m)) or np.any(m <= 0):
                raise DxchangeError(f"{path}: {monitor}: monitor values must be finite and positive")
        return DxchangeScan(path=path, shape=tuple(int(s) for s in data.shape), dtype=str(data.dtype),
                            theta_deg=theta, n_flats=frames[FLATS], n_flats_end=frames[FLATS_END],
                            n_darks=frames[DARKS], monitor=monitor)


def read_projections(scan: DxchangeScan, start: int, stop: int, rows: slice | None = None) -> np.ndarray:
    """Projections ``start .. stop-1`` (rows ``rows``, all by default) as float32."""
    with h5py.File(scan.path, "r") as f:
        sel = (slice(start, stop), rows or slice(None), slice(None))
        block = np.asarray(f[DATA][sel], dtype=np.float32)
    bad = ~np.isfinite(block)
    if bad.any():
        k, r, c = np.argwhere(bad)[0]
        raise DxchangeError(f"{scan.path}: {DATA}: projection {start + k} has NaN or inf (row {(rows or slice(0)).start or 0} + {r}, "
                            f"column {c}; {int(bad.sum())} such pixels in projections {start}..{stop - 1})")
    return block


def read_references(scan: DxchangeScan, rows: slice | None = None) -> dict[str, np.ndarray | None]:
    """Flats (before), flats after (or None), darks and the monitor (or None), rows ``rows``."""
    sel = (slice(None), rows or slice(None), slice(None))
    with h5py.File(scan.path, "r") as f:
        out = {"flats": np.asarray(f[FLATS][sel], dtype=np.float32),
               "flats_end": np.asarray(f[FLATS_END][sel], dtype=np.float32) if scan.n_flats_end else None,
               "darks": np.asarray(f[DARKS][sel], dtype=np.float32),
               "monitor": np.asarray(f[scan.monitor][()], dtype=np.float64).ravel() if scan.monitor else None}
    return out
