"""Benchmark of tomography: photonflow's FINUFFT gridrec against algotom's FBP, and the whole flow.

    python benchmarks/tomo.py                   # 2048-wide sinograms, 1500 angles, 1 thread
    python benchmarks/tomo.py --width 1024 --angles 900 --slices 4 --skip-fbp
    python benchmarks/tomo.py --flow            # also the whole flow on a 2048 x 512 x 2048 scan

Part 1 (reconstruction):
One process, one CPU thread (OMP/BLAS/numba/FINUFFT threads = 1; algotom's numba FBP has a data
race when threaded, so one thread is also the only reproducible setting). The data: analytic
projections of the 3D modified Shepp–Logan phantom (2×2 sub-pixel rays, μ scaled so the largest
line integral is 2) and the voxelised phantom (2³ sub-voxels) for the RMSE, inside 95 % of the
inscribed circle. Prints, for each backend: seconds per slice, slices/s per core, RMSE (1/px) and
the ratio of gridrec's speed to algotom's (target ≥ 10×). Times are the best of ``--repeats``.
Backends: gridrec (photonflow, FINUFFT), algotom (fbp_reconstruction, gpu=False, ncore=1), fbp
(photonflow's numba reference, linear interpolation), tomopy (gridrec) when installed.

Part 2 (``--flow``): the tomo flow end to end on the default profile (a local Dask cluster) for a
scan of 2048 projections of 512 rows × 2048 columns (uint16, 4 GiB raw; the analytic phantom's
first ``--flow-rows-simulated`` rows repeated down the detector, noise added per row), with flats
before and after, darks, zingers, stripes and Paganin on: wall time per stage (pass 1, centre and
range, pass 2, volume and pyramid, report) and per chunk.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if "--flow-only" not in sys.argv:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from photonflow.simulate.tomo import phantom_projections, phantom_volume, scale_ellipsoids, shepp_logan_ellipsoids  # noqa: E402
from photonflow.tomo.recon import available_backends, inscribed_circle, reconstruct  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--angles", type=int, default=1500)
    ap.add_argument("--slices", type=int, default=4, help="slices per gridrec call (FINUFFT n_trans)")
    ap.add_argument("--filter", default="hann", help="a filter all backends have (ramp, hann, hamming, parzen)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-fbp", action="store_true", help="skip photonflow's slow numba reference")
    ap.add_argument("--skip-algotom", action="store_true")
    ap.add_argument("--flow", action="store_true", help="also time the whole flow (part 2)")
    ap.add_argument("--flow-only", action="store_true", help="only part 2")
    ap.add_argument("--flow-projections", type=int, default=2048)
    ap.add_argument("--flow-rows", type=int, default=512)
    ap.add_argument("--flow-cols", type=int, default=2048)
    ap.add_argument("--flow-dir", default="/tmp/photonflow-tomo-benchmark")
    ap.add_argument(
        "--flow-profile",
        choices=["local", "slurm"],
        default="local",
        help="part 2 on a local Dask cluster or on 2 SLURM jobs (dask-jobqueue, this node's SLURM)",
    )
    ap.add_argument(
        "--flow-worker-memory-gib",
        type=float,
        default=None,
        help="a local profile of 2 workers with this Dask memory limit each (the bigger-than-memory run: "
        "e.g. 1.5 with --flow-projections 3072 --flow-rows 1024 --flow-cols 1024, 6.4 GB raw)",
    )
    args = ap.parse_args(argv)
    if args.flow_only:
        return flow_benchmark(args)

    n, na = args.width, args.angles
    theta = np.arange(na) * 180.0 / na
    t0 = time.perf_counter()
    ells = shepp_logan_ellipsoids()
    probe = phantom_projections((1, n), theta[:: max(na // 60, 1)], ells, oversample=1)
    ells = scale_ellipsoids(ells, 2.0 / float(probe.max()))
    sino = np.moveaxis(phantom_projections((1, n), theta, ells, oversample=2), 1, 0)  # (1, na, n)
    vol = phantom_volume((1, n, n), ells, oversample=2)[0]
    mask = inscribed_circle(n, 0.95)
    print(
        f"data: {n}-wide sinogram, {na} angles over 180°, filter {args.filter!r}; "
        f"phantom + projections in {time.perf_counter() - t0:.1f} s; backends installed: {available_backends()}"
    )

    def rmse(rec):
        return float(np.sqrt(np.mean((rec - vol)[mask] ** 2)))

    def run(backend, n_slices, **kw):
        stack = np.repeat(sino, n_slices, axis=0)
        best = np.inf
        rec = None
        for _ in range(args.repeats):
            t = time.perf_counter()
            rec = reconstruct(stack, theta, (n - 1) / 2, backend=backend, filter_name=args.filter, **kw)
            best = min(best, time.perf_counter() - t)
        return best / n_slices, rmse(rec[0])

    results = {}
    results["gridrec"] = run("gridrec", args.slices, batch=args.slices)
    if not args.skip_algotom and "algotom" in available_backends():
        import numba

        numba.set_num_threads(1)
        run_alg = args.repeats
        args.repeats = 1  # 5–6 s per slice: one timed pass after numba's compilation
        reconstruct(sino[:, :, :], theta, (n - 1) / 2, backend="algotom", filter_name=args.filter)  # compile
        results["algotom"] = run("algotom", 1)
        args.repeats = run_alg
    if not args.skip_fbp:
        reps = args.repeats
        args.repeats = 1
        reconstruct(sino[:, :8], theta[:8], (n - 1) / 2, backend="fbp", filter_name=args.filter)  # compile
        results["fbp"] = run("fbp", 1)
        args.repeats = reps
    if "tomopy" in available_backends():
        results["tomopy"] = run("tomopy", args.slices)

    print(f"{'backend':10s} {'s/slice':>9s} {'slices/s/core':>14s} {'RMSE (1/px)':>12s}")
    for name, (sec, err) in results.items():
        print(f"{name:10s} {sec:9.3f} {1.0 / sec:14.3f} {err:12.4e}")
    print(f"(phantom μ: skull {ells[0].mu:.3e}, brain {ells[0].mu + ells[1].mu:.3e} 1/px)")
    if "algotom" in results:
        ratio = results["algotom"][0] / results["gridrec"][0]
        print(
            f"gridrec / algotom speed: {ratio:.1f}x (target >= 10x); "
            f"RMSE ratio gridrec/algotom: {results['gridrec'][1] / results['algotom'][1]:.3f}"
        )
    if args.flow:
        return flow_benchmark(args)
    return 0


def write_benchmark_scan(path: Path, n_proj: int, rows: int, cols: int, block: int = 64, seed: int = 0) -> Path:
    """A DXchange scan written block by block (the whole never sits in memory): analytic projections
    of 8 phantom rows repeated down the detector, Poisson-like noise, two dead columns, zingers."""
    import h5py

    rng = np.random.default_rng(seed)
    theta = np.arange(n_proj) * 180.0 / n_proj
    ells = shepp_logan_ellipsoids()
    probe = phantom_projections((1, cols), theta[:: max(n_proj // 60, 1)], ells, oversample=1)
    ells = scale_ellipsoids(ells, 2.0 / float(probe.max()))
    flat = 20000.0
    with h5py.File(path, "w") as f:
        ex = f.create_group("exchange")
        data = ex.create_dataset("data", shape=(n_proj, rows, cols), dtype=np.uint16, chunks=(1, rows, cols))
        for a in range(0, n_proj, block):
            b = min(a + block, n_proj)
            li = phantom_projections((8, cols), theta[a:b], ells, oversample=1)  # (k, 8, cols)
            li = np.tile(li, (1, -(-rows // 8), 1))[:, :rows]
            counts = flat * np.exp(-li)
            counts += rng.normal(0.0, 1.0, counts.shape) * np.sqrt(counts)
            counts[:, :, [300 % cols, 1500 % cols]] = 50.0  # dead columns
            hits = rng.random(counts.shape) < 1e-6
            counts[hits] = 60000
            data[a:b] = np.clip(counts + 100, 0, 65535).astype(np.uint16)
        ex["data_white"] = np.full((10, rows, cols), flat + 100, np.uint16)
        ex["data_white_end"] = np.full((10, rows, cols), flat + 100, np.uint16)
        ex["data_dark"] = np.full((10, rows, cols), 100, np.uint16)
        ex["theta"] = theta
    return path


def flow_benchmark(args) -> int:

    from photonflow.deployments.cli.common import run_on_profile
    from photonflow.deployments.clusters import load_cluster_profile
    from photonflow.flows.tomo import tomo_flow

    root = Path(args.flow_dir)
    root.mkdir(parents=True, exist_ok=True)
    scan = root / "scan.h5"
    n, rows, cols = args.flow_projections, args.flow_rows, args.flow_cols
    t = time.perf_counter()
    import h5py

    reuse = False
    if scan.is_file():
        with h5py.File(scan, "r") as f:
            reuse = "exchange/theta" in f and f["exchange/data"].shape == (n, rows, cols)
    if not reuse:
        write_benchmark_scan(scan, n, rows, cols)
    print(
        f"\nflow: scan {n} x {rows} x {cols} uint16 ({n * rows * cols * 2 / 2**30:.2f} GiB) "
        + ("reused" if reuse else f"written in {time.perf_counter() - t:.0f} s")
    )
    memory_gib = args.flow_worker_memory_gib or 2.0
    if args.flow_profile == "slurm":
        import subprocess
        import sys

        partition = (
            subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True)
            .stdout.split()[0]
            .rstrip("*")
        )
        spec = {
            "kind": "slurm",
            "cores": 1,
            "processes": 1,
            "memory": f"{memory_gib}GiB",
            "walltime": "01:00:00",
            "queue": partition,
            "jobs": 2,
            "interface": "lo",
            "local_directory": str(root / "slurm-work"),
            "log_directory": str(root / "slurm-logs"),
            "python": sys.executable,
        }
    elif args.flow_worker_memory_gib:
        spec = {
            "kind": "local",
            "n_workers": 2,
            "threads_per_worker": 1,
            "processes": True,
            "memory_limit": f"{memory_gib}GiB",
        }
    else:
        spec = None
    profile = load_cluster_profile("local")
    if spec is not None:
        path = root / f"{args.flow_profile}_limited.json"
        path.write_text(json.dumps(spec))
        profile = load_cluster_profile(path)
    if args.flow_worker_memory_gib:
        print(
            f"bigger than memory: raw {n * rows * cols * 2 / 2**30:.2f} GiB against 2 workers x {memory_gib} GiB "
            f"on the {args.flow_profile} profile (Dask memory limit: a worker above 95 % of it is restarted)"
        )
    kwargs = {
        "inputs": [str(scan)],
        "output_dir": str(root / "out"),
        "preprocess": {
            "zingers": {"threshold": 0.3},
            "paganin": {"delta_beta": 50, "energy_kev": 20, "distance_mm": 50, "pixel_size_um": 1.0},
        },
        "sinogram": {"stripes": {"method": "sorting", "size": 21}},
        "output": {"dtype": "uint16"},
        "memory_per_worker_gib": memory_gib,
    }
    from photonflow.deployments.local_api import local_api

    t = time.perf_counter()
    with local_api():  # one Prefect API for the run and its workers (SLURM jobs on this node included)
        summary = run_on_profile(tomo_flow, kwargs, profile)
    wall = time.perf_counter() - t
    workers = profile.get("jobs") or profile.get("n_workers") or "auto"
    limit = profile.get("memory") or profile.get("memory_limit")
    print(
        f"flow wall time {wall:.0f} s on profile {profile['kind']!r} ({workers} workers, memory limit {limit}); "
        f"worker peak RSS {summary['peak_rss_mb']:.0f} MB"
    )
    for stage, sec in summary["timings_s"].items():
        print(f"  {stage:20s} {sec:8.1f} s ({100 * sec / summary['elapsed_s']:.0f} %)")
    for label, key in (("pass 1 steps", "pass1_steps_cpu_s"), ("pass 2 steps", "pass2_steps_cpu_s")):
        steps = summary.get(key, {})
        print(f"  {label} (worker seconds, all chunks): " + ", ".join(f"{k} {v:.0f} s" for k, v in steps.items()))
    print(
        f"  pass-1 chunks: {len(summary['pass1_chunk_s'])}, median {np.median(summary['pass1_chunk_s']):.1f} s; "
        f"pass-2 chunks: {len(summary['pass2_chunk_s'])}, median {np.median(summary['pass2_chunk_s']):.1f} s"
    )
    print(
        json.dumps(
            {
                "centre_px": summary["center_px"],
                "range": summary["range_1_per_px"],
                "worker_peak_rss_mb": summary["peak_rss_mb"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
