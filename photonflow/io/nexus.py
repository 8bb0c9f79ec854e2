"""Batches of 1D curves as NeXus ``NXdata`` in HDF5 (one file per batch).

Layout written by :func:`write_curves`::

    /                        @default="entry", @creator="photonflow"
    /entry                   NXentry, @default="data", @<attrs...>
    /entry/data              NXdata, @signal="I", @axes=[".", "q"], @q_indices=1
    /entry/data/q            (nbins,)    float64, @units="1/nm"
    /entry/data/I            (n, nbins)  float64, @units="counts/pixel"
    /entry/data/I_errors     (n, nbins)  float64  (NeXus name for I's uncertainties)
    /entry/data/frame_id     (n,)        UTF-8 strings, e.g. "scan_001.h5:17"
    /entry/data/<extra>      (n, ...)    per-frame values (integral parameters, ...)

Empty bins are NaN.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .atomic import atomic_path

__all__ = ["Curves", "write_curves", "read_curves"]

_RESERVED = {"q", "I", "I_errors", "frame_id"}


@dataclass
class Curves:
    """Curves read back by :func:`read_curves`; ``intensity``/``sigma`` are (n, nbins)."""

    q: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray | None
    frame_ids: list[str]
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)


def _attr_value(value):
    """HDF5-storable attribute value; dicts and lists of mixed things go in as JSON."""
    if isinstance(value, (str, bytes, int, float, bool, np.generic)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value
    return json.dumps(value, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))


def write_curves(
    path: str | os.PathLike,
    q,
    intensity,
    sigma,
    frame_ids,
    extra: dict | None = None,
    attrs: dict | None = None,
    intensity_units: str = "counts/pixel",
) -> Path:
    """Write ``n`` curves sharing one q axis as NeXus NXdata, atomically; return the path.

    ``q`` (nbins,) in nm⁻¹; ``intensity``, ``sigma`` (n, nbins) (sigma may be
    None); ``frame_ids`` n strings; ``extra`` per-frame arrays with first
    dimension n; ``attrs`` stored on ``/entry`` (dicts/lists as JSON strings).
    """
    q = np.asarray(q, dtype=float)
    intensity = np.atleast_2d(np.asarray(intensity, dtype=float))
    n, nbins = intensity.shape
    if q.shape != (nbins,):
        raise ValueError(f"{path}: q has shape {q.shape}, intensity has {nbins} bins")
    frame_ids = [str(f) for f in frame_ids]
    if len(frame_ids) != n:
        raise ValueError(f"{path}: {len(frame_ids)} frame ids for {n} curves")
    if sigma is not None:
        sigma = np.atleast_2d(np.asarray(sigma, dtype=float))
        if sigma.shape != intensity.shape:
            raise ValueError(f"{path}: sigma has shape {sigma.shape}, intensity {intensity.shape}")
    extra = {k: np.asarray(v) for k, v in (extra or {}).items()}
    for key, value in extra.items():
        if key in _RESERVED or value.ndim == 0 or value.shape[0] != n:
            raise ValueError(f"{path}: extra {key!r} must be a per-frame array of length {n}, not a reserved name")

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["default"] = "entry"
            f.attrs["creator"] = "photonflow"
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            entry.attrs["default"] = "data"
            for key, value in (attrs or {}).items():
                entry.attrs[key] = _attr_value(value)
            data = entry.create_group("data")
            data.attrs["NX_class"] = "NXdata"
            data.attrs["signal"] = "I"
            data.attrs["axes"] = [".", "q"]
            data.attrs["q_indices"] = np.int64(1)
            dq = data.create_dataset("q", data=q)
            dq.attrs["units"] = "1/nm"
            dq.attrs["long_name"] = "q (1/nm)"
            di = data.create_dataset("I", data=intensity)
            di.attrs["units"] = intensity_units
            if sigma is not None:
                de = data.create_dataset("I_errors", data=sigma)
                de.attrs["units"] = intensity_units
            data.create_dataset("frame_id", data=frame_ids, dtype=h5py.string_dtype("utf-8"))
            for key, value in extra.items():
                if value.dtype.kind in "US":
                    data.create_dataset(key, data=value.astype(str).tolist(), dtype=h5py.string_dtype("utf-8"))
                else:
                    data.create_dataset(key, data=value)
    return Path(path)


def read_curves(path: str | os.PathLike) -> Curves:
    """Read a file written by :func:`write_curves`."""
    with h5py.File(path, "r") as f:
        data = f["entry/data"]
        extra = {}
        for key, ds in data.items():
            if key in _RESERVED or not isinstance(ds, h5py.Dataset):
                continue
            extra[key] = ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) else ds[()]
        attrs = {
            k: (v.decode() if isinstance(v, bytes) else v)
            for k, v in f["entry"].attrs.items()
            if k not in ("NX_class", "default")
        }
        return Curves(
            q=data["q"][()],
            intensity=data["I"][()],
            sigma=data["I_errors"][()] if "I_errors" in data else None,
            frame_ids=list(data["frame_id"].asstr()[()]),
            extra=extra,
            attrs=attrs,
        )
