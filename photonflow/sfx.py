"""Serial crystallography: peak finding and hit finding over batches of frames.

:class:`SfxProcessor` takes a batch of frame references (multi-event CXI/HDF5 files or single
images), finds the Bragg peaks of every frame with peakfinder8 or the PeakNet-style network, marks
the hits (a frame is a hit when ``min_peaks <= n_peaks <= max_peaks``, both bounds inclusive),
estimates a resolution per frame, and writes per batch:

* ``peaks/<batch>.cxi``: every frame's peak list (CrystFEL/Cheetah CXI layout, slab pixels) with
  its source file and event;
* ``hits/<batch>.cxi``: the hit frames themselves with their peak lists, a Cheetah-style file that
  ``indexamajig --peaks=cxi`` reads (when ``save_hit_frames``);
* ``artifacts/<batch>.npy``: for the network, how many frames of the batch it marked each pixel
  as artifact (the run adds them up into an automatic mask).

A frame that cannot be read, does not match the geometry, or has NaN in unmasked pixels is a
failure naming its file and event; the rest of the batch goes on.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import FrameRef, read_batch
from .io.atomic import atomic_path
from .io.cxi import write_cxi_peaks
from .io.geom import DetectorGeometry, load_geometry
from .io.masks import read_mask
from .peaks.peakfinder8 import AsicGrid, Peakfinder8, Peakfinder8Params
from .peaks.peaklist import PeakList
from .results import BatchResult

FINDERS = ("peakfinder8", "peaknet")
RESOLUTION_RANK = 3


@dataclass(frozen=True)
class HitCriteria:
    """A frame is a hit when ``min_peaks <= n_peaks <= max_peaks`` (both inclusive)."""

    min_peaks: int = 10
    max_peaks: int = 2048

    def __post_init__(self):
        if self.min_peaks < 0 or self.max_peaks < self.min_peaks:
            raise ValueError(
                f"hit bounds must satisfy 0 <= min_peaks <= max_peaks, got [{self.min_peaks}, {self.max_peaks}]"
            )

    def is_hit(self, n_peaks: int) -> bool:
        return self.min_peaks <= n_peaks <= self.max_peaks


def resolution_estimate(d_spacings_A: np.ndarray, rank: int = RESOLUTION_RANK) -> float:
    """A frame's resolution, Å: the d-spacing of its ``rank``-th highest-resolution peak (the
    highest when it has fewer), so one or two spurious outer peaks do not set it; NaN without peaks."""
    d = np.sort(np.asarray(d_spacings_A, dtype=float)[np.isfinite(d_spacings_A)])
    if d.size == 0:
        return float("nan")
    return float(d[min(rank, d.size) - 1])


#: What a batch produced: a BatchResult whose ``extra`` holds ``peaks_file``, ``hits_file``,
#: ``artifact_counts`` (.npy of per-pixel artifact counts, network only), ``hits`` and ``finder_s``.
SfxBatchReport = BatchResult


class SfxProcessor:
    """Peak and hit finding for one detector geometry and one set of parameters.

    geometry: CrystFEL .geom path or a DetectorGeometry; output_dir: where batch outputs go;
    finder: "peakfinder8" or "peaknet"; peakfinder8: its parameters (dict or
    :class:`Peakfinder8Params`; radii in pixels); peaknet: options of
    :class:`~photonflow.peaks.peaknet.PeakNetFinder` (checkpoint, batch_size, peak_probability,
    min_pixel_count); backend: "numpy" or "torch" for peakfinder8; device: torch device or "auto";
    mask: optional mask file (nonzero = good) combined with the geometry's bad regions;
    hits: the hit bounds; save_hit_frames: write the hit frames to ``hits/<batch>.cxi``.
    """

    def __init__(
        self,
        geometry,
        output_dir,
        finder: str = "peakfinder8",
        peakfinder8=None,
        peaknet=None,
        hits: HitCriteria | None = None,
        mask=None,
        backend: str = "numpy",
        device: str = "auto",
        save_hit_frames: bool = True,
    ):
        if finder not in FINDERS:
            raise ValueError(f"finder must be one of {', '.join(FINDERS)}, got {finder!r}")
        if backend not in ("numpy", "torch"):
            raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")
        self.geometry: DetectorGeometry = (
            geometry if isinstance(geometry, DetectorGeometry) else load_geometry(geometry)
        )
        self.output_dir = Path(output_dir)
        self.finder_name = finder
        self.hits = hits or HitCriteria()
        self.save_hit_frames = save_hit_frames
        self.shape = tuple(self.geometry.slab_shape)
        good = self.geometry.good_pixel_mask()
        if mask is not None:
            good &= ~_read_good_mask(mask, self.shape)
        # The geometry's HDF5 masks: from mask_file once; from the data files per file.
        self._mask_in_data = any(p.mask and not p.mask_file for p in self.geometry.panels)
        if self.geometry.has_file_masks() and not self._mask_in_data:
            good &= self.geometry.file_mask()
        self.good = good
        self.resolution_map = self.geometry.resolution_map()
        self.dataset = self._data_path()
        self._backend, self._device = backend, device
        if finder == "peakfinder8":
            params = (
                peakfinder8
                if isinstance(peakfinder8, Peakfinder8Params)
                else Peakfinder8Params.from_dict(dict(peakfinder8 or {}))
            )
            self._pf8_params = params
            self.finder = self._peakfinder8(good)
            self.parameters = {"finder": finder, "backend": backend, **params.to_dict()}
        else:
            from .peaks.peaknet import PeakNetFinder

            options = dict(peaknet or {})
            self.finder = PeakNetFinder(device=device, panel_map=self.geometry.panel_map(), **options)
            self.parameters = {"finder": finder, "device": str(device), **{k: str(v) for k, v in options.items()}}

    @classmethod
    def from_options(cls, options: dict) -> "SfxProcessor":
        """The processor of the runner's JSON-able options: geometry, output_dir, finder,
        peakfinder8, peaknet, hits ({"min_peaks", "max_peaks"}), mask, backend, device,
        save_hit_frames (the sfx run file's fields, see config/schemas/sfx_run.schema.json)."""
        return cls(
            options["geometry"],
            options["output_dir"],
            finder=options.get("finder", "peakfinder8"),
            peakfinder8=options.get("peakfinder8"),
            peaknet=options.get("peaknet"),
            hits=HitCriteria(**options.get("hits", {})),
            mask=options.get("mask"),
            backend=options.get("backend", "numpy"),
            device=options.get("device", "auto"),
            save_hit_frames=options.get("save_hit_frames", True),
        )

    def _peakfinder8(self, good: np.ndarray):
        """A peakfinder8 (numpy or torch backend) for the geometry with the given good-pixel mask."""
        layout = self.geometry.asic_layout()
        asics = AsicGrid.from_layout(layout) if layout is not None else AsicGrid.whole(self.shape)
        args = (self.geometry.radius_map(), asics, good, self._pf8_params)
        if self._backend == "torch":
            from .peaks.peakfinder8_torch import TorchPeakfinder8

            return TorchPeakfinder8(*args, device=self._device)
        return Peakfinder8(*args)

    def _find_with_data_file_masks(self, frames: np.ndarray, refs: list[FrameRef], report: SfxBatchReport):
        """Peaks when the geometry's mask is stored in the data files: each file's mask (its 2-D
        mask dataset, or the event's slice of a 3-D one) joins the other masks. A frame whose file
        lacks the mask fails, named; the others go on."""
        from .io.geom import GeometryError

        keep, masks = [], []
        for k, ref in enumerate(refs):
            try:
                masks.append(self.good & self.geometry.file_mask(ref.path, ref.event))
            except GeometryError as exc:
                report.fail(ref, str(exc))
                continue
            keep.append(k)
        frames, refs = frames[keep], [refs[k] for k in keep]
        if not keep:
            return frames, refs, [], None
        if self.finder_name == "peaknet":
            peaks, labels = self.finder.find_with_labels(frames, mask=~np.stack(masks))
            return frames, refs, peaks, labels
        peaks = []
        finders: dict[bytes, object] = {}
        for frame, good in zip(frames, masks):
            key = np.packbits(good).tobytes()
            if key not in finders:  # usually one mask per file: one finder per distinct mask
                finders[key] = self._peakfinder8(good)
            peaks.append(finders[key].find(frame))
        return frames, refs, peaks, None

    def _data_path(self) -> str | None:
        """The geometry's HDF5 data path when it names one fixed dataset."""
        paths = {p.data for p in self.geometry.panels if p.data}
        if len(paths) == 1:
            path = paths.pop()
            if "%" not in path:
                return path
        return None

    def find(self, frames: np.ndarray) -> tuple[list[PeakList], np.ndarray | None]:
        """Peak lists of a (n, ss, fs) stack, and the network's labels (None for peakfinder8)."""
        if self.finder_name == "peaknet":
            return self.finder.find_with_labels(frames, mask=~self.good)  # True = masked
        return self.finder.find_batch(frames), None

    def process(self, refs, batch_name: str) -> SfxBatchReport:
        """Find peaks and hits in a batch of frames; write the batch outputs; return a report."""
        t0 = time.perf_counter()
        report = BatchResult(
            extra={"peaks_file": None, "hits_file": None, "artifact_counts": None, "hits": 0, "finder_s": 0.0}
        )
        refs = [r if isinstance(r, FrameRef) else FrameRef(str(r[0]), r[1]) for r in refs]
        batch = read_batch(refs, expected_shape=self.shape, dtype=np.float32, dataset=self.dataset)
        for failure in batch.failures:
            line, reason = str(failure), failure.reason
            if "differs from expected" in line:
                reason = (
                    f"frame shape does not match the geometry {self.geometry.source_path or ''} "
                    f"(slab {self.shape[0]} x {self.shape[1]}): {failure.reason}"
                )
                line = f"{FrameRef(failure.path, failure.event)}: {reason}"
            report.fail(FrameRef(failure.path, failure.event), reason, line)
        frames, good_refs = self._drop_nan_frames(batch.frames, list(batch.refs), report)
        if len(good_refs) == 0:
            report.elapsed_s = time.perf_counter() - t0
            return report
        t_find = time.perf_counter()
        if self._mask_in_data:
            frames, good_refs, peak_lists, labels = self._find_with_data_file_masks(frames, good_refs, report)
        else:
            peak_lists, labels = self.find(frames)
        report.extra["finder_s"] = time.perf_counter() - t_find

        hit_rows = []
        for k, (ref, peaks) in enumerate(zip(good_refs, peak_lists, strict=True)):
            d = self._d_spacings(peaks)
            n = len(peaks)
            hit = self.hits.is_hit(n)
            report.rows.append(
                {
                    "path": ref.path,
                    "event": -1 if ref.event is None else int(ref.event),
                    "n_peaks": n,
                    "hit": bool(hit),
                    "resolution_A": resolution_estimate(d),
                    "total_intensity": float(np.sum(peaks.intensity)) if n else 0.0,
                }
            )
            if hit:
                hit_rows.append(k)
        report.done = len(good_refs)
        report.extra["hits"] = len(hit_rows)

        sources = [r.path for r in good_refs]
        events = [r.event for r in good_refs]
        report.extra["peaks_file"] = str(
            write_cxi_peaks(self.output_dir / "peaks" / f"{batch_name}.cxi", peak_lists, events=events, sources=sources)
        )
        report.files.append(report.extra["peaks_file"])
        if self.save_hit_frames and hit_rows:
            report.extra["hits_file"] = str(
                write_cxi_peaks(
                    self.output_dir / "hits" / f"{batch_name}.cxi",
                    [peak_lists[k] for k in hit_rows],
                    events=[events[k] for k in hit_rows],
                    sources=[sources[k] for k in hit_rows],
                    frames=frames[hit_rows],
                )
            )
            report.files.append(report.extra["hits_file"])
        if labels is not None:
            from .peaks.peaknet import CLASSES

            counts = np.sum(labels == CLASSES.index("artifact"), axis=0, dtype=np.int32)
            path = self.output_dir / "artifacts" / f"{batch_name}.npy"
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, counts)
            report.extra["artifact_counts"] = str(path)
        report.elapsed_s = time.perf_counter() - t0
        report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        return report

    def _drop_nan_frames(self, frames: np.ndarray, refs: list[FrameRef], report: SfxBatchReport):
        """Frames with NaN in unmasked pixels are failures (named); the others go on."""
        if len(refs) == 0:
            return frames, refs
        bad = np.isnan(frames[:, self.good]).sum(axis=1) if np.isnan(frames.sum()) else np.zeros(len(refs), int)
        if not bad.any():
            return frames, refs
        keep = []
        for k, count in enumerate(bad):
            if count:
                ss, fs = np.argwhere(np.isnan(frames[k]) & self.good)[0]
                report.fail(
                    refs[k],
                    f"{int(count)} NaN pixel(s) in unmasked pixels "
                    f"(first at ss={ss}, fs={fs}); mask them or fix the data",
                )
            else:
                keep.append(k)
        return frames[keep], [refs[k] for k in keep]

    def _d_spacings(self, peaks: PeakList) -> np.ndarray:
        """d-spacing (Å) at each peak's nearest pixel."""
        if len(peaks) == 0:
            return np.zeros(0)
        ss = np.clip(np.rint(peaks.ss).astype(int), 0, self.shape[0] - 1)
        fs = np.clip(np.rint(peaks.fs).astype(int), 0, self.shape[1] - 1)
        return self.resolution_map[ss, fs]


