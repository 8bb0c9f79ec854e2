"""CXI files: frames (multi-event detector data), peak lists (Cheetah/OM layout, read by CrystFEL)
and CrystFEL hit lists (``.lst``).

Frames (:func:`write_cxi_frames`) go to ``/entry_1/data_1/data`` (n, ss, fs), one chunk per frame,
linked as ``/entry_1/instrument_1/detector_1/data``, with the detector distance (m) in
``/entry_1/instrument_1/detector_1/distance`` and each event's photon energy (eV) in
``/LCLS/photon_energy_eV``, as LCLS CXI files have them.

Peak lists go to ``/entry_1/result_1`` (point the geometry's ``peak_list`` there
and run ``indexamajig --peaks=cxi``):

    nPeaks               int32   (n_frames,)             peaks kept for each frame
    peakXPosRaw          float32 (n_frames, max_peaks)   fs, slab pixels
    peakYPosRaw          float32 (n_frames, max_peaks)   ss, slab pixels
    peakTotalIntensity   float32 (n_frames, max_peaks)   ADU
    peakNPixels          float32 (n_frames, max_peaks)   pixels (float32 as OM writes it)
    peakMaximumValue     float32 (n_frames, max_peaks)   ADU
    peakSNR              float32 (n_frames, max_peaks)
    sourceFile, sourceEvent   UTF-8 strings (n_frames,), when given

Rows are zero-padded past ``nPeaks``. Positions are Cheetah slab coordinates:
the centre of pixel ``data[ss, fs]`` is at integer ``(fs, ss)``; CrystFEL adds
0.5 when it reads them (its half-pixel shift), which puts them on its
corner-origin grid. Events are stored in CrystFEL's syntax (``//N`` for frame N).

Hit lists are CrystFEL list files (:mod:`photonflow.io.lists`): one ``file //N`` line per event
of a multi-event file, or ``file`` alone for a single-frame file.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from photonflow.errors import InputError

from .atomic import atomic_path
from .compression import dataset_compression
from .lists import EVENT_PATTERN, read_event_list, write_event_list

if TYPE_CHECKING:  # imported lazily: photonflow.peaks may pull in torch
    from ..peaks.peaklist import PeakList

__all__ = [
    "CXI_PEAK_GROUP",
    "CxiError",
    "read_cxi_peaks",
    "read_cxi_sources",
    "read_hit_list",
    "write_cxi_frames",
    "write_cxi_peaks",
    "write_hit_list",
]

CXI_PEAK_GROUP = "/entry_1/result_1"
_PER_PEAK = (
    ("peakXPosRaw", "fs"),
    ("peakYPosRaw", "ss"),
    ("peakTotalIntensity", "intensity"),
    ("peakNPixels", "npix"),
    ("peakMaximumValue", "max_intensity"),
    ("peakSNR", "snr"),
)


class CxiError(InputError, ValueError):
    """A CXI peak file or a hit list is malformed; the message names the file (and line or row)."""


def _event_text(event) -> str:
    if event is None:
        return ""
    if isinstance(event, (int, np.integer)):
        if event < 0:
            raise ValueError(f"event {event} is negative")
        return f"//{int(event)}"
    return str(event)


def _event_value(text: str):
    if text == "":
        return None
    m = EVENT_PATTERN.match(text)
    return int(m.group(1)) if m else text


def write_cxi_peaks(
    path: str | os.PathLike,
    peak_lists: Sequence[PeakList],
    max_peaks: int = 2048,
    events: Sequence | None = None,
    sources: Sequence[str] | None = None,
    frames: np.ndarray | None = None,
) -> Path:
    """Write one row of peaks per frame to a CXI file (atomically); return the path.

    ``frames`` (n, ss, fs), when given, go to ``/entry_1/data_1/data`` (Bitshuffle-LZ4,
    one chunk per frame), making a Cheetah-style hits file that ``indexamajig --peaks=cxi``
    reads directly.
    A frame with more than ``max_peaks`` peaks keeps its first ``max_peaks``; the
    truncated rows are listed in the group attribute ``truncated_frames`` (with
    their full counts in ``truncated_counts``) and a warning names the file.
    ``events`` (int frame index, CrystFEL event string or None) and ``sources``
    (file names) are stored per row when given.
    """
    path = Path(path)
    max_peaks = int(max_peaks)
    if max_peaks < 1:
        raise ValueError(f"{path}: max_peaks must be at least 1, got {max_peaks}")
    n = len(peak_lists)
    for name, seq in (("events", events), ("sources", sources)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{path}: {len(seq)} {name} for {n} peak lists")
    event_texts = None if events is None else [_event_text(e) for e in events]

    counts = np.array([len(p) for p in peak_lists], dtype=np.int64)
    kept = np.minimum(counts, max_peaks).astype(np.int32)
    truncated = np.flatnonzero(counts > max_peaks)
    arrays = {name: np.zeros((n, max_peaks), np.float32) for name, _ in _PER_PEAK}
    for row, peaks in enumerate(peak_lists):
        k = kept[row]
        for name, attr in _PER_PEAK:
            arrays[name][row, :k] = getattr(peaks, attr)[:k]

    if frames is not None and (frames.ndim != 3 or len(frames) != n):
        raise ValueError(f"{path}: frames must be (n_frames, ss, fs) with {n} frames, got {frames.shape}")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("cxi_version", data=np.int32(150))
            if frames is not None and n:
                f.create_dataset(
                    "/entry_1/data_1/data",
                    data=frames,
                    chunks=(1, *frames.shape[1:]),
                    **dataset_compression("bitshuffle"),
                )
            group = f.require_group(CXI_PEAK_GROUP)
            group.create_dataset("nPeaks", data=kept)
            for name, _ in _PER_PEAK:
                group.create_dataset(name, data=arrays[name], chunks=(min(max(n, 1), 64), max_peaks) if n else None)
            strings = h5py.string_dtype("utf-8")
            if sources is not None:
                group.create_dataset("sourceFile", data=[str(s) for s in sources], dtype=strings)
            if event_texts is not None:
                group.create_dataset("sourceEvent", data=event_texts, dtype=strings)
            group.attrs["max_peaks"] = max_peaks
            group.attrs["truncated_frames"] = truncated.astype(np.int64)
            group.attrs["truncated_counts"] = counts[truncated]
            group.attrs["coordinates"] = "slab pixels, pixel centre at integer (fs, ss)"
    if len(truncated):
        warnings.warn(
            f"{path}: {len(truncated)} frame(s) had more than {max_peaks} peaks and were cut to "
            f"{max_peaks} (rows {truncated[:10].tolist()}{' ...' if len(truncated) > 10 else ''})",
            stacklevel=2,
        )
    return path


def _open_group(f: h5py.File, path: Path) -> h5py.Group:
    if CXI_PEAK_GROUP not in f:
        raise CxiError(f"{path}: no peak list group {CXI_PEAK_GROUP}")
    return f[CXI_PEAK_GROUP]


def read_cxi_peaks(path: str | os.PathLike) -> list[PeakList]:
    """Read the peak lists written by :func:`write_cxi_peaks` (or Cheetah/OM), one per frame."""
    from ..peaks.peaklist import PeakList

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            group = _open_group(f, path)
            for name in ("nPeaks", "peakXPosRaw", "peakYPosRaw", "peakTotalIntensity"):
                if name not in group:
                    raise CxiError(f"{path}: missing {CXI_PEAK_GROUP}/{name}")
            npeaks = group["nPeaks"][()].astype(np.int64).reshape(-1)
            data = {attr: (group[name][()] if name in group else None) for name, attr in _PER_PEAK}
    except OSError as exc:
        raise CxiError(f"{path}: cannot read CXI file ({exc})") from None
    width = data["fs"].shape[1] if data["fs"].ndim == 2 else 0
    if data["fs"].shape[0] != len(npeaks):
        raise CxiError(f"{path}: nPeaks has {len(npeaks)} rows, peakXPosRaw {data['fs'].shape[0]}")
    out = []
    for row, k in enumerate(npeaks):
        if k < 0 or k > width:
            raise CxiError(f"{path}: row {row}: nPeaks = {k} outside 0..{width}")
        fields = {attr: (None if arr is None else arr[row, :k].astype(np.float64)) for attr, arr in data.items()}
        if fields["npix"] is not None:
            fields["npix"] = np.rint(fields["npix"]).astype(np.int64)
        out.append(PeakList(**fields))
    return out


def read_cxi_sources(path: str | os.PathLike) -> list[tuple[str | None, int | str | None]]:
    """``(source file, event)`` per row of a CXI peak file; None where not stored."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        group = _open_group(f, path)
        n = len(group["nPeaks"])
        files = (
            [s.decode() if isinstance(s, bytes) else s for s in group["sourceFile"][()]]
            if "sourceFile" in group
            else [None] * n
        )
        events = (
            [_event_value(s.decode() if isinstance(s, bytes) else s) for s in group["sourceEvent"][()]]
            if "sourceEvent" in group
            else [None] * n
        )
    return list(zip(files, events))


