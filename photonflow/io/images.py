"""Detector frames: read single- and multi-frame files, walk directories, read batches.

Frames are addressed as ``(path, event)`` (see :class:`FrameRef`): ``event`` is
``None`` for a single-frame file and the 0-based frame index otherwise (the index
along axis 0 of an HDF5 image dataset, the page of a multi-page TIFF, the frame
of a multi-frame EDF). Images come back as numpy arrays ``[row, col]`` in the
file's native dtype (Pilatus int32 keeps its -1 gap / -2 bad values); row 0 is
the first row stored in the file, the top row as a TIFF viewer shows it.

Formats
    * TIFF (``.tif``, ``.tiff``): tifffile (about 0.5 ms for a 4 MB Pilatus 1M frame,
      5x faster than fabio), falling back to fabio if tifffile cannot read it.
    * HDF5/NeXus (``.h5``, ``.hdf5``, ``.hdf``, ``.nxs``, ``.cxi``): h5py with the
      hdf5plugin filters (bitshuffle/LZ4 as Eiger writes, LZ4, Blosc, Zstd, ...).
      The image dataset is, in order: the ``dataset=`` argument; the first of
      :data:`HDF5_DATASET_CANDIDATES` present; else the first 3D dataset in
      h5py's visiting order (alphabetical by name). External links (Eiger
      master files' ``data_000001``…) are followed only when named explicitly.
    * everything else: fabio (EDF incl. multi-frame, CBF, MarCCD ``.mccd``,
      ``.img``, ...).

Every failure to read becomes a :class:`FrameReadError` naming the file, the
event and the reason; nothing else escapes the readers.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import fabio
import h5py
import hdf5plugin  # noqa: F401  (registers the HDF5 compression filters: bitshuffle, LZ4, …)
import numpy as np
import tifffile

from photonflow.errors import InputError

__all__ = [
    "DEFAULT_PATTERNS",
    "HDF5_DATASET_CANDIDATES",
    "HDF5_SUFFIXES",
    "Batch",
    "FrameReadError",
    "FrameRef",
    "frame_count",
    "iter_frame_refs",
    "parse_frame_spec",
    "read_batch",
    "read_frame",
    "read_frames",
]

HDF5_SUFFIXES = frozenset({".h5", ".hdf5", ".hdf", ".nxs", ".cxi"})
TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
HDF5_DATASET_CANDIDATES = (
    "/entry/data/data",  # NeXus / Eiger-style (Dectris filewriter data files, Lambda)
    "/entry_1/data_1/data",  # CXI
    "/entry/instrument/detector/data",  # NeXus NXdetector
)
DEFAULT_PATTERNS = ("*.tif", "*.tiff", "*.edf", "*.cbf", "*.mccd", "*.h5", "*.hdf5", "*.nxs", "*.cxi")


class FrameRef(NamedTuple):
    """One frame: ``path`` and ``event`` (None for a single-frame file, else 0-based index)."""

    path: str
    event: int | None = None

    @property
    def label(self) -> str:
        """Short id ``name`` or ``name:event`` (file name without directory)."""
        name = os.path.basename(self.path)
        return name if self.event is None else f"{name}:{self.event}"

    def __str__(self) -> str:
        return self.path if self.event is None else f"{self.path}:{self.event}"


class FrameReadError(InputError):
    """A frame could not be read. Carries ``path``, ``event`` and ``reason``.

    ``str()`` reads ``"<path> (event 3): <reason>"`` (``(single frame)`` when
    event is None). Picklable, so it crosses process boundaries intact.
    """

    def __init__(self, path: str | os.PathLike, event: int | None, reason: str):
        super().__init__(os.fspath(path), event, reason)
        self.path = os.fspath(path)
        self.event = event
        self.reason = reason

    @property
    def ref(self) -> FrameRef:
        return FrameRef(self.path, self.event)

    def __str__(self) -> str:
        where = "single frame" if self.event is None else f"event {self.event}"
        return f"{self.path} ({where}): {self.reason}"


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    return "fabio"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    module = type(exc).__module__
    name = type(exc).__qualname__ if module == "builtins" else f"{module}.{type(exc).__qualname__}"
    return f"{name}: {text}" if text else name


def _cbf_truncated(path: Path) -> bool:
    """True if a CBF's binary section is shorter than its X-Binary-Size header says."""
    try:
        raw = path.read_bytes()
        start = raw.find(b"\x0c\x1a\x04\xd5")
        m = re.search(rb"X-Binary-Size:\s*(\d+)", raw[: start if start >= 0 else 65536])
        return start >= 0 and m is not None and start + 4 + int(m.group(1)) > len(raw)
    except Exception:
        return False


