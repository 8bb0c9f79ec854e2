"""Real-time benchmark: a simulated detector writes frames into a watched directory while
`photonflow watch` processes them.

    python benchmarks/realtime.py                       # SAXS: 200 Hz for 60 s (the issue's case)
    python benchmarks/realtime.py --rate 100 --duration 20
    python benchmarks/realtime.py --operation sfx --rate 0 --frames 400     # SFX: as fast as it goes
    python benchmarks/realtime.py --operation sfx --rate 8 --duration 60    # SFX: latency at 8 Hz

The detector (photonflow.simulate.detector.DetectorWriter, in this process) writes Pilatus 1M frames
(1043 × 981 int32, 4.1 MB: the real CeO2 image with Poisson noise) with a temporary name and renames
each into place, at a fixed rate. `photonflow watch` runs as its own process (the real command line,
on the embedded default: Prefect's local API). Like a detector PC's ring buffer, a cleaner deletes raw
files once the ledger says they are done (the disk here cannot hold 48 GB per minute otherwise).

SFX (``--operation sfx``): live peak and hit finding (peakfinder8, numpy) on simulated 1920 x 1920
serial-crystallography frames (config/geometry/sim1920.geom; 16 distinct frames, hits and non-hits),
one single-event CXI file (Bitshuffle-LZ4 int32, 3 MB) per frame, each hard-linked under a temporary
name and renamed into place (no disk bandwidth needed); ``--rate 0`` writes them all at once, which
measures the throughput (frames/s from the first frame complete to the last result).

Printed: frames written, processed, missed (written but never done), duplicated (processed more than
once, or a frame in more than one of the run's results), the throughput, and the latency from "file
complete" (after the rename) to "result written" (the ledger's finish time, taken after the outputs
are in place): p50, p99, max. SAXS targets on this 2-core machine: zero missed, zero duplicated,
p50 < 100 ms, p99 < 1 s.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("PHOTONFLOW_DATA", REPO.parent / "shared" / "data")) / "saxs"


def prepare_saxs(workdir: Path, args, n_frames: int):
    """Pilatus 1M frames, a SAXSDOG calibration, the watch config; the detector writer."""
    import fabio
    import tifffile

    from photonflow.geometry import Geometry
    from photonflow.simulate.detector import DetectorWriter

    image = fabio.open(str(DATA / "CeO2_Pilatus1M.tif")).data
    rng = np.random.default_rng(0)
    frames = rng.poisson(np.clip(image, 0, None), size=(8, *image.shape)).astype(np.int32)
    frames[:, image < 0] = image[image < 0]
    tifffile.imwrite(workdir / "mask.tif", (image < 0).astype(np.uint8))
    fit2d = Geometry.from_poni_file(DATA / "CeO2_Pilatus1M.poni", shape=image.shape).to_fit2d()
    calibration = {
        "Geometry": {
            "BeamCenter": [image.shape[0] - fit2d["center_y"], fit2d["center_x"]],
            "DedectorDistanceMM": fit2d["distance_mm"],
            "PixelSizeMicroM": [172.0, 172.0],
            "Imagesize": list(image.shape),
            "Tilt": {"TiltRotDeg": -fit2d["tilt_plane_rotation_deg"], "TiltAngleDeg": fit2d["tilt_deg"]},
        },
        "Wavelength": 0.4066,
        "Masks": [
            {
                "Name": "full",
                "MaskFile": "mask.tif",
                "Oversampling": args.oversampling,
                "PixelPerRadialElement": 1.0,
                "qStart": 5.0,
                "qStop": 40.0,
            }
        ],
        "OverwriteFiles": True,
    }
    (workdir / "calibration.json").write_text(json.dumps(calibration, indent=2))
    config, incoming = write_watch(workdir, args, "*.tif", calibration="calibration.json")
    return config, incoming, DetectorWriter(incoming, frames, rate_hz=args.rate, mode="rename", count=n_frames)


def write_watch(workdir: Path, args, pattern: str, **operation) -> tuple[Path, Path]:
    """The watch config (``operation``: the operation's fields) and the empty incoming directory."""
    watch = {
        **operation,
        "output_dir": "out",
        "patterns": [pattern],
        "batch_max_frames": args.batch_frames,
        "batch_max_wait_ms": args.batch_wait_ms,
        "workers": args.workers,
        "event_interval_s": 1.0,
    }
    (workdir / "watch.json").write_text(json.dumps(watch, indent=2))
    incoming = workdir / "incoming"
    incoming.mkdir()
    return workdir / "watch.json", incoming


class LinkWriter:
    """Frame files renamed into place at ``rate_hz`` (0: all at once): ``sources`` cycled, each frame
    hard-linked under a hidden temporary name, then renamed to ``frame_NNNNNN<suffix>``; ``written``
    lists ``(path, event, t_complete)`` as DetectorWriter's does (``event`` 0: one-event CXI files)."""

    def __init__(self, directory: Path, sources: list[Path], rate_hz: float, count: int, event=0):
        self.directory, self.sources, self.rate_hz, self.count, self.event = directory, sources, rate_hz, count, event
        self.written: list[tuple[str, int | None, float]] = []
        self.max_lag_s = 0.0
        self.achieved_rate_hz = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        t0 = time.time()
        for i in range(self.count):
            due = t0 + (i / self.rate_hz if self.rate_hz else 0.0)
            now = time.time()
            if due > now:
                time.sleep(due - now)
            self.max_lag_s = max(self.max_lag_s, time.time() - due)
            src = self.sources[i % len(self.sources)]
            final = self.directory / f"frame_{i:06d}{src.suffix}"
            tmp = self.directory / f".{final.name}.tmp"
            os.link(src, tmp)
            os.replace(tmp, final)
            self.written.append((str(final), self.event, time.time()))
        elapsed = time.time() - t0
        self.achieved_rate_hz = self.count / elapsed if elapsed > 0 else None


def prepare_sfx(workdir: Path, args, n_frames: int):
    """16 simulated 1920 x 1920 frames (one CXI file each), the SFX watch config; the link writer."""
    from photonflow.deployments.cli.sfx import SIMULATED_DETECTOR_PF8
    from photonflow.io.geom import load_geometry
    from photonflow.simulate.sfx import write_sfx_dataset

    ds = write_sfx_dataset(
        workdir / "stage", load_geometry(REPO / "config" / "geometry" / "sim1920.geom"), 16, frames_per_file=1, seed=0
    )
    sfx = {
        "geometry": str(ds.geometry_path),
        "min_peaks": 10,
        "max_peaks": 2048,
        "peakfinder8": SIMULATED_DETECTOR_PF8,
    }
    config, incoming = write_watch(workdir, args, "*.cxi", operation="sfx", sfx=sfx)
    return config, incoming, LinkWriter(incoming, ds.cxi_files, args.rate, n_frames)


def sfx_duplicates(out: Path) -> int:
    """Frames in more than one row of frames.csv, or in more than one per-batch peak list."""
    from photonflow.io import read_table_csv
    from photonflow.io.cxi import read_cxi_sources

    extra = 0
    if (out / "frames.csv").exists():
        table = read_table_csv(out / "frames.csv")
        rows = collections.Counter(zip(table["path"].tolist(), table["event"].tolist()))
        extra += sum(n - 1 for n in rows.values())
    in_peaks = collections.Counter(s for p in (out / "peaks").glob("*.cxi") for s in read_cxi_sources(p))
    return extra + sum(n - 1 for n in in_peaks.values())


def cleaner(ledger_path: Path, stop: threading.Event, interval: float = 0.5) -> None:
    """Delete raw frames the ledger reports done (the detector PC's ring buffer)."""
    seen: set[str] = set()
    while not stop.is_set():
        time.sleep(interval)
        if not ledger_path.exists():
            continue
        try:
            con = sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True, timeout=5)
            rows = con.execute("SELECT path FROM items WHERE state = 'done'").fetchall()
            con.close()
        except sqlite3.Error:
            continue
        for (path,) in rows:
            if path not in seen:
                seen.add(path)
                try:
                    os.unlink(path)
                except OSError:
                    pass


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--operation", choices=["saxs", "sfx"], default="saxs")
    parser.add_argument("--rate", type=float, default=200.0, help="frames per second (default 200; 0: at once)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of writing (default 60)")
    parser.add_argument("--frames", type=int, help="frames to write (default: rate x duration)")
    parser.add_argument("--oversampling", type=int, default=3, help="SAXS: the calibration's oversampling")
    parser.add_argument("--batch-frames", type=int, help="frames per micro-batch (default SAXS 16, SFX 8)")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/photonflow-bench-realtime")
    parser.add_argument("--keep", action="store_true", help="keep the raw frames (needs 4 MB per frame of disk)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.batch_frames is None:
        args.batch_frames = 16 if args.operation == "saxs" else 8
    n_frames = args.frames or int(round(args.rate * args.duration))
    if n_frames < 1:
        parser.error("give --frames with --rate 0")

    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    prepare = prepare_saxs if args.operation == "saxs" else prepare_sfx
    config, incoming, writer = prepare(workdir, args, n_frames)

    env = dict(os.environ, PREFECT_HOME=str(workdir / "prefect-home"), PHOTONFLOW_DASK_LOGS="warning")
    log = open(workdir / "watch.log", "w")
    watch = subprocess.Popen(
        [sys.executable, "-m", "photonflow.deployments.cli", "watch", str(config), str(incoming)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 180
    while "watching" not in (workdir / "watch.log").read_text():
        if watch.poll() is not None or time.time() > deadline:
            sys.exit(f"photonflow watch did not start; see {workdir / 'watch.log'}")
        time.sleep(0.2)
    time.sleep(1.0)
    print(
        f"photonflow watch ({args.operation}) is up; writing {n_frames} frames at "
        + (f"{args.rate:g} Hz" if args.rate else "once")
    )

    stop_cleaner = threading.Event()
    ledger_path = workdir / "out" / "ledger.sqlite"
    if not args.keep:
        threading.Thread(target=cleaner, args=(ledger_path, stop_cleaner), daemon=True).start()
    writer.start()
    writer.join()
    t_written = time.time()
    # wait until every frame is done or failed (or 60 s pass without progress)
    last, last_change = -1, time.time()
    while True:
        con = sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True, timeout=5)
        finished = con.execute("SELECT COUNT(*) FROM items WHERE state IN ('done', 'failed')").fetchone()[0]
        con.close()
        if finished >= n_frames or time.time() - last_change > 60:
            break
        if finished != last:
            last, last_change = finished, time.time()
        time.sleep(0.5)
    drain_s = time.time() - t_written
    watch.send_signal(signal.SIGINT)  # as Ctrl-C would: the watch finishes and records its final state
    try:
        watch.wait(timeout=120)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(watch.pid).children(recursive=True):
            child.kill()
        os.killpg(watch.pid, signal.SIGKILL)
    stop_cleaner.set()

    con = sqlite3.connect(str(ledger_path))
    rows = con.execute("SELECT path, event, state, attempts, finished_at FROM items").fetchall()
    con.close()
    by_path = {r[0]: r for r in rows}
    complete = {path: t for path, _event, t in writer.written}
    latencies = np.array([by_path[p][4] - t for p, t in complete.items() if p in by_path and by_path[p][2] == "done"])
    done = sum(1 for r in rows if r[2] == "done")
    failed = sum(1 for r in rows if r[2] == "failed")
    duplicated = sum(1 for r in rows if r[3] > 1) + (len(rows) - len(by_path))
    if args.operation == "sfx":
        duplicated += sfx_duplicates(workdir / "out")
    missed = sum(1 for p in complete if p not in by_path or by_path[p][2] != "done")
    chi = list((workdir / "out" / "chi").rglob("*.chi"))
    finished = [r[4] for r in rows if r[2] == "done"]
    span = max(finished) - min(complete.values()) if finished and complete else 0.0
    result = {
        "operation": args.operation,
        "rate_hz": args.rate,
        "duration_s": args.duration,
        "frames_written": len(writer.written),
        "writer_achieved_rate_hz": writer.achieved_rate_hz,
        "writer_max_lag_s": writer.max_lag_s,
        "frames_processed": done,
        "frames_failed": failed,
        "missed": missed,
        "duplicated": duplicated,
        "chi_files": len(chi),
        "frames_per_s": done / span if span > 0 else None,
        "latency_p50_ms": float(np.percentile(latencies, 50) * 1e3) if latencies.size else None,
        "latency_p99_ms": float(np.percentile(latencies, 99) * 1e3) if latencies.size else None,
        "latency_max_ms": float(latencies.max() * 1e3) if latencies.size else None,
        "drain_after_last_write_s": drain_s,
        "watch_exit_code": watch.returncode,
    }
    print(
        f"frames written      {result['frames_written']} (writer achieved {writer.achieved_rate_hz or 0:.1f} Hz, "
        f"max lag {writer.max_lag_s * 1e3:.0f} ms)"
    )
    print(
        f"frames processed    {done} (failed {failed})"
        + (f"; .chi files {len(chi)}" if args.operation == "saxs" else "")
    )
    if result["frames_per_s"]:
        print(f"throughput          {result['frames_per_s']:.1f} frames/s (first frame complete → last result)")
    print(f"missed              {missed}      [target 0]")
    print(f"duplicated          {duplicated}      [target 0]")
    if latencies.size:
        saxs = args.operation == "saxs"
        print(
            f"latency file complete → result written: p50 {result['latency_p50_ms']:.1f} ms"
            f"{' [target < 100]' if saxs else ''}, p99 {result['latency_p99_ms']:.1f} ms"
            f"{' [target < 1000]' if saxs else ''}, max {result['latency_max_ms']:.1f} ms"
        )
    print(f"backlog drained {drain_s:.1f} s after the last write; log: {workdir / 'watch.log'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(incoming, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
