"""Live reduction: `photonflow watch` — frames are reduced as they arrive, in one long flow run.

The flow run holds the expensive state (the integration matrices) for its whole life and reduces
micro-batches in-process (photonflow.realtime.LiveSession): a Prefect task per micro-batch would cost
6–9 ms and a server write per batch, which at 200 Hz in batches of a few frames is most of a core.
What Prefect sees instead: the flow run, a progress artifact updated every few seconds, one event
``photonflow.files.arrived`` per interval (deployments with event triggers react to it), and at the
end a table artifact of integral parameters and a markdown summary.

The reduction runs in worker processes (spawned): a script that calls `saxs_live_flow` directly must
do so under ``if __name__ == "__main__":``, as for any multiprocessing code.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.events import emit_event

from photonflow.calibration import load_calibration
from photonflow.config import load_json_config
from photonflow.io import atomic_write_text, write_table_csv
from photonflow.plots import plot_integral_parameters
from photonflow.realtime.ledger import Ledger
from photonflow.realtime.session import LiveSession, ReducerFactory
from photonflow.realtime.watcher import FileWatcher
from photonflow.saxs import SaxsReducer

from flows._runrecord import RunRecord, record_failure

FILES_ARRIVED = "photonflow.files.arrived"
TABLE_COLUMNS = ["frame", "integration", "time", "I0", "I1", "I2", "correlation_length_nm"]


def load_watch_config(path) -> dict:
    """The watch config, validated, with paths resolved against its directory."""
    path = Path(path)
    cfg = load_json_config(path, "watch")
    base = path.resolve().parent

    def resolve(p):
        return str((Path(p) if Path(p).is_absolute() else base / p).resolve())

    cfg["calibration"] = resolve(cfg["calibration"])
    cfg["output_dir"] = resolve(cfg["output_dir"])
    cfg["directories"] = [resolve(d) for d in cfg.get("directories", [])]
    if cfg.get("feeder") and cfg["feeder"].get("roots"):
        cfg["feeder"]["roots"] = [resolve(r) for r in cfg["feeder"]["roots"]]
    return cfg


def _calibration_options(cfg: dict) -> dict:
    if not cfg["calibration"].lower().endswith(".poni"):
        return {}
    options = {"npt": int(cfg.get("npt") or 1000), "oversampling": int(cfg.get("oversampling") or 1)}
    if cfg.get("q_range"):
        options["q_range"] = tuple(cfg["q_range"])
    if cfg.get("shape"):
        options["shape"] = tuple(cfg["shape"])
    return options


def config_hash(cfg: dict, calibration) -> str:
    """Everything that changes results: a different hash re-processes items already done."""
    return calibration.digest() + "-" + json.dumps(_calibration_options(cfg), sort_keys=True, default=str)


def _sources(cfg: dict, directories: list[str]):
    sources = []
    if directories:
        sources.append(FileWatcher(directories, patterns=tuple(cfg["patterns"]), recursive=cfg["recursive"],
                                   settle_s=cfg["settle_s"], use_inotify=cfg["inotify"]))
    feeder_cfg = cfg.get("feeder")
    if feeder_cfg:
        from photonflow.realtime.feeder import FeederListener

        secret = os.environ.get(feeder_cfg["secret_env"]) if feeder_cfg.get("secret_env") else None
        if feeder_cfg.get("secret_env") and not secret:
            raise ValueError(f"feeder.secret_env: environment variable {feeder_cfg['secret_env']} is not set")
        roots = feeder_cfg.get("roots") or directories
        if not roots:
            raise ValueError("feeder.roots: give the data roots (or directories to watch)")
        sources.append(FeederListener(feeder_cfg["address"], socket_type=feeder_cfg.get("socket_type", "sub"),
                                      bind=feeder_cfg.get("bind", False), secret=secret, roots=roots))
    return sources


@flow(name="saxs-live", log_prints=True, on_failure=[record_failure], on_crashed=[record_failure])
def saxs_live_flow(
    config: str,
    directories: list[str] | None = None,
    duration_s: float | None = None,
    idle_timeout_s: float | None = None,
    max_frames: int | None = None,
) -> dict:
    """Reduce SAXS frames as they arrive (watched directories and/or SAXSDOG's ZMQ feeder).

    config: a watch config (config/schemas/watch.schema.json); directories: added to the config's;
    duration_s, idle_timeout_s, max_frames: end the watch by itself (default: the config's, else
    run until interrupted).
    """
    logger = get_run_logger()
    cfg = load_watch_config(config)
    dirs = list(cfg["directories"]) + [str(Path(d).resolve()) for d in (directories or [])]
    stop = cfg.get("stop") or {}
    duration_s = duration_s if duration_s is not None else stop.get("duration_s")
    idle_timeout_s = idle_timeout_s if idle_timeout_s is not None else stop.get("idle_timeout_s")
    max_frames = max_frames if max_frames is not None else stop.get("max_frames")
    for d in dirs:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"{d}: directory to watch not found")
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    cal = load_calibration(cfg["calibration"], **_calibration_options(cfg))
    roots = dirs or list((cfg.get("feeder") or {}).get("roots") or [])
    root = os.path.commonpath(roots) if roots else None  # outputs mirror the tree below it
    SaxsReducer(cal, out, input_root=root)  # builds the matrices once: the workers load them from the cache
    reducer = ReducerFactory(SaxsReducer.from_file, cfg["calibration"], str(out), root, **_calibration_options(cfg))
    ledger = Ledger(out / "ledger.sqlite")
    sources = _sources(cfg, dirs)
    if not sources:
        raise ValueError(f"{config}: nothing to watch: give directories (config 'directories' or the command "
                         "line) or a 'feeder'")
    record = RunRecord(out, "saxs-live", unit="frames", total=None)
    progress_id = create_progress_artifact(0.0, description="live SAXS: frames done / frames arrived")
    state = {"last_progress": 0.0, "last_event": time.time(), "pending_event": []}
    interval = float(cfg["event_interval_s"])

    def announce(force: bool = False) -> None:
        if state["pending_event"] and (force or time.time() - state["last_event"] >= interval):
            refs = state["pending_event"]
            emit_event(
                event=FILES_ARRIVED,
                resource={"prefect.resource.id": f"photonflow.watch.{out}", "prefect.resource.name": out.name},
                payload={"paths": sorted({r.path for r in refs}), "frames": [str(r) for r in refs],
                         "count": len(refs), "output_dir": str(out), "calibration": cfg["calibration"]},
            )
            state["pending_event"] = []
            state["last_event"] = time.time()

    def on_arrivals(refs) -> None:
        state["pending_event"].extend(refs)
        record.update(arrived=session.stats.arrived)
        if interval == 0:
            announce(force=True)

    def on_batch(batch, report, stats) -> None:
        announce()
        record.progress(done=stats.done, failed=stats.failed, arrived=stats.arrived, rows=report.get("rows", []),
                        totals=True)
        now = time.time()
        if now - state["last_progress"] >= 2.0:
            state["last_progress"] = now
            finished = stats.done + stats.failed
            update_progress_artifact(progress_id, 100.0 * finished / max(stats.arrived, 1))
            logger.info("%d arrived, %d done, %d failed (%.1f frames/s)", stats.arrived, stats.done, stats.failed,
                        stats.done / max(now - stats.started, 1e-9))
        for key, reason in report["failed"].items():
            logger.warning("failed: %s: %s", key, reason)

    session = LiveSession(reducer, ledger, sources, config_hash(cfg, cal), max_frames=cfg["batch_max_frames"],
                          max_wait_s=cfg["batch_max_wait_ms"] / 1000.0, workers=cfg["workers"],
                          on_batch=on_batch, on_arrivals=on_arrivals)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: session.stop())
    logger.info("watching %s%s; outputs and ledger in %s", ", ".join(dirs) or "no directory",
                " and the ZMQ feeder" if cfg.get("feeder") else "", out)
    for source in sources:
        source.start()
    try:
        stats = session.run(duration_s=duration_s, idle_timeout_s=idle_timeout_s, max_items=max_frames)
    finally:
        for source in sources:
            source.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        announce(force=True)
    summary = stats.as_dict()
    summary.update({"output_dir": str(out), "ledger": str(out / "ledger.sqlite"), "failures": stats.failures[:1000],
                    "ledger_counts": ledger.counts()})
    update_progress_artifact(progress_id, 100.0)
    if stats.rows:
        rows = sorted(stats.rows, key=lambda r: (r["integration"], r["time"], r["frame"]))
        write_table_csv(out / "live_integral_parameters.csv", {c: [r[c] for r in rows] for c in TABLE_COLUMNS})
        summary["plot"] = plot_integral_parameters(rows, out / "live_integral_parameters.png", title="Live integral parameters")
        create_table_artifact(table=[{c: r[c] for c in TABLE_COLUMNS} for r in rows[-500:]],
                              key="saxs-live-integral-parameters",
                              description=f"last {min(len(rows), 500)} of {len(rows)} rows")
    create_markdown_artifact(
        "\n".join([
            "# Live SAXS summary", "",
            "| arrived | done | failed | time (s) | frames/s |", "|---|---|---|---|---|",
            f"| {stats.arrived} | {stats.done} | {stats.failed} | {summary['elapsed_s']:.1f} | {summary['frames_per_s']:.1f} |",
            "", f"Outputs and ledger: `{out}`",
        ] + ([ "", "## Failures", ""] + [f"- {f}" for f in stats.failures[:100]] if stats.failures else [])),
        key="saxs-live-summary",
    )
    atomic_write_text(out / "live_summary.json", json.dumps(summary, indent=2, default=str))
    record.progress(done=stats.done, failed=stats.failed, arrived=stats.arrived, totals=True)
    record.finish()
    logger.info("live SAXS: %d arrived, %d done, %d failed in %.1f s", stats.arrived, stats.done, stats.failed,
                summary["elapsed_s"])
    return summary
