"""Column tables (per-frame summaries: integral parameters, hit scores, ...) as CSV or HDF5.

A table is a ``dict`` of equally long 1D columns, written in the dict's order.
Numbers keep full precision (CSV: ``repr``, 17 significant digits); NaN is
written as ``nan``; strings are quoted as needed (``csv`` module).
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from .atomic import atomic_path, atomic_write_text

__all__ = ["write_table_csv", "read_table_csv", "write_table_hdf5", "read_table_hdf5"]


def _columns(path, columns: dict) -> dict[str, np.ndarray]:
    cols = {str(k): np.asarray(v) for k, v in columns.items()}
    lengths = {k: (v.shape[0] if v.ndim == 1 else None) for k, v in cols.items()}
    if any(n is None for n in lengths.values()):
        raise ValueError(f"{path}: table columns must be 1D: {[k for k, n in lengths.items() if n is None]}")
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{path}: table columns differ in length: {lengths}")
    return cols


def write_table_csv(path: str | os.PathLike, columns: dict) -> Path:
    """Write ``columns`` (name → 1D array-like) as CSV with a header row, atomically."""
    cols = _columns(path, columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols.keys())
    as_lists = [v.tolist() for v in cols.values()]
    writer.writerows(zip(*as_lists, strict=True))
    return atomic_write_text(path, buf.getvalue())


def _convert(values: list[str]) -> np.ndarray:
    for dtype in (np.int64, np.float64):
        try:
            return np.array(values, dtype=dtype)
        except (ValueError, OverflowError):
            pass
    if all(v in ("True", "False") for v in values):
        return np.array([v == "True" for v in values])
    return np.array(values, dtype=str)


def read_table_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a CSV table → ``{name: array}``; numeric columns become int64/float64, else str."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{path}: empty CSV file (no header row)")
    names, body = rows[0], rows[1:]
    return {name: _convert([r[i] for r in body]) for i, name in enumerate(names)}


def write_table_hdf5(path: str | os.PathLike, columns: dict, group: str = "table") -> Path:
    """Write ``columns`` as datasets of HDF5 ``group``, atomically.

    An existing file is copied and only ``group`` is replaced (other groups are
    kept); the column order is stored in the group's ``columns`` attribute.
    """
    cols = _columns(path, columns)
    bad = [name for name in cols if "/" in name or name in ("", ".")]
    if bad:
        raise ValueError(f"{path}: column names {bad} cannot be HDF5 dataset names")
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.exists():
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as f:
            if group in f:
                del f[group]
            g = f.create_group(group)
            g.attrs["columns"] = list(cols)
            for name, values in cols.items():
                if values.dtype.kind in "USO":
                    g.create_dataset(name, data=values.astype(str).tolist(), dtype=h5py.string_dtype("utf-8"))
                else:
                    g.create_dataset(name, data=values)
    return path


def read_table_hdf5(path: str | os.PathLike, group: str = "table") -> dict[str, np.ndarray]:
    """Read a table written by :func:`write_table_hdf5` → ``{name: array}`` in column order."""
    with h5py.File(path, "r") as f:
        g = f[group]
        names = [str(n) for n in g.attrs.get("columns", list(g.keys()))]
        out = {}
        for name in names:
            ds = g[name]
            out[name] = ds.asstr()[()].astype(str) if h5py.check_string_dtype(ds.dtype) else ds[()]
        return out


def json_safe(value):
    """``value`` with NaN and infinities as None and numpy scalars as Python numbers, recursively
    through dicts, lists and tuples: what browsers' ``JSON.parse`` accepts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return json_safe(value.item())  # numpy scalars
    return value
