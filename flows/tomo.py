"""The tomography flow: preprocess → reconstruct → (stitch) → report, chunked so that any scan fits.

One or more DXchange scans (several = side-by-side scans of the same angles, stitched in pass 1)
→ the chunk plan (a dry run returns it and stops) → pass 1, a task per projection chunk (flat/dark,
I0, zingers, air, stitching, Paganin), each into its own file → the files checked and joined by
an HDF5 virtual dataset → the centre of rotation (given, or Vo's method on the middle row) and the
output range (given, or from three sample slices) → pass 2, a task per sinogram chunk (−log,
stripes, rings, 360° → 180°, reconstruction, circular mask, conversion), each into its own file
→ the volume (virtual or copied) only once every chunk has succeeded → the pyramid → the PDF
report → intermediate files removed unless kept. Outputs: ``volume.h5`` (``/volume``,
``/pyramid/level_k``), ``report.pdf``, ``plan.json``, ``summary.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect_dask import DaskTaskRunner

from photonflow.errors import InputError
from photonflow.flows._runrecord import RunRecord, record_failure
from photonflow.flows.runner import _bar
from photonflow.io import atomic_write_text
from photonflow.results import RunSummary
from photonflow.tasks.tomo import pass1_task, pass2_task, pyramid_task
from photonflow.tomo import passes
from photonflow.tomo.dxchange import DxchangeError, open_scan, read_projections
from photonflow.tomo.plan import describe, plan_chunks
from photonflow.tomo.preprocess import paganin_pad
from photonflow.tomo.stitch import stitched_width


class TomoInputError(InputError, ValueError):
    """Input or settings that cannot work, found before any chunk runs."""


def _check_inputs(inputs, output_dir, preprocess, sinogram, reconstruction, stitch):
    scans = [open_scan(p, monitor=(preprocess.get("i0") or {}).get("monitor")) for p in inputs]
    first = scans[0]
    for s in scans[1:]:
        if s.shape[:2] != first.shape[:2] or not np.allclose(s.theta_deg, first.theta_deg):
            raise TomoInputError(f"{s.path}: scans to stitch need the same angles and rows as {first.path}")
    if len(scans) > 1 and not stitch:
        raise TomoInputError(f"{len(scans)} scans given: stitching settings (motor positions) are needed")
    _algorithm(reconstruction)  # algorithm and its older name agree
    center = reconstruction.get("center")
    if center is not None and not 0 <= float(center) <= first.shape[2] - 1:
        raise TomoInputError(f"centre of rotation {center} px is outside the detector (0 .. {first.shape[2] - 1})")
    if sinogram.get("half_acquisition") and not np.isclose(
        np.ptp(first.theta_deg) + np.median(np.diff(first.theta_deg)), 360, atol=1
    ):
        raise TomoInputError(
            f"{first.path}: half acquisition needs angles over 360°, got "
            f"{first.theta_deg.min():.1f}..{first.theta_deg.max():.1f}°"
        )
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".photonflow-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TomoInputError(f"{out}: output directory not writable ({exc})") from None
    return scans


def _wait(
    futures: dict, label: str, progress_id, total_tasks: int, done_before: int, logger, record: RunRecord, stage: str
) -> tuple[list, list]:
    results, failures = [], []
    position = {chunk: i for i, chunk in enumerate(futures.values())}
    states = record.data["chunks"][stage]
    for k, fut in enumerate(as_completed(list(futures)), start=1):
        res = fut.result(raise_on_failure=False)
        if isinstance(res, dict):
            results.append(res)
            states[position[futures[fut]]] = "done"
            record.task_done(res["seconds"])
            record.progress(done=1)
        else:
            failures.append(f"{label} chunk {futures[fut]}: {res}")
            states[position[futures[fut]]] = "failed"
            record.progress(failed=1, force=True)
        update_progress_artifact(progress_id, 100.0 * (done_before + k) / total_tasks)
        logger.info("%s %s %d/%d chunks", label, _bar(k / len(futures)), k, len(futures))
    return results, failures


@flow(
    name="tomo", task_runner=DaskTaskRunner(), log_prints=True, on_failure=[record_failure], on_crashed=[record_failure]
)
def tomo_flow(
    inputs: list[str],
    output_dir: str,
    preprocess: dict | None = None,
    sinogram: dict | None = None,
    reconstruction: dict | None = None,
    output: dict | None = None,
    stitch: dict | None = None,
    memory_per_worker_gib: float = 2.0,
    chunks: dict | None = None,
    dry_run: bool = False,
    report: bool = True,
) -> dict:
    """Reconstruct DXchange scans chunk by chunk.

    inputs: DXchange files (several: side-by-side scans, stitched); output_dir: results;
    preprocess: {"i0": {"monitor": path} | {"air_columns": [a, b]}, "zingers": {"threshold",
    "size"}, "air": {"columns": [a, b]}, "paganin": {"delta_beta", "energy_kev", "distance_mm",
    "pixel_size_um"}} (omitted = off); sinogram: {"stripes": {"method": "all"|"sorting"|"large"|"dead",
    "snr", ...}, "rings": {...}, "half_acquisition": bool}; reconstruction: {"algorithm": "gridrec" (or
    "fbp", "torch" (GPU path), "algotom", "tomopy"), "filter": "shepp", "center": px or None (found),
    "circle_mask": true, "device": "auto"}; output: {"dtype":
    "uint16"|"uint8"|"float32", "range": [vmin, vmax] in 1/px or None (from sample slices), "volume":
    "virtual"|"file", "pyramid_levels": 3, "keep_intermediate": false}; stitch: {"motor_positions_mm":
    [...], "pixel_size_um", "window": 20, "method": "difference"|"phase"}; memory_per_worker_gib: the
    plan's budget; chunks: {"projections": at most this many per pass-1 chunk (default 512), "rows":
    at most this many per pass-2 chunk (default 64)}; dry_run: return the plan and stop.
    """
    logger = get_run_logger()
    t0 = time.perf_counter()
    preprocess, sinogram = dict(preprocess or {}), dict(sinogram or {})
    reconstruction, output = dict(reconstruction or {}), dict(output or {})
    output.setdefault("dtype", "uint16")
    out = Path(output_dir)
    scans = _check_inputs(inputs, out, preprocess, sinogram, reconstruction, stitch)
    n, rows, cols = scans[0].shape
    timings: dict[str, float] = {}
    offsets, guesses = None, None
    if len(scans) > 1:
        t = time.perf_counter()
        offsets, guesses = passes.scan_stitch_offsets(scans, stitch)
        cols = stitched_width(offsets, scans[-1].shape[2])
        timings["stitch search"] = time.perf_counter() - t
        logger.info(
            "stitching offsets %s px (motor guesses %s)", [round(o, 2) for o in offsets], [round(g, 2) for g in guesses]
        )
    overlap = 0
    if preprocess.get("paganin"):
        overlap = paganin_pad((rows, cols), **preprocess["paganin"])
    elif preprocess.get("zingers"):
        overlap = int(preprocess["zingers"].get("size", 3)) // 2
    limits = dict(chunks or {})
    plan = plan_chunks(
        (n, rows, cols),
        int(memory_per_worker_gib * 2**30),
        overlap=overlap,
        half_acquisition=bool(sinogram.get("half_acquisition")),
        max_projections_per_chunk=int(limits.get("projections", 512)),
        max_rows_per_chunk=int(limits.get("rows", 64)),
    )
    plan["scans"] = [s.to_dict() for s in scans]
    plan["stitch_offsets_px"] = offsets
    atomic_write_text(out / "plan.json", json.dumps(plan, indent=2))
    logger.info("plan: %s", describe(plan))
    if dry_run:
        return {"dry_run": True, "plan": plan, "plan_file": str(out / "plan.json")}

    work = out / "intermediate"
    (work / "pass1").mkdir(parents=True, exist_ok=True)
    (work / "pass2").mkdir(parents=True, exist_ok=True)
    paths = [s.path for s in scans]
    p1_chunks = plan["pass1"]["chunks"]
    p2_chunks = plan["pass2"]["chunks"]
    total = len(p1_chunks) + len(p2_chunks)
    record = RunRecord(out, "tomo", unit="chunks", total=total)
    record.update(
        stage="pass1", chunks={"pass1": ["pending"] * len(p1_chunks), "pass2": ["pending"] * len(p2_chunks)}, force=True
    )
    progress_id = create_progress_artifact(0.0, description=f"Tomography: {total} chunk tasks")
    t = time.perf_counter()
    futures = {
        pass1_task.submit(
            paths,
            a,
            b,
            preprocess,
            plan["pass1"]["rows_per_subchunk"],
            overlap,
            str(work / "pass1" / f"proj_{a:06d}_{b:06d}.h5"),
            offsets,
        ): (a, b)
        for a, b in p1_chunks
    }
    results1, failures = _wait(futures, "pass 1", progress_id, total, 0, logger, record, "pass1")
    timings["pass 1"] = time.perf_counter() - t
    if failures:
        raise RuntimeError("pass 1 failed, no volume written: " + "; ".join(failures))
    results1.sort(key=lambda r: r["p0"])
    joined = passes.join(
        [r["file"] for r in results1], [(r["p0"], r["p1"]) for r in results1], 0, work / "projections.h5"
    )
    theta = scans[0].theta_deg
    record.update(stage="centre", force=True)
    t = time.perf_counter()
    center, center_how = passes.rotation_centre(joined, rows, sinogram, reconstruction.get("center"))
    steps2 = {
        **sinogram,
        "backend": _algorithm(reconstruction),
        "filter": reconstruction.get("filter", "shepp"),
        "circle_mask": reconstruction.get("circle_mask", True),
        "device": reconstruction.get("device", "auto"),
    }
    value_range, range_how = passes.output_range(joined, theta, center, rows, steps2, output)
    timings["centre and range"] = time.perf_counter() - t
    logger.info(
        "centre of rotation %.2f px (%s); output %s range %s (%s)",
        center,
        center_how,
        output["dtype"],
        value_range,
        range_how,
    )
    out2 = {"dtype": output["dtype"], "range": value_range}
    record.update(stage="pass2", center_px=center, force=True)
    t = time.perf_counter()
    futures = {
        pass2_task.submit(
            str(joined), a, b, theta.tolist(), center, steps2, out2, str(work / "pass2" / f"slices_{a:06d}_{b:06d}.h5")
        ): (a, b)
        for a, b in p2_chunks
    }
    results2, failures = _wait(futures, "pass 2", progress_id, total, len(p1_chunks), logger, record, "pass2")
    timings["pass 2"] = time.perf_counter() - t
    if failures:
        raise RuntimeError("pass 2 failed, no volume written: " + "; ".join(failures))
    results2.sort(key=lambda r: r["r0"])
    record.update(stage="volume", force=True)
    t = time.perf_counter()
    attrs = {
        "units": "1/px" if out2["range"] is None else f"{output['dtype']} of [{value_range[0]}, {value_range[1]}] 1/px",
        "center_px": center,
    }
    if value_range is not None:
        attrs.update(vmin=value_range[0], vmax=value_range[1])
    volume = out / "volume.h5"
    files2, ranges2 = [r["file"] for r in results2], [(r["r0"], r["r1"]) for r in results2]
    if output.get("volume", "virtual") == "file":
        virtual = passes.join(files2, ranges2, 0, work / "volume_virtual.h5", dataset="volume", attrs=attrs)
        passes.copy_volume(virtual, volume)
    else:
        chunk_dir = out / "volume_chunks"
        chunk_dir.mkdir(exist_ok=True)
        moved = []
        for f in files2:
            target = chunk_dir / Path(f).name
            shutil.move(f, target)
            moved.append(str(target))
        passes.join(moved, ranges2, 0, volume, dataset="volume", attrs=attrs)
    levels = int(output.get("pyramid_levels", 3))
    pyramid = pyramid_task.submit(str(volume), levels).result() if levels > 0 else []
    timings["volume and pyramid"] = time.perf_counter() - t
    extra = {
        "inputs": list(inputs),
        "shape": [rows, *results2[0]["shape"][1:]],
        "dtype": output["dtype"],
        "range_1_per_px": value_range,
        "range_from": range_how,
        "center_px": center,
        "center_from": center_how,
        "stitch_offsets_px": offsets,
        "stitch_guesses_px": guesses,
        "pyramid": [list(s) for s in pyramid],
        "plan": {k: plan[k] for k in ("pass1", "pass2", "tasks")},
        "timings_s": timings,
        "pass1_steps_cpu_s": _sum_timings(results1),
        "pass2_steps_cpu_s": _sum_timings(results2),
        "pass1_chunk_s": [r["seconds"] for r in results1],
        "pass2_chunk_s": [r["seconds"] for r in results2],
        "algorithm": steps2["backend"],
    }
    outputs = {"volume": str(volume), "report": None, "plan": str(out / "plan.json")}
    summary = {**extra, "volume": str(volume)}  # what the report reads
    record.update(volume="volume.h5", force=True)
    if report:
        record.update(stage="report", force=True)
        t = time.perf_counter()
        outputs["report"] = str(
            _report(out, scans[0], joined, volume, summary, preprocess, steps2, theta, center, timings)
        )
        timings["report"] = time.perf_counter() - t
    if not output.get("keep_intermediate", False):
        shutil.rmtree(work, ignore_errors=True)
    done = len(results1) + len(results2)
    summary = RunSummary(
        "tomo",
        "chunks",
        str(out),
        done=done,
        elapsed_s=time.perf_counter() - t0,
        peak_rss_mb=max(r.get("peak_rss_mb", 0.0) for r in results1 + results2),
        outputs=outputs,
        task_granularity=record.granularity(),
        extra=extra,
    ).to_dict()
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    create_markdown_artifact(
        "\n".join(
            [
                "# Tomography reconstruction",
                "",
                "| projections | rows × cols | volume | centre (px) | range | time (s) |",
                "|---|---|---|---|---|---|",
                f"| {n} | {rows} × {scans[0].shape[2]} | {summary['shape']} {output['dtype']} | {center:.2f} ({center_how}) "
                f"| {value_range} | {summary['elapsed_s']:.1f} |",
                "",
                "Stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()),
                "",
                f"Outputs in `{out}`: `volume.h5`, `report.pdf`, `plan.json`, `summary.json`.",
            ]
        ),
        key="tomo-summary",
        description="Tomography reconstruction",
    )
    record.update(stage="done", report="report.pdf" if outputs["report"] else None)
    record.finish()
    logger.info("volume %s (%s) in %.1f s; report %s", volume, output["dtype"], summary["elapsed_s"], outputs["report"])
    return summary


def _algorithm(reconstruction: dict) -> str:
    """The reconstruction algorithm: ``algorithm`` (or its older name ``backend``), gridrec by default."""
    algorithm, older = reconstruction.get("algorithm"), reconstruction.get("backend")
    if algorithm and older and algorithm != older:
        raise TomoInputError(
            f"reconstruction.algorithm {algorithm!r} and reconstruction.backend {older!r} differ; give algorithm only"
        )
    return algorithm or older or "gridrec"


def _sum_timings(results: list[dict]) -> dict[str, float]:
    """Seconds per step summed over the chunks (worker time, not wall time)."""
    total: dict[str, float] = {}
    for r in results:
        for key, value in r.get("timings", {}).items():
            total[key] = total.get(key, 0.0) + float(value)
    return total


def _report(out, scan, joined, volume, summary, preprocess, steps2, theta, center, timings):
    import h5py

    from photonflow.tomo.report import orthogonal_slices, write_report
    from photonflow.tomo.sino import minus_log

    n, rows, cols = scan.shape
    mid = rows // 2
    raw = read_projections(scan, n // 2, n // 2 + 1)[0]
    raw_sino = read_projections(scan, 0, n, slice(mid, mid + 1))[:, 0, :]
    with h5py.File(joined, "r") as f:
        corrected = np.asarray(f["data"][n // 2])
    corrected_sino = minus_log(passes.read_sinograms(joined, mid, mid + 1)[0])
    with h5py.File(volume, "r") as f:
        v = f["volume"]
        slices = orthogonal_slices(v, slow_step=max(1, v.shape[0] // 256))
    dataset = {
        "input": ", ".join(summary["inputs"]),
        "projections × rows × cols": f"{n} × {rows} × {cols}",
        "angles": f"{theta.min():.2f}–{theta.max():.2f}°",
        "raw size": f"{scan.nbytes / 2**30:.3f} GiB",
        "volume": f"{summary['volume']} {summary['shape']} {summary['dtype']}",
        "centre of rotation": f"{center:.2f} px ({summary['center_from']})",
        "algorithm": f"{steps2['backend']} (filter {steps2['filter']})",
        "chunks": f"pass 1: {len(summary['pass1_chunk_s'])}, pass 2: {len(summary['pass2_chunk_s'])}",
    }
    if summary["stitch_offsets_px"]:
        dataset["stitching offsets"] = f"{summary['stitch_offsets_px']} px (motors: {summary['stitch_guesses_px']})"
    parameters = {
        "flat/dark": "always",
        "I0": preprocess.get("i0"),
        "zingers": preprocess.get("zingers"),
        "air correction": preprocess.get("air"),
        "Paganin": preprocess.get("paganin"),
        "stripes": steps2.get("stripes"),
        "rings": steps2.get("rings"),
        "360° half acquisition": steps2.get("half_acquisition", False),
        "circular mask": steps2.get("circle_mask", True),
        "output range (1/px)": f"{summary['range_1_per_px']} ({summary['range_from']})",
    }
    label = (
        "μ (1/px)" if summary["range_1_per_px"] is None else f"{summary['dtype']} of {summary['range_1_per_px']} 1/px"
    )
    return write_report(
        out / "report.pdf",
        title=f"Reconstruction of {Path(scan.path).name}",
        dataset=dataset,
        parameters=parameters,
        timings=dict(timings),
        raw_projection=raw,
        raw_sinogram=raw_sino,
        corrected_projection=corrected,
        corrected_sinogram=corrected_sino,
        slices=slices,
        value_label=label,
    )


__all__ = ["TomoInputError", "tomo_flow", "DxchangeError"]
