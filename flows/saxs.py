"""The SAXS/WAXS flow: integrate (and slice) a directory tree, a list of files or HDF5 event ranges.

Frames go to the workers in batches (``batch_size`` frames per Prefect task); each batch is read,
integrated with one sparse × dense product per integration, and written (.chi per frame, one NeXus
file per batch). The run ends with a table of integral parameters (CSV, HDF5, PNG plot against frame
time, Prefect table artifact) and a markdown summary (frames done, failed, throughput).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger
from prefect_dask import DaskTaskRunner

from photonflow.calibration import load_calibration
from photonflow.flows._runrecord import record_failure
from photonflow.flows.runner import finish_run, run_batches, write_run_table
from photonflow.io import FrameRef, iter_frame_refs, read_chi, read_frame
from photonflow.operations import get as get_operation
from photonflow.plots import plot_curves, plot_integral_parameters
from photonflow.results import RunSummary
from photonflow.saxs import SaxsReducer, output_stem


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


@flow(
    name="saxs", task_runner=DaskTaskRunner(), log_prints=True, on_failure=[record_failure], on_crashed=[record_failure]
)
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
        given = {
            k: v
            for k, v in dict(
                npt=npt, q_range=q_range, oversampling=oversampling, mask=mask, polarization_factor=polarization_factor
            ).items()
            if v is not None
        }
        if given:
            logger.warning("ignored for a SAXSDOG calibration (it carries its own): %s", ", ".join(given))
    options = _calibration_options(calibration, refs, npt, q_range, oversampling, mask, polarization_factor)
    cal = load_calibration(calibration, **options)  # validated before any work starts
    input_root = _input_root(list(inputs))
    out.mkdir(parents=True, exist_ok=True)
    SaxsReducer(cal, out, input_root=input_root)  # builds the matrices once; workers load the cache
    t_ready = time.perf_counter()
    logger.info(
        "%d frames, %d integrations, %d slices, batches of %d", len(refs), len(cal.radial), len(cal.slices), batch_size
    )
    op = get_operation("saxs")
    options = {
        "calibration": str(calibration),
        "calibration_options": options,
        "output_dir": str(out),
        "input_root": input_root,
        "overwrite": overwrite,
    }
    run = run_batches(op, refs, options, out, int(batch_size))
    rows = sorted(run.rows, key=lambda r: (r["integration"], r["time"], r["frame"]))
    outputs = {"table": write_run_table(op, out, rows), "plot": None, "curves_plot": None}
    if rows:
        outputs["plot"] = plot_integral_parameters(rows, out / "integral_parameters.png")
        outputs["curves_plot"] = _plot_some_curves(cal, out, rows, input_root)
    summary = RunSummary(
        "saxs",
        op.unit,
        str(out),
        done=run.done,
        skipped=run.skipped,
        failed=run.failed,
        failures=run.failures,
        elapsed_s=run.elapsed_s,
        preparation_s=t_ready - t0,
        peak_rss_mb=run.peak_rss_mb,
        outputs=outputs,
    )
    notes = [
        f"Outputs: `{out}` (per-frame `.chi` under `chi/`, NeXus batches under `curves/`, "
        "`integral_parameters.csv/.h5/.png`)."
    ]
    return finish_run(op, summary, {"skipped (already done)": str(run.skipped)}, notes, run.record)


def _plot_some_curves(cal, out: Path, rows, input_root) -> str | None:
    """I(q) of up to five frames of the first integration, read back from their .chi files."""
    name = cal.radial[0].name
    frames = [r for r in rows if r["integration"] == name]
    pick = frames if len(frames) <= 5 else [frames[i] for i in np.linspace(0, len(frames) - 1, 5).astype(int)]
    curves, labels, sigmas, q = [], [], [], None
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