def write_hit_list(path: str | os.PathLike, hits: Iterable[tuple[str, int | None]]) -> Path:
    """Write a CrystFEL list file (atomically): ``file //N`` per event, ``file`` for single frames."""
    return write_event_list(path, hits, item="hit")


def read_hit_list(path: str | os.PathLike) -> list[tuple[str, int | None]]:
    """Read a CrystFEL list file: ``[(file, frame index or None)]``, file names as written; blank
    and comment lines are skipped. CxiError names the file and line of a malformed line."""
    return [ref for ref, _ in read_event_list(path, resolve=False, error=CxiError)]


def write_cxi_frames(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    n_frames: int,
    frame_shape: Sequence[int],
    dtype,
    *,
    photon_energy_eV: float,
    distance_m: float,
    compression: str | None = "bitshuffle",
) -> Path:
    """Write ``n_frames`` frames of ``frame_shape`` (ss, fs) as one multi-event CXI file (atomically);
    return the path.

    The layout is the module docstring's; ``dtype`` is the stored type (each frame is cast to it),
    ``compression`` a :func:`~photonflow.io.compression.dataset_compression` name.
    ``frames`` may be a generator: the frames are drawn and written one at a time.
    """
    path = Path(path)
    n = int(n_frames)
    shape = tuple(int(s) for s in frame_shape)
    comp = dataset_compression(compression)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["cxi_version"] = 160
        entry = f.create_group("entry_1")
        ds = entry.create_group("data_1").create_dataset(
            "data", shape=(n, *shape), dtype=dtype, chunks=(1, *shape), **comp
        )
        det = entry.create_group("instrument_1").create_group("detector_1")
        det["data"] = ds
        det["distance"] = distance_m
        f.create_group("LCLS")["photon_energy_eV"] = np.full(n, photon_energy_eV)
        written = 0
        for j, frame in enumerate(frames):
            if j >= n:
                raise ValueError(f"{path}: more than the {n} frames announced")
            ds.write_direct(np.ascontiguousarray(np.asarray(frame, dtype=ds.dtype)[None]), dest_sel=np.s_[j : j + 1])
            written = j + 1
        if written != n:
            raise ValueError(f"{path}: {written} frames for the {n} announced")
    return path
