"""The SAXS/WAXS flow: integrate (and slice) a directory tree, a list of files or HDF5 event ranges.

Frames go to the workers in batches (``batch_size`` frames per Prefect task); each batch is read,
integrated with one sparse × dense product per integration, and written (.chi per frame, one NeXus
file per batch). The run ends with a table of integral parameters (CSV, HDF5, PNG plot against frame
time, Prefect table artifact) and a markdown summary (frames done, failed, throughput).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect_dask import DaskTaskRunner

from photonflow.calibration import load_calibration
from photonflow.io import FrameRef, iter_frame_refs, read_chi, read_frame, write_table_csv, write_table_hdf5
from photonflow.plots import plot_curves, plot_integral_parameters
from photonflow.saxs import SaxsReducer
from flows._runrecord import RunRecord, record_failure
from tasks.saxs import integrate_batch

TABLE_COLUMNS = ["frame", "integration", "time", "I0", "I1", "I2", "correlation_length_nm"]
MAX_TABLE_ARTIFACT_ROWS = 500


def _input_root(inputs: list[str]) -> str | None:
    """Common directory of the inputs: the output tree mirrors the input tree below it."""
    dirs = []
    for item in inputs:
        p = Path(str(item).split(":")[0] if not os.path.exists(item) else item).resolve()
        dirs.append(str(p if p.is_dir() else p.parent))
    return os.path.commonpath(dirs) if dirs else None


def _calibration_options(calibration: str, refs, npt, q_range, oversampling, mask, polarization_factor=None) -> dict:
    """Options for a pyFAI PONI calibration (a SAXSDOG JSON carries its own)."""
    if not str(calibration).lower().endswith(".poni"):
        return {}
    shape = None
    for ref in refs[:20]:  # the detector shape from the first readable frame
        try:
            shape = tuple(int(v) for v in read_frame(ref.path, ref.event).shape)
            break
        except Exception:
            continue
    options = {"npt": int(npt or 1000), "oversampling": int(oversampling or 1)}
    if shape is not None:
        options["shape"] = shape
    if q_range:
        options["q_range"] = (float(q_range[0]), float(q_range[1]))
    if mask:
        options["mask_file"] = str(mask)
    if polarization_factor is not None:
        options["polarization_factor"] = float(polarization_factor)
    return options


@flow(name="saxs", task_runner=DaskTaskRunner(), log_prints=True, on_failure=[record_failure],
      on_crashed=[record_failure])
def saxs_flow(
    calibration: str,
    inputs: list[str],
    output_dir: str,
    batch_size: int = 200,
    overwrite: bool | None = None,
    npt: int | None = None,
    q_range: list[float] | None = None,
    oversampling: int | None = None,
    mask: str | None = None,
    polarization_factor: float | None = None,
) -> dict:
    """Integrate SAXS/WAXS frames.

    calibration: SAXSDOG calibration JSON or pyFAI .poni; inputs: files, directories (walked
    recursively) or ``file.h5:start-stop`` event ranges; output_dir: where results go;
    batch_size: frames per task; overwrite: redo frames already done (default: the calibration's
    OverwriteFiles); npt, q_range (nm⁻¹), oversampling, mask, polarization_factor (pyFAI's f,
    −1…1): for .poni calibrations (a SAXSDOG calibration carries its own).
    """
    logger = get_run_logger()
    t0 = time.perf_counter()
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    out = Path(output_dir)
    refs = list(iter_frame_refs(list(inputs)))
    if not refs:
        raise ValueError(f"no frames found in {list(inputs)}")
    if not str(calibration).lower().endswith(".poni"):
        given = {k: v for k, v in dict(npt=npt, q_range=q_range, oversampling=oversampling, mask=mask,
                                         polarization_factor=polarization_factor).items() if v is not None}
        if given:
            logger.warning("ignored for a SAXSDOG calibration (it carries its own): %s", ", ".join(given))
    options = _calibration_options(calibration, refs, npt, q_range, oversampling, mask, polarization_factor)
    cal = load_calibration(calibration, **options)  # validated before any work starts
    input_root = _input_root(list(inputs))
    out.mkdir(parents=True, exist_ok=True)
    SaxsReducer(cal, out, input_root=input_root)  # builds the matrices once; workers load the cache
    t_ready = time.perf_counter()
    logger.info("%d frames, %d integrations, %d slices, batches of %d", len(refs), len(cal.radial), len(cal.slices), batch_size)

    batches = [refs[i : i + batch_size] for i in range(0, len(refs), batch_size)]
    record = RunRecord(out, "saxs", unit="frames", total=len(refs))
    progress_id = create_progress_artifact(0.0, description=f"SAXS: {len(refs)} frames in {len(batches)} batches")
    futures = {}
    for batch in batches:
        fut = integrate_batch.submit(str(calibration), options, [tuple(r) for r in batch], str(out), input_root, overwrite)
        futures[fut] = batch
    rows, failures = [], []
    done = skipped = finished = 0
    peak_rss_mb = 0.0
    for fut in as_completed(list(futures)):
        batch = futures[fut]
        result = fut.result(raise_on_failure=False)
        if isinstance(result, dict):
            rows.extend(result["rows"])
            failures.extend(result["failures"])
            done += result["frames_done"]
            skipped += result["frames_skipped"]
            peak_rss_mb = max(peak_rss_mb, result.get("peak_rss_mb", 0.0))
            logger.debug("batch of %d frames reduced in %.2f s", len(batch), result["elapsed_s"])
            record.progress(done=result["frames_done"], skipped=result["frames_skipped"],
                            failed=len(batch) - result["frames_done"] - result["frames_skipped"],
                            rows=result["rows"], task_s=result["elapsed_s"])
        else:  # the whole task failed (after its retries): every frame of it is a failure
            failures.extend(f"{FrameRef(*r)}: batch failed: {result}" for r in batch)
            record.progress(failed=len(batch))
        finished += len(batch)
        rate = done / max(time.perf_counter() - t_ready, 1e-9)
        update_progress_artifact(progress_id, 100.0 * finished / len(refs))
        logger.info("%s %5.1f %% (%d/%d frames; %d done, %d skipped, %d failed; %.1f frames/s)",
                    _bar(finished / len(refs)), 100.0 * finished / len(refs), finished, len(refs), done, skipped,
                    len(failures), rate)

    elapsed = time.perf_counter() - t_ready
    extra = {"preparation_s": t_ready - t0, "worker_peak_rss_mb": peak_rss_mb,
             "task_granularity": record.granularity()}
    summary = _finish(cal, out, rows, failures, done, skipped, elapsed, input_root, extra)
    record.finish()
    logger.info("SAXS run: %d frames done, %d skipped, %d failed in %.1f s (%.1f frames/s); outputs in %s",
                done, skipped, len(failures), elapsed, summary["frames_per_s"], out)
    for failure in failures[:20]:
        logger.warning("failed: %s", failure)
    return summary


def _bar(fraction: float, width: int = 30) -> str:
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def failures_markdown(failures: list[str], limit: int = 100) -> list[str]:
    """Markdown lines of a run summary's failures section (empty when none)."""
    if not failures:
        return []
    lines = ["", "## Failures", ""] + [f"- {f}" for f in failures[:limit]]
    if len(failures) > limit:
        lines.append(f"- … and {len(failures) - limit} more (see summary.json)")
    return lines


