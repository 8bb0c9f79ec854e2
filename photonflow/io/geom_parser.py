"""Reading CrystFEL ``.geom`` files into a :class:`~photonflow.io.geom_model.DetectorGeometry`.

CrystFEL semantics: ``panel/key = value`` sets a panel's value; a top-level ``key = value`` is the
default for panels first mentioned later; names starting with ``bad`` are bad regions; ``;``
starts a comment. Every error names the file and line (:class:`~photonflow.io.geom_model.GeometryError`).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

from .geom_model import _DEFAULT_DIMS, HC_EV_A, BadRegion, DetectorGeometry, GeometryError, Panel

__all__ = ["load_geometry", "parse_geometry"]

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_TERM = re.compile(rf"([+-]?)({_NUMBER})?([xyz])")
_PANEL_FLOATS = {"corner_x", "corner_y", "res", "coffset", "adu_per_eV", "adu_per_photon", "max_adu"}
_PANEL_INTS = {"min_fs", "max_fs", "min_ss", "max_ss"}
_PANEL_STRINGS = {"data", "mask", "mask_file"}
_PANEL_EXTRA = {
    "saturation_map",
    "saturation_map_file",
    "badrow_direction",
    "mask_edge_pixels",
    "flag_lessthan",
    "flag_morethan",
    "flag_equal",
    "rail_direction",
    "clen_for_centering",
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
                self.warn(
                    n,
                    f"'{key}' comes after every panel and applies to none (CrystFEL applies "
                    "top-level values only to panels first mentioned later)",
                )
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
                    self.warn(
                        line, f"panel {name}: no {key} direction, assuming {key} = {'+x' if key == 'fs' else '+y'}"
                    )
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
                        min_fs=st["min_fs"],
                        max_fs=st["max_fs"],
                        min_ss=st["min_ss"],
                        max_ss=st["max_ss"],
                        corner_x=st["corner_x"],
                        corner_y=st["corner_y"],
                        fs=st["fs"],
                        ss=st["ss"],
                        res=st["res"],
                        clen=st["clen"],
                        clen_path=st.get("clen_path"),
                        clen_path_unit=st.get("clen_path_unit", "mm"),
                        coffset=st.get("coffset", 0.0),
                        adu_per_photon=st.get("adu_per_photon"),
                        adu_per_eV=st.get("adu_per_eV"),
                        max_adu=st.get("max_adu"),
                        no_index=st.get("no_index", False),
                        data=st.get("data"),
                        dim_structure=dim_structure,
                        mask=st.get("mask"),
                        mask_file=st.get("mask_file"),
                        mask_good=st.get("mask_good"),
                        mask_bad=st.get("mask_bad"),
                        extra=st.get("extra", {}),
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
            panels, bad, top.pop("photon_energy_eV", None), source_path=self.source_path, warnings=self.warnings, **top
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
