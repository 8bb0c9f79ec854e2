"""Benchmark of SAXS integration: photonflow against pyFAI, and the SAXS flow end to end.

    python benchmarks/integrate.py                   # all three parts, 2000 files
    python benchmarks/integrate.py --frames 500      # a shorter end-to-end run
    python benchmarks/integrate.py --skip-flow       # kernel only

(a) Kernel, one core: frames/s of photonflow's batched integration of Pilatus 1M frames (the real
    CeO2 image of ../shared/data/saxs with Poisson noise) at oversampling 3, next to pyFAI's
    integrate1d with ("full", "csr", "cython") on the same frames and bins; ratio printed.
(b) End to end: the SAXS flow (Prefect, local Dask cluster, 2 workers × 1 thread) over N Pilatus 1M
    TIFF files on disk, reading, integrating and writing one .chi per frame plus one NeXus file
    per batch. frames/s from the first batch submitted to the last one finished.
(c) Peak memory: resident set of the flow process and of the busiest Dask worker.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import psutil

# one core for part (a): set before numpy/pyFAI/torch start their thread pools
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("PHOTONFLOW_DATA", REPO.parent / "shared" / "data")) / "saxs"


def noisy_frames(image: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n Poisson realisations of a real frame; gaps (−1) and bad pixels (−2) kept."""
    rng = np.random.default_rng(seed)
    lam = np.clip(image, 0, None).astype(np.float64)
    frames = rng.poisson(lam, size=(n, *image.shape)).astype(np.int32)
    frames[:, image < 0] = image[image < 0]
    return frames


def best_time(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def kernel_benchmark(n_frames: int, npt: int) -> dict:
    import fabio
    import pyFAI

    from photonflow.geometry import Geometry
    from photonflow.integrate import RadialBins, build_integrator

    image = fabio.open(str(DATA / "CeO2_Pilatus1M.tif")).data
    frames = noisy_frames(image, n_frames)
    mask = image < 0
    geometry = Geometry.from_poni_file(DATA / "CeO2_Pilatus1M.poni", shape=image.shape)
    q_range = (1.0, 60.0)
    bins = RadialBins.linear(*q_range, npt)
    t = time.perf_counter()
    integ = build_integrator(geometry, bins, oversampling=3, mask=mask)
    build_s = time.perf_counter() - t
    integ.integrate(frames[:4])  # compile/warm
    ours = best_time(lambda: integ.integrate(frames, chunk=32))
    unsplit = build_integrator(geometry, bins, mask=mask, split=False)
    unsplit.integrate(frames[:4])
    ours_unsplit = best_time(lambda: unsplit.integrate(frames, chunk=32))

    ai = pyFAI.load(str(DATA / "CeO2_Pilatus1M.poni"))
    kw = dict(unit="q_nm^-1", radial_range=q_range, mask=mask, correctSolidAngle=False, error_model="poisson")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = ("full", "csr", "cython")
        ai.integrate1d(frames[0], npt, method=full, **kw)
        n_ref = min(n_frames, 32)
        pyfai_full = best_time(lambda: [ai.integrate1d(f, npt, method=full, **kw) for f in frames[:n_ref]], 2)
        nosplit = ("no", "csr", "cython")
        ai.integrate1d(frames[0], npt, method=nosplit, **kw)
        pyfai_nosplit = best_time(lambda: [ai.integrate1d(f, npt, method=nosplit, **kw) for f in frames[:n_ref]], 2)
        res = integ.integrate(frames[:1])
        ref = ai.integrate1d(frames[0], npt, method=full, **kw)
    ok = np.isfinite(res.intensity[0]) & (ref.intensity != 0)
    median_rel = float(np.median(np.abs(res.intensity[0][ok] - ref.intensity[ok]) / np.abs(ref.intensity[ok])))
    out = {
        "frames": n_frames,
        "bins": npt,
        "matrix_build_s": build_s,
        "nnz": int(integ.matrix.nnz),
        "photonflow_ov3_frames_per_s": n_frames / ours,
        "pyfai_full_csr_frames_per_s": n_ref / pyfai_full,
        "ratio_split": (n_frames / ours) / (n_ref / pyfai_full),
        "photonflow_unsplit_frames_per_s": n_frames / ours_unsplit,
        "pyfai_nosplit_csr_frames_per_s": n_ref / pyfai_nosplit,
        "ratio_unsplit": (n_frames / ours_unsplit) / (n_ref / pyfai_nosplit),
        "median_rel_diff_vs_pyfai_full": median_rel,
    }
    print("(a) kernel, one core, Pilatus 1M, %d bins q %.0f–%.0f nm⁻¹" % (npt, *q_range))
    print(
        "    photonflow ov=3 (batched, 32 frames) : %8.1f frames/s  (%.2f ms/frame)"
        % (out["photonflow_ov3_frames_per_s"], 1e3 / out["photonflow_ov3_frames_per_s"])
    )
    print(
        "    pyFAI integrate1d full/csr/cython    : %8.1f frames/s  (%.2f ms/frame)"
        % (out["pyfai_full_csr_frames_per_s"], 1e3 / out["pyfai_full_csr_frames_per_s"])
    )
    print("    ratio (split pixels)                 : %8.2f ×   [target ≥ 5]" % out["ratio_split"])
    print("    photonflow unsplit                   : %8.1f frames/s" % out["photonflow_unsplit_frames_per_s"])
    print("    pyFAI no/csr/cython                  : %8.1f frames/s" % out["pyfai_nosplit_csr_frames_per_s"])
    print("    ratio (unsplit)                      : %8.2f ×" % out["ratio_unsplit"])
    print("    median |I − I_pyFAI|/I_pyFAI (ov=3 vs full splitting): %.1e" % median_rel)
    print("    matrix build %.1f s, %d non-zeros" % (build_s, out["nnz"]))
    return out


def write_dataset(workdir: Path, n_files: int) -> Path:
    """n_files Pilatus 1M TIFFs (16 noisy realisations of the CeO2 frame, cycled) and a SAXSDOG calibration."""
    import fabio
    import tifffile

    from photonflow.geometry import Geometry

    frames_dir = workdir / "frames"
    image = fabio.open(str(DATA / "CeO2_Pilatus1M.tif")).data
    if frames_dir.is_dir() and len(list(frames_dir.glob("*.tif"))) == n_files:
        print("    reusing %d files in %s" % (n_files, frames_dir))
    else:
        shutil.rmtree(frames_dir, ignore_errors=True)
        frames_dir.mkdir(parents=True)
        variants = noisy_frames(image, 16, seed=1)
        t = time.perf_counter()
        for i in range(n_files):
            tifffile.imwrite(frames_dir / f"ceo2_{i:05d}.tif", variants[i % 16])
        print(
            "    wrote %d files (%.1f GB) in %.1f s" % (n_files, n_files * image.nbytes / 1e9, time.perf_counter() - t)
        )
    tifffile.imwrite(workdir / "mask.tif", (image < 0).astype(np.uint8))
    fit2d = Geometry.from_poni_file(DATA / "CeO2_Pilatus1M.poni", shape=image.shape).to_fit2d()
    rows = image.shape[0]
    calibration = {
        "Title": "benchmark: CeO2 on a Pilatus 1M",
        "Geometry": {
            "BeamCenter": [rows - fit2d["center_y"], fit2d["center_x"]],  # y from the bottom (FIT2D)
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
                "Oversampling": 3,
                "PixelPerRadialElement": 1.0,
                "qStart": 5.0,
                "qStop": 40.0,
            }
        ],
        "OverwriteFiles": True,
    }
    (workdir / "calibration.json").write_text(json.dumps(calibration, indent=2))
    return frames_dir


