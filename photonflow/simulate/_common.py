"""Pieces the detector simulators share: a per-geometry cache, the solvent (water) profile and the
geometry file written beside simulated CXI files."""

from __future__ import annotations

import copy
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def cached_per_geometry(cache: dict[int, tuple[Any, Any]], geometry, build: Callable[[Any], Any]):
    """``build(geometry)``, computed once per geometry object and kept while it lives (at most 16)."""
    key = id(geometry)
    entry = cache.get(key)
    if entry is not None:
        ref, value = entry
        if (ref() if callable(ref) else ref) is geometry:
            return value
    value = build(geometry)
    try:
        ref = weakref.ref(geometry, lambda _r, k=key: cache.pop(k, None))
    except TypeError:  # not weak-referenceable: keep it alive with the cache
        ref = geometry
    if len(cache) > 16:
        cache.clear()
    cache[key] = (ref, value)
    return value


def water_profile(q: np.ndarray, q0_nm: float, sigma_nm: float, shoulder) -> np.ndarray:
    """Water scattering against q (nm⁻¹), in q's dtype: a Gaussian of centre ``q0_nm`` and width
    ``sigma_nm`` plus a shoulder (relative height, centre nm⁻¹, width nm⁻¹); 1 at q0 (no weights)."""
    t = q.dtype.type
    h2, q2, s2 = (t(v) for v in shoulder)
    zw = (q - t(q0_nm)) / t(sigma_nm)
    z2 = (q - q2) / s2
    return np.exp(t(-0.5) * zw * zw) + h2 * np.exp(t(-0.5) * z2 * z2)


def check_dataset_args(directory, n_frames, frames_per_file, dtype, compression) -> tuple[Path, int, int, np.dtype]:
    """The arguments of a simulated CXI dataset writer, checked before any file is written: counts ≥ 1,
    dtype float32 or int32, a known compression name. Makes the directory; returns
    ``(directory, n_frames, frames_per_file, dtype)``."""
    from ..io.compression import dataset_compression

    n_frames = int(n_frames)
    frames_per_file = int(frames_per_file)
    if n_frames < 1 or frames_per_file < 1:
        raise ValueError(f"n_frames and frames_per_file must be ≥ 1, got {n_frames}, {frames_per_file}")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.int32)):
        raise ValueError(f"dtype must be float32 or int32, got {dtype}")
    dataset_compression(compression)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return directory, n_frames, frames_per_file, dtype


def write_cxi_geometry(geometry, path: str | os.PathLike, adu_per_photon: float, max_adu: float | None = None) -> Path:
    """Write a copy of ``geometry`` that describes the CXI files of
    :func:`photonflow.io.cxi.write_cxi_frames` (data path, dims ``%, ss, fs``, ``adu_per_photon``
    and no ``adu_per_eV``; the saturation ``max_adu`` when given) as a ``.geom`` file."""
    from ..io.geom import write_geometry

    g = copy.deepcopy(geometry)
    for p in g.panels:
        p.data = "/entry_1/data_1/data"
        p.dim_structure = ("%", "ss", "fs")
        p.adu_per_photon = float(adu_per_photon)
        p.adu_per_eV = None
        if max_adu is not None:
            p.max_adu = float(max_adu)
    return Path(write_geometry(g, path))
