"""Flows on a real SLURM (dask-jobqueue's SLURMCluster), against the same flows on the thread pool.

Runs where a SLURM with an idle node is reachable (``sinfo``); .ci/run installs Debian's slurm-wlm
and munge and starts a single-node cluster with deployments/slurm/single_node.sh. Elsewhere the
tests are skipped with the reason.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from photonflow.deployments.cli.common import run_on_profile
from photonflow.deployments.cli.saxs import _prepare_saxs
from photonflow.deployments.clusters import load_cluster_profile
from photonflow.io import read_chi

pytestmark = pytest.mark.slurm


def _slurm_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return (
            "SLURM is not installed here (no sinfo); .ci/run installs slurm-wlm and munge and starts "
            "deployments/slurm/single_node.sh"
        )
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0 or not ({"idle", "mix", "alloc"} & set(out.stdout.split())):
        return f"no usable SLURM node (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


@pytest.fixture(scope="module")
def slurm_profile(tmp_path_factory):
    problem = _slurm_problem()
    if problem:
        pytest.skip(problem)
    root = tmp_path_factory.mktemp("slurm")
    partition = (
        subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()[0].rstrip("*")
    )
    profile = {
        "kind": "slurm",
        "cores": 1,
        "processes": 1,
        "memory": "2GiB",
        "walltime": "00:20:00",
        "queue": partition,
        "jobs": 2,
        "interface": "lo",
        "local_directory": str(root / "work"),
        "log_directory": str(root / "logs"),
        "python": sys.executable,
    }
    path = root / "slurm_test.json"
    path.write_text(json.dumps(profile))
    return load_cluster_profile(path)


def _queue() -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True).stdout.split("\n")


def _chi_curves(directory):
    return {p.relative_to(directory).as_posix(): read_chi(p)[:3] for p in sorted(directory.rglob("*.chi"))}


def test_saxs_flow_on_slurm_matches_the_thread_pool(slurm_profile, tmp_path):
    from photonflow.flows.saxs import saxs_flow
    from photonflow.simulate.saxs import write_demo_dataset

    data = write_demo_dataset(tmp_path / "data", n_frames=12)
    outputs = {}
    for name, profile in (("threads", load_cluster_profile("threads")), ("slurm", slurm_profile)):
        run = {
            "calibration": data["calibration"],
            "inputs": data["inputs"],
            "output_dir": str(tmp_path / name),
            "cluster": "threads",
            "batch_size": 4,
        }
        kwargs, _ = _prepare_saxs(run, "test")
        t = time.perf_counter()
        summary = run_on_profile(saxs_flow, kwargs, profile)
        print(f"saxs on {name}: {summary['done']} frames in {time.perf_counter() - t:.1f} s")
        assert summary["done"] == 12 and summary["failed"] == 0
        outputs[name] = _chi_curves(tmp_path / name / "chi")
    assert outputs["slurm"].keys() == outputs["threads"].keys() and len(outputs["slurm"]) >= 12
    for key, (q, i, s) in outputs["threads"].items():
        q2, i2, s2 = outputs["slurm"][key]
        assert all(np.array_equal(a, b, equal_nan=True) for a, b in ((q, q2), (i, i2), (s, s2))), key
    # the jobs were SLURM jobs, and they are gone after the run
    logs = list(Path(slurm_profile["log_directory"]).glob("*"))
    assert logs, "SLURM wrote no job logs: the workers did not run as SLURM jobs"
    deadline = time.time() + 60  # the jobs are cancelled when the run closes its cluster
    while [line for line in _queue() if "photonflow" in line] and time.time() < deadline:
        time.sleep(1)
    assert not [line for line in _queue() if "photonflow" in line]


def test_tomo_flow_on_slurm_matches_the_thread_pool(slurm_profile, tmp_path):
    from photonflow.flows.tomo import tomo_flow
    from photonflow.simulate.tomo import simulate_scan, write_tomo_scan

    scan = simulate_scan(n_rows=8, n_cols=96, n_angles=120, photons=20000, dead_columns=(30,), seed=5)
    path = write_tomo_scan(tmp_path / "scan.h5", scan)
    volumes = {}
    for name, profile in (("threads", load_cluster_profile("threads")), ("slurm", slurm_profile)):
        kwargs = {
            "inputs": [str(path)],
            "output_dir": str(tmp_path / name),
            "report": False,
            "preprocess": {"zingers": {"threshold": 0.3}},
            "sinogram": {"stripes": {"method": "sorting", "size": 11}},
            "output": {"dtype": "float32"},
            "chunks": {"projections": 40, "rows": 3},
        }
        summary = run_on_profile(tomo_flow, kwargs, profile)
        assert len(summary["pass1_chunk_s"]) == 3 and len(summary["pass2_chunk_s"]) == 3
        with h5py.File(summary["outputs"]["volume"], "r") as f:
            volumes[name] = f["volume"][()]
    assert np.array_equal(volumes["threads"], volumes["slurm"])


def test_a_job_that_cannot_start_fails_clearly(slurm_profile, tmp_path):
    """A partition that does not exist, or more memory than any node has: SLURM's refusal is the
    error, before the run starts (not a run waiting for workers that never come)."""
    from photonflow.config import ConfigError
    from photonflow.deployments.cli import main

    for change, words in (
        ({"queue": "no-such-partition"}, "invalid partition"),
        ({"memory": "100000GiB"}, "node configuration is not available"),
    ):
        bad = {k: v for k, v in slurm_profile.items() if not k.startswith("_")}
        bad.update(change)
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        profile = load_cluster_profile(path)
        t = time.perf_counter()
        with pytest.raises(ConfigError, match="SLURM would not accept the job") as err:
            run_on_profile(lambda **kw: None, {}, profile)
        assert time.perf_counter() - t < 60
        assert words in str(err.value).lower(), str(err.value)
        print(err.value)
    code = main(["tomo", "--cluster", str(path), "/nonexistent.h5", "--out", str(tmp_path / "o")])
    assert code == 2


def test_a_job_cancelled_mid_run_does_not_change_the_result(slurm_profile, tmp_path):
    """scancel one of the two worker jobs while the tomography flow runs: Dask moves its tasks to
    the other worker (Prefect retries what failed), and the volume equals the thread pool's."""
    import threading

    from photonflow.flows.tomo import tomo_flow
    from photonflow.simulate.tomo import simulate_scan, write_tomo_scan

    scan = simulate_scan(n_rows=16, n_cols=128, n_angles=360, photons=20000, seed=6)
    path = write_tomo_scan(tmp_path / "scan.h5", scan)
    kwargs = {
        "inputs": [str(path)],
        "report": False,
        "output": {"dtype": "float32"},
        "preprocess": {"zingers": {"threshold": 0.3}},
        "chunks": {"projections": 24, "rows": 2},
    }
    cancelled = []

    def cancel_one_job():
        deadline = time.time() + 120
        while time.time() < deadline:
            running = [line.split()[0] for line in _queue() if "photonflow" in line and "RUNNING" in line]
            if len(running) == 2:
                time.sleep(4)  # the run is under way on both workers
                subprocess.run(["scancel", running[0]], check=True)
                cancelled.append(running[0])
                return
            time.sleep(0.5)

    killer = threading.Thread(target=cancel_one_job)
    killer.start()
    summary = run_on_profile(tomo_flow, {**kwargs, "output_dir": str(tmp_path / "slurm")}, slurm_profile)
    killer.join()
    assert cancelled, "no job was cancelled: the run ended before both workers were up"
    reference = run_on_profile(
        tomo_flow, {**kwargs, "output_dir": str(tmp_path / "threads")}, load_cluster_profile("threads")
    )
    with h5py.File(summary["outputs"]["volume"], "r") as f, h5py.File(reference["outputs"]["volume"], "r") as g:
        assert np.array_equal(f["volume"][()], g["volume"][()])
    print(
        f"cancelled job {cancelled[0]}; pass-1 chunks {len(summary['pass1_chunk_s'])}, "
        f"pass-2 chunks {len(summary['pass2_chunk_s'])}, elapsed {summary['elapsed_s']:.1f} s"
    )