def _check_exists(path: Path, event) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FrameReadError(path, event, "no such file") from None
    except OSError as exc:
        raise FrameReadError(path, event, f"cannot access: {_describe(exc)}") from exc
    if path.is_dir():
        raise FrameReadError(path, event, "is a directory, not a file")
    if size == 0:
        raise FrameReadError(path, event, "empty file (0 bytes)")


# ----------------------------------------------------------------------------- events


def _normalise_events(path: Path, events, n: int) -> list[int]:
    """Events (None = all, int, slice, range, sequence) → list of checked ints."""
    if events is None:
        return list(range(n))
    if isinstance(events, slice):
        return list(range(n)[events])
    if isinstance(events, (int, np.integer)):
        events = [events]
    out = []
    for e in events:
        if e is None:
            e = 0
        e = int(e)
        if not 0 <= e < n:
            raise FrameReadError(path, e, f"event {e} out of range (file has {n} frame{'s' * (n != 1)})")
        out.append(e)
    return out


def _single_event(path: Path, event, n: int) -> int:
    """The index to read for ``event``; None is allowed only for one-frame files."""
    if event is None:
        if n != 1:
            raise FrameReadError(path, None, f"file has {n} frames: give an event (0..{n - 1})")
        return 0
    return _normalise_events(path, [event], n)[0]


def _contiguous(idx: Sequence[int]) -> bool:
    return len(idx) > 0 and all(b - a == 1 for a, b in zip(idx, idx[1:], strict=False))


# ----------------------------------------------------------------------------- HDF5


def find_image_dataset(f: h5py.File, dataset: str | None = None, path=None, event=None) -> h5py.Dataset:
    """The image dataset of an open HDF5 file: ``dataset`` when given, else the first of
    HDF5_DATASET_CANDIDATES, else the first 3D dataset. FrameReadError when there is none."""
    return _find_dataset(f, Path(path or f.filename), dataset, event)


def _find_dataset(f: h5py.File, path: Path, dataset: str | None, event) -> h5py.Dataset:
    if dataset is not None:
        obj = f.get(dataset)
        if not isinstance(obj, h5py.Dataset):
            what = "not found" if obj is None else "is not a dataset"
            raise FrameReadError(path, event, f"dataset {dataset!r} {what}")
        return obj
    for name in HDF5_DATASET_CANDIDATES:
        try:
            obj = f.get(name)
        except (KeyError, OSError):  # dangling external link
            obj = None
        if isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3):
            return obj
    found: list[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim == 3:
            found.append(name)
            return True
        return None

    f.visititems(visit)
    if not found:
        raise FrameReadError(
            path, event, f"no image dataset found (tried {', '.join(HDF5_DATASET_CANDIDATES)} and any 3D dataset)"
        )
    return f[found[0]]


def _dataset_frames(ds: h5py.Dataset, path: Path, event) -> int:
    if ds.ndim == 3:
        return ds.shape[0]
    if ds.ndim == 2:
        return 1
    raise FrameReadError(path, event, f"dataset {ds.name!r} has shape {ds.shape}, expected 2D or 3D")


def _fits(out: np.ndarray | None, shape: tuple, dtype) -> bool:
    """True if ``out`` can receive data of ``shape``/``dtype`` directly."""
    return out is not None and out.shape == tuple(shape) and out.dtype == dtype and out.flags.c_contiguous


def open_hdf5(path) -> h5py.File:
    """Open an HDF5 file for reading; a file a writer holds open in SWMR mode (a detector still
    acquiring) is opened as a SWMR reader (``swmr=True``, no file locking). Open, read and close:
    never keep such a handle (refreshing one while others read in the same process can return
    stale data with HDF5 2.0)."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        text = str(exc).lower()
        if "lock" not in text and "already open" not in text:
            raise
        return h5py.File(path, "r", swmr=True, locking=False)


def _read_hdf5(path: Path, events, dataset: str | None, single: bool, out=None) -> np.ndarray:
    first = events if single else None
    with open_hdf5(path) as f:
        ds = _find_dataset(f, path, dataset, first)
        n = _dataset_frames(ds, path, first)
        frame_shape = ds.shape[1:] if ds.ndim == 3 else ds.shape
        if single:
            i = _single_event(path, events, n)
            sel = np.s_[i] if ds.ndim == 3 else np.s_[()]
            if _fits(out, frame_shape, ds.dtype):
                ds.read_direct(out, sel)
                return out
            return ds[sel]
        idx = _normalise_events(path, events, n)
        if ds.ndim == 2:
            return np.stack([ds[()]] * len(idx)) if idx else np.empty((0, *ds.shape), ds.dtype)
        if not _fits(out, (len(idx), *frame_shape), ds.dtype):
            out = np.empty((len(idx), *frame_shape), ds.dtype)
        if _contiguous(idx):  # one slice: one HDF5 read
            ds.read_direct(out, np.s_[idx[0] : idx[-1] + 1])
        else:
            for k, i in enumerate(idx):
                ds.read_direct(out, np.s_[i], np.s_[k])
        return out


# ----------------------------------------------------------------------------- TIFF / fabio


def _tiff_truncated(path: Path) -> bool:
    """True if the TIFF's image data run past the end of the file."""
    try:
        size = path.stat().st_size
        with tifffile.TiffFile(path) as tf:
            for page in tf.pages:
                ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False)]
                if ends and max(ends) > size:
                    return True
    except Exception:
        return False
    return False


