"""The serial-crystallography flow: Bragg peak finding and hit finding over files and events.

Frames go to the workers in batches (``batch_size`` frames per Prefect task); each batch is read,
peak-found at once (peakfinder8 or the PeakNet-style network), and written as CXI peak lists (and
a Cheetah-style hits file). The run ends with a per-frame table (CSV, HDF5), a CrystFEL hit list
(``hits.lst``), plots (peaks per frame and hit rate over the run, peaks circled on a few hits),
for the network an automatic artifact mask, Prefect artifacts and ``summary.json``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger
from prefect_dask import DaskTaskRunner

from photonflow.flows._runrecord import record_failure
from photonflow.flows.runner import finish_run, run_batches, write_run_table
from photonflow.io import iter_frame_refs
from photonflow.io.atomic import atomic_path
from photonflow.io.cxi import read_cxi_peaks, read_cxi_sources, write_hit_list
from photonflow.io.geom import load_geometry
from photonflow.operations import get as get_operation
from photonflow.plots import plot_hit_rate, plot_mask, plot_peak_overlay
from photonflow.results import RunSummary
from photonflow.sfx import FINDERS, artifact_mask

ARTIFACT_MASK_FRACTION = 0.5


@flow(
    name="sfx", task_runner=DaskTaskRunner(), log_prints=True, on_failure=[record_failure], on_crashed=[record_failure]
)
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
        "geometry": str(Path(geometry).resolve()),
        "output_dir": str(out.resolve()),
        "finder": finder,
        "peakfinder8": dict(peakfinder8 or {}),
        "peaknet": dict(peaknet or {}),
        "hits": {"min_peaks": int(min_peaks), "max_peaks": int(max_peaks)},
        "mask": None if mask is None else str(Path(mask).resolve()),
        "backend": backend,
        "device": device,
        "save_hit_frames": bool(save_hit_frames),
    }
    op = get_operation("sfx")
    processor = op.build_processor(options)  # parameters, mask and model checked before any work
    parameters = processor.parameters
    del processor
    t_ready = time.perf_counter()
    logger.info(
        "%d frames, finder %s, batches of %d, detector %d x %d (%d panels)",
        len(refs),
        finder,
        batch_size,
        *geom.slab_shape,
        len(geom.panels),
    )

    order = {(r.path, -1 if r.event is None else int(r.event)): k for k, r in enumerate(refs)}

    def add_index(rows: list[dict]) -> None:
        for r in rows:
            r["index"] = order.get((r["path"], r["event"]), -1)

    run = run_batches(
        op,
        refs,
        options,
        out,
        int(batch_size),
        on_rows=add_index,
        progress_note=lambda run: f"{int(run.extra_sum('hits'))} hits",
    )
    rows = sorted(run.rows, key=lambda r: r["index"])
    hit_rows = [r for r in rows if r["hit"]]
    outputs = {
        "table": write_run_table(op, out, rows),
        "hit_list": str(out / "hits.lst"),
        "hit_rate_plot": None,
        "overlay_plot": None,
        "artifact_mask": None,
    }
    write_hit_list(out / "hits.lst", [(r["path"], None if r["event"] < 0 else r["event"]) for r in hit_rows])
    if rows:
        outputs["hit_rate_plot"] = plot_hit_rate(rows, out / "hit_rate.png")
    # Extras after the run: a failure here is reported, and the summary is still written.
    failures = list(run.failures)
    hit_files, artifact_files = run.files("hits_file"), run.files("artifact_counts")
    if hit_files:
        try:
            outputs["overlay_plot"] = _overlay(out, hit_files)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"peak overlay plot not made: {type(exc).__name__}: {exc}")
    if artifact_files:
        try:
            outputs["artifact_mask"] = _write_artifact_mask(out, artifact_files, run.done)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"artifact mask not written: {type(exc).__name__}: {exc}")
    n_peaks_hits = [r["n_peaks"] for r in hit_rows]
    res_hits = [r["resolution_A"] for r in hit_rows if math.isfinite(r["resolution_A"])]
    extra = {
        "hits": len(hit_rows),
        "hit_rate_percent": 100.0 * len(hit_rows) / run.done if run.done else 0.0,
        "median_peaks_per_hit": float(np.median(n_peaks_hits)) if n_peaks_hits else None,
        "mean_peaks_per_frame": float(np.mean([r["n_peaks"] for r in rows])) if rows else None,
        "median_resolution_A_of_hits": float(np.median(res_hits)) if res_hits else None,
        "finder_s_per_frame": run.extra_sum("finder_s") / run.done if run.done else None,
        "peak_files": run.files("peaks_file"),
        "hit_files": hit_files,
        "parameters": parameters,
        "finder": finder,
    }
    summary = RunSummary(
        "sfx",
        op.unit,
        str(out),
        done=run.done,
        failed=run.failed,
        failures=failures,
        elapsed_s=run.elapsed_s,
        preparation_s=t_ready - t0,
        peak_rss_mb=run.peak_rss_mb,
        outputs=outputs,
        extra=extra,
    )
    med, res = extra["median_peaks_per_hit"], extra["median_resolution_A_of_hits"]
    headline = {
        "hits": str(len(hit_rows)),
        "hit rate (%)": f"{extra['hit_rate_percent']:.1f}",
        "peaks per hit (median)": "—" if med is None else f"{med:.0f}",
        "resolution of hits (median, Å)": "—" if res is None else f"{res:.2f}",
    }
    notes = [
        f"Finder: `{finder}`. Outputs: `{out}`: `frames.csv`, `hits.lst` (CrystFEL list), `peaks/*.cxi` "
        "(peak lists of every frame), `hits/*.cxi` (hit frames with their peaks), `hit_rate.png`, "
        "`peak_overlay.png`" + (", `artifact_mask.h5`" if outputs["artifact_mask"] else "") + "."
    ]
    return finish_run(op, summary, headline, notes, run.record)


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
