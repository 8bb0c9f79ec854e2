"""The Laue microdiffraction flow: a raster scan of images → per image a spot table, per scan maps.

Images go to the workers in batches (``batch_size`` images per Prefect task); each image is read,
its spots searched as LaueTools does (minimum-filter background, threshold, blobs, merged seeds),
and described by the batched 2D Gaussian fit or the spot CNN (Kirstein et al. 2023 descriptors:
position, intensity, σ1, σ2, Sim, Asp, Area, quality). Outputs: ``spots/<image>.h5`` and ``.csv``,
``images.csv``/``.h5`` (one row per image with its map place), ``map_good_spots.png``,
``map_mean_sim.png``, Prefect artifacts and ``summary.json``. An image that cannot be read, a
cutout at the image edge or a fit that does not converge is recorded with its reason; the rest
of the scan goes on.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger
from prefect_dask import DaskTaskRunner

from photonflow.flows._runrecord import RunRecord, record_failure
from photonflow.flows.runner import finish_run, run_batches, write_run_table
from photonflow.io import iter_frame_refs
from photonflow.laue.scan import LaueSettings, read_positions_csv, scan_maps, scan_positions
from photonflow.operations import get as get_operation
from photonflow.plots import plot_scan_map
from photonflow.results import RunSummary


@flow(
    name="laue", task_runner=DaskTaskRunner(), log_prints=True, on_failure=[record_failure], on_crashed=[record_failure]
)
def laue_flow(
    inputs: list[str],
    output_dir: str,
    method: str = "fit",
    search: dict | None = None,
    saturation: float | None = None,
    positions: str | None = None,
    scan_shape: list[int] | None = None,
    snake: bool = False,
    batch_size: int = 4,
    rotated: bool = False,
    pixel_integrated: bool = False,
    quality_sim: float = 0.5,
    quality_dist: float = 0.9,
    mask: str | None = None,
    checkpoint: str | None = None,
    backend: str = "numpy",
    device: str = "auto",
) -> dict:
    """Spot search and spot descriptors over a Laue raster scan.

    inputs: image files (sCMOS TIFF, MarCCD, any fabio format, HDF5 events) or directories;
    output_dir: where results go; method: "fit" (batched 2D Gaussian least squares) or "cnn" (the
    spot network); search: LaueTools-named search parameters (IntensityThreshold ADU above the
    minimum-filter background, PixelNearRadius px, boxsize px, min_pixels); saturation: ADU
    (default: the dtype's maximum); positions: CSV of image, x, y (µm) map positions, or
    scan_shape [rows, cols] for a raster in file order (``snake`` reverses every other row);
    batch_size: images per task; rotated / pixel_integrated: fit model options; quality_sim,
    quality_dist (px): the quality flag's thresholds; mask: bad-pixel file (nonzero = bad);
    checkpoint: the CNN's (default: the shipped model); backend: the fit's, "numpy" or "torch";
    device: torch's ("auto": a GPU when there is one).
    """
    logger = get_run_logger()
    t0 = time.perf_counter()
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    settings = LaueSettings(
        search=dict(search or {}),
        method=method,
        saturation=saturation,
        rotated=rotated,
        pixel_integrated=pixel_integrated,
        quality_sim=quality_sim,
        quality_dist=quality_dist,
        mask=None if mask is None else str(Path(mask).resolve()),
        checkpoint=None if checkpoint is None else str(Path(checkpoint).resolve()),
        backend=backend,
        device=device,
    )
    if settings.rotated and (settings.pixel_integrated or settings.backend == "torch"):
        raise ValueError(
            "the rotated model needs the numpy backend and the sampled profile "
            "(pixel_integrated and backend torch are axis-aligned only)"
        )
    if settings.method == "cnn":
        from photonflow.laue.cnn import load_cnn

        load_cnn(settings.checkpoint, device="cpu")  # a bad checkpoint fails here, before any work
    refs = list(iter_frame_refs(list(inputs)))
    if not refs:
        raise ValueError(f"no images found in {list(inputs)}")
    places = scan_positions(refs, read_positions_csv(positions) if positions else None, scan_shape, snake)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger.info("%d images, method %s, batches of %d, search %s", len(refs), method, batch_size, settings.search)

    index = {(r.path, -1 if r.event is None else int(r.event)): k for k, r in enumerate(refs)}
    op = get_operation("laue")
    record = RunRecord(out, "laue", unit=op.unit, total=len(refs))
    mapped = [p for p in places if p["map_row"] >= 0 and p["map_col"] >= 0]
    if mapped:  # the whole scan's map, so a monitor can draw it at its final size from the start
        record.update(
            map_shape=[max(p["map_row"] for p in mapped) + 1, max(p["map_col"] for p in mapped) + 1], force=True
        )
    t_ready = time.perf_counter()

    def place(rows: list[dict]) -> None:
        for r in rows:
            k = index[(r["path"], r["event"])]
            r.update(index=k, **places[k])

    run = run_batches(
        op,
        refs,
        {**settings.to_dict(), "output_dir": str(out)},
        out,
        int(batch_size),
        on_rows=place,
        record=record,
        progress_note=lambda run: f"{sum(r['n_spots'] for r in run.rows)} spots",
    )
    rows = sorted(_complete_rows(run.rows, refs, places, index), key=lambda r: r["index"])
    summary = _finish(
        op, out, rows, run, {"preparation_s": t_ready - t0, "method": method, "settings": settings.to_dict()}
    )
    return summary


def _complete_rows(rows: list[dict], refs, places, index) -> list[dict]:
    """Every image has a row: one whose batch failed as a whole gets a row saying so."""
    have = {(r["path"], r["event"]) for r in rows}
    rows = list(rows)
    for ref in refs:
        key = (ref.path, -1 if ref.event is None else int(ref.event))
        if key not in have:
            k = index[key]
            rows.append(
                {
                    "path": ref.path,
                    "event": key[1],
                    "n_spots": 0,
                    "n_good": 0,
                    "mean_sim": math.nan,
                    "n_not_fitted": 0,
                    "status": f"{ref}: batch failed",
                    "spots_file": "",
                    "seconds": 0.0,
                    "spot_status": {},
                    "index": k,
                    **places[k],
                }
            )
    return rows


def _sum_counts(dicts) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for key, value in d.items():
            total[key] = total.get(key, 0) + value
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def _finish(op, out: Path, rows: list[dict], run, extra: dict) -> dict:
    """Scan table, maps, Prefect artifacts and summary.json."""
    outputs = {
        "table": write_run_table(
            op,
            out,
            rows,
            group="images",
            artifact_columns=("index", "path", "map_row", "map_col", "n_spots", "n_good", "mean_sim", "status"),
        ),
        "spots_dir": str(out / "spots"),
    }
    failures = [r["status"] for r in rows if r["status"] != "ok"]
    failures += [f for f in run.failures if f not in failures]
    maps = scan_maps(rows)
    xs = [r["x_um"] for r in rows if math.isfinite(r["x_um"])]
    ys = [r["y_um"] for r in rows if math.isfinite(r["y_um"])]
    extent = None
    if xs and len(xs) == len(rows) and maps:
        ny, nx = maps["n_good"].shape
        dx = (max(xs) - min(xs)) / max(nx - 1, 1) or 1.0
        dy = (max(ys) - min(ys)) / max(ny - 1, 1) or 1.0
        extent = (min(xs) - dx / 2, max(xs) + dx / 2, max(ys) + dy / 2, min(ys) - dy / 2)
    try:
        if maps:
            outputs["map_good_spots"] = plot_scan_map(
                maps["n_good"], out / "map_good_spots.png", "Good spots per image (quality flag)", "good spots", extent
            )
            outputs["map_mean_sim"] = plot_scan_map(
                maps["mean_sim"],
                out / "map_mean_sim.png",
                "Mean Sim per image",
                "mean Sim",
                extent,
                cmap="magma",
                vmin=0,
                vmax=1,
            )
    except Exception as exc:  # noqa: BLE001 - the tables are written; report and go on
        failures.append(f"maps not plotted: {type(exc).__name__}: {exc}")
    ok = [r for r in rows if r["status"] == "ok"]
    spots = sum(r["n_spots"] for r in ok)
    good = sum(r["n_good"] for r in ok)
    sims = [r["mean_sim"] for r in ok if math.isfinite(r["mean_sim"])]
    figures = {
        "spots": spots,
        "good_spots": good,
        "spots_not_fitted": sum(r["n_not_fitted"] for r in ok),
        "spots_not_fitted_by_reason": _sum_counts(r.get("spot_status", {}) for r in ok),
        "mean_spots_per_image": spots / len(ok) if ok else None,
        "mean_sim": float(np.mean(sims)) if sims else None,
        "spot_seconds_per_image": float(np.mean([r["seconds"] for r in ok])) if ok else None,
        "method": extra["method"],
        "settings": extra["settings"],
    }
    summary = RunSummary(
        "laue",
        op.unit,
        str(out),
        done=len(ok),
        failed=len(rows) - len(ok),
        failures=failures,
        elapsed_s=run.elapsed_s,
        preparation_s=extra["preparation_s"],
        peak_rss_mb=run.peak_rss_mb,
        outputs=outputs,
        extra=figures,
    )
    mean_sim = figures["mean_sim"]
    headline = {
        "spots": str(spots),
        "good spots": str(good),
        "spots not fitted": str(figures["spots_not_fitted"]),
        "mean Sim": "—" if mean_sim is None else f"{mean_sim:.3f}",
    }
    notes = [
        f"Method: `{extra['method']}`. Outputs in `{out}`: `images.csv`, `spots/*.h5` and `spots/*.csv` (one "
        "spot table per image), `map_good_spots.png`, `map_mean_sim.png`."
    ]
    return finish_run(op, summary, headline, notes, run.record)