def _read_tiff(path: Path, events, single: bool, out=None) -> np.ndarray:
    first = events if single else None
    try:
        with tifffile.TiffFile(path) as tf:
            n = len(tf.pages)
            if single:
                page = tf.pages[_single_event(path, events, n)]
                if _fits(out, page.shape, page.dtype):
                    return page.asarray(out=out)
                return page.asarray()
            idx = _normalise_events(path, events, n)
            pages = [tf.pages[i] for i in idx]
            if not pages:
                return np.empty((0, 0, 0))
            shape, dtype = pages[0].shape, pages[0].dtype
            if any(p.shape != shape or p.dtype != dtype for p in pages):
                raise FrameReadError(path, None, "TIFF pages differ in shape or dtype")
            if not _fits(out, (len(pages), *shape), dtype):
                out = np.empty((len(pages), *shape), dtype)
            for k, page in enumerate(pages):
                page.asarray(out=out[k])
            return out
    except FrameReadError:
        raise
    except Exception as exc:  # tifffile could not: try fabio, report tifffile's reason
        if _tiff_truncated(path):
            raise FrameReadError(path, first, f"truncated file: {_describe(exc)}") from exc
        try:
            return _read_fabio(path, events, single)
        except FrameReadError:
            raise FrameReadError(path, first, f"cannot read TIFF: {_describe(exc)}") from exc


def _fabio_open(path: Path, event):
    try:
        img = fabio.open(os.fspath(path))
    except Exception as exc:
        if path.suffix.lower() == ".cbf" and _cbf_truncated(path):
            reason = f"truncated file: binary data shorter than X-Binary-Size ({_describe(exc)})"
            raise FrameReadError(path, event, reason) from exc
        raise FrameReadError(path, event, f"cannot read: {_describe(exc)}") from exc
    if img is None or img.data is None:
        raise FrameReadError(path, event, "cannot read: no image data")
    return img


def _fabio_data(path: Path, img, event) -> np.ndarray:
    if getattr(img, "incomplete_file", False):
        raise FrameReadError(path, event, "truncated file: image data shorter than its header announces")
    data = np.asarray(img.data)
    if data.ndim != 2:
        raise FrameReadError(path, event, f"image has shape {data.shape}, expected 2D")
    return data


def _read_fabio(path: Path, events, single: bool) -> np.ndarray:
    first = events if single else None
    img = _fabio_open(path, first)
    n = int(getattr(img, "nframes", 1) or 1)
    idx = [_single_event(path, events, n)] if single else _normalise_events(path, events, n)
    frames = []
    for i in idx:
        try:
            frame = img if i == getattr(img, "currentframe", 0) else img.getframe(i)
        except Exception as exc:
            raise FrameReadError(path, i, f"cannot read frame: {_describe(exc)}") from exc
        frames.append(_fabio_data(path, frame, None if single and events is None else i))
    if single:
        return frames[0]
    return np.stack(frames) if frames else np.empty((0, 0, 0))


