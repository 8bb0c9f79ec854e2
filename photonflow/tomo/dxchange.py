"""DXchange tomography files: ``/exchange/data`` (projections), ``data_white`` (flats),
``data_dark`` (darks) and ``theta`` (degrees).

Optional: ``/exchange/data_white_end`` (flats taken after the scan; with it, ``data_white`` are the
flats before), a monitor dataset (I0 per projection, path given by the caller; photonflow writes
``/exchange/monitor``). Compressed datasets are read through hdf5plugin; HDF5 external links are
followed (beamlines often write a master file that links into data files). Every problem is raised
as :class:`DxchangeError` naming the file, the dataset and the reason, before any work starts.

Reading for the pipeline: :func:`open_scan` (checks and describes, arrays stay on disk), then
:func:`read_projections` and :func:`read_references` by blocks. Whole files in memory:
:func:`read_dxchange`. Writing: :func:`write_dxchange` (the simulator's scans, test data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the compression filters
import numpy as np

from photonflow.errors import InputError

from ..io.compression import dataset_compression

DATA, FLATS, FLATS_END, DARKS, THETA = (
    "/exchange/data",
    "/exchange/data_white",
    "/exchange/data_white_end",
    "/exchange/data_dark",
    "/exchange/theta",
)
MONITOR = "/exchange/monitor"


class DxchangeError(InputError, ValueError):
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
        return {
            "path": self.path,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "n_flats": self.n_flats,
            "n_flats_end": self.n_flats_end,
            "n_darks": self.n_darks,
            "monitor": self.monitor,
            "theta_range_deg": [float(self.theta_deg.min()), float(self.theta_deg.max())],
            "raw_gib": self.nbytes / 2**30,
        }


def _dataset(f: h5py.File, path: str, name: str, required: bool = True):
    try:
        obj = f.get(name)
    except (KeyError, OSError) as exc:  # a dangling external link: the linked file is missing
        raise DxchangeError(
            f"{path}: {name}: cannot be opened ({exc}); is an externally linked file missing?"
        ) from None
    if obj is None:
        link = f.get(name, getlink=True) if _parent_exists(f, name) else None
        if isinstance(link, h5py.ExternalLink):
            raise DxchangeError(
                f"{path}: {name}: external link to {link.filename}:{link.path} cannot be followed "
                "(file or dataset missing)"
            )
        if required:
            raise DxchangeError(
                f"{path}: {name}: not found (a DXchange file needs /exchange/data, data_white, data_dark and theta)"
            )
        return None
    if not isinstance(obj, h5py.Dataset):
        raise DxchangeError(f"{path}: {name}: is a group, not a dataset")
    return obj


def _open(path: str) -> h5py.File:
    if not Path(path).is_file():
        raise DxchangeError(f"{path}: file not found")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DxchangeError(f"{path}: not a readable HDF5 file ({exc})") from None


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
    with _open(path) as f:
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
                raise DxchangeError(
                    f"{path}: {name}: expected at least one frame (k, rows, cols), got shape {ds.shape}"
                )
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
        return DxchangeScan(
            path=path,
            shape=tuple(int(s) for s in data.shape),
            dtype=str(data.dtype),
            theta_deg=theta,
            n_flats=frames[FLATS],
            n_flats_end=frames[FLATS_END],
            n_darks=frames[DARKS],
            monitor=monitor,
        )


def read_projections(scan: DxchangeScan, start: int, stop: int, rows: slice | None = None) -> np.ndarray:
    """Projections ``start .. stop-1`` (rows ``rows``, all by default) as float32."""
    with h5py.File(scan.path, "r") as f:
        sel = (slice(start, stop), rows or slice(None), slice(None))
        block = np.asarray(f[DATA][sel], dtype=np.float32)
    bad = ~np.isfinite(block)
    if bad.any():
        k, r, c = np.argwhere(bad)[0]
        raise DxchangeError(
            f"{scan.path}: {DATA}: projection {start + k} has NaN or inf (row {(rows or slice(0)).start or 0} + {r}, "
            f"column {c}; {int(bad.sum())} such pixels in projections {start}..{stop - 1})"
        )
    return block


def read_references(scan: DxchangeScan, rows: slice | None = None) -> dict[str, np.ndarray | None]:
    """Flats (before), flats after (or None), darks and the monitor (or None), rows ``rows``."""
    sel = (slice(None), rows or slice(None), slice(None))
    with h5py.File(scan.path, "r") as f:
        out = {
            "flats": np.asarray(f[FLATS][sel], dtype=np.float32),
            "flats_end": np.asarray(f[FLATS_END][sel], dtype=np.float32) if scan.n_flats_end else None,
            "darks": np.asarray(f[DARKS][sel], dtype=np.float32),
            "monitor": np.asarray(f[scan.monitor][()], dtype=np.float64).ravel() if scan.monitor else None,
        }
    return out


@dataclass
class DXchangeData:
    """What :func:`read_dxchange` returns (arrays in memory, as stored)."""

    data: np.ndarray
    flats: np.ndarray
    darks: np.ndarray
    theta_deg: np.ndarray
    monitor: np.ndarray | None


def read_dxchange(path) -> DXchangeData:
    """Read a whole DXchange file into memory: projections, flats (``data_white``), darks, theta and
    ``/exchange/monitor`` when present, in their stored types (external links followed). A missing
    dataset or a broken link raises :class:`DxchangeError` as :func:`open_scan` does; the values are
    not checked (:func:`open_scan` checks them)."""
    path = os.fspath(path)
    with _open(path) as f:
        arrays = {
            key: _dataset(f, path, name)[()]
            for key, name in (("data", DATA), ("flats", FLATS), ("darks", DARKS), ("theta_deg", THETA))
        }
        monitor = _dataset(f, path, MONITOR, required=False)
        return DXchangeData(**arrays, monitor=None if monitor is None else monitor[()])


def write_dxchange(
    path,
    data: np.ndarray,
    flats: np.ndarray,
    darks: np.ndarray,
    theta_deg,
    *,
    compression: str | None = "blosc-lz4",
    monitor=None,
    external_links: bool = False,
) -> Path:
    """Write a DXchange HDF5 file: ``/exchange/data`` (n_proj, rows, cols) uint16,
    ``/exchange/data_white``, ``/exchange/data_dark``, ``/exchange/theta`` (degrees) and, if given,
    ``/exchange/monitor`` (counts per projection; a photonflow convention). Images are chunked one
    frame per chunk and compressed with ``compression`` (:func:`image_compression`).

    ``external_links=True``: the three image stacks go to ``<stem>_data.h5`` beside the master and
    the master links them with :class:`h5py.ExternalLink` (relative file name), as beamlines do.
    Returns the master path.
    """
    path = Path(path)
    theta = np.asarray(theta_deg, dtype=np.float64).reshape(-1)
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"write_dxchange {path}: data must be (n_proj, rows, cols), got shape {data.shape}")
    if theta.size != data.shape[0]:
        raise ValueError(f"write_dxchange {path}: {theta.size} angles for {data.shape[0]} projections")
    kw = image_compression(compression)
    stacks = {"data": data, "data_white": np.asarray(flats), "data_dark": np.asarray(darks)}

    def _write_stacks(group):
        for name, arr in stacks.items():
            arr = arr.astype(np.uint16, copy=False)
            chunks = (1,) + arr.shape[1:] if arr.shape[0] > 0 else None
            group.create_dataset(name, data=arr, chunks=chunks, **(kw if chunks else {}))

    data_file = path.with_name(path.stem + "_data.h5")
    if external_links:
        with h5py.File(data_file, "w") as f:
            _write_stacks(f.require_group("exchange"))
    with h5py.File(path, "w") as f:
        ex = f.require_group("exchange")
        if external_links:
            for name in stacks:
                ex[name] = h5py.ExternalLink(data_file.name, f"/exchange/{name}")
        else:
            _write_stacks(ex)
        ds = ex.create_dataset("theta", data=theta)
        ds.attrs["units"] = "degrees"
        if monitor is not None:
            ex.create_dataset("monitor", data=np.asarray(monitor, dtype=np.float64))
        f.attrs["implements"] = "exchange"
    return path


def image_compression(compression: str | None) -> dict:
    """h5py dataset keywords of the image stacks :func:`write_dxchange` writes: a
    :func:`~photonflow.io.compression.dataset_compression` name (None, "gzip" — level 4 after the
    byte shuffle —, "lz4", "blosc-lz4", "blosc-zstd", "bitshuffle-lz4")."""
    return dataset_compression(compression, gzip_shuffle=True)
