"""Prefect's overhead per task, and the share of worker time each flow loses to it.

1. An empty Prefect task, many times, on the thread pool and on a local Dask cluster (2 workers):
   overhead per task = workers × wall / tasks. This is the figure ``flows/_runrecord.py`` uses
   (``TASK_OVERHEAD_S``) to warn about runs whose tasks are too small.
2. Each flow's demo (``photonflow demo saxs|sfx|laue|tomo``, sized by ``DEMO_ARGS`` to give each of
   the 2 workers several tasks) on the default profile (a local Dask cluster) with the default batch
   or chunk sizes: the number of tasks, the median work per task
   (measured inside the tasks), the overhead share estimated from (1), and the share of the
   workers' time spent outside the tasks' work (overhead, scheduling and idle workers together).

Usage: python benchmarks/overhead.py [--flows saxs sfx laue tomo] [--dir /tmp/pf-overhead]
(about 8 minutes here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import _threads  # noqa: F401  (one thread per worker process)

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no internet for telemetry
os.environ.setdefault("DO_NOT_TRACK", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402


@task(cache_policy=NO_CACHE)
def empty_task(k: int) -> int:
    """No work at all: what is left is Prefect's (and Dask's) cost of a task."""
    return k


@flow
def empty_tasks(n: int) -> float:
    t = time.perf_counter()
    futures = [empty_task.submit(k) for k in range(n)]
    assert [f.result() for f in futures] == list(range(n))
    return time.perf_counter() - t


def task_overhead(runner_name: str, n: int, workers: int) -> float:
    """Seconds of worker time per empty task on a runner."""
    if runner_name == "ThreadPoolTaskRunner":
        from prefect.task_runners import ThreadPoolTaskRunner

        runner = ThreadPoolTaskRunner(max_workers=workers)
    else:
        from prefect_dask import DaskTaskRunner

        runner = DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True},
        )
    wall = empty_tasks.with_options(task_runner=runner)(n)
    return workers * wall / n


#: Demo sizes: SAXS 1600 generated Pilatus 1M frames (8 batches of 200), SFX 200 frames of 1920²
#: (10 batches of 20), Laue 24 images of 2018 × 2016 (12 batches of 2), tomography 128 rows.
DEMO_ARGS = {
    "saxs": ["--synthetic", "--frames", "1600"],
    "sfx": ["--frames", "200"],
    "laue": ["--frames", "24"],
    "tomo": ["--frames", "128"],
}


def flow_shares(name: str, root: Path) -> dict:
    """Run a flow's demo on the local profile; its task granularity and worker time outside tasks."""
    from photonflow.deployments.cli import main as cli

    out = root / name
    t = time.perf_counter()
    code = cli(["demo", name, "--out", str(out), "--cluster", "local", *DEMO_ARGS.get(name, [])])
    wall = time.perf_counter() - t
    record_path = next(out.rglob("run.json"))
    record = json.loads(record_path.read_text())
    summary = json.loads((record_path.parent / "summary.json").read_text())
    g = record["task_granularity"]
    if name == "tomo":  # the chunk stages; centre, range, volume and report are the flow's own work
        busy = summary["timings_s"]["pass 1"] + summary["timings_s"]["pass 2"]
    else:
        busy = summary["elapsed_s"]
    workers = 2
    outside = 1.0 - g["task_work_s"] / (workers * busy) if busy > 0 else float("nan")
    return {
        "flow": name,
        "exit": code,
        "tasks": g["tasks"],
        "median_task_s": g["median_task_s"],
        "estimated_overhead_share": g["overhead_share"],
        "worker_time_outside_tasks": outside,
        "stage_wall_s": busy,
        "demo_wall_s": wall,
        "too_small": g["too_small"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", nargs="*", default=["saxs", "sfx", "laue", "tomo"])
    parser.add_argument("--dir", default="/tmp/pf-overhead")
    parser.add_argument("--dask-tasks", type=int, default=60)
    parser.add_argument("--thread-tasks", type=int, default=400)
    args = parser.parse_args(argv)
    from photonflow.deployments.local_api import local_api
    from photonflow.flows._runrecord import TASK_OVERHEAD_S

    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    with local_api():
        task_overhead("ThreadPoolTaskRunner", 20, 2)  # warm-up: imports, first API calls
        measured = {
            "ThreadPoolTaskRunner": task_overhead("ThreadPoolTaskRunner", args.thread_tasks, 2),
            "DaskTaskRunner": task_overhead("DaskTaskRunner", args.dask_tasks, 2),
        }
        print("\nPrefect overhead per empty task (worker seconds = workers x wall / tasks, 2 workers):")
        for runner, sec in measured.items():
            print(
                f"  {runner:22s} {1000 * sec:7.1f} ms   (flows/_runrecord.py assumes {1000 * TASK_OVERHEAD_S[runner]:.0f} ms)"
            )
        print(
            f"  DaskTaskRunner / ThreadPoolTaskRunner: {measured['DaskTaskRunner'] / measured['ThreadPoolTaskRunner']:.0f}x"
        )
        rows = [flow_shares(name, root) for name in args.flows]
    print("\nEach flow's demo on the local profile (2 Dask workers), default batch/chunk sizes:")
    print(
        f"{'flow':6s} {'tasks':>6s} {'median work/task':>17s} {'est. overhead':>14s} {'worker time outside tasks':>26s}"
    )
    for r in rows:
        print(
            f"{r['flow']:6s} {r['tasks']:6d} {r['median_task_s']:15.2f} s {100 * r['estimated_overhead_share']:13.1f}% "
            f"{100 * r['worker_time_outside_tasks']:25.1f}%"
            + ("   (warned: tasks too small)" if r["too_small"] else "")
        )
    print(json.dumps({"overhead_per_task_s": measured, "flows": rows}, default=float))
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
