"""Throughput of the tomography flow with 1 and 2 workers, on the local and the slurm profile.

The same scan (written once, uint16 DXchange) is reconstructed by the same flow four times: on a
local Dask cluster of 1 and of 2 single-threaded workers, and on dask-jobqueue's SLURMCluster with
1 and 2 one-core jobs (the single-node SLURM of deployments/slurm/single_node.sh; skipped with the
reason where there is no SLURM). Printed for each: the flow's wall time, the time of the chunk
stages (pass 1 + pass 2, where the workers run in parallel), throughput in raw MB/s, and the
parallel efficiency of 2 workers against 1 (speed-up / 2) — the peer is the same flow on one worker.
The volumes of all runs are checked to be identical.

Usage: python benchmarks/scaling.py [--projections 1024 --rows 64 --cols 1024] [--dir /tmp/pf-scaling]
(about 5 minutes here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _threads  # noqa: F401  (one thread per worker process)
import h5py
import numpy as np

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no internet for telemetry
os.environ.setdefault("DO_NOT_TRACK", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tomo import write_benchmark_scan  # noqa: E402  (benchmarks/tomo.py)


def slurm_partition() -> str | None:
    """The first partition with an idle node, or None (printed reason) when there is no SLURM."""
    if shutil.which("sinfo") is None:
        print("slurm: skipped, no sinfo here (start one with: bash deployments/slurm/single_node.sh)")
        return None
    out = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        part, state = line.split()
        if state in ("idle", "mix"):
            return part.rstrip("*")
    print(f"slurm: skipped, no idle node (sinfo: {out.stdout.strip() or out.stderr.strip()})")
    return None


def profile_file(root: Path, kind: str, workers: int, partition: str | None, memory_gib: float) -> Path:
    if kind == "local":
        profile = {
            "kind": "local",
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            "memory_limit": f"{memory_gib}GiB",
        }
    else:
        profile = {
            "kind": "slurm",
            "cores": 1,
            "processes": 1,
            "memory": f"{memory_gib}GiB",
            "walltime": "00:30:00",
            "queue": partition,
            "jobs": workers,
            "interface": "lo",
            "local_directory": str(root / "slurm-work"),
            "log_directory": str(root / "slurm-logs"),
            "python": sys.executable,
        }
    path = root / f"{kind}_{workers}.json"
    path.write_text(json.dumps(profile))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projections", type=int, default=1024)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--cols", type=int, default=1024)
    parser.add_argument("--chunk-projections", type=int, default=128)
    parser.add_argument("--chunk-rows", type=int, default=8)
    parser.add_argument("--memory-gib", type=float, default=3.0)
    parser.add_argument("--profiles", nargs="*", default=["local", "slurm"])
    parser.add_argument("--dir", default="/tmp/pf-scaling")
    args = parser.parse_args(argv)

    from photonflow.deployments.local_api import local_api

    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    n, rows, cols = args.projections, args.rows, args.cols
    scan = root / f"scan_{n}x{rows}x{cols}.h5"
    if not scan.is_file():
        part = scan.with_suffix(".part")
        write_benchmark_scan(part, n, rows, cols)
        part.rename(scan)
    raw_mb = n * rows * cols * 2 / 1e6
    print(
        f"scan {n} x {rows} x {cols} uint16, {raw_mb:.0f} MB; chunks of {args.chunk_projections} projections "
        f"(pass 1) and {args.chunk_rows} rows (pass 2)"
    )
    kwargs = {
        "inputs": [str(scan)],
        "report": False,
        "preprocess": {
            "zingers": {"threshold": 0.3},
            "paganin": {"delta_beta": 50, "energy_kev": 20, "distance_mm": 50, "pixel_size_um": 1.0},
        },
        "sinogram": {"stripes": {"method": "sorting", "size": 21}},
        "output": {"dtype": "float32"},
        "memory_per_worker_gib": args.memory_gib,
        "chunks": {"projections": args.chunk_projections, "rows": args.chunk_rows},
    }
    partition = slurm_partition() if "slurm" in args.profiles else None
    results, volumes = {}, {}
    # One Prefect API for every run and all their workers (SLURM jobs on this box reach it on
    # loopback); without it each SLURM worker would start a temporary server of its own.
    with local_api():
        run_all(args, kwargs, partition, root, results, volumes)
    print_results(results, volumes, raw_mb)
    same = all(np.array_equal(v, next(iter(volumes.values()))) for v in volumes.values())
    return 0 if same else 1


def run_all(args, kwargs, partition, root, results, volumes) -> None:
    from photonflow.deployments.cli.common import run_on_profile
    from photonflow.deployments.clusters import load_cluster_profile
    from photonflow.flows.tomo import tomo_flow

    for kind in args.profiles:
        if kind == "slurm" and partition is None:
            continue
        for workers in (1, 2):
            profile = load_cluster_profile(profile_file(root, kind, workers, partition, args.memory_gib))
            out = root / f"out_{kind}_{workers}"
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            summary = run_on_profile(tomo_flow, {**kwargs, "output_dir": str(out)}, profile)
            wall = time.perf_counter() - t
            stages = summary["timings_s"]["pass 1"] + summary["timings_s"]["pass 2"]
            results[(kind, workers)] = {
                "wall_s": wall,
                "flow_s": summary["elapsed_s"],
                "chunk_stages_s": stages,
                "chunks": len(summary["pass1_chunk_s"]) + len(summary["pass2_chunk_s"]),
                "chunk_work_s": sum(summary["pass1_chunk_s"]) + sum(summary["pass2_chunk_s"]),
                "peak_rss_mb": summary["peak_rss_mb"],
            }
            with h5py.File(summary["outputs"]["volume"], "r") as f:
                volumes[(kind, workers)] = f["volume"][()]
            print(
                f"  {kind:5s} {workers} worker(s): wall {wall:6.1f} s, flow {summary['elapsed_s']:6.1f} s, "
                f"chunk stages {stages:6.1f} s",
                flush=True,
            )


def print_results(results, volumes, raw_mb) -> None:
    print(
        f"\n{'profile':8s} {'workers':>7s} {'wall (s)':>9s} {'chunk stages (s)':>17s} {'MB/s (wall)':>12s} "
        f"{'MB/s (stages)':>14s} {'efficiency':>11s}"
    )
    report = {}
    for (kind, workers), r in results.items():
        eff = ""
        one = results.get((kind, 1))
        if workers == 2 and one:
            e_wall = one["wall_s"] / (2 * r["wall_s"])
            e_stage = one["chunk_stages_s"] / (2 * r["chunk_stages_s"])
            eff = f"{e_wall:.2f} / {e_stage:.2f}"
            report[kind] = {"efficiency_wall": e_wall, "efficiency_chunk_stages": e_stage}
        print(
            f"{kind:8s} {workers:7d} {r['wall_s']:9.1f} {r['chunk_stages_s']:17.1f} {raw_mb / r['wall_s']:12.2f} "
            f"{raw_mb / r['chunk_stages_s']:14.2f} {eff:>11s}"
        )
    print("(efficiency = speed-up of 2 workers over 1, divided by 2: whole run / chunk stages only)")
    reference = next(iter(volumes.values()))
    same = all(np.array_equal(v, reference) for v in volumes.values())
    print(f"volumes identical across all {len(volumes)} runs: {same}")
    print(
        json.dumps(
            {
                "raw_mb": raw_mb,
                "runs": {f"{k}_{w}": r for (k, w), r in results.items()},
                "efficiency": report,
                "identical": same,
            }
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
