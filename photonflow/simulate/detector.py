"""A simulated detector writer, for the real-time tests and benchmarks.

:class:`DetectorWriter` writes frames into a directory at a given rate from a background thread, the
way beamline detectors and their file writers do, including the ways that trip naive watchers:

``"inplace"``
    open the final name, write the TIFF bytes in ``parts`` chunks with ``part_delay_s`` between them,
    close. A watcher that reads on creation or modification reads a half-written file.
``"rename"``
    write a hidden temporary file (``.<name>.tmp`` beside the target), then ``os.replace`` it into place.
``"hdf5_swmr"``
    one growing HDF5 file ``hdf5_name`` (``libver='latest'``, dataset ``/entry/data/data`` with
    ``maxshape=(None, rows, cols)``, one chunk per frame, SWMR mode started), each frame appended and
    flushed. The HDF5 writing runs in a child process (``python -c``, fed the frames through a pipe):
    HDF5 keeps one open file per process, so a reader in the writer's process would share the writer's
    file instead of reading it as a SWMR reader on a beamline does. ``hdf5_in_process=True`` writes
    from the thread instead.
``"settle"``
    write in parts through a raw file descriptor that stays open for ``hold_open_s`` after the last
    byte (or until the writer stops): no close is observable while a watcher must decide, so only the
    settle rule (size and mtime stable, readable) can hand it over.

``written`` lists ``(path, event, t_complete)`` in order, ``event`` None for single-frame files and the
frame index in the HDF5 file, ``t_complete`` the ``time.time()`` at which the item became complete:
after the close, after the rename, after the SWMR flush ("settle": after the last byte).

TIFF bytes are encoded once per distinct frame (tifffile into memory) so writing costs only the
``write`` calls: on the 2-core development machine the writer does about 1000 frames/s of 1 Mpx int32
(4 MB) in "rename" and "inplace" with ``parts=1`` while the page cache absorbs the data (bursts of a
few GB, or indefinitely with ``keep_last``); kept on disk, the disk's write-back (~450 MB/s here) limits
a sustained run to about 100-130 such frames/s. ``frames``: an array ``(n, rows, cols)`` (cycled when ``count`` > n)
or a callable ``i -> frame`` (then ``count`` is required).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile

__all__ = ["DetectorWriter", "MODES", "tiff_bytes"]

MODES = ("inplace", "rename", "hdf5_swmr", "settle")
HDF5_DATASET = "/entry/data/data"


def tiff_bytes(frame: np.ndarray) -> bytes:
    """The bytes of an uncompressed single-page TIFF of ``frame`` (as tifffile writes it)."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.ascontiguousarray(frame))
    return buf.getvalue()


# The SWMR writer process: reads "rows cols dtype" parameters from argv and frames (raw bytes) from stdin,
# appends + flushes each, and reports "<event> <time.time()>" on stdout; "closed <t>" at the end.
_SWMR_CHILD = r"""
import sys, time
import numpy as np, h5py
path, dset, rows, cols, dtype = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), np.dtype(sys.argv[5])
inp, out = sys.stdin.buffer, sys.stdout
nbytes = rows * cols * dtype.itemsize
f = h5py.File(path, "w", libver="latest")
ds = f.create_dataset(dset, shape=(0, rows, cols), maxshape=(None, rows, cols), chunks=(1, rows, cols), dtype=dtype)
f.swmr_mode = True
out.write("ready\n"); out.flush()
i = 0
while True:
    buf = inp.read(nbytes)
    if len(buf) < nbytes:
        break
    ds.resize(i + 1, axis=0)
    ds[i] = np.frombuffer(buf, dtype).reshape(rows, cols)
    ds.flush()
    out.write(f"{i} {time.time()!r}\n"); out.flush()
    i += 1
f.close()
out.write(f"closed {time.time()!r}\n"); out.flush()
"""


