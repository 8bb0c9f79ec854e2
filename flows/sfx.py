"""The serial-crystallography flow: Bragg peak finding and hit finding over files and events.

Frames go to the workers in batches (``batch_size`` frames per Prefect task); each batch is read,
peak-found at once (peakfinder8 or the PeakNet-style network), and written as CXI peak lists (and
a Cheetah-style hits file). The run ends with a per-frame table (CSV, HDF5), a CrystFEL hit list
(``hits.lst``), plots (peaks per frame and hit rate over the run, peaks circled on a few hits),
for the network an automatic artifact mask, Prefect artifacts and ``summary.json``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect_dask import DaskTaskRunner

from photonflow.io import FrameRef, atomic_write_text, iter_frame_refs, write_table_csv, write_table_hdf5
from photonflow.io.atomic import atomic_path
from photonflow.io.cxi import read_cxi_peaks, read_cxi_sources, write_hit_list
from photonflow.io.geom import load_geometry
from photonflow.plots import plot_hit_rate, plot_mask, plot_peak_overlay
from photonflow.sfx import FINDERS, artifact_mask, batch_name
from flows.saxs import _bar, failures_markdown
from flows._runrecord import RunRecord, record_failure
from tasks.sfx import build_processor, find_peaks_batch

TABLE_COLUMNS = ["index", "path", "event", "n_peaks", "hit", "resolution_A", "total_intensity"]
MAX_TABLE_ARTIFACT_ROWS = 500
ARTIFACT_MASK_FRACTION = 0.5


@flow(name="sfx", task_runner=DaskTaskRunner(), log_prints=True, on_failure=[record_failure],
      on_crashed=[record_failure])
def sfx_flow(
    geometry: str,
    inputs: list[str],
    output_dir: str,
    finder: str = "peakfinder8",
    batch_size: int = 100,
    min_peaks: int = 10,
    max_peaks: int = 2048,
    peakfinder8: dict | None = None,
    peaknet: dict | None = None,
    mask: str | None = None,
    backend: str = "numpy",
    device: str = "auto",
    save_hit_frames: bool = True,
) -> dict:
    """Find Bragg peaks and hits in serial-crystallography frames.

    geometry: CrystFEL .geom file; inputs: files, directories (walked recursively) or
    ``file.cxi:start-stop`` event ranges; output_dir: where results go; finder: "peakfinder8" or
    "peaknet"; batch_size: frames per task; min_peaks, max_peaks: a hit has
    ``min_peaks <= n_peaks <= max_peaks`` (inclusive); peakfinder8: its parameters
    (adc_threshold ADU, minimum_snr, min_pixel_count, max_pixel_count, local_bg_radius px,
    min_res/max_res px from the beam, max_num_peaks); peaknet: network options (checkpoint path,
    batch_size, peak_probability, min_pixel_count); mask: extra mask file (nonzero = good);
    backend: "numpy" or "torch" (peakfinder8); device: "auto", "cpu" or "cuda"; save_hit_frames:
    write the hit frames with their peaks (hits/*.cxi).
    """
    logger = get_run_logger()
    t0 = time.perf_counter()
    if finder not in FINDERS:
        raise ValueError(f"finder must be one of {', '.join(FINDERS)}, got {finder!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    out = Path(output_dir)
    geom = load_geometry(geometry)  # a bad geometry fails here, naming file and line
    refs = list(iter_frame_refs(list(inputs)))
    if not refs:
        raise ValueError(f"no frames found in {list(inputs)}")
    out.mkdir(parents=True, exist_ok=True)
    options = {
        "geometry": str(Path(geometry).resolve()), "output_dir": str(out.resolve()), "finder": finder,
        "peakfinder8": dict(peakfinder8 or {}), "peaknet": dict(peaknet or {}),
        "hits": {"min_peaks": int(min_peaks), "max_peaks": int(max_peaks)},
        "mask": None if mask is None else str(Path(mask).resolve()), "backend": backend, "device": device,
        "save_hit_frames": bool(save_hit_frames),
    }
    processor = build_processor(options)  # parameters, mask and model checked before any work
    parameters = processor.parameters
    del processor
    t_ready = time.perf_counter()
    logger.info("%d frames, finder %s, batches of %d, detector %d x %d (%d panels)", len(refs), finder,
                batch_size, *geom.slab_shape, len(geom.panels))

    order = {(r.path, -1 if r.event is None else int(r.event)): k for k, r in enumerate(refs)}
    batches = [refs[i:i + batch_size] for i in range(0, len(refs), batch_size)]
    record = RunRecord(out, "sfx", unit="frames", total=len(refs))
    progress_id = create_progress_artifact(0.0, description=f"SFX: {len(refs)} frames in {len(batches)} batches")
    futures = {}
    for k, batch in enumerate(batches):
        fut = find_peaks_batch.submit(options, [tuple(r) for r in batch], batch_name(k))
        futures[fut] = batch
    rows, failures, peak_files, hit_files, artifact_files = [], [], [], [], []
    finished = done = hits = 0
    finder_s = 0.0
    peak_rss_mb = 0.0
    for fut in as_completed(list(futures)):
        batch = futures[fut]
        result = fut.result(raise_on_failure=False)
        if isinstance(result, dict):
            rows.extend(result["rows"])
            failures.extend(result["failures"])
            done += result["frames_done"]
            hits += result["hits"]
            finder_s += result["finder_s"]
            peak_rss_mb = max(peak_rss_mb, result["peak_rss_mb"])
            peak_files += [result["peaks_file"]] if result["peaks_file"] else []
            hit_files += [result["hits_file"]] if result["hits_file"] else []
            artifact_files += [result["artifact_counts"]] if result["artifact_counts"] else []
            for r in result["rows"]:
                r["index"] = order.get((r["path"], r["event"]), -1)
            record.progress(done=result["frames_done"], failed=len(batch) - result["frames_done"],
                            rows=result["rows"], task_s=result["elapsed_s"])
        else:  # the whole task failed (after its retries): every frame of it is a failure
            failures.extend(f"{FrameRef(*r)}: batch failed: {result}" for r in batch)
            record.progress(failed=len(batch))
        finished += len(batch)
        update_progress_artifact(progress_id, 100.0 * finished / len(refs))
        rate = done / max(time.perf_counter() - t_ready, 1e-9)
        logger.info("%s %5.1f %% (%d/%d frames; %d hits; %d failed; %.1f frames/s)",
                    _bar(finished / len(refs)), 100.0 * finished / len(refs), finished, len(refs), hits,
                    len(failures), rate)

    elapsed = time.perf_counter() - t_ready
    rows.sort(key=lambda r: r["index"])
    summary = _finish(out, geom, rows, failures, sorted(peak_files), sorted(hit_files), artifact_files,
                      elapsed, {"preparation_s": t_ready - t0, "worker_peak_rss_mb": peak_rss_mb,
                                "finder_s_per_frame": finder_s / done if done else None,
                                "parameters": parameters, "finder": finder,
                                "task_granularity": record.granularity()})
    record.finish()
    logger.info("SFX run: %d frames, %d hits (%.1f %%), %d failed in %.1f s (%.1f frames/s); outputs in %s",
                done, hits, summary["hit_rate_percent"], summary["frames_failed"], elapsed, summary["frames_per_s"], out)
    for failure in failures[:20]:
        logger.warning("failed: %s", failure)
    return summary


def _finish(out: Path, geom, rows, failures, peak_files, hit_files, artifact_files, elapsed, extra) -> dict:
    """Run table, hit list, plots, artifact mask, Prefect artifacts and summary.json."""
    done = len(rows)
    hit_rows = [r for r in rows if r["hit"]]
    table = {c: [r[c] for r in rows] for c in TABLE_COLUMNS}
    hit_rate_plot = overlay_plot = mask_file = None
    if rows:
        write_table_csv(out / "frames.csv", table)
        write_table_hdf5(out / "frames.h5", table)
        hit_rate_plot = plot_hit_rate(rows, out / "hit_rate.png")
    write_hit_list(out / "hits.lst", [(r["path"], None if r["event"] < 0 else r["event"]) for r in hit_rows])
    # Extras after the run: a failure here is reported, and the summary is still written.
    frames_failed = len(failures)
    if hit_files:
        try:
            overlay_plot = _overlay(out, hit_files)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"peak overlay plot not made: {type(exc).__name__}: {exc}")
    if artifact_files:
        try:
            mask_file = _write_artifact_mask(out, artifact_files, done)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"artifact mask not written: {type(exc).__name__}: {exc}")
    n_peaks_hits = [r["n_peaks"] for r in hit_rows]
    res_hits = [r["resolution_A"] for r in hit_rows if math.isfinite(r["resolution_A"])]
    rate = done / elapsed if elapsed > 0 else 0.0
    summary = {
        "frames_done": done,
        "frames_failed": frames_failed,
        "hits": len(hit_rows),
        "hit_rate_percent": 100.0 * len(hit_rows) / done if done else 0.0,
        "median_peaks_per_hit": float(np.median(n_peaks_hits)) if n_peaks_hits else None,
        "mean_peaks_per_frame": float(np.mean([r["n_peaks"] for r in rows])) if rows else None,
        "median_resolution_A_of_hits": float(np.median(res_hits)) if res_hits else None,
        "failures": failures,
        "output_dir": str(out),
        "elapsed_s": elapsed,
        "frames_per_s": rate,
        "table": str(out / "frames.csv") if rows else None,
        "hit_list": str(out / "hits.lst"),
        "peak_files": peak_files,
        "hit_files": hit_files,
        "hit_rate_plot": hit_rate_plot,
        "overlay_plot": overlay_plot,
        "artifact_mask": mask_file,
        **extra,
    }
    if rows:
        create_table_artifact(
            table=[{c: r[c] for c in TABLE_COLUMNS} for r in rows[:MAX_TABLE_ARTIFACT_ROWS]],
            key="sfx-frames",
            description=f"Peaks, hits and resolution per frame ({min(done, MAX_TABLE_ARTIFACT_ROWS)} of {done} rows; "
                        f"all in {out / 'frames.csv'})",
        )
    med = summary["median_peaks_per_hit"]
    res = summary["median_resolution_A_of_hits"]
    lines = [
        "# Serial crystallography run summary",
        "",
        "| frames | hits | hit rate (%) | peaks per hit (median) | resolution of hits (median, Å) | failed | frames/s |",
        "|---|---|---|---|---|---|---|",
        f"| {done} | {len(hit_rows)} | {summary['hit_rate_percent']:.1f} | {'—' if med is None else f'{med:.0f}'} | "
        f"{'—' if res is None else f'{res:.2f}'} | {frames_failed} | {rate:.1f} |",
        "",
        f"Finder: `{extra['finder']}`. Outputs: `{out}`: `frames.csv`, `hits.lst` (CrystFEL list), "
        "`peaks/*.cxi` (peak lists of every frame), `hits/*.cxi` (hit frames with their peaks), `hit_rate.png`, "
        "`peak_overlay.png`" + (", `artifact_mask.h5`" if mask_file else "") + ".",
    ]
    lines += failures_markdown(failures)
    create_markdown_artifact("\n".join(lines), key="sfx-run-summary", description="Serial crystallography run summary")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary


def _overlay(out: Path, hit_files: list[str]) -> str | None:
    """Peaks circled on up to four hits, read back from the hits files."""
    import h5py

    frames, peak_lists, labels = [], [], []
    for path in hit_files:
        peaks = read_cxi_peaks(path)
        sources = read_cxi_sources(path)
        with h5py.File(path, "r") as f:
            data = f["/entry_1/data_1/data"]
            for k in range(min(len(peaks), 4 - len(frames))):
                frames.append(data[k])
                peak_lists.append(peaks[k])
                src, event = sources[k]
                labels.append(f"{Path(src).name}" + ("" if event is None else f" //{event}"))
        if len(frames) >= 4:
            break
    if not frames:
        return None
    return plot_peak_overlay(frames, peak_lists, labels, out / "peak_overlay.png")


def _write_artifact_mask(out: Path, artifact_files: list[str], frames: int) -> str:
    """The network's automatic mask: pixels marked artifact in at least half of the frames."""
    import h5py

    counts, fraction, mask = artifact_mask([np.load(path) for path in artifact_files], frames, ARTIFACT_MASK_FRACTION)
    path = out / "artifact_mask.h5"
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("counts", data=counts.astype(np.int32), compression="gzip")
            f.create_dataset("mask", data=(~mask).astype(np.uint8), compression="gzip")
            f["mask"].attrs["meaning"] = "1 = good pixel, 0 = marked artifact in at least half of the frames"
            f.attrs["frames"] = frames
            f.attrs["fraction_threshold"] = ARTIFACT_MASK_FRACTION
    plot_mask(fraction, out / "artifact_mask.png", title=f"Artifact class, {frames} frames")
    return str(path)
