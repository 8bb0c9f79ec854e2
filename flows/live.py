"""Live processing: `photonflow watch` — frames are processed as they arrive, in one long flow run.

The watch config names the operation (``"operation"``: ``"saxs"``, the default, ``"sfx"`` or
``"laue"``: :func:`photonflow.operations.live_names`) and its parameters (SAXS: the top-level
``calibration``, ``npt`` …; SFX: the ``"sfx"`` section; Laue: the ``"laue"`` section). The flow run
holds the expensive state (integration matrices, peak finder, spot fit) for its whole life in worker
processes and processes micro-batches in-process (photonflow.realtime.LiveSession): a Prefect task per
micro-batch would cost 6–9 ms and a server write per batch, which at 200 Hz in batches of a few frames
is most of a core. What Prefect sees instead: the flow run, a progress artifact updated every few
seconds, one event ``photonflow.files.arrived`` per interval (deployments with event triggers react to
it), and at the end a table artifact of the operation's rows and a markdown summary.

The operation's table is built at the end from the ledger (every item done or failed, across restarts,
each once): SAXS ``live_integral_parameters.csv``, SFX ``frames.csv`` and the CrystFEL list
``hits.lst``, Laue ``images.csv``; then ``live_summary.json``.

The processing runs in worker processes (spawned): a script that calls `live_flow` directly must do so
under ``if __name__ == "__main__":``, as for any multiprocessing code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event

from photonflow.calibration import load_calibration
from photonflow.config import (
    ConfigError,
    load_json,
    path_fields,
    resolve_path_fields,
    validate_config,
    watch_section_errors,
)
from photonflow.flows._runrecord import RunRecord, record_failure
from photonflow.flows.runner import failures_markdown
from photonflow.io import FrameRef, atomic_write_text, write_table_csv
from photonflow.io.cxi import write_hit_list
from photonflow.operations import get as get_operation
from photonflow.plots import plot_integral_parameters
from photonflow.realtime.ledger import Ledger
from photonflow.realtime.session import LiveSession, ProcessorFactory
from photonflow.realtime.watcher import FileWatcher
from photonflow.saxs import SaxsReducer

FILES_ARRIVED = "photonflow.files.arrived"
#: The SAXS live table (live_integral_parameters.csv).
TABLE_COLUMNS = ["frame", "integration", "time", "I0", "I1", "I2", "correlation_length_nm"]
#: Fields of the "laue" section that are the scan's, not the processor's.
LAUE_MAP_FIELDS = ("positions", "scan_shape", "snake")
MAX_TABLE_ARTIFACT_ROWS = 500


def _check_sections(data, source: str) -> None:
    """A section for another operation than the one named is a mistake (usually a missing
    ``"operation"``): say so before the schema asks for a SAXS calibration. The Laue section may be
    left out (every parameter has a default)."""
    if not isinstance(data, dict):
        return
    errors = watch_section_errors(data)
    if errors:
        raise ConfigError(source, errors)
    operation = data.get("operation", "saxs")
    if operation == "laue":
        data.setdefault("laue", {})


def _field(data: dict, keys: tuple):
    """The dict holding ``keys[-1]`` (None where a level is absent)."""
    for key in keys[:-1]:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else None


def load_watch_config(path) -> dict:
    """The watch config, validated, with paths resolved against its directory."""
    path = Path(path)
    data = load_json(path)
    _check_sections(data, str(path))
    cfg = validate_config(data, "watch", source=str(path))
    base = path.resolve().parent

    def resolve(p):
        return str((Path(p) if Path(p).is_absolute() else base / p).resolve())

    cfg = resolve_path_fields(cfg, "watch", resolve)  # calibration, mask, geometry, checkpoints, positions
    cfg["output_dir"] = resolve(cfg["output_dir"])
    cfg["directories"] = [resolve(d) for d in cfg.get("directories", [])]
    if cfg.get("feeder") and cfg["feeder"].get("roots"):
        cfg["feeder"]["roots"] = [resolve(r) for r in cfg["feeder"]["roots"]]
    return cfg


def _calibration_options(cfg: dict) -> dict:
    """SAXS: options of a pyFAI .poni calibration (a SAXSDOG JSON carries its own)."""
    if not cfg["calibration"].lower().endswith(".poni"):
        return {}
    options = {"npt": int(cfg.get("npt") or 1000), "oversampling": int(cfg.get("oversampling") or 1)}
    if cfg.get("q_range"):
        options["q_range"] = tuple(cfg["q_range"])
    if cfg.get("shape"):
        options["shape"] = tuple(cfg["shape"])
    if cfg.get("mask"):
        options["mask_file"] = str(cfg["mask"])
    if cfg.get("polarization_factor") is not None:
        options["polarization_factor"] = float(cfg["polarization_factor"])
    return options


def _file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _options_hash(operation: str, options: dict) -> str:
    """Everything that changes results: the options (not where they go) and the contents of the
    files they name (a geometry edited in place re-processes)."""
    files = {}
    for keys in path_fields("watch"):
        if keys[0] == operation:  # the section's fields, which the options mirror
            holder = _field(options, keys[1:])
            value = None if holder is None else holder.get(keys[-1])
            if isinstance(value, str) and os.path.isfile(value):
                files[".".join(keys[1:])] = _file_digest(value)
    payload = {k: v for k, v in options.items() if k != "output_dir"}
    text = json.dumps({"options": payload, "files": files}, sort_keys=True, default=str)
    return f"{operation}-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_operation(operation: str, cfg: dict, out: Path, root: str | None) -> tuple[dict, str, list[Path]]:
    """The processor's options, the configuration hash and the directories of its per-batch files.
    The processor is built once here, so a bad parameter fails before any work (SAXS: and the
    integration matrices are built and cached for the workers)."""
    if operation == "saxs":
        cal_options = _calibration_options(cfg)
        cal = load_calibration(cfg["calibration"], **cal_options)
        SaxsReducer(cal, out, input_root=root)  # builds the matrices once: the workers load them from the cache
        options = {
            "calibration": cfg["calibration"],
            "calibration_options": cal_options,
            "output_dir": str(out),
            "input_root": root,
            "overwrite": True,
        }
        # the same hash as before the registry: a SAXS ledger of an earlier version is not redone
        return options, cal.digest() + "-" + json.dumps(cal_options, sort_keys=True, default=str), [out / "curves"]
    section = cfg[operation]
    if operation == "sfx":
        options = {
            "geometry": section["geometry"],
            "output_dir": str(out),
            "finder": section["finder"],
            "peakfinder8": dict(section.get("peakfinder8") or {}),
            "peaknet": dict(section.get("peaknet") or {}),
            "hits": {"min_peaks": int(section["min_peaks"]), "max_peaks": int(section["max_peaks"])},
            "mask": section.get("mask"),
            "backend": section["backend"],
            "device": section["device"],
            "save_hit_frames": bool(section["save_hit_frames"]),
        }
        dirs = [out / "peaks", out / "hits", out / "artifacts"]
    else:
        options = {k: v for k, v in section.items() if k not in LAUE_MAP_FIELDS}
        options["output_dir"] = str(out)
        dirs = []  # one spot table per image, named by the image: a retry replaces it
        if options.get("method") == "cnn":
            from photonflow.laue.cnn import load_cnn

            load_cnn(options.get("checkpoint"), device="cpu")  # a bad checkpoint fails here
    get_operation(operation).build_processor(options)
    return options, _options_hash(operation, options), dirs


def _sources(cfg: dict, directories: list[str]):
    sources = []
    if directories:
        sources.append(
            FileWatcher(
                directories,
                patterns=tuple(cfg["patterns"]),
                recursive=cfg["recursive"],
                settle_s=cfg["settle_s"],
                use_inotify=cfg["inotify"],
            )
        )
    feeder_cfg = cfg.get("feeder")
    if feeder_cfg:
        from photonflow.realtime.feeder import FeederListener

        secret = os.environ.get(feeder_cfg["secret_env"]) if feeder_cfg.get("secret_env") else None
        if feeder_cfg.get("secret_env") and not secret:
            raise ValueError(f"feeder.secret_env: environment variable {feeder_cfg['secret_env']} is not set")
        roots = feeder_cfg.get("roots") or directories
        if not roots:
            raise ValueError("feeder.roots: give the data roots (or directories to watch)")
        sources.append(
            FeederListener(
                feeder_cfg["address"],
                socket_type=feeder_cfg.get("socket_type", "sub"),
                bind=feeder_cfg.get("bind", False),
                secret=secret,
                roots=roots,
            )
        )
    return sources


# --------------------------------------------------------------------------- the run's table


def ledger_rows(ledger: Ledger, columns) -> list[dict]:
    """The table rows of every item done or failed, from the ledger (each item once, whichever
    session did it), in arrival order, each with ``index`` (the item's place in that order)."""
    rows = []
    for index, (_item, item_rows) in enumerate(ledger.results(("done", "failed"))):
        for row in item_rows:
            rows.append({"index": index, **{c: row.get(c) for c in columns if c != "index"}})
    return rows


def _laue_places(section: dict, rows: list[dict], failures: list[str]) -> None:
    """Map places of the Laue rows (in arrival order): from ``positions`` or ``scan_shape``, else one
    row of images."""
    from photonflow.laue.scan import read_positions_csv, scan_positions

    refs = [FrameRef(r["path"], None if r["event"] < 0 else r["event"]) for r in rows]
    try:
        positions = read_positions_csv(section["positions"]) if section.get("positions") else None
        places = scan_positions(refs, positions, section.get("scan_shape"), bool(section.get("snake")))
    except (OSError, ValueError) as exc:
        failures.append(f"map places: {exc}; the images are placed in one row, in arrival order")
        places = scan_positions(refs)
    for row, place in zip(rows, places):
        row.update(place)


def write_live_table(op, cfg: dict, out: Path, ledger: Ledger, failures: list[str]) -> dict:
    """The operation's table (and SFX's hit list) from the ledger, its Prefect table artifact; returns
    the summary's extra fields."""
    if op.name == "saxs":
        rows = sorted(ledger_rows(ledger, TABLE_COLUMNS), key=lambda r: (r["integration"], r["time"], r["frame"]))
        columns, table = TABLE_COLUMNS, out / "live_integral_parameters.csv"
        shown = rows[-MAX_TABLE_ARTIFACT_ROWS:]
        extra = {"table": str(table) if rows else None}
        if rows:
            extra["plot"] = plot_integral_parameters(
                rows, out / "live_integral_parameters.png", title="Live integral parameters"
            )
    else:
        columns, table = list(op.table_columns), out / f"{op.table}.csv"
        rows = ledger_rows(ledger, columns)
        shown = rows[:MAX_TABLE_ARTIFACT_ROWS]
        extra = {"table": str(table) if rows else None}
        if op.name == "sfx":
            hits = [r for r in rows if r["hit"]]
            write_hit_list(out / "hits.lst", [(r["path"], None if r["event"] < 0 else r["event"]) for r in hits])
            extra.update(
                hits=len(hits),
                hit_rate_percent=100.0 * len(hits) / len(rows) if rows else 0.0,
                hit_list=str(out / "hits.lst"),
            )
        else:
            _laue_places(cfg["laue"], rows, failures)
            ok = [r for r in rows if r["status"] == "ok"]
            sims = [r["mean_sim"] for r in ok if r["mean_sim"] is not None and math.isfinite(r["mean_sim"])]
            extra.update(
                spots=sum(r["n_spots"] for r in ok),
                good_spots=sum(r["n_good"] for r in ok),
                mean_sim=sum(sims) / len(sims) if sims else None,
            )
    if rows:
        write_table_csv(table, {c: [r[c] for r in rows] for c in columns})
        create_table_artifact(
            table=[{c: r[c] for c in columns} for r in shown],
            key=f"{op.name}-live-{table.stem.replace('_', '-')}",
            description=f"{len(shown)} of {len(rows)} rows; all in {table}",
        )
    extra["rows"] = len(rows)
    return extra


# --------------------------------------------------------------------------- the flow


@flow(name="live", log_prints=True, on_failure=[record_failure], on_crashed=[record_failure])
def live_flow(
    config: str,
    directories: list[str] | None = None,
    duration_s: float | None = None,
    idle_timeout_s: float | None = None,
    max_frames: int | None = None,
) -> dict:
    """Process frames as they arrive (watched directories and/or SAXSDOG's ZMQ feeder) with the
    operation the watch config names (saxs, sfx or laue).

    config: a watch config (config/schemas/watch.schema.json); directories: added to the config's;
    duration_s, idle_timeout_s, max_frames: end the watch by itself (default: the config's, else
    run until interrupted).
    """
    logger = get_run_logger()
    cfg = load_watch_config(config)
    op = get_operation(cfg["operation"])
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
    roots = dirs or list((cfg.get("feeder") or {}).get("roots") or [])
    root = os.path.commonpath(roots) if roots else None  # SAXS outputs mirror the tree below it
    options, cfg_hash, batch_dirs = prepare_operation(op.name, cfg, out, root)
    ledger = Ledger(out / "ledger.sqlite")
    sources = _sources(cfg, dirs)
    if not sources:
        raise ValueError(
            f"{config}: nothing to watch: give directories (config 'directories' or the command line) or a 'feeder'"
        )
    record = RunRecord(out, f"{op.name}-live", unit=op.unit, total=None)
    scan_shape = (cfg.get("laue") or {}).get("scan_shape") if op.name == "laue" else None
    if scan_shape:
        record.update(map_shape=list(scan_shape), force=True)
    progress_id = create_progress_artifact(0.0, description=f"live {op.name}: {op.unit} done / {op.unit} arrived")
    state = {"last_progress": 0.0, "last_event": time.time(), "pending_event": []}
    interval = float(cfg["event_interval_s"])
    payload_extra = {"calibration": cfg["calibration"]} if op.name == "saxs" else {}

    def announce(force: bool = False) -> None:
        if state["pending_event"] and (force or time.time() - state["last_event"] >= interval):
            refs = state["pending_event"]
            emit_event(
                event=FILES_ARRIVED,
                resource={
                    "prefect.resource.id": f"photonflow.watch.{out}",
                    "prefect.resource.name": out.name,
                    "photonflow.operation": op.name,
                },
                payload={
                    "paths": sorted({r.path for r in refs}),
                    "frames": [str(r) for r in refs],
                    "count": len(refs),
                    "output_dir": str(out),
                    "operation": op.name,
                    **payload_extra,
                },
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
        record.progress(
            done=stats.done, failed=stats.failed, arrived=stats.arrived, rows=report.get("rows", []), totals=True
        )
        now = time.time()
        if now - state["last_progress"] >= 2.0:
            state["last_progress"] = now
            finished = stats.done + stats.failed
            update_progress_artifact(progress_id, 100.0 * finished / max(stats.arrived, 1))
            logger.info(
                "%d arrived, %d done, %d failed (%.1f %s/s)",
                stats.arrived,
                stats.done,
                stats.failed,
                stats.done / max(now - stats.started, 1e-9),
                op.unit,
            )
        for key, reason in report["failed"].items():
            logger.warning("failed: %s: %s", key, reason)

    session = LiveSession(
        ProcessorFactory(op.name, options),
        ledger,
        sources,
        cfg_hash,
        max_frames=cfg["batch_max_frames"],
        max_wait_s=cfg["batch_max_wait_ms"] / 1000.0,
        workers=cfg["workers"],
        on_batch=on_batch,
        on_arrivals=on_arrivals,
        keep_rows=False,
        batch_dirs=batch_dirs,
    )
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: session.stop())
    logger.info(
        "live %s: watching %s%s; outputs and ledger in %s",
        op.name,
        ", ".join(dirs) or "no directory",
        " and the ZMQ feeder" if cfg.get("feeder") else "",
        out,
    )
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
    failures = list(stats.failures[:1000])
    summary.update(
        {
            "per_s": summary["frames_per_s"],
            "operation": op.name,
            "unit": op.unit,
            "output_dir": str(out),
            "ledger": str(out / "ledger.sqlite"),
            "stale_batch_files_removed": len(session.stale_removed),
        }
    )
    update_progress_artifact(progress_id, 100.0)
    summary.update(write_live_table(op, cfg, out, ledger, failures))
    summary.update({"failures": failures, "ledger_counts": ledger.counts()})
    counts = summary["ledger_counts"]
    create_markdown_artifact(
        "\n".join(
            [
                f"# Live {op.title}: summary",
                "",
                f"| arrived | done | failed | time (s) | {op.unit}/s | in the ledger: done | failed |",
                "|---|---|---|---|---|---|---|",
                f"| {stats.arrived} | {stats.done} | {stats.failed} | {summary['elapsed_s']:.1f} | "
                f"{summary['frames_per_s']:.1f} | {counts['done']} | {counts['failed']} |",
                "",
                f"Outputs and ledger: `{out}`"
                + (f"; table `{Path(summary['table']).name}`" if summary["table"] else ""),
            ]
            + failures_markdown(failures)
        ),
        key=f"{op.name}-live-summary",
    )
    atomic_write_text(out / "live_summary.json", json.dumps(summary, indent=2, default=str))
    record.progress(done=stats.done, failed=stats.failed, arrived=stats.arrived, totals=True)
    record.finish()
    ledger.close()
    logger.info(
        "live %s: %d arrived, %d done, %d failed in %.1f s",
        op.name,
        stats.arrived,
        stats.done,
        stats.failed,
        summary["elapsed_s"],
    )
    return summary


#: The earlier name, for older importers: the same flow.
saxs_live_flow = live_flow
