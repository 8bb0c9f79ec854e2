"""SAXS/WAXS reduction of batches of frames: read, integrate, slice, write.

`SaxsReducer` holds the expensive state (the CSR matrices of every radial integration and slice),
built once per calibration and cached on disk, and reduces one batch of frames at a time:

* per frame and per ``Masks`` entry a SAXSDOG-compatible ``.chi`` file
  ``<out>/chi/<relative input path>/<stem>[_<event>]_<mask>.chi`` (slices: ``_slice_<name>.chi``);
* per batch and per integration one NeXus file ``<out>/curves/<batch>_<name>.h5`` with all curves;
* per frame a row of integral parameters (I0, I1, I2, correlation length) for the run table.

Bad frames (unreadable, truncated, wrong shape) are reported as failures with file, event and
reason; the other frames of the batch are still reduced. Nothing already written is touched except
by an atomic replacement when overwriting.
"""

from __future__ import annotations

import hashlib
import os
import resource
import threading
import time
from pathlib import Path

import numpy as np

from .calibration import Calibration, load_calibration
from .integrate import integral_parameters
from .io import FrameReadError, FrameRef, read_batch, read_chi, read_monitor, write_chi, write_curves
from .results import BatchResult
from .slices import calibration_slice_integrators

__all__ = ["SaxsReducer", "BatchReport", "output_stem", "CHI_DIGITS"]

# Significant digits of the numbers in .chi files: the sums are float32 (about 7 meaningful digits),
# so 10 lose nothing, and format in half the time of SAXSDOG's 19 (%.18e), which is the per-frame
# cost that dominates after the integration itself. Same layout, same columns.
CHI_DIGITS = 10


#: What a batch produced (photonflow.results.BatchResult; ``extra["files_written"]`` counts files).
BatchReport = BatchResult


def output_stem(ref: FrameRef, input_root: str | None) -> Path:
    """Relative output path (without suffix) of a frame: input tree mirrored under the output."""
    p = Path(ref.path)
    try:
        rel = p.resolve().relative_to(Path(input_root).resolve()) if input_root else Path(p.name)
    except ValueError:
        rel = Path(p.name)
    stem = rel.with_suffix("")
    if ref.event is not None:
        stem = stem.with_name(f"{stem.name}_{ref.event:05d}")
    return stem