def _finish(cal, out: Path, rows, failures, done, skipped, elapsed, input_root, extra: dict) -> dict:
    """Run table (CSV + HDF5), plots, artifacts and summary.json."""
    rows = sorted(rows, key=lambda r: (r["integration"], r["time"], r["frame"]))
    table = {c: [r[c] for r in rows] for c in TABLE_COLUMNS}
    plot = curves_plot = None
    if rows:
        write_table_csv(out / "integral_parameters.csv", table)
        write_table_hdf5(out / "integral_parameters.h5", table)
        plot = plot_integral_parameters(rows, out / "integral_parameters.png")
        curves_plot = _plot_some_curves(cal, out, rows, input_root)
        create_table_artifact(
            table=[{c: r[c] for c in TABLE_COLUMNS} for r in rows[:MAX_TABLE_ARTIFACT_ROWS]],
            key="saxs-integral-parameters",
            description=f"Integral parameters per frame ({min(len(rows), MAX_TABLE_ARTIFACT_ROWS)} of {len(rows)} rows; all in {out / 'integral_parameters.csv'})",
        )
    rate = done / elapsed if elapsed > 0 else 0.0
    summary = {
        "frames_done": done,
        "frames_skipped": skipped,
        "frames_failed": len(failures),
        "failures": failures,
        "output_dir": str(out),
        "elapsed_s": elapsed,  # from the first batch submitted to the last finished
        "frames_per_s": rate,
        "plot": plot,
        "curves_plot": curves_plot,
        "table": str(out / "integral_parameters.csv") if rows else None,
        **extra,
    }
    lines = [
        "# SAXS run summary",
        "",
        "| frames done | skipped (already done) | failed | time (s) | throughput (frames/s) |",
        "|---|---|---|---|---|",
        f"| {done} | {skipped} | {len(failures)} | {elapsed:.1f} | {rate:.1f} |",
        "",
        f"Outputs: `{out}` (per-frame `.chi` under `chi/`, NeXus batches under `curves/`, `integral_parameters.csv/.h5/.png`).",
    ]
    lines += failures_markdown(failures)
    create_markdown_artifact("\n".join(lines), key="saxs-run-summary", description="SAXS run summary")
    from photonflow.io import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _plot_some_curves(cal, out: Path, rows, input_root) -> str | None:
    """I(q) of up to five frames of the first integration, read back from their .chi files."""
    name = cal.radial[0].name
    frames = [r for r in rows if r["integration"] == name]
    pick = frames if len(frames) <= 5 else [frames[i] for i in np.linspace(0, len(frames) - 1, 5).astype(int)]
    curves, labels, sigmas, q = [], [], [], None
    from photonflow.saxs import output_stem

    for r in pick:
        ref = FrameRef(r["path"], None if r["event"] < 0 else r["event"])
        stem = output_stem(ref, input_root)
        path = out / "chi" / stem.parent / f"{stem.name}_{name}.chi"
        try:
            q, intensity, sigma, _ = read_chi(path)
        except Exception:
            continue
        curves.append(intensity)
        sigmas.append(sigma)
        labels.append(ref.label)
    if not curves:
        return None
    return plot_curves(q, curves, labels, out / "curves.png", title=f"I(q), integration {name!r}", sigma=sigmas)
