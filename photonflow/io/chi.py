"""``.chi`` scattering curves, byte-compatible with SAXSDOG.

SAXSDOG's layout (``np.savetxt(fmt="%.18e", delimiter=" ", newline="\\n ", comments="")``)::

    {"...calibration config as JSON..."}
    {"I0": ..., "I1": ..., "I2": ...}
    ["Scattering Vector  q [$nm^{-1}$]", "Intensity (Count/Pixel)", "Error Margin"]
       1000
     1.000000000000000056e-01 2.345000000000000000e+03 4.842520000000000000e+01
     ...

(rows after the header start with a space and the file ends with ``"\\n "``).
q is in nm⁻¹; empty bins are NaN and written as ``nan``.
:func:`read_chi` also reads FIT2D-style files (title, x label, y label, number
of points, then 2 or 3 columns), headerless columns and ``#`` comment headers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text

__all__ = ["DEFAULT_COLUMN_LABELS", "write_chi", "read_chi", "format_chi"]

DEFAULT_COLUMN_LABELS = ("Scattering Vector  q [$nm^{-1}$]", "Intensity (Count/Pixel)", "Error Margin")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def format_chi(
    q, intensity, sigma, config: dict, integral_params: dict, column_labels=DEFAULT_COLUMN_LABELS, digits: int = 19
) -> str:
    """The text of a SAXSDOG ``.chi`` file (see module doc).

    ``digits``: significant digits per number; 19 (``%.18e``) gives SAXSDOG's bytes exactly, 10
    (``%.9e``) formats twice as fast and still holds a float32 sum without loss.
    """
    data = np.column_stack([np.asarray(q, float), np.asarray(intensity, float), np.asarray(sigma, float)])
    if data.shape[1] != 3:
        raise ValueError(f"q, intensity and sigma must be 1D, got array of shape {data.shape}")
    header = "\n".join(
        [
            json.dumps(config, default=_json_default),
            json.dumps(integral_params, default=_json_default),
            json.dumps(list(column_labels)),
            "   " + str(len(data)),
        ]
    )
    # One %-format over all values: same text as np.savetxt, without its per-row loop.
    f = f"%.{int(digits) - 1}e"
    rows = (f"{f} {f} {f}\n " * len(data)) % tuple(data.ravel().tolist())
    return header + "\n " + rows


def write_chi(
    path: str | os.PathLike,
    q,
    intensity,
    sigma,
    config: dict,
    integral_params: dict,
    column_labels=DEFAULT_COLUMN_LABELS,
    digits: int = 19,
) -> Path:
    """Write a SAXSDOG-compatible ``.chi`` file atomically; return its path.

    ``q`` in nm⁻¹, ``intensity`` and ``sigma`` in counts/pixel, all 1D of one
    length; NaN allowed. ``config``: the calibration config (JSON-serialisable,
    numpy scalars/arrays accepted); ``integral_params``: ``{"I0":…, "I1":…, "I2":…}``.
    """
    return atomic_write_text(path, format_chi(q, intensity, sigma, config, integral_params, column_labels, digits))


def _numbers(line: str) -> list[float] | None:
    try:
        return [float(t) for t in line.split()]
    except ValueError:
        return None


def _json(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return None


def read_chi(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """Read a ``.chi`` file → ``(q, intensity, sigma, header)``.

    ``sigma`` is None for a 2-column file. ``header`` has ``lines`` (the raw
    header lines) and, where present, ``config``, ``integral_params``,
    ``column_labels`` (SAXSDOG), ``title`` and ``labels`` (FIT2D) and ``npoints``.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    # the header ends at the first line of >= 2 numbers; a lone integer before it is the point count
    start = len(lines)
    for i, line in enumerate(lines):
        values = _numbers(line)
        if values is not None and len(values) >= 2:
            start = i
            break
    head = [ln.rstrip("\r") for ln in lines[:start]]
    header: dict = {"lines": head}
    if head and _numbers(head[-1]) is not None and len(head[-1].split()) == 1:
        header["npoints"] = int(float(head[-1]))
        described = head[:-1]
    else:
        described = head
    parsed = [_json(ln) for ln in described]
    if len(described) == 3 and isinstance(parsed[0], dict) and isinstance(parsed[1], dict):
        header.update(config=parsed[0], integral_params=parsed[1], column_labels=parsed[2])
    elif len(described) == 3 and isinstance(parsed[0], dict) and isinstance(parsed[1], list):
        header.update(config=parsed[0], column_labels=parsed[1])  # SAXSDOG slices
    elif described and not any(ln.lstrip().startswith("#") for ln in described):
        header.update(title=described[0].strip(), labels=[ln.strip() for ln in described[1:]])

    body = [ln for ln in lines[start:] if ln.strip() and not ln.lstrip().startswith("#")]
    if not body:
        empty = np.empty(0)
        return empty, empty.copy(), None, header
    ncols = len(body[0].split())
    try:
        data = np.array(" ".join(body).split(), dtype=float).reshape(-1, ncols)
    except ValueError as exc:
        raise ValueError(f"{path}: malformed data rows (expected {ncols} columns each): {exc}") from exc
    if "npoints" in header and header["npoints"] != len(data):
        raise ValueError(f"{path}: header announces {header['npoints']} points, file has {len(data)}")
    sigma = data[:, 2].copy() if ncols >= 3 else None
    return data[:, 0].copy(), data[:, 1].copy(), sigma, header
