"""Writing a :class:`~photonflow.io.geom_model.DetectorGeometry` as a CrystFEL ``.geom`` file
that CrystFEL, cfelpyutils and OM read back (exact numbers, shared values written once)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .geom_model import DetectorGeometry, Panel

__all__ = ["write_geometry"]


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
    lines = [
        "; CrystFEL geometry written by photonflow.io.geom.write_geometry",
        f"; {len(g.panels)} panels, slab {g.slab_shape[0]} (ss) x {g.slab_shape[1]} (fs) pixels",
    ]
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

    shared_keys = [
        "res",
        "clen",
        "coffset",
        "adu_per_photon",
        "adu_per_eV",
        "max_adu",
        "data",
        "mask",
        "mask_file",
        "mask_good",
        "mask_bad",
    ]
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
        lines += [
            f"{n}/min_fs = {p.min_fs}",
            f"{n}/max_fs = {p.max_fs}",
            f"{n}/min_ss = {p.min_ss}",
            f"{n}/max_ss = {p.max_ss}",
            f"{n}/corner_x = {_num(p.corner_x)}",
            f"{n}/corner_y = {_num(p.corner_y)}",
            f"{n}/fs = {_vector(p.fs)}",
            f"{n}/ss = {_vector(p.ss)}",
        ]
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