def _read_good_mask(mask, shape) -> np.ndarray:
    """A mask file (Cheetah/OM convention: nonzero = good pixel; HDF5: its ``/mask`` dataset or
    the first image dataset) or array, as bool True = masked; shape checked against the slab."""
    if isinstance(mask, np.ndarray):
        masked = np.asarray(mask) == 0
    else:
        dataset = None
        if str(mask).lower().endswith((".h5", ".hdf5", ".cxi", ".nxs")):
            import h5py

            with h5py.File(mask, "r") as f:
                dataset = "/mask" if "mask" in f else None
        masked = read_mask(mask, invert=True, dataset=dataset)
    if masked.shape != tuple(shape):
        raise ValueError(f"{mask}: mask shape {masked.shape} does not match the geometry's slab {tuple(shape)}")
    return masked


def artifact_mask(batch_counts, frames: int, fraction: float = 0.5):
    """The network's automatic mask from per-batch artifact counts (per pixel, frames marked
    artifact): (total counts, fraction of frames, True where marked in at least ``fraction``)."""
    counts = None
    for c in batch_counts:
        counts = np.asarray(c, dtype=np.int64) if counts is None else counts + c
    share = counts / max(int(frames), 1)
    return counts, share, share >= fraction


def batch_name(index: int) -> str:
    """Name of the index-th batch's outputs."""
    return f"batch_{index:05d}"
