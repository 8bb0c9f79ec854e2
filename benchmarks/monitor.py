"""What one refresh of the live monitor costs while a long SAXS run goes on.

A run record and ``live_rows.jsonl`` like the SAXS flow's, growing by a batch of 200 frames between
refreshes up to ``--rows`` rows. Timed per refresh: the monitor's data endpoint for the run
(``RunStore.run``: record, new rows only, summaries), against the peer, a reader that parses the
whole ``live_rows.jsonl`` again at every refresh (what a monitor without incremental reading would
do); and drawing the integral-parameter plot (only when the data changed).

Usage: python benchmarks/monitor.py [--rows 50000] [--dir /tmp/pf-monitor] (about 1 minute here).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import _threads  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _row(k: int) -> dict:
    return {
        "chi": f"chi/frame_{k:06d}_full.chi",
        "frame": f"/data/frame_{k:06d}.tif",
        "path": f"/data/frame_{k:06d}.tif",
        "event": -1,
        "integration": "full",
        "time": 1.7e9 + k,
        "I0": 1e5 + k,
        "I1": 2e6,
        "I2": 3e9 - k,
        "correlation_length_nm": 3.0 + 1e-5 * k,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--dir", default="/tmp/pf-monitor")
    args = parser.parse_args(argv)
    from photonflow.monitor.plots import render
    from photonflow.monitor.runs import RunStore

    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    run = root / "saxs-run"
    run.mkdir(parents=True)
    record = {
        "format": "photonflow-run/1",
        "kind": "saxs",
        "flow_name": "saxs",
        "flow_run_id": None,
        "flow_run_name": None,
        "prefect_ui_url": None,
        "output_dir": str(run),
        "started": "2026-11-22T08:00:00Z",
        "updated": "2026-11-22T08:00:00Z",
        "finished": None,
        "state": "running",
        "error": None,
        "unit": "frames",
        "total": args.rows,
        "arrived": args.rows,
        "done": 0,
        "failed": 0,
        "skipped": 0,
        "history": [],
        "stage": None,
    }
    (run / "run.json").write_text(json.dumps(record))
    store = RunStore([root])
    run_id = next(iter(store.scan(force=True)))
    ours, peer, plots = [], [], []
    written = 0
    while written < args.rows:
        with open(run / "live_rows.jsonl", "a") as f:
            f.write("".join(json.dumps(_row(k)) + "\n" for k in range(written, written + args.batch)))
        written += args.batch
        record["done"] = written
        record["history"].append([float(written), args.rows, written, 0])
        (run / "run.json").write_text(json.dumps(record))
        t = time.perf_counter()
        info = store.run(run_id)
        ours.append(time.perf_counter() - t)
        assert info["saxs"]["rows"] == written, info["saxs"]
        t = time.perf_counter()
        with open(run / "live_rows.jsonl") as f:
            rows = [json.loads(line) for line in f]
        peer.append(time.perf_counter() - t)
        assert len(rows) == written
        if written % (args.rows // 5) == 0:
            t = time.perf_counter()
            render(store, run_id, "saxs-params", {})
            plots.append((written, time.perf_counter() - t))
    n = len(ours)
    last = slice(n - n // 10, n)  # the last tenth: the longest files
    mean = lambda xs: 1000 * sum(xs) / len(xs)  # noqa: E731
    print(f"{n} refreshes, rows growing by {args.batch} to {args.rows}")
    print(f"monitor data endpoint (RunStore.run): mean {mean(ours):.2f} ms, last tenth {mean(ours[last]):.2f} ms")
    print(f"peer, re-parsing live_rows.jsonl:     mean {mean(peer):.2f} ms, last tenth {mean(peer[last]):.2f} ms")
    print(f"ratio peer / monitor, last tenth: {mean(peer[last]) / mean(ours[last]):.1f}x")
    for rows, sec in plots:
        print(f"integral-parameter plot at {rows} rows: {1000 * sec:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