# ----------------------------------------------------------------------------- public readers


def read_frame(
    path: str | os.PathLike, event: int | None = None, dataset: str | None = None, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Read one 2D frame ``[row, col]`` in its native dtype.

    ``event``: 0-based frame index for multi-frame files; None for single-frame
    files. ``dataset``: HDF5 dataset path (default: discovered, see module doc).
    ``out``: optional array to read into (TIFF, HDF5), used only if its shape and
    dtype match the frame; always use the returned array.
    Raises :class:`FrameReadError` for every failure.
    """
    path = Path(path)
    _check_exists(path, event)
    kind = _kind(path)
    try:
        if kind == "hdf5":
            frame = _read_hdf5(path, event, dataset, single=True, out=out)
        elif kind == "tiff":
            frame = _read_tiff(path, event, single=True, out=out)
        else:
            frame = _read_fabio(path, event, single=True)
    except FrameReadError:
        raise
    except Exception as exc:  # h5py/OS errors: truncated, corrupt, missing filter, ...
        raise FrameReadError(path, event, _describe(exc)) from exc
    if frame.ndim != 2:
        raise FrameReadError(path, event, f"frame has shape {frame.shape}, expected 2D")
    return frame


def read_frames(
    path: str | os.PathLike,
    events: int | slice | range | Sequence[int] | None = None,
    dataset: str | None = None,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Read several frames of one file as ``(n, rows, cols)``; ``events=None`` reads all.

    A contiguous run of HDF5 events is read in one slice; events may come in any
    order. A single-frame file has one event, 0. ``out``: as for :func:`read_frame`.
    """
    path = Path(path)
    _check_exists(path, None)
    kind = _kind(path)
    try:
        if kind == "hdf5":
            frames = _read_hdf5(path, events, dataset, single=False, out=out)
        elif kind == "tiff":
            frames = _read_tiff(path, events, single=False, out=out)
        else:
            frames = _read_fabio(path, events, single=False)
    except FrameReadError:
        raise
    except Exception as exc:
        raise FrameReadError(path, None, _describe(exc)) from exc
    if frames.ndim != 3:
        raise FrameReadError(path, None, f"frames have shape {frames.shape}, expected 3D")
    return frames


def frame_count(path: str | os.PathLike, dataset: str | None = None) -> int:
    """Number of frames in a file (1 for single-frame files). Raises FrameReadError."""
    path = Path(path)
    _check_exists(path, None)
    kind = _kind(path)
    try:
        if kind == "hdf5":
            with open_hdf5(path) as f:
                return _dataset_frames(_find_dataset(f, path, dataset, None), path, None)
        if kind == "tiff":
            try:
                with tifffile.TiffFile(path) as tf:
                    return len(tf.pages)
            except Exception:
                pass  # fall through to fabio
        img = _fabio_open(path, None)
        return int(getattr(img, "nframes", 1) or 1)
    except FrameReadError:
        raise
    except Exception as exc:
        raise FrameReadError(path, None, _describe(exc)) from exc


# ----------------------------------------------------------------------------- walking

_RANGE_RE = re.compile(r"^(?P<path>.+):(?P<start>\d*)(?P<dash>-?)(?P<stop>\d*)$")


def parse_frame_spec(spec: str | os.PathLike) -> tuple[str, int | None, int | None] | None:
    """Parse ``"file.h5:START-STOP"`` → ``(path, start, stop)``; None if ``spec`` is no range.

    Syntax (``STOP`` is exclusive, like a Python slice; events are 0-based):
    ``file.h5:5`` → event 5 only; ``file.h5:10-20`` → events 10..19;
    ``file.h5:10-`` → 10 to the end; ``file.h5:-20`` → 0..19.
    ``stop`` None means "to the end".
    """
    text = os.fspath(spec)
    m = _RANGE_RE.match(text)
    if not m or (not m["start"] and not m["stop"]):
        return None
    start = int(m["start"]) if m["start"] else 0
    if not m["dash"]:
        return m["path"], start, start + 1
    stop = int(m["stop"]) if m["stop"] else None
    return m["path"], start, stop


def _natural_key(path: Path) -> list:
    """Sort key: digits compared as numbers, so frame_2 < frame_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", os.fspath(path))]


def _matches(name: str, patterns: Sequence[str]) -> bool:
    low = name.lower()
    return any(fnmatch.fnmatchcase(low, p.lower()) for p in patterns)


def _expand_file(path: Path, start: int | None = None, stop: int | None = None) -> Iterator[FrameRef]:
    """Refs for one file: one per event for HDF5 (or an explicit range), else one ref."""
    p = os.fspath(path)
    if start is None and _kind(path) != "hdf5":
        yield FrameRef(p, None)
        return
    try:
        n = frame_count(path)
    except FrameReadError:
        # unreadable: hand it on, so the failure is reported when it is read
        yield FrameRef(p, start)
        return
    if start is None:
        start, stop = 0, n
    stop = n if stop is None else stop
    for e in range(start, stop):
        yield FrameRef(p, e)  # events beyond n fail when read, with a clear reason


def iter_frame_refs(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    patterns: Sequence[str] = DEFAULT_PATTERNS,
    recursive: bool = True,
) -> Iterator[FrameRef]:
    """Expand files, directories and ``"file.h5:START-STOP"`` ranges into :class:`FrameRef`.

    * a file → one ref (``event=None``), or one ref per event for HDF5 files;
    * ``"file:START-STOP"`` → events START..STOP-1 (see :func:`parse_frame_spec`);
      works for any multi-frame file;
    * a directory → its files matching ``patterns`` (case-insensitive), in
      natural sorted order (``frame_2`` before ``frame_10``), descending into
      subdirectories when ``recursive``. Hidden files and directories (names
      starting with ``.``, such as atomic-write temporaries) are skipped.

    Inputs are expanded in the order given. A missing input raises
    FileNotFoundError; an unreadable HDF5 file yields one ref that fails on reading.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            walker = path.rglob("*") if recursive else path.glob("*")
            files = [
                p
                for p in walker
                if p.is_file()
                and _matches(p.name, patterns)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ]
            for p in sorted(files, key=_natural_key):
                yield from _expand_file(p)
        elif path.is_file():
            yield from _expand_file(path)
        else:
            spec = parse_frame_spec(item)
            if spec is None or not Path(spec[0]).is_file():
                raise FileNotFoundError(f"no such file or directory: {os.fspath(item)}")
            yield from _expand_file(Path(spec[0]), spec[1], spec[2])


# ----------------------------------------------------------------------------- batches


class Batch(NamedTuple):
    """Result of :func:`read_batch`: ``frames`` (n, rows, cols) for ``refs``; ``failures``."""

    frames: np.ndarray
    refs: list[FrameRef]
    failures: list[FrameReadError]


def _same_buffer(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]


def _groups(refs: Sequence[FrameRef]) -> Iterator[list[FrameRef]]:
    """Consecutive refs of the same multi-frame file (int events) form one group."""
    group: list[FrameRef] = []
    for ref in refs:
        if group and ref.event is not None and ref.path == group[-1].path and group[-1].event is not None:
            group.append(ref)
            continue
        if group:
            yield group
        group = [ref]
    if group:
        yield group


def read_batch(
    refs: Iterable[FrameRef | tuple],
    expected_shape: tuple[int, int] | None = None,
    dtype=None,
    dataset: str | None = None,
    buffer: np.ndarray | None = None,
) -> Batch:
    """Read many frames, collecting failures instead of raising.

    Returns ``Batch(frames, refs, failures)``: ``frames`` (n_good, rows, cols)
    stacked in input order for the refs that succeeded, ``failures`` a list of
    :class:`FrameReadError`. A frame whose shape differs from ``expected_shape``
    (default: the first good frame's shape) is a failure with reason
    ``"shape (r, c) differs from expected (R, C)"``. The native dtype is kept
    (promoted if files differ) unless ``dtype`` is given. Runs of events from
    one HDF5 file are read in one call. ``buffer``: a reusable (≥ n, rows, cols) array
    to read into (saves allocating and page-faulting fresh memory for every batch); the
    returned frames may be a view of it.
    """
    refs = [r if isinstance(r, FrameRef) else FrameRef(os.fspath(r[0]), r[1]) for r in refs]
    shape = tuple(expected_shape) if expected_shape is not None else None
    good: list[FrameRef] = []
    failures: list[FrameReadError] = []
    out: np.ndarray | None = None
    if (
        buffer is not None
        and shape is not None
        and buffer.shape[0] >= len(refs)
        and tuple(buffer.shape[1:]) == shape
        and (dtype is None or buffer.dtype == dtype)
    ):
        out = buffer[: len(refs)]

    def add(ref: FrameRef, frame: np.ndarray) -> None:
        nonlocal out, shape
        if shape is None:
            shape = frame.shape
        if frame.shape != shape:
            failures.append(FrameReadError(ref.path, ref.event, f"shape {frame.shape} differs from expected {shape}"))
            return
        if out is None:
            out = np.empty((len(refs), *shape), dtype=dtype or frame.dtype)
        elif dtype is None and not np.can_cast(frame.dtype, out.dtype, "safe"):
            out = out.astype(np.result_type(out.dtype, frame.dtype))
        slot = out[len(good)]
        if not _same_buffer(frame, slot):  # not already read in place
            slot[...] = frame
        good.append(ref)

    def free_slots(k: int) -> np.ndarray | None:
        """The next ``k`` rows of ``out``, for reading in place (None before the first frame)."""
        return None if out is None else out[len(good) : len(good) + k]

    def read_one(ref: FrameRef) -> None:
        slots = free_slots(1)
        try:
            frame = read_frame(ref.path, ref.event, dataset, out=None if slots is None else slots[0])
        except FrameReadError as exc:
            failures.append(exc)
            return
        add(ref, frame)

    for group in _groups(refs):
        if len(group) > 1 and out is None:  # first frame alone: sizes the output, then read in place
            read_one(group[0])
            group = group[1:]
        if len(group) > 1:
            try:
                frames = read_frames(group[0].path, [r.event for r in group], dataset, out=free_slots(len(group)))
            except FrameReadError:
                frames = None  # read one by one to find the failing events
            if frames is not None:
                for ref, frame in zip(group, frames, strict=True):
                    add(ref, frame)
                continue
        for ref in group:
            read_one(ref)

    if out is None:
        rows_cols = shape if shape is not None else (0, 0)
        return Batch(np.empty((0, *rows_cols), dtype=dtype or np.float32), good, failures)
    return Batch(out[: len(good)], good, failures)


# ----------------------------------------------------------------------------- monitors


def read_monitor(ref: FrameRef | tuple, key: str) -> float:
    """The beam-monitor value of a frame, for normalisation.

    HDF5/NeXus: ``key`` is a dataset path in the same file, a scalar or one value per event
    (e.g. ``/entry/instrument/monitor/data``). Other formats: ``key`` is a header key of the image
    (EDF, CBF and TIFF headers as fabio reads them). A missing key, a non-number or a value ≤ 0
    raises FrameReadError naming the file, the event and the key.
    """
    ref = ref if isinstance(ref, FrameRef) else FrameRef(os.fspath(ref[0]), ref[1])
    path = Path(ref.path)
    try:
        if _kind(path) == "hdf5":
            with open_hdf5(path) as f:
                if key not in f:
                    raise FrameReadError(path, ref.event, f"monitor dataset {key!r} not found")
                ds = f[key]
                value = ds[()] if ds.ndim == 0 else ds[ref.event or 0]
        else:
            img = _fabio_open(path, ref.event)
            header = img.header if ref.event in (None, 0) else img.getframe(ref.event).header
            if key not in header:
                raise FrameReadError(path, ref.event, f"monitor key {key!r} not in the image header")
            value = header[key]
        value = float(np.asarray(value).ravel()[0]) if not isinstance(value, str) else float(value.split()[0])
    except FrameReadError:
        raise
    except (IndexError, ValueError, TypeError, OSError) as exc:
        raise FrameReadError(path, ref.event, f"monitor {key!r}: {_describe(exc)}") from exc
    if not np.isfinite(value) or value <= 0:
        raise FrameReadError(path, ref.event, f"monitor {key!r} is {value}: must be a positive number")
    return value