def flow_benchmark(workdir: Path, n_files: int, batch_size: int) -> dict:
    frames_dir = write_dataset(workdir, n_files)
    from photonflow.deployments.local_api import local_api
    from photonflow.flows.saxs import saxs_flow

    out = workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    with local_api():
        summary = saxs_flow(
            calibration=str(workdir / "calibration.json"),
            inputs=[str(frames_dir)],
            output_dir=str(out),
            batch_size=batch_size,
            overwrite=True,
        )
    wall = time.perf_counter() - t
    result = {
        "files": n_files,
        "batch_size": batch_size,
        "frames_done": summary["done"],
        "frames_failed": summary["failed"],
        "frames_per_s": summary["per_s"],
        "processing_s": summary["elapsed_s"],
        "wall_s_including_startup": wall,
        "worker_peak_rss_mb": summary["peak_rss_mb"],
        "flow_process_rss_mb": psutil.Process().memory_info().rss / 1e6,
    }
    print(
        "(b) SAXS flow end to end: %d Pilatus 1M TIFF files, batches of %d, local Dask cluster (2 workers)"
        % (n_files, batch_size)
    )
    print("    frames done %d, failed %d" % (result["frames_done"], result["frames_failed"]))
    print(
        "    throughput %.1f frames/s (%.1f s from first batch to last) [target ≥ 200; SAXSDOG: 66 on 24 cores]"
        % (result["frames_per_s"], result["processing_s"])
    )
    print("    wall time including Prefect and Dask start-up: %.1f s" % wall)
    print(
        "(c) memory: peak resident set of the busiest Dask worker %.0f MB; flow process %.0f MB at the end"
        % (result["worker_peak_rss_mb"], result["flow_process_rss_mb"])
    )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000, help="files for the end-to-end run (default 2000)")
    parser.add_argument("--kernel-frames", type=int, default=64, help="frames for the kernel benchmark")
    parser.add_argument("--bins", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--workdir", default="/tmp/photonflow-bench-integrate")
    parser.add_argument("--skip-flow", action="store_true")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    if not (DATA / "CeO2_Pilatus1M.tif").exists():
        sys.exit(f"real data not found in {DATA} (set PHOTONFLOW_DATA)")
    results = {"kernel": kernel_benchmark(args.kernel_frames, args.bins)}
    if not args.skip_flow:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        results["flow"] = flow_benchmark(workdir, args.frames, args.batch_size)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