class DetectorWriter:
    """Write ``count`` frames into ``directory`` at ``rate_hz`` from a thread (see the module doc).

        ``rate_hz``: frames per second (None or 0: as fast as possible); frame i is due at
        ``start + i / rate_hz``; a writer that falls behind writes at once (``max_lag_s`` tells by how
        much). ``name_pattern``: file name for frame i (``str.format``), may contain subdirectories.
        ``start_index``: index of the first frame (a restarted acquisition goes on numbering).
    ``keep_last`` (benchmarks only): delete the file of frame ``i - keep_last`` after writing frame ``i``,
    so that a long run at a high rate recycles the page cache instead of being throttled by the disk
    (uncompressed 1 Mpx int32 at 200 Hz is 800 MB/s, more than this machine's disk sustains; a consumer
    must keep up within ``keep_last`` frames or it finds files gone).
        After the run: ``written``, ``elapsed_s``, ``achieved_rate_hz``, ``max_lag_s``, ``error``.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        frames: np.ndarray | Callable[[int], np.ndarray],
        rate_hz: float | None,
        mode: str = "rename",
        name_pattern: str = "frame_{:06d}.tif",
        parts: int = 4,
        part_delay_s: float = 0.0,
        hdf5_name: str = "stack.h5",
        *,
        count: int | None = None,
        start_index: int = 0,
        hold_open_s: float = 1.0,
        hdf5_dataset: str = HDF5_DATASET,
        hdf5_in_process: bool = False,
        keep_last: int | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.directory = Path(directory)
        if callable(frames):
            if count is None:
                raise ValueError("count is required when frames is a callable")
            self._frame_fn = frames
            self._frames = None
        else:
            arr = np.asarray(frames)
            if arr.ndim == 2:
                arr = arr[None]
            if arr.ndim != 3 or arr.shape[0] == 0:
                raise ValueError(f"frames must be (n, rows, cols), got shape {arr.shape}")
            self._frames = arr
            self._frame_fn = None
            count = arr.shape[0] if count is None else count
        self.count = int(count)
        self.rate_hz = float(rate_hz) if rate_hz else 0.0
        self.mode = mode
        self.name_pattern = name_pattern
        self.parts = max(1, int(parts))
        self.part_delay_s = float(part_delay_s)
        self.hdf5_name = hdf5_name
        self.start_index = int(start_index)
        self.hold_open_s = float(hold_open_s)
        self.hdf5_dataset = hdf5_dataset
        self.hdf5_in_process = bool(hdf5_in_process)
        self.keep_last = None if keep_last is None else max(1, int(keep_last))

        self.written: list[tuple[str, int | None, float]] = []
        self.error: BaseException | None = None
        self.started_at: float | None = None
        self.elapsed_s: float | None = None
        self.max_lag_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tiff_cache: dict[int, bytes] = {}
        self._open_fds: list[tuple[float, int]] = []

    # ------------------------------------------------------------------ frames

    def frame(self, i: int) -> np.ndarray:
        """Frame number ``i`` (0-based within this run) as written."""
        if self._frames is not None:
            return self._frames[i % self._frames.shape[0]]
        return np.asarray(self._frame_fn(i))

    def _tiff(self, i: int) -> bytes:
        if self._frames is not None:
            k = i % self._frames.shape[0]
            data = self._tiff_cache.get(k)
            if data is None:
                data = self._tiff_cache[k] = tiff_bytes(self._frames[k])
            return data
        return tiff_bytes(self.frame(i))

    def path(self, i: int) -> Path:
        """The file that frame ``i`` (0-based within this run) goes to (single-file modes)."""
        return self.directory / self.name_pattern.format(self.start_index + i)

    @property
    def hdf5_path(self) -> Path:
        return self.directory / self.hdf5_name

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> DetectorWriter:
        if self._thread is not None:
            raise RuntimeError("DetectorWriter already started")
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._frames is not None and self.mode != "hdf5_swmr":
            for k in range(min(self.count, self._frames.shape[0])):  # encode before the clock starts
                self._tiff(k)
        self._thread = threading.Thread(target=self._run, name=f"detector-{self.mode}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop writing (the frame being written is finished) and wait for the thread."""
        self._stop.set()
        self.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; True if it has. Re-raises an error of the writer thread."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        if self.error is not None:
            raise RuntimeError(f"detector writer failed: {self.error!r}") from self.error
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> DetectorWriter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def achieved_rate_hz(self) -> float | None:
        """Frames completed per second over the run."""
        if not self.written or not self.elapsed_s:
            return None
        return len(self.written) / self.elapsed_s

    # ------------------------------------------------------------------ the thread

    def _pace(self, t0: float, i: int) -> bool:
        """Wait until frame i is due; False if stopped meanwhile."""
        if self.rate_hz > 0:
            due = t0 + i / self.rate_hz
            delay = due - time.perf_counter()
            if delay > 0:
                if self._stop.wait(delay):
                    return False
            else:
                self.max_lag_s = max(self.max_lag_s, -delay)
        return not self._stop.is_set()

    def _chunks(self, data: bytes):
        n = len(data)
        step = -(-n // self.parts)
        for k in range(0, n, step):
            yield data[k : k + step]

    def _write_parts(self, write: Callable[[bytes], object], data: bytes) -> None:
        view = memoryview(data)
        chunks = list(self._chunks(view))
        for j, chunk in enumerate(chunks):
            write(chunk)
            if self.part_delay_s > 0 and j < len(chunks) - 1:
                time.sleep(self.part_delay_s)

    def _run(self) -> None:
        self.started_at = time.time()
        t0 = time.perf_counter()
        try:
            if self.mode == "hdf5_swmr":
                if self.hdf5_in_process:
                    self._run_hdf5_thread(t0)
                else:
                    self._run_hdf5_child(t0)
            else:
                self._run_files(t0)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
        finally:
            self.elapsed_s = time.perf_counter() - t0
            for _, fd in self._open_fds:
                os.close(fd)
            self._open_fds.clear()

    def _run_files(self, t0: float) -> None:
        for i in range(self.count):
            self._close_held(time.monotonic())
            if not self._pace(t0, i):
                break
            path = self.path(i)
            path.parent.mkdir(parents=True, exist_ok=True)
            data = self._tiff(i)
            if self.mode == "inplace":
                with open(path, "wb", buffering=0) as f:
                    self._write_parts(f.write, data)
                self.written.append((os.fspath(path), None, time.time()))
            elif self.mode == "rename":
                tmp = path.with_name(f".{path.name}.tmp")
                with open(tmp, "wb", buffering=0) as f:
                    self._write_parts(f.write, data)
                os.replace(tmp, path)
                self.written.append((os.fspath(path), None, time.time()))
            else:  # settle: the descriptor stays open
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                self._open_fds.append((time.monotonic(), fd))
                self._write_parts(lambda b, fd=fd: _write_all(fd, b), data)
                self.written.append((os.fspath(path), None, time.time()))
            if self.keep_last is not None and i >= self.keep_last:
                try:
                    os.unlink(self.path(i - self.keep_last))
                except FileNotFoundError:
                    pass
        if self.mode == "settle":  # keep the last ones open for hold_open_s (or until stopped)
            while self._open_fds and not self._stop.is_set():
                self._close_held(time.monotonic())
                if self._open_fds:
                    self._stop.wait(max(0.0, self._open_fds[0][0] + self.hold_open_s - time.monotonic()))

    def _close_held(self, now: float) -> None:
        while self._open_fds and now - self._open_fds[0][0] >= self.hold_open_s:
            os.close(self._open_fds.pop(0)[1])

    def _run_hdf5_thread(self, t0: float) -> None:
        import h5py

        first = self.frame(0)
        path = self.hdf5_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w", libver="latest") as f:
            ds = f.create_dataset(
                self.hdf5_dataset,
                shape=(0, *first.shape),
                maxshape=(None, *first.shape),
                chunks=(1, *first.shape),
                dtype=first.dtype,
            )
            f.swmr_mode = True
            for i in range(self.count):
                if not self._pace(t0, i):
                    break
                ds.resize(i + 1, axis=0)
                ds[i] = self.frame(i)
                ds.flush()
                self.written.append((os.fspath(path), i, time.time()))

    def _run_hdf5_child(self, t0: float) -> None:
        first = np.ascontiguousarray(self.frame(0))
        path = self.hdf5_path
        path.parent.mkdir(parents=True, exist_ok=True)
        rows, cols = first.shape
        cmd = [
            sys.executable,
            "-c",
            _SWMR_CHILD,
            os.fspath(path),
            self.hdf5_dataset,
            str(rows),
            str(cols),
            first.dtype.str,
        ]
        child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=False)
        reader_error: list[BaseException] = []

        def read_reports() -> None:
            try:
                for line in child.stdout:
                    word, _, t = line.decode().partition(" ")
                    if word.isdigit():
                        self.written.append((os.fspath(path), int(word), float(t)))
            except BaseException as exc:  # noqa: BLE001
                reader_error.append(exc)

        try:
            if child.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"SWMR writer process did not start (exit code {child.wait()})")
            reader = threading.Thread(target=read_reports, daemon=True)
            reader.start()
            t0 = time.perf_counter()  # pace from when the file exists
            for i in range(self.count):
                if not self._pace(t0, i):
                    break
                frame = np.ascontiguousarray(self.frame(i), dtype=first.dtype)
                if frame.shape != first.shape:
                    raise ValueError(f"frame {i} has shape {frame.shape}, the file holds {first.shape}")
                child.stdin.write(frame.tobytes())
                child.stdin.flush()
        finally:
            try:
                child.stdin.close()
            except OSError:
                pass
            rc = child.wait()
            if "reader" in locals():
                reader.join()
            child.stdout.close()
        if rc != 0:
            raise RuntimeError(f"SWMR writer process exited with code {rc}")
        if reader_error:
            raise reader_error[0]


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
