"""Features for sorting frames good/bad: the pixels of a region of interest, read straight from the files.

Region of interest (:class:`Roi`)
    A half-open box of the slab (data) frame ``data[ss0:ss1, fs0:fs1]`` in pixels, either a panel of
    a CrystFEL ``.geom`` file (:func:`roi_from_panel`: the panel's inclusive ``min_ss..max_ss``,
    ``min_fs..max_fs`` become ``ss0 = min_ss``, ``ss1 = max_ss + 1``, …) or a box given by hand
    (:func:`roi_from_box`). For an ePix10k ASIC that is 176 × 192 pixels.

Reading (:func:`read_roi`, :func:`iter_roi_batches`)
    Only the ROI is read: an HDF5 hyperslab ``ds[e0:e1, ss0:ss1, fs0:fs1]`` per contiguous run of
    events, with ``read_direct`` into a preallocated float32 buffer (HDF5 converts the integer or
    float samples on the way; no intermediate array). With the usual one-frame-per-chunk layout
    (Cheetah/OM CXI, Eiger/Jungfrau, Bitshuffle-LZ4) HDF5 still decompresses the whole frame's chunk
    to hand out the ROI: the ROI saves copying and conversion, not decompression. Measured on the
    2-core development machine, page cache warm, Bitshuffle-LZ4, 1 frame per chunk, 4 files × 500
    frames of 352 × 384 pixels, ROI 176 × 192 (one ePix10k ASIC):

    ==========================  =============  ==================  ================
    data (compression ratio)    h5py, whole    h5py, ROI only      extract_features
                                frames /s      (read_direct) /s    (binning 1) /s
    ==========================  =============  ==================  ================
    uint16 raw (2.1)            6000           6700                4900
    float32 calibrated (1.9)    4100           5100                4200
    float32 pure noise (1.06)   3800           4900                3800
    ==========================  =============  ==================  ================

    (binning 4 + log: 4000–5500/s; ``summary=True``: 2400–2700/s.) For a 1920 × 1920 float32
    detector (14.7 MB chunks) decompression dominates: whole frames 169/s with plain h5py, a
    240 × 240 panel 223/s, whole frames binned 4/8/16: 116/121/132/s. One process; h5py serialises
    HDF5 calls, so use several processes (Dask workers) to use several cores. Other formats (TIFF, CBF,
    EDF, …) go through :func:`photonflow.io.images.read_frame` and are cropped.

Features (:class:`FeatureRecipe`, :func:`features_from_roi`)
    1. the ROI pixels, row-major, optionally binned ``binning`` × ``binning`` (mean of each block;
       when the ROI's height or width is not a multiple of ``binning`` the last ``h % binning`` rows
       and ``w % binning`` columns are dropped), optionally ``log1p`` of the values clipped at 0;
    2. with ``summary=True``, seven numbers per frame computed on the un-binned, un-logged ROI
       (:data:`SUMMARY_NAMES`): mean, standard deviation, 1st/50th/99th percentiles, the fraction of
       pixels ≤ 0 and the fraction ≥ ``saturation`` (0 when ``saturation`` is None). The percentiles
       (numpy's linear interpolation) are taken over every k-th pixel of the row-major ROI, k chosen
       so that at most :data:`PERCENTILE_SAMPLE` (4096) pixels are used: exact for ROIs up to 64 × 64,
       a regular subsample beyond (exact percentiles of a 176 × 192 ROI would cost 0.6 ms a frame,
       more than reading it).
    Non-finite pixel values (NaN masks) count as 0 (pixel features and summary alike). Features are
    float32.

Failures (:func:`extract_features`)
    A file that is not there or cannot be read, an event past the end of its file, a frame whose
    shape does not hold the ROI: each becomes a message naming the file, the event and the reason
    (in :attr:`FeatureSet.failures`), and the other frames are read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from photonflow.errors import InputError

from ..io.geom import DetectorGeometry, load_geometry
from ..io.images import HDF5_SUFFIXES, FrameReadError, find_image_dataset, frame_count, open_hdf5, read_frame

__all__ = [
    "MAX_BUFFER_BYTES",
    "SUMMARY_NAMES",
    "FeatureError",
    "FeatureRecipe",
    "FeatureSet",
    "ReadFailures",
    "Roi",
    "extract_features",
    "features_from_roi",
    "iter_roi_batches",
    "read_roi",
    "roi_from_box",
    "roi_from_panel",
]

SUMMARY_NAMES = ("mean", "std", "p01", "p50", "p99", "zero_fraction", "saturated_fraction")
DEFAULT_BATCH = 256
MAX_BUFFER_BYTES = 64 * 2**20  # the read buffer holds at most this much (4 frames of 1920 x 1920)
PERCENTILE_SAMPLE = 4096


class FeatureError(InputError, ValueError):
    """A ROI or a feature recipe is wrong (the message names the panel, box or shape)."""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ----------------------------------------------------------------------------- ROI


@dataclass(frozen=True)
class Roi:
    """Half-open slab box ``data[ss0:ss1, fs0:fs1]`` in pixels; ``panel``: the geometry panel it came from."""

    ss0: int
    ss1: int
    fs0: int
    fs1: int
    panel: str | None = None

    def __post_init__(self):
        for key in ("ss0", "ss1", "fs0", "fs1"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                if not (isinstance(value, float) and value.is_integer()):
                    raise FeatureError(f"ROI {key} must be an integer pixel index, got {value!r}")
            object.__setattr__(self, key, int(value))
        if not (0 <= self.ss0 < self.ss1 and 0 <= self.fs0 < self.fs1):
            raise FeatureError(
                f"ROI ss {self.ss0}:{self.ss1}, fs {self.fs0}:{self.fs1} is empty or negative "
                "(need 0 <= ss0 < ss1 and 0 <= fs0 < fs1, half-open)"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` = ``(ss1 - ss0, fs1 - fs0)``."""
        return self.ss1 - self.ss0, self.fs1 - self.fs0

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(ss slice, fs slice)``: ``frame[roi.slices]`` is the ROI of a frame."""
        return slice(self.ss0, self.ss1), slice(self.fs0, self.fs1)

    def fits(self, frame_shape: Sequence[int]) -> bool:
        """True if the ROI lies inside a frame of ``(n_ss, n_fs)`` pixels."""
        return len(frame_shape) >= 2 and self.ss1 <= frame_shape[-2] and self.fs1 <= frame_shape[-1]

    def __str__(self) -> str:
        box = f"ss {self.ss0}:{self.ss1}, fs {self.fs0}:{self.fs1}"
        return f"ROI panel {self.panel} ({box})" if self.panel else f"ROI ({box})"

    def to_dict(self) -> dict:
        return {"ss0": self.ss0, "ss1": self.ss1, "fs0": self.fs0, "fs1": self.fs1, "panel": self.panel}

    @classmethod
    def from_dict(cls, d: dict) -> Roi:
        try:
            return cls(d["ss0"], d["ss1"], d["fs0"], d["fs1"], d.get("panel"))
        except KeyError as exc:
            raise FeatureError(f"ROI dict lacks {exc.args[0]!r}: {d!r}") from None


def roi_from_panel(geometry_or_path: DetectorGeometry | str | os.PathLike, panel_name: str) -> Roi:
    """The slab box of the panel ``panel_name`` of a CrystFEL geometry (object or ``.geom`` path).

    FeatureError naming the panel and listing the available ones when there is no such panel.
    """
    geometry = geometry_or_path
    if not isinstance(geometry, DetectorGeometry):
        geometry = load_geometry(geometry_or_path)
    for p in geometry.panels:
        if p.name == panel_name:
            return Roi(p.min_ss, p.max_ss + 1, p.min_fs, p.max_fs + 1, panel=p.name)
    names = [p.name for p in geometry.panels]
    source = f"{geometry.source_path}: " if geometry.source_path else ""
    raise FeatureError(f"{source}no panel named {panel_name!r}; the {len(names)} panels are: {', '.join(names)}")


def roi_from_box(
    ss0: int, ss1: int, fs0: int, fs1: int, frame_shape: Sequence[int] | None = None, panel: str | None = None
) -> Roi:
    """A ROI ``data[ss0:ss1, fs0:fs1]`` (half-open, pixels), checked against ``frame_shape`` when given."""
    roi = Roi(ss0, ss1, fs0, fs1, panel)
    if frame_shape is not None and not roi.fits(frame_shape):
        raise FeatureError(f"{roi} lies outside a frame of {tuple(frame_shape)} pixels (ss, fs)")
    return roi


# ----------------------------------------------------------------------------- recipe


@dataclass(frozen=True)
class FeatureRecipe:
    """How frames become feature vectors (see the module docstring).

    roi: the region. binning: square bin factor (≥ 1; remainders cropped). summary: append
    :data:`SUMMARY_NAMES`. log: ``log1p(max(x, 0))`` of the pixel features. saturation: the value
    at and above which a pixel counts as saturated for the summary (None: the fraction is 0).
    """

    roi: Roi
    binning: int = 1
    summary: bool = False
    log: bool = False
    saturation: float | None = None

    def __post_init__(self):
        if not isinstance(self.roi, Roi):
            raise FeatureError(f"roi must be a Roi, got {type(self.roi).__name__}")
        if isinstance(self.binning, bool) or not isinstance(self.binning, (int, np.integer)) or self.binning < 1:
            raise FeatureError(f"binning must be an integer >= 1, got {self.binning!r}")
        object.__setattr__(self, "binning", int(self.binning))
        h, w = self.roi.shape
        if self.binning > min(h, w):
            raise FeatureError(f"binning {self.binning} is larger than the {h} x {w} {self.roi}")

    @property
    def binned_shape(self) -> tuple[int, int]:
        """``(h // binning, w // binning)``: the pixel-feature image."""
        h, w = self.roi.shape
        return h // self.binning, w // self.binning

    @property
    def n_pixel_features(self) -> int:
        hb, wb = self.binned_shape
        return hb * wb

    @property
    def n_features(self) -> int:
        return self.n_pixel_features + (len(SUMMARY_NAMES) if self.summary else 0)

    def feature_names(self) -> list[str]:
        """``px_<row>_<col>`` (binned grid) then the summary names."""
        hb, wb = self.binned_shape
        names = [f"px_{r}_{c}" for r in range(hb) for c in range(wb)]
        return names + (list(SUMMARY_NAMES) if self.summary else [])

    def to_dict(self) -> dict:
        return {
            "roi": self.roi.to_dict(),
            "binning": self.binning,
            "summary": self.summary,
            "log": self.log,
            "saturation": self.saturation,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureRecipe:
        if "roi" not in d:
            raise FeatureError(f"feature recipe dict lacks 'roi': {d!r}")
        return cls(
            Roi.from_dict(d["roi"]),
            int(d.get("binning", 1)),
            bool(d.get("summary", False)),
            bool(d.get("log", False)),
            d.get("saturation"),
        )


def _as_recipe(recipe_or_roi: FeatureRecipe | Roi) -> FeatureRecipe:
    return recipe_or_roi if isinstance(recipe_or_roi, FeatureRecipe) else FeatureRecipe(recipe_or_roi)


def features_from_roi(stack: np.ndarray, recipe: FeatureRecipe | Roi, out: np.ndarray | None = None) -> np.ndarray:
    """Feature vectors ``(n, recipe.n_features)`` float32 of ROI images ``stack`` ``(n, h, w)``.

    ``stack`` must have the ROI's shape (``(h, w)`` one frame is accepted too). Non-finite values are
    treated as 0 (``stack`` itself is not changed). ``out``: an array to write into (rows = frames).
    """
    recipe = _as_recipe(recipe)
    stack = np.asarray(stack)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3 or stack.shape[1:] != recipe.roi.shape:
        raise FeatureError(
            f"stack has shape {stack.shape}, expected (n, {recipe.roi.shape[0]}, "
            f"{recipe.roi.shape[1]}) for the {recipe.roi}"
        )
    n, h, w = stack.shape
    if out is None:
        out = np.empty((n, recipe.n_features), np.float32)
    elif out.shape != (n, recipe.n_features):
        raise FeatureError(f"out has shape {out.shape}, expected {(n, recipe.n_features)}")
    data = stack if stack.dtype == np.float32 else stack.astype(np.float32)
    _compute(data, recipe, out)
    if not np.isfinite(out.sum()):  # a NaN/inf pixel (a mask) got through: redo with those pixels at 0
        _compute(np.nan_to_num(data, copy=True, nan=0.0, posinf=0.0, neginf=0.0), recipe, out)
    return out


def _compute(data: np.ndarray, recipe: FeatureRecipe, out: np.ndarray) -> None:
    n, h, w = data.shape
    npx = recipe.n_pixel_features
    px = out[:, :npx]
    b = recipe.binning
    if b == 1:
        px[...] = data.reshape(n, h * w)
    else:
        hb, wb = recipe.binned_shape
        crop = data[:, : hb * b, : wb * b]
        rows = crop.reshape(n, hb, b, wb * b).sum(axis=2, dtype=np.float32)  # sum each block's b rows
        binned = px.reshape(n, hb, wb)  # a view: splits the contiguous last axis
        if b <= 8:  # then its b columns: b strided adds beat numpy's reduction over a short last axis
            np.copyto(binned, rows[:, :, 0::b])
            for k in range(1, b):
                binned += rows[:, :, k::b]
        else:
            rows.reshape(n, hb, wb, b).sum(axis=3, dtype=np.float32, out=binned)
        px *= np.float32(1.0 / (b * b))
    if recipe.log:
        np.maximum(px, 0, out=px)
        np.log1p(px, out=px)
    if recipe.summary:
        flat = data.reshape(n, h * w)
        s = out[:, npx:]
        s[:, 0] = flat.mean(axis=1)  # float32 with numpy's pairwise summation
        s[:, 1] = flat.std(axis=1)
        step = -(-(h * w) // PERCENTILE_SAMPLE)  # ceil: every step-th pixel, at most PERCENTILE_SAMPLE
        s[:, 2:5] = np.percentile(flat[:, ::step], [1.0, 50.0, 99.0], axis=1).T
        s[:, 5] = np.count_nonzero(flat <= 0, axis=1) / (h * w)
        s[:, 6] = 0.0 if recipe.saturation is None else np.count_nonzero(flat >= recipe.saturation, axis=1) / (h * w)


# ----------------------------------------------------------------------------- reading


def _runs(events: Sequence[int]) -> list[tuple[int, int, int]]:
    """``[(position, first event, length)]``: runs of consecutive increasing events."""
    out = []
    k = 0
    n = len(events)
    while k < n:
        j = k + 1
        while j < n and events[j] == events[j - 1] + 1:
            j += 1
        out.append((k, int(events[k]), j - k))
        k = j
    return out


def _is_hdf5(path: str) -> bool:
    return Path(path).suffix.lower() in HDF5_SUFFIXES


class ReadFailures:
    """Frames that could not be read: ``items`` holds ``(position in refs, ref, message, reason)``.

    Messages read like :class:`~photonflow.io.images.FrameReadError`'s, ``"<file> (event 3): <reason>"``;
    a failure of a whole file (missing, unreadable, ROI outside its frames) is one message,
    ``"<file> (N events): <reason>"``, shared by its refs.
    """

    def __init__(self):
        self.items: list[tuple[int, tuple[str, int | None], str, str]] = []  # position, ref, message, reason

    def add(self, pos: int, path: str, event, reason: str) -> None:
        self.items.append((pos, (path, event), str(FrameReadError(path, event, reason)), reason))

    def add_file(self, positions: Sequence[int], path: str, events: Sequence, reason: str) -> None:
        """One message for a whole file (all its events fail for the same reason)."""
        n = len(positions)
        where = "single frame" if n == 1 and events[0] is None else f"{n} event{'s' * (n != 1)}"
        message = f"{path} ({where}): {reason}"
        for pos, event in zip(positions, events):
            self.items.append((pos, (path, event), message, reason))

    def messages(self) -> list[str]:
        out, seen = [], set()
        for _, _, message, _ in sorted(self.items, key=lambda t: t[0]):
            if message not in seen:
                seen.add(message)
                out.append(message)
        return out


def iter_roi_batches(
    refs: Sequence[tuple[str, int | None]],
    roi: Roi,
    dataset: str | None = None,
    batch: int = DEFAULT_BATCH,
    failures: ReadFailures | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Read the ROI of every ref, yielding ``(positions, stack)`` batches of up to ``batch`` frames.

    ``batch`` is capped so that the buffer stays under :data:`MAX_BUFFER_BYTES` (64 MiB).
    ``positions``: indices into ``refs`` of the frames in ``stack`` (float32 ``(m, h, w)``). The
    stack is a view of a buffer reused for the next batch: copy what you keep. Refs of one file are
    read together, file by file in order of first appearance, events sorted so that each contiguous
    run is one HDF5 read. Refs that cannot be read go to ``failures`` (a :class:`ReadFailures`) and
    are not yielded.
    """
    failures = failures if failures is not None else ReadFailures()
    h, w = roi.shape
    batch = max(1, min(int(batch), MAX_BUFFER_BYTES // (4 * h * w)))
    buf = np.empty((batch, h, w), np.float32)
    pos_buf = np.empty(batch, np.int64)
    fill = 0
    groups: dict[str, list[int]] = {}
    for pos, ref in enumerate(refs):
        groups.setdefault(os.fspath(ref[0]), []).append(pos)
    for path, positions in groups.items():
        events = [refs[p][1] for p in positions]
        if not os.path.isfile(path):
            reason = "is a directory, not a file" if os.path.isdir(path) else "no such file"
            failures.add_file(positions, path, events, reason)
            continue
        if _is_hdf5(path):
            source = _hdf5_frames(path, positions, events, roi, dataset, failures, batch)
        else:
            source = _other_frames(path, positions, events, roi, dataset, failures)
        for chunk_positions, reader in source:
            # reader(dest) fills dest (len(chunk_positions), h, w) and returns the positions it filled
            m = len(chunk_positions)
            if fill + m > batch:
                if fill:
                    yield pos_buf[:fill].copy(), buf[:fill]
                    fill = 0
            done = reader(buf[fill : fill + m])  # frames that failed are left out, the rest packed
            k = len(done)
            pos_buf[fill : fill + k] = done
            fill += k
    if fill:
        yield pos_buf[:fill].copy(), buf[:fill]


def _hdf5_frames(path, positions, events, roi, dataset, failures, step):
    """Chunks ``(positions, reader)`` for one HDF5 file; failures recorded here."""
    try:
        f = open_hdf5(path)
    except Exception as exc:
        failures.add_file(positions, path, events, f"cannot open HDF5 file: {_describe(exc)}")
        return
    with f:
        try:
            ds = find_image_dataset(f, dataset, path)
        except FrameReadError as exc:
            failures.add_file(positions, path, events, exc.reason)
            return
        except Exception as exc:
            failures.add_file(positions, path, events, _describe(exc))
            return
        if ds.ndim not in (2, 3):
            failures.add_file(positions, path, events, f"dataset {ds.name!r} has shape {ds.shape}, expected 2D or 3D")
            return
        n = ds.shape[0] if ds.ndim == 3 else 1
        frame_shape = ds.shape[-2:]
        if not roi.fits(frame_shape):
            failures.add_file(
                positions,
                path,
                events,
                f"{roi} lies outside the frame ({frame_shape[0]} x {frame_shape[1]} pixels, ss x fs)",
            )
            return
        good: list[tuple[int, int]] = []  # (event index, position)
        for pos, event in zip(positions, events):
            if event is None:
                if n != 1:
                    failures.add(pos, path, None, f"file has {n} frames: give an event (0..{n - 1})")
                    continue
                event = 0
            elif isinstance(event, bool) or not isinstance(event, (int, np.integer)):
                failures.add(pos, path, event, f"event must be a frame index, got {event!r}")
                continue
            if not 0 <= event < n:
                failures.add(pos, path, int(event), f"event {event} out of range (file has {n} frame{'s' * (n != 1)})")
                continue
            good.append((int(event), pos))
        good.sort()
        ss, fs = roi.slices

        def make_reader(items):
            def reader(dest):
                idx = [e for e, _ in items]
                try:
                    if ds.ndim == 2:
                        for k in range(len(items)):
                            ds.read_direct(dest, np.s_[ss, fs], np.s_[k])
                    else:
                        for k, e0, m in _runs(idx):
                            ds.read_direct(dest, np.s_[e0 : e0 + m, ss, fs], np.s_[k : k + m])
                    return [p for _, p in items]
                except Exception:
                    return _one_by_one(items, dest)

            def _one_by_one(items, dest):  # a corrupt chunk: find which frames fail
                done = []
                for e, p in items:
                    try:
                        sel = np.s_[ss, fs] if ds.ndim == 2 else np.s_[e, ss, fs]
                        ds.read_direct(dest, sel, np.s_[len(done)])
                        done.append(p)
                    except Exception as exc:
                        failures.add(p, path, e if ds.ndim == 3 else None, f"cannot read frame: {_describe(exc)}")
                return done

            return reader

        for k in range(0, len(good), step):
            items = good[k : k + step]
            yield [p for _, p in items], make_reader(items)


def _other_frames(path, positions, events, roi, dataset, failures):
    """Chunks for a non-HDF5 file: one frame at a time through photonflow.io.read_frame."""
    for pos, event in zip(positions, events):

        def reader(dest, pos=pos, event=event):
            try:
                frame = read_frame(path, event, dataset)
            except FrameReadError as exc:
                failures.add(pos, path, event, exc.reason)
                return []
            if not roi.fits(frame.shape):
                failures.add(
                    pos,
                    path,
                    event,
                    f"{roi} lies outside the frame ({frame.shape[0]} x {frame.shape[1]} pixels, ss x fs)",
                )
                return []
            dest[0] = frame[roi.slices]
            return [pos]

        yield [pos], reader


def read_roi(
    path: str | os.PathLike,
    events: int | Sequence[int] | None,
    roi: Roi,
    dataset: str | None = None,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The ROI of frames of one file as float32 ``(n, h, w)``, in the order of ``events``.

    ``events``: frame indices (an int, a sequence, a range), or None for all frames of the file (a
    single-frame file has one). HDF5: only the ROI hyperslab is read, one ``read_direct`` per
    contiguous run of events. Other formats: :func:`photonflow.io.images.read_frame`, cropped.
    ``out``: float32 ``(n, h, w)`` to read into. Raises FrameReadError naming the file, the event and
    the reason at the first frame that cannot be read (use :func:`extract_features` to read on past
    failures).
    """
    path = os.fspath(path)
    if events is None:
        events = _all_events(path, dataset)
    elif isinstance(events, (int, np.integer)):
        events = [int(events)]
    events = list(events)
    refs = [(path, e) for e in events]
    h, w = roi.shape
    if out is None or out.shape != (len(events), h, w) or out.dtype != np.float32:
        out = np.empty((len(events), h, w), np.float32)
    failures = ReadFailures()
    for positions, stack in iter_roi_batches(refs, roi, dataset, failures=failures):
        if failures.items:
            break
        out[positions] = stack
    if failures.items:
        _, (p, e), _, reason = min(failures.items, key=lambda t: t[0])
        raise FrameReadError(p, e, reason)
    return out


def _all_events(path: str, dataset: str | None) -> list[int | None]:
    if not _is_hdf5(path):
        n = frame_count(path, dataset)
        return [None] if n == 1 else list(range(n))
    return list(range(frame_count(path, dataset)))


# ----------------------------------------------------------------------------- feature sets


@dataclass
class FeatureSet:
    """Features of the frames that could be read.

    X: float32 ``(n, n_features)``. refs: the frame of each row. index: the row's position in the refs
    given to :func:`extract_features` (to pick labels: ``labels[fs.index]``). failures: one message
    per failure (file, event, reason). failed: the refs that could not be read. elapsed_s: wall time.
    """

    X: np.ndarray
    refs: list[tuple[str, int | None]]
    failures: list[str]
    index: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    failed: list[tuple[str, int | None]] = field(default_factory=list)
    recipe: FeatureRecipe | None = None
    elapsed_s: float = 0.0

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def frames_per_second(self) -> float:
        return len(self.refs) / self.elapsed_s if self.elapsed_s > 0 else float("nan")


def extract_features(
    refs: Sequence[tuple[str, int | None]],
    recipe: FeatureRecipe | Roi,
    dataset: str | None = None,
    batch: int = DEFAULT_BATCH,
) -> FeatureSet:
    """Read the ROI of every ref and turn it into features (:func:`features_from_roi`).

    Refs are ``(path, event)`` (EventRef or FrameRef). Rows come in the order of ``refs``, without
    the frames that failed; each failure names the file, the event and the reason, and the rest goes
    on. ``batch``: frames read and converted at a time (memory: ``batch · h · w · 4`` bytes plus X).
    """
    t0 = time.perf_counter()
    recipe = _as_recipe(recipe)
    refs = list(refs)
    X = np.empty((len(refs), recipe.n_features), np.float32)
    ok = np.zeros(len(refs), bool)
    failures = ReadFailures()
    tmp = None
    for positions, stack in iter_roi_batches(refs, recipe.roi, dataset, batch, failures):
        m = len(positions)
        p0 = int(positions[0])
        if positions[-1] - p0 == m - 1 and np.all(np.diff(positions) == 1):  # in order: straight into X
            features_from_roi(stack, recipe, out=X[p0 : p0 + m])
        else:
            if tmp is None or len(tmp) < m:
                tmp = np.empty((m, recipe.n_features), np.float32)
            X[positions] = features_from_roi(stack, recipe, out=tmp[:m])
        ok[positions] = True
    index = np.flatnonzero(ok)
    if len(index) < len(refs):
        X = X[index]
    failed_pos = sorted({item[0] for item in failures.items})
    return FeatureSet(
        X=X,
        refs=[(os.fspath(refs[i][0]), refs[i][1]) for i in index],
        failures=failures.messages(),
        index=index,
        failed=[(os.fspath(refs[i][0]), refs[i][1]) for i in failed_pos],
        recipe=recipe,
        elapsed_s=time.perf_counter() - t0,
    )