class SaxsReducer:
    """Integrate and slice batches of frames for one calibration."""

    def __init__(self, calibration: Calibration, output_dir, input_root: str | None = None, cache_dir=None):
        self.calibration = calibration
        self.output_dir = Path(output_dir)
        self.input_root = input_root
        cache_dir = cache_dir or (self.output_dir / ".cache")
        self.integrators = calibration.build_integrators(cache_dir=cache_dir)
        self.slice_integrators = calibration_slice_integrators(calibration) if calibration.slices else []
        self.names = [spec.name for spec in calibration.radial]
        self.slice_names = [f"slice_{spec.name}" for spec in calibration.slices]
        self.chi_config = calibration.raw
        reset_peak_rss()
        self._warm_up()
        self._local = threading.local()  # per-thread reusable frame buffer (integer detectors)
        for integ in self.integrators + self.slice_integrators:
            integ._pixel_major()  # build the kernel's layout now: reduce() may run in several threads

    def _warm_up(self) -> None:
        """Compile (or load from numba's cache) the kernel for the usual integer frames now, not
        in the first batch: a live session would otherwise start with a backlog."""
        probe = np.zeros((2, *self.calibration.shape), np.int32)
        for integ in self.integrators + self.slice_integrators:
            integ.integrate(probe)

    @classmethod
    def from_file(cls, calibration_path, output_dir, input_root=None, **calibration_options):
        return cls(load_calibration(calibration_path, **calibration_options), output_dir, input_root)

    @classmethod
    def from_options(cls, options: dict) -> "SaxsReducer":
        """The reducer of the runner's options: ``calibration`` (path), ``calibration_options``
        (for a .poni: npt, q_range in nm⁻¹, oversampling, mask_file, polarization_factor, shape),
        ``output_dir``, ``input_root`` (outputs mirror the input tree below it) and ``overwrite``."""
        reducer = cls.from_file(
            options["calibration"],
            options["output_dir"],
            options.get("input_root"),
            **dict(options.get("calibration_options") or {}),
        )
        reducer.default_overwrite = options.get("overwrite")
        return reducer

    default_overwrite: bool | None = None

    def process(self, refs, batch_name: str | None = None) -> BatchResult:
        """The processor interface of the registry: :meth:`reduce` with the run's overwrite."""
        return self.reduce([FrameRef(*r) for r in refs], overwrite=self.default_overwrite, batch_label=batch_name)

    # ------------------------------------------------------------------ paths
    def chi_path(self, ref: FrameRef, name: str) -> Path:
        stem = output_stem(ref, self.input_root)
        return self.output_dir / "chi" / stem.parent / f"{stem.name}_{name}.chi"

    def is_done(self, ref: FrameRef) -> bool:
        return all(self.chi_path(ref, n).exists() for n in self.names + self.slice_names)

    # ------------------------------------------------------------------ work
    def reduce(
        self, refs: list[FrameRef], overwrite: bool | None = None, batch_label: str | None = None, chunk: int = 32
    ) -> BatchReport:
        """Reduce the frames of ``refs``; frames already done are skipped unless overwriting."""
        t0 = time.perf_counter()
        overwrite = self.calibration.overwrite if overwrite is None else overwrite
        report = BatchResult()
        files_written = 0
        todo = []
        for ref in refs:
            ref = FrameRef(*ref)
            if not overwrite and self.is_done(ref):
                report.skipped += 1
                report.rows.extend(self._rows_from_existing(ref))
            else:
                todo.append(ref)
        if batch_label is None and todo:
            batch_label = "batch-" + hashlib.sha1("\n".join(map(str, todo)).encode()).hexdigest()[:12]
        curves = {name: {"ids": [], "I": [], "sigma": [], "q": None} for name in self.names + self.slice_names}
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            buffer = getattr(self._local, "buffer", None)
            batch = read_batch(part, expected_shape=self.calibration.shape, buffer=buffer)
            if buffer is None and len(batch.refs) and batch.frames.dtype.kind in "iu":
                self._local.buffer = np.empty((chunk, *self.calibration.shape), batch.frames.dtype)
            for f in batch.failures:
                report.fail(f.ref, f.reason, str(f))
            frames, good = batch.frames, batch.refs
            monitor = None
            if self.calibration.monitor_key:
                values = []
                for ref in good:
                    try:
                        values.append(read_monitor(ref, self.calibration.monitor_key))
                    except FrameReadError as exc:
                        report.fail(exc.ref, exc.reason, str(exc))
                        values.append(None)
                keep = [i for i, v in enumerate(values) if v is not None]
                frames, good = frames[keep], [good[i] for i in keep]
                monitor = np.array([values[i] for i in keep])
            if not good:
                continue
            batch = batch._replace(frames=frames, refs=good)
            mtimes = [_mtime(r.path) for r in batch.refs]
            results = [(n, integ.integrate(frames, monitor)) for n, integ in zip(self.names, self.integrators)]
            results += [
                (n, integ.integrate(frames, monitor)) for n, integ in zip(self.slice_names, self.slice_integrators)
            ]
            for (name, res), spec in zip(results, self.calibration.radial + [None] * len(self.slice_names)):
                params = None
                if spec is not None:
                    params = integral_parameters(res.q, res.intensity, spec.q_start, spec.q_stop)
                for f, ref in enumerate(batch.refs):
                    p = {"I0": 0.0, "I1": 0.0, "I2": 0.0}
                    if params is not None:
                        p = {k: float(params[k][f]) for k in ("I0", "I1", "I2")}
                    path = self.chi_path(ref, name)
                    try:
                        write_chi(path, res.q, res.intensity[f], res.sigma[f], self.chi_config, p, digits=CHI_DIGITS)
                    except OSError as exc:
                        error = FrameReadError(ref.path, ref.event, f"cannot write {path}: {exc}")
                        report.fail(ref, error.reason, str(error))
                        continue
                    files_written += 1
                    report.outputs.setdefault(str(ref), []).append(str(path))
                    if params is not None:
                        report.rows.append(_row(ref, name, mtimes[f], params, f, self._relative(path)))
                    curves[name]["ids"].append(str(ref))
                    curves[name]["I"].append(res.intensity[f])
                    curves[name]["sigma"].append(res.sigma[f])
                curves[name]["q"] = res.q
            report.done += sum(1 for r in batch.refs if str(r) not in report.failed)
        for name, c in curves.items():
            if c["ids"]:
                path = self.output_dir / "curves" / f"{batch_label}_{name}.h5"
                try:
                    write_curves(
                        path,
                        c["q"],
                        np.array(c["I"]),
                        np.array(c["sigma"]),
                        c["ids"],
                        attrs={"calibration": self.calibration.source, "integration": name},
                    )
                except OSError as exc:  # the .chi files are written: report, do not fail the frames
                    report.failures.append(f"{path}: cannot write the batch's NeXus curves: {exc}")
                    continue
                files_written += 1
                report.files.append(str(path))
        report.extra["files_written"] = files_written
        report.elapsed_s = time.perf_counter() - t0
        report.peak_rss_mb = peak_rss_mb()
        return report

    def _rows_from_existing(self, ref: FrameRef) -> list[dict]:
        """Integral parameters of a frame done earlier, read back from its .chi headers."""
        rows = []
        for spec in self.calibration.radial:
            try:
                q, intensity, _, _ = read_chi(self.chi_path(ref, spec.name))
            except Exception:
                continue
            params = integral_parameters(q, intensity[None], spec.q_start, spec.q_stop)
            rows.append(
                _row(ref, spec.name, _mtime(ref.path), params, 0, self._relative(self.chi_path(ref, spec.name)))
            )
        return rows

    def _relative(self, path: Path) -> str:
        """A path below the output directory, relative to it (as the run's table stores it)."""
        try:
            return Path(path).relative_to(self.output_dir).as_posix()
        except ValueError:
            return str(path)


def reset_peak_rss() -> None:
    """Start measuring this process's peak memory from now (Linux: /proc/self/clear_refs), so that
    a worker forked from a larger parent does not report the parent's high-water mark."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM; ru_maxrss where /proc is absent)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _mtime(path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return float("nan")


def _row(ref: FrameRef, name: str, mtime: float, params: dict, f: int, chi: str | None = None) -> dict:
    return {
        "chi": chi,
        "frame": str(ref),
        "path": ref.path,
        "event": -1 if ref.event is None else int(ref.event),
        "integration": name,
        "time": float(mtime),
        "I0": float(params["I0"][f]),
        "I1": float(params["I1"][f]),
        "I2": float(params["I2"][f]),
        "correlation_length_nm": float(params["correlation_length"][f]),
    }
