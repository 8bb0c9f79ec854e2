"""Runs under output roots, read for the live monitor (the run outputs themselves, no second copy).

A run is a directory holding ``run.json`` (written by every flow: kind, state, counts, history,
Prefect link; see flows/_runrecord.py) or, for a run from before ``run.json``, its
``summary.json`` (``live_summary.json``/``ledger.sqlite`` for a watch, ``training_summary.json``
for a classifier training). :class:`RunStore` finds them, reads each into a JSON-able dict (the
progress, and per kind what the run is finding), and resolves the files the page may fetch.

Polling is cheap: a file is parsed again only when its (mtime, size, inode) changed, the
append-only ``live_rows.jsonl`` is read from where the last read stopped, and the roots are walked
at most every ``rescan_s`` seconds without descending into the bulky output folders (``chi/``,
``hits/``, ``spots/`` …).

Safety: every path read or served goes through :meth:`RunStore.resolve_file`, which takes a path
relative to a run directory and refuses anything (``..``, an absolute path, a symlink) whose real
path is not inside that run's directory under one of the output roots.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from photonflow.operations import OPERATIONS, kind_of

__all__ = ["MonitorError", "RunStore", "KINDS", "PANELS", "RUN_FORMAT"]

RUN_FORMAT = "photonflow-run/1"
#: The run.json kinds of every operation in the registry (photonflow.operations).
KINDS = tuple(kind for op in OPERATIONS.values() for kind in op.kinds)
MARKERS = ("run.json", "summary.json", "live_summary.json", "training_summary.json")
#: Output folders that hold many files and never a run of their own: not walked.
SKIP_DIRS = frozenset(
    {
        "chi",
        "curves",
        "spots",
        "hits",
        "peaks",
        "intermediate",
        "volume_chunks",
        "demo-data",
        "cache",
        "frames",
        "pass1",
        "pass2",
        "__pycache__",
        "node_modules",
    }
)
#: A running run whose record has not changed for this long gets a warning (it may have been killed):
#: six of the writer's 10 s heartbeats (flows/_runrecord.py) missed.
STALE_S = 60.0
#: "rate (recent)": the items done in the last this many seconds (up to now while a run runs).
RATE_WINDOW_S = 10.0
#: Incremental ``live_rows.jsonl`` readers kept (least recently used dropped; it is re-read from the top).
MAX_READERS = 32
#: A file of a run's directory whose modification time is older than the run's start by more than
#: this is a leftover of an earlier run in the same directory and is not shown (coarse file times).
LEFTOVER_SLACK_S = 2.0


class MonitorError(Exception):
    """Something the page should say in words: unknown run (404), forbidden path (403), … ."""

    def __init__(self, message: str, status: int = 404):
        super().__init__(message)
        self.message = message
        self.status = status


def _inside(path: str, directory: str) -> bool:
    directory = directory.rstrip(os.sep) or os.sep
    return path == directory or path.startswith(directory + os.sep) or directory == os.sep


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _int(value: Any, default: int = 0) -> int:
    """A count from a file written by someone else: a finite number, else ``default``."""
    v = _finite(value) if not isinstance(value, str) else None
    return int(v) if v is not None else default


def _str(value: Any) -> str | None:
    """Free text from a record (None stays None; numbers become text; anything else is dropped)."""
    if value is None or isinstance(value, str):
        return value
    return str(value) if isinstance(value, (int, float)) else None


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, type(None))) else repr(value)


def _recent_rate(history: list, t_end: float) -> float | None:
    """Items done per second over the ``RATE_WINDOW_S`` seconds ending at ``t_end`` (s since the
    start; the counts change stepwise at the history's points), or since the start when younger."""
    start = t_end - RATE_WINDOW_S
    before = [p for p in history if p[0] <= start]
    p0, t0 = (before[-1], start) if before else (history[0], history[0][0])
    done_end = max((p for p in history if p[0] <= t_end), key=lambda p: p[0], default=history[-1])[2]
    return (done_end - p0[2]) / (t_end - t0) if t_end > t0 else None


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _read_csv_rows(path: str) -> list[dict]:
    """A table CSV (photonflow.io.write_table_csv) as row dicts of Python values."""
    from photonflow.io import read_table_csv

    columns = read_table_csv(path)
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*(columns[n].tolist() for n in names))]


class _FileCache:
    """Parsed files, re-read only when their (mtime, size, inode) changed; a parse error is cached
    too (and raised again) until the file changes."""

    def __init__(self):
        self._entries: dict[tuple[str, str], tuple[tuple, Any, BaseException | None]] = {}
        self._lock = threading.Lock()

    def get(self, path: str, parse: Callable[[str], Any]) -> Any:
        st = os.stat(path)  # FileNotFoundError goes to the caller
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        ck = (path, getattr(parse, "__qualname__", repr(parse)))
        with self._lock:
            hit = self._entries.get(ck)
        if hit is not None and hit[0] == key:
            if hit[2] is not None:
                raise hit[2]
            return hit[1]
        try:
            value, error = parse(path), None
        except Exception as exc:  # noqa: BLE001 - cached and re-raised to each caller
            value, error = None, exc
        with self._lock:
            if len(self._entries) > 4096:
                self._entries.clear()
            self._entries[ck] = (key, value, error)
        if error is not None:
            raise error
        return value


class _JsonLines:
    """``live_rows.jsonl`` read incrementally: only the bytes appended since the last read; a
    partial last line waits for its newline; a truncated or replaced file (a new run) is re-read."""

    def __init__(self, path: str):
        self.path = path
        self.rows: list[dict] = []
        self.bad_lines = 0
        self._offset = 0
        self._ino = None
        self._epoch: Any = None
        self._lock = threading.Lock()

    def read(self, epoch: Any = None) -> list[dict]:
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self.rows, self._offset, self._ino, self.bad_lines = [], 0, None, 0
                return self.rows
            if st.st_ino != self._ino or st.st_size < self._offset or epoch != self._epoch:
                self.rows, self._offset, self.bad_lines = [], 0, 0
                self._ino, self._epoch = st.st_ino, epoch
            if st.st_size > self._offset:
                with open(self.path, "rb") as fh:
                    fh.seek(self._offset)
                    chunk = fh.read(st.st_size - self._offset)
                end = chunk.rfind(b"\n") + 1
                self._offset += end
                new = []
                for line in chunk[:end].splitlines():
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError:
                        self.bad_lines += 1
                        continue
                    if isinstance(row, dict):
                        new.append(row)
                    else:
                        self.bad_lines += 1
                self.rows = self.rows + new  # a new list: readers holding the old one are unaffected
            return self.rows


class RunStore:
    """The runs under ``roots`` (directories), read on demand and cached.

    ``runs()``: one short dict per run (the run list); ``run(run_id)``: everything the page shows
    for one run; ``resolve_file(run_id, relpath)``: a file of a run, safely; ``rows(run_id)``,
    ``curve_paths(run_id)``: what the plots read. Unknown ids raise :class:`MonitorError` (404).
    """

    def __init__(self, roots: Iterable[str | os.PathLike], max_depth: int = 4, rescan_s: float = 2.0):
        self.roots: list[str] = []
        for root in roots:
            real = os.path.realpath(os.path.expanduser(os.fspath(root)))
            if not os.path.isdir(real):
                raise MonitorError(f"{root}: output root is not a directory", status=400)
            if real not in self.roots:
                self.roots.append(real)
        if not self.roots:
            raise MonitorError("give at least one output root", status=400)
        self.max_depth = int(max_depth)
        self.rescan_s = float(rescan_s)
        self._dirs: dict[str, tuple[str, str]] = {}  # id -> (run dir realpath, root)
        self._scanned_at = -math.inf
        self._lock = threading.Lock()
        self._files = _FileCache()
        self._lines: OrderedDict[str, _JsonLines] = OrderedDict()  # LRU, at most MAX_READERS
        self._lines_lock = threading.Lock()
        self._globs: dict[str, Any] = {}
        self._derived: dict[tuple, Any] = {}
        self._fold_lock = threading.Lock()

    # ------------------------------------------------------------------ discovery
    def _run_id(self, real: str, root: str) -> str:
        rel = os.path.relpath(real, root)
        label = os.path.basename(root) if rel == "." else rel
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.")[-40:] or "run"
        return f"{slug}-{hashlib.sha1(real.encode()).hexdigest()[:8]}"

    def scan(self, force: bool = False) -> dict[str, tuple[str, str]]:
        """Walk the roots (at most every ``rescan_s`` s unless forced); returns id -> (dir, root)."""
        with self._lock:
            if not force and time.monotonic() - self._scanned_at < self.rescan_s:
                return self._dirs
            found: dict[str, tuple[str, str]] = {}
            for root in self.roots:
                base_depth = root.rstrip(os.sep).count(os.sep)
                for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                    names = set(filenames)
                    if any(m in names for m in MARKERS) or "ledger.sqlite" in names:
                        real = os.path.realpath(dirpath)
                        if _inside(real, root):
                            found[self._run_id(real, root)] = (real, root)
                    depth = dirpath.rstrip(os.sep).count(os.sep) - base_depth
                    dirnames[:] = sorted(
                        d
                        for d in dirnames
                        if depth < self.max_depth
                        and d not in SKIP_DIRS
                        and not d.startswith(".")
                        and not os.path.islink(os.path.join(dirpath, d))
                    )
            self._dirs = found
            self._scanned_at = time.monotonic()
            return found

    def run_dir(self, run_id: str) -> tuple[str, str]:
        """(run directory, its root) of a run id; rescans once before saying it is unknown."""
        found = self.scan()
        if run_id not in found:
            found = self.scan(force=True)
        if run_id not in found:
            raise MonitorError(
                f"no run {run_id!r} under the output roots ({', '.join(self.roots)}): it may have "
                "been moved or deleted; pick a run from the list",
                status=404,
            )
        run_dir, root = found[run_id]
        if not os.path.isdir(run_dir):
            raise MonitorError(f"run {run_id!r}: its directory {run_dir} is gone", status=404)
        return run_dir, root

    # ------------------------------------------------------------------ files, safely
    def resolve_file(self, run_id: str, relpath: str, must_exist: bool = True) -> str:
        """The real path of ``relpath`` inside run ``run_id``'s directory; MonitorError 403 when it
        would leave that directory or the output roots (``..``, absolute, a symlink pointing out),
        404 when it does not exist or is not a regular file."""
        run_dir, root = self.run_dir(run_id)
        return self._resolve(run_dir, root, relpath, must_exist)

    def _resolve(self, run_dir: str, root: str, relpath: str, must_exist: bool = True) -> str:
        rel = str(relpath or "")
        if (
            not rel
            or "\x00" in rel
            or os.path.isabs(rel)
            or rel.startswith(("/", "\\"))
            or re.match(r"^[A-Za-z]:", rel)
        ):
            raise MonitorError(f"{rel!r}: only paths relative to the run directory are served", status=403)
        if any(part == ".." for part in re.split(r"[\\/]+", rel)):
            raise MonitorError(f"{rel!r}: '..' is not allowed", status=403)
        real = os.path.realpath(os.path.join(run_dir, rel))
        if not (_inside(real, run_dir) and _inside(real, root)):
            raise MonitorError(f"{rel!r}: resolves outside the run's output directory; not served", status=403)
        if must_exist and not os.path.isfile(real):
            raise MonitorError(f"{rel!r}: no such file in the run's output directory", status=404)
        return real

    def _safe(self, run_dir: str, root: str, relpath: str) -> str | None:
        try:
            return self._resolve(run_dir, root, relpath)
        except MonitorError:
            return None

    def _json(self, path: str) -> tuple[Any, str | None]:
        """(parsed, None), (None, None) when absent, or (None, message) when unreadable."""
        try:
            return self._files.get(path, _read_json), None
        except FileNotFoundError:
            return None, None
        except (ValueError, UnicodeDecodeError) as exc:
            return None, (
                f"{os.path.basename(path)} is unreadable (half-written or corrupt JSON: {exc}); "
                "it is read again when it changes"
            )
        except OSError as exc:
            return None, f"{os.path.basename(path)} cannot be read: {exc.strerror or exc}"

    def _mtime(self, path: str) -> int:
        try:
            return os.stat(path).st_mtime_ns
        except OSError:
            return 0

    def _since(self, run_dir: str) -> float | None:
        """The start (epoch s) of the run now recorded in ``run_dir``, or None without a record:
        files older than that belong to an earlier run in the same directory."""
        record = self._record(run_dir)
        return _parse_time(record.get("started")) if record else None

    def _fresh(self, path: str, since: float | None) -> bool:
        """``path`` exists and (when ``since`` is known) was written by the current run."""
        mtime = self._mtime(path)
        return mtime > 0 and (since is None or mtime / 1e9 >= since - LEFTOVER_SLACK_S)

    # ------------------------------------------------------------------ reading a run
    def runs(self) -> list[dict]:
        """The run list: id, name, kind, state, counts, updated time; newest first."""
        keys = (
            "id",
            "name",
            "root",
            "kind",
            "state",
            "unit",
            "total",
            "arrived",
            "done",
            "failed",
            "skipped",
            "updated",
            "updated_ts",
            "stage",
            "error",
            "message",
        )
        out = []
        for run_id, (run_dir, root) in list(self.scan().items()):
            try:
                info = self._base(run_id)
            except MonitorError:
                continue
            except Exception as exc:  # noqa: BLE001 - one odd run must not take the whole list down
                info = {
                    "id": run_id,
                    "name": self._name(run_dir, root),
                    "root": root,
                    "state": "unknown",
                    "unit": "frames",
                    "arrived": 0,
                    "done": 0,
                    "failed": 0,
                    "skipped": 0,
                    "message": f"this run cannot be read: {type(exc).__name__}: {exc}",
                }
            out.append({k: info.get(k) for k in keys})
        out.sort(key=lambda r: (r["state"] != "running", -(r["updated_ts"] or 0.0), str(r["name"])))
        return out

    @staticmethod
    def _name(run_dir: str, root: str) -> str:
        rel = os.path.relpath(run_dir, root)
        return os.path.basename(root) if rel == "." else os.path.join(os.path.basename(root), rel)

    def run(self, run_id: str) -> dict:
        """Everything the page shows for one run (JSON-able)."""
        info = self._base(run_id)
        run_dir, root = self.run_dir(run_id)
        kind = info["kind"]
        panel = info["panel"] = _panel(kind)
        try:
            if panel in PANELS:  # the operation's panel, as the registry names it
                info[panel] = getattr(self, f"_{panel}")(run_id, run_dir, root, info)
        except MonitorError:
            raise
        except Exception as exc:  # noqa: BLE001 - files vanishing or half-written under a running flow
            info["notes"].append(f"some outputs of this run cannot be read: {type(exc).__name__}: {exc}")
        info["files"] = self._files_of(run_id, run_dir, root, kind)
        info["plots"] = self._plots_of(info)
        info["signature"] = self._signature(run_dir, info)
        return info

    def _base(self, run_id: str) -> dict:
        run_dir, root = self.run_dir(run_id)
        name = self._name(run_dir, root)
        info: dict[str, Any] = {
            "id": run_id,
            "name": name,
            "root": root,
            "dir": run_dir,
            "kind": None,
            "state": "unknown",
            "error": None,
            "message": None,
            "notes": [],
            "unit": "frames",
            "total": None,
            "arrived": 0,
            "done": 0,
            "failed": 0,
            "skipped": 0,
            "history": [],
            "started": None,
            "updated": None,
            "finished": None,
            "updated_ts": None,
            "elapsed_s": None,
            "rate_per_s": None,
            "rate_recent_per_s": None,
            "stage": None,
            "chunks": None,
            "prefect": {"flow_name": None, "flow_run_id": None, "flow_run_name": None, "url": None},
            "has_record": False,
        }
        record, error = self._json(os.path.join(run_dir, "run.json"))
        if error:
            info["message"] = error
        if isinstance(record, dict) and record.get("format") == RUN_FORMAT:
            self._from_record(info, record)
        elif record is not None:
            info["message"] = (
                f"run.json is not a photonflow run record (format {record.get('format')!r}, expected {RUN_FORMAT!r})"
                if isinstance(record, dict)
                else "run.json is not a photonflow run record (not a JSON object)"
            )
        if not info["has_record"]:
            self._from_outputs(info, run_dir)
        if info["kind"] is not None and info["kind"] not in KINDS:
            info["notes"].append(f"unknown kind of run {info['kind']!r}: only its progress is shown")
        return info

    def _from_record(self, info: dict, rec: dict) -> None:
        """The page's fields from a run record, every value checked (a record is someone's file)."""
        info["has_record"] = True
        kind = rec.get("kind")
        info["kind"] = kind if isinstance(kind, str) else None
        if kind is not None and not isinstance(kind, str):
            info["notes"].append(f"run.json names no kind of run ({type(kind).__name__}, not text)")
        state = rec.get("state")
        info["state"] = state if state in ("running", "completed", "failed") else "unknown"
        info["error"] = _str(rec.get("error"))
        info["unit"] = _str(rec.get("unit")) or "frames"
        for key in ("total", "arrived", "done", "failed", "skipped"):
            v = rec.get(key)
            info[key] = _int(v, None) if key == "total" else _int(v)
        history = rec.get("history") if isinstance(rec.get("history"), list) else []
        info["history"] = [
            [float(p[0]), int(p[1]), int(p[2]), int(p[3])]
            for p in history
            if isinstance(p, list) and len(p) >= 4 and all(_finite(x) is not None for x in p[:4])
        ]
        info["started"], info["updated"], info["finished"] = (
            _str(rec.get(k)) for k in ("started", "updated", "finished")
        )
        info["stage"] = _str(rec.get("stage"))
        chunks = rec.get("chunks")
        info["chunks"] = (
            {name: [str(x) for x in seq] for name, seq in chunks.items() if isinstance(seq, list)}
            if isinstance(chunks, dict)
            else None
        )
        info["task_granularity"] = (
            rec.get("task_granularity") if isinstance(rec.get("task_granularity"), dict) else None
        )
        info["prefect"] = {
            "flow_name": _str(rec.get("flow_name")),
            "flow_run_id": _str(rec.get("flow_run_id")),
            "flow_run_name": _str(rec.get("flow_run_name")),
            "url": _http_url(rec.get("prefect_ui_url")),
        }
        started, updated, finished = (_parse_time(info[k]) for k in ("started", "updated", "finished"))
        info["updated_ts"] = updated
        now = time.time()
        end = finished or (now if info["state"] == "running" else updated)
        if started and end:
            info["elapsed_s"] = max(end - started, 0.0)
        h = info["history"]
        if h:
            # while running, the window ends now: a run (a watch) that does nothing shows a rate near 0
            t_end = max(now - started, h[-1][0]) if info["state"] == "running" and started else h[-1][0]
            info["rate_per_s"] = h[-1][2] / t_end if t_end > 0 else None
            info["rate_recent_per_s"] = _recent_rate(h, t_end)
        if info["state"] == "running" and updated and now - updated > STALE_S:
            info["notes"].append(
                f"no update for {now - updated:.0f} s: the run may have been "
                "stopped without writing its end (look at its Prefect flow run)"
            )
        if info["state"] == "failed":
            info["message"] = f"the run failed: {info['error'] or 'no reason recorded'}"

    def _from_outputs(self, info: dict, run_dir: str) -> None:
        """An older run without run.json (or an unreadable one): what its summary says."""
        summary, error = self._json(os.path.join(run_dir, "summary.json"))
        live, live_error = self._json(os.path.join(run_dir, "live_summary.json"))
        training, _ = self._json(os.path.join(run_dir, "training_summary.json"))
        ledger = os.path.join(run_dir, "ledger.sqlite")
        if error or live_error:
            info["notes"].append(error or live_error)
        s = summary if isinstance(summary, dict) else {}
        kind, unit = _guess_kind(s, live, training, os.path.exists(ledger))
        info["kind"], info["unit"] = kind, unit
        when = max(self._mtime(os.path.join(run_dir, n)) for n in MARKERS + ("ledger.sqlite",)) / 1e9
        info["updated_ts"] = when or None
        info["updated"] = datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None
        done = failed = skipped = 0
        if isinstance(s.get("operation"), str) and kind_of(s["operation"]) is not None:  # photonflow.results.RunSummary
            kind, info["kind"], info["unit"] = s["operation"], s["operation"], str(s.get("unit") or unit)
            done, failed, skipped = s.get("done"), s.get("failed"), s.get("skipped")
        elif kind == "saxs":
            done, failed, skipped = s.get("frames_done"), s.get("frames_failed"), s.get("frames_skipped")
        elif kind == "sfx":
            done, failed = s.get("frames_done"), s.get("frames_failed")
        elif kind == "laue":
            done, failed = s.get("images_done"), s.get("images_failed")
        elif kind == "tomo":
            done = sum(len(v) for v in (s.get("pass1_chunk_s"), s.get("pass2_chunk_s")) if isinstance(v, list))
        elif kind == "classify-sort":
            done, failed = s.get("sorted"), s.get("failed")
        elif kind and kind.endswith("-live"):
            counts = self._ledger_counts(ledger)
            src = live if isinstance(live, dict) else {}
            done = counts.get("done", _int(src.get("done")))
            failed = counts.get("failed", _int(src.get("failed")))
            info["arrived"] = sum(counts.values()) if counts else _int(src.get("arrived"), _int(done) + _int(failed))
        info["done"], info["failed"], info["skipped"] = (_int(x) for x in (done, failed, skipped))
        if not (kind and kind.endswith("-live")):
            info["arrived"] = info["done"] + info["failed"] + info["skipped"]
            info["total"] = info["arrived"] if summary is not None else None
        elapsed = _finite(s.get("elapsed_s") if s else (live.get("elapsed_s") if isinstance(live, dict) else None))
        info["elapsed_s"] = elapsed
        if elapsed and info["done"]:
            info["rate_per_s"] = info["done"] / elapsed
        if summary is not None or isinstance(live, dict) or training is not None:
            info["state"] = "completed"
        elif os.path.exists(ledger):
            info["state"] = "unknown"
        if kind is None:
            info["message"] = info["message"] or (
                "not a photonflow run this monitor knows: no run.json and its "
                "summary.json is not one of a photonflow flow"
            )
        else:
            info["notes"].append(
                "an older run without run.json: shown from its summary and tables (no live "
                "progress history, no Prefect link)"
            )

    def _ledger_counts(self, path: str) -> dict[str, int]:
        if not os.path.exists(path):
            return {}
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
            try:
                return {
                    str(state): int(n) for state, n in con.execute("SELECT state, count(*) FROM items GROUP BY state")
                }
            finally:
                con.close()
        except sqlite3.Error:
            return {}

    # ------------------------------------------------------------------ table rows
    def rows(self, run_id: str) -> list[dict]:
        """The run's table rows so far: ``live_rows.jsonl`` for a run with a record, else its final
        table (integral_parameters.csv, frames.csv, images.csv, live_integral_parameters.csv)."""
        run_dir, root = self.run_dir(run_id)
        record, _ = self._json(os.path.join(run_dir, "run.json"))
        return self._rows(run_dir, root, record if isinstance(record, dict) else None)

    def _rows(self, run_dir: str, root: str, record: dict | None, kind: str | None = None) -> list[dict]:
        jsonl = os.path.join(run_dir, "live_rows.jsonl")
        if record is not None and record.get("format") == RUN_FORMAT and os.path.exists(jsonl):
            with self._lines_lock:
                reader = self._lines.get(jsonl)
                if reader is None:
                    reader = self._lines[jsonl] = _JsonLines(jsonl)
                self._lines.move_to_end(jsonl)
                while len(self._lines) > MAX_READERS:
                    self._lines.popitem(last=False)
            rows = reader.read(epoch=_hashable(record.get("started")))
            if rows or record.get("state") == "running":
                return rows
        kind = kind or (record or {}).get("kind")
        kind = kind if isinstance(kind, str) else None
        since = (
            _parse_time(record.get("started")) if record is not None and record.get("format") == RUN_FORMAT else None
        )
        for name in _tables(kind) if kind else _ALL_TABLES:
            path = os.path.join(run_dir, name)
            if self._fresh(path, since):
                try:
                    return self._files.get(path, _read_csv_rows)
                except (OSError, ValueError, csv.Error):
                    return []
        return []

    # ------------------------------------------------------------------ per kind
    def _fold(
        self,
        key: tuple,
        rows: list,
        init: Callable[[], dict],
        add: Callable[[dict, list], None],
        view: Callable[[dict], dict] = dict,
    ) -> dict:
        """A summary of ``rows`` kept up to date by adding only the rows appended since the last
        call: ``add(state, new_rows)`` folds them into the state ``init()`` made. ``live_rows.jsonl``
        grows by appending (the same row objects stay at the front of each new list); any other
        change (a new run, a re-read table) starts again from ``init()``. Returns ``view(state)``, made
        under the lock: a snapshot that shares nothing mutable with the state other threads fold into
        (counts, tuples), so a caller can use it after the lock is released."""
        with self._fold_lock:
            hit = self._derived.get(key)
            if hit is not None and hit[0] <= len(rows) and (hit[0] == 0 or rows[hit[0] - 1] is hit[1]):
                n, state = hit[0], hit[2]
            else:
                n, state = 0, init()
            if n < len(rows):
                add(state, rows[n:])
            if len(self._derived) > 1024:
                self._derived.clear()
            self._derived[key] = (len(rows), rows[-1] if rows else None, state)
            return view(state)

    def _saxs(self, run_id: str, run_dir: str, root: str, info: dict) -> dict:
        record = self._record(run_dir)
        rows = self._rows(run_dir, root, record, info["kind"])
        state = self._saxs_state(run_dir, rows)
        groups, latest_integ = self._curve_groups(run_dir, rows, state)
        curves = groups.get(latest_integ, ()) if latest_integ is not None else ()
        last = rows[-1] if rows else {}
        return {
            "rows": len(rows),
            "frames": state["frames"],
            "integrations": list(state["integrations"]),
            # the slider and "latest" are the curves of the newest curve's integration (?integration=…&sel=K)
            "curves": len(curves),
            "curve_integration": latest_integ,
            "curves_total": sum(len(v) for v in groups.values()),
            "curves_by_integration": {k: len(v) for k, v in groups.items()},
            "latest_curve": curves[-1]["label"] if curves else None,
            "latest": {
                k: _finite(last.get(k)) if k != "frame" else _hashable(last.get(k))
                for k in ("frame", "time", "I0", "I1", "I2", "correlation_length_nm")
            }
            if last
            else None,
            "latest_integration": _str(last.get("integration")) if last else None,
        }

    def _saxs_state(self, run_dir: str, rows: list[dict]) -> dict:
        """Frames, integrations and the curves named by the rows' ``chi`` paths (per integration, in
        the order written), kept incrementally; returned as counts and tuples."""

        def add(state: dict, new: list[dict]) -> None:
            for r in new:
                state["frames"].add((_hashable(r.get("frame")), _hashable(r.get("path")), _hashable(r.get("event"))))
                integ = "" if r.get("integration") is None else str(r["integration"])
                if r.get("integration") is not None:
                    state["integrations"].add(integ)
                if isinstance(r.get("chi"), str) and r["chi"]:
                    state["curves"].setdefault(integ, []).append(
                        {"label": _frame_label(r), "chi": r["chi"], "time": _finite(r.get("time"))}
                    )
                    state["latest"] = integ

        def view(state: dict) -> dict:
            return {
                "frames": len(state["frames"]),
                "integrations": tuple(sorted(state["integrations"])),
                "curves": {k: tuple(v) for k, v in state["curves"].items()},
                "latest": state["latest"],
            }

        return self._fold(
            ("saxs", run_dir),
            rows,
            lambda: {"frames": set(), "integrations": set(), "curves": {}, "latest": None},
            add,
            view,
        )

    def _record(self, run_dir: str) -> dict | None:
        record, _ = self._json(os.path.join(run_dir, "run.json"))
        return record if isinstance(record, dict) and record.get("format") == RUN_FORMAT else None

    def _curve_groups(self, run_dir: str, rows: list[dict], state: dict | None = None) -> tuple[dict, str | None]:
        """({integration: curves, oldest first}, the integration of the newest curve) of a SAXS run:
        from the rows' ``chi`` paths, else (older runs) the ``.chi`` files under ``chi/`` by
        modification time, put to the integration their name ends with. "" is "no integration"."""
        state = state or self._saxs_state(run_dir, rows)
        if state["curves"]:
            return state["curves"], state["latest"]
        files = self._chi_files(run_dir, len(rows))
        names = sorted({str(r["integration"]) for r in rows if r.get("integration") is not None}, key=len, reverse=True)
        groups: dict[str, list] = {}
        latest = None
        for c in files:
            stem = os.path.basename(c["chi"])[:-4]
            latest = next((n for n in names if stem.endswith("_" + n)), "")
            groups.setdefault(latest, []).append(c)
        return {k: tuple(v) for k, v in groups.items()}, latest

    def _chi_files(self, run_dir: str, n_rows: int) -> list[dict]:
        """The ``.chi`` files under ``chi/``, oldest first (runs whose rows do not name them); with a
        record, only those written since the run started."""
        chi_dir = os.path.join(run_dir, "chi")
        if not os.path.isdir(chi_dir):
            return []
        since = self._since(run_dir)
        key = (chi_dir, self._mtime(chi_dir), n_rows, since)
        cached = self._globs.get(chi_dir)
        if cached is not None and cached[0] == key:
            return cached[1]
        paths = glob.glob(os.path.join(glob.escape(chi_dir), "**", "*.chi"), recursive=True)
        paths = [p for p in paths if self._fresh(p, since)]
        paths.sort(key=lambda p: (self._mtime(p), p))
        curves = [
            {
                "label": os.path.splitext(os.path.relpath(p, chi_dir))[0],
                "chi": os.path.relpath(p, run_dir),
                "time": None,
            }
            for p in paths
        ]
        if len(self._globs) > 256:
            self._globs.clear()
        self._globs[chi_dir] = (key, curves)
        return curves

    def curves(self, run_id: str, integration: str | None = None) -> tuple[str | None, tuple]:
        """(integration, its curves oldest first: dicts with label and chi, a path relative to the
        run) of a SAXS run; ``integration`` None: the newest curve's. Nothing is resolved here (a run
        may have 100 000 curves): :meth:`curve_file` resolves the one a plot reads."""
        run_dir, root = self.run_dir(run_id)
        record = self._record(run_dir)
        kind = record.get("kind") if record else self._base(run_id)["kind"]
        rows = self._rows(run_dir, root, record, kind if isinstance(kind, str) else None)
        groups, latest = self._curve_groups(run_dir, rows)
        integ = latest if integration is None else str(integration)
        if integ is None:
            return None, ()
        if integ not in groups:
            raise MonitorError(
                f"no curves of integration {integ!r} in this run (integrations with curves: "
                f"{', '.join(repr(k) for k in groups) or 'none'})",
                status=404,
            )
        return integ, groups[integ]

    def curve_file(self, run_id: str, chi: str) -> str | None:
        """The real path of a curve's ``chi`` (from :meth:`curves`), None when it is not a file
        inside the run's directory."""
        run_dir, root = self.run_dir(run_id)
        return self._safe(run_dir, root, chi)

    def curve_paths(
        self, run_id: str, integration: str | None = None, indices: Iterable[int] | None = None
    ) -> list[tuple[str, str]]:
        """(label, real path) of the curves ``indices`` (default all) of an integration (default the
        newest curve's) of a SAXS run, oldest first; paths outside the run dropped."""
        _, curves = self.curves(run_id, integration)
        picked = curves if indices is None else [curves[k] for k in indices]
        out = []
        for c in picked:
            real = self.curve_file(run_id, c["chi"])
            if real:
                out.append((c["label"], real))
        return out

    def _sfx(self, run_id: str, run_dir: str, root: str, info: dict) -> dict:
        rows = self._rows(run_dir, root, self._record(run_dir), "sfx")

        def add(state: dict, new: list[dict]) -> None:
            for r in new:
                state["hits"] += _truthy(r.get("hit"))
                peaks = _finite(r.get("n_peaks")) if not isinstance(r.get("n_peaks"), (str, bool)) else None
                if peaks is not None:
                    state["peaks"] += peaks
                    state["with_peaks"] += 1

        totals = self._fold(("sfx", run_dir), rows, lambda: {"hits": 0, "peaks": 0, "with_peaks": 0}, add)
        hits, recent = totals["hits"], rows[-100:]
        return {
            "frames": len(rows),
            "hits": hits,
            "hit_rate_percent": 100.0 * hits / len(rows) if rows else None,
            "recent_hit_rate_percent": (
                100.0 * sum(_truthy(r.get("hit")) for r in recent) / len(recent) if recent else None
            ),
            "mean_peaks_per_frame": totals["peaks"] / totals["with_peaks"] if totals["with_peaks"] else None,
            "latest_hit": self.latest_hit(run_id, read_frame=False),
        }

    def latest_hit(self, run_id: str, read_frame: bool = True) -> dict | None:
        """The newest hit frame: its hits file (relative), row, label and peaks (with the frame
        itself when ``read_frame``); None before the first hit."""
        run_dir, root = self.run_dir(run_id)
        hits_dir = os.path.join(run_dir, "hits")
        since = self._since(run_dir)
        try:
            entries = [
                (e.stat().st_mtime_ns, e.name, e)
                for e in os.scandir(hits_dir)
                if e.name.endswith((".cxi", ".h5")) and e.is_file()
            ]
        except OSError:
            return None
        entries = [
            x for x in entries if since is None or x[0] / 1e9 >= since - LEFTOVER_SLACK_S
        ]  # not an earlier run's
        for _, _, entry in sorted(entries, key=lambda x: (x[0], x[1]), reverse=True):
            real = self._safe(run_dir, root, os.path.relpath(entry.path, run_dir))
            if not real:
                continue
            try:
                meta = self._files.get(real, _read_hits_meta)
            except Exception:  # noqa: BLE001 - being written, or not a hits file
                continue
            if not meta["n"]:
                continue
            k = meta["n"] - 1
            out = {
                "file": os.path.relpath(real, run_dir),
                "row": k,
                "label": meta["labels"][k],
                "n_peaks": meta["counts"][k],
                "has_frame": meta.get("frames", 0) > k,
            }
            if read_frame:
                out.update(_read_hit_frame(real, k))
            return out
        return None

    def _laue(self, run_id: str, run_dir: str, root: str, info: dict) -> dict:
        record = self._record(run_dir)
        rows = self._rows(run_dir, root, record, "laue")

        def add(state: dict, new: list[dict]) -> None:
            for r in new:
                cell = _map_cell(r)
                if cell is not None:
                    state["filled"] += 1
                    state["rows"] = max(state["rows"], cell[0] + 1)
                    state["cols"] = max(state["cols"], cell[1] + 1)
                if r.get("status", "ok") != "ok":
                    state["failed"] += 1
                    continue
                state["spots"] += _int(r.get("n_spots"))
                state["good"] += _int(r.get("n_good"))
                sim = _finite(r.get("mean_sim"))
                if sim is not None:
                    state["sim_sum"] += sim
                    state["sim_n"] += 1

        t = self._fold(
            ("laue", run_dir),
            rows,
            lambda: dict.fromkeys(("filled", "rows", "cols", "failed", "spots", "good", "sim_sum", "sim_n"), 0),
            add,
        )
        shape = _map_shape(record)  # the whole scan's, known at its start; else as far as the rows reach
        if shape is not None:
            shape = [max(shape[0], t["rows"]), max(shape[1], t["cols"])]
        elif t["filled"]:
            shape = [t["rows"], t["cols"]]
        return {
            "images": len(rows),
            "images_failed": t["failed"],
            "spots": t["spots"],
            "good_spots": t["good"],
            "mean_sim": t["sim_sum"] / t["sim_n"] if t["sim_n"] else None,
            "map_shape": shape,
            "map_filled": t["filled"],
        }

    def _tomo(self, run_id: str, run_dir: str, root: str, info: dict) -> dict:
        chunks = info.get("chunks") or {}
        states = {}
        for name in ("pass1", "pass2"):
            seq = chunks.get(name) if isinstance(chunks.get(name), list) else []
            states[name] = {
                "total": len(seq),
                **{s: sum(1 for x in seq if x == s) for s in ("pending", "done", "failed")},
            }
        since = self._since(run_dir)
        plan_path = os.path.join(run_dir, "plan.json")
        plan, _ = self._json(plan_path) if self._fresh(plan_path, since) else (None, None)
        if isinstance(plan, dict) and not chunks:
            for name in ("pass1", "pass2"):
                part = plan.get(name) if isinstance(plan.get(name), dict) else {}
                n = len(part["chunks"]) if isinstance(part.get("chunks"), list) else 0
                states[name] = {
                    "total": n,
                    "pending": 0 if info["state"] == "completed" else n,
                    "done": n if info["state"] == "completed" else 0,
                    "failed": 0,
                }
        volume = os.path.join(run_dir, "volume.h5")
        summary_path = os.path.join(run_dir, "summary.json")
        summary, _ = self._json(summary_path) if self._fresh(summary_path, since) else (None, None)
        record = self._record(run_dir) or {}
        done = info["state"] == "completed" or info.get("stage") in ("report", "done") or bool(record.get("volume"))
        return {
            "stage": info.get("stage"),
            "chunks": states,
            "volume": self._fresh(volume, since) and done,
            "report": self._fresh(os.path.join(run_dir, "report.pdf"), since),
            "shape": (summary or {}).get("shape") if isinstance(summary, dict) else None,
            "center_px": (summary or {}).get("center_px") if isinstance(summary, dict) else None,
        }

    def volume_path(self, run_id: str) -> str:
        run_dir, root = self.run_dir(run_id)
        path = self._resolve(run_dir, root, "volume.h5")
        if not self._fresh(path, self._since(run_dir)):
            raise MonitorError("volume.h5 is an earlier run's (older than this run's start)", status=404)
        return path

    # ------------------------------------------------------------------ page helpers
    def _files_of(self, run_id: str, run_dir: str, root: str, kind: str | None) -> list[dict]:
        """Links to the run's own outputs (not an earlier run's left in the same directory)."""
        since = self._since(run_dir)
        names = [
            "report.pdf",
            "summary.json",
            "run.json",
            "plan.json",
            *_tables(kind),
            "hits.lst",
            "good.lst",
            "bad.lst",
            "curves.png",
            "integral_parameters.png",
            "hit_rate.png",
            "peak_overlay.png",
            "map_good_spots.png",
            "map_mean_sim.png",
            "live_integral_parameters.png",
        ]
        out = []
        for name in dict.fromkeys(names):
            real = self._safe(run_dir, root, name)
            if real and (name == "run.json" or self._fresh(real, since)):
                out.append({"name": name, "url": f"/files/{run_id}/{name}"})
        return out

    def _plots_of(self, info: dict) -> list[str]:
        panel, plots = _panel(info["kind"]), []
        if info["history"] or info["done"]:
            plots.append("progress")
        if panel == "saxs" and info.get("saxs"):
            if info["saxs"]["curves"]:
                plots.append("saxs-curve")
            if info["saxs"]["rows"]:
                plots.append("saxs-params")
        elif panel == "sfx" and info.get("sfx"):
            if info["sfx"]["frames"]:
                plots.append("sfx-hits")
            if info["sfx"]["latest_hit"] and info["sfx"]["latest_hit"].get("has_frame"):
                plots.append("sfx-latest-hit")
        elif panel == "laue" and info.get("laue") and info["laue"]["map_filled"]:
            plots.append("laue-maps")
        elif panel == "tomo" and info.get("tomo") and info["tomo"]["volume"]:
            plots.append("tomo-slices")
        return plots

    def _signature(self, run_dir: str, info: dict) -> str:
        """Changes whenever what the plots show may have changed (the page reloads them then)."""
        parts = [
            self._mtime(os.path.join(run_dir, n))
            for n in ("run.json", "live_rows.jsonl", "summary.json", "volume.h5", "live_summary.json")
        ]
        try:
            parts.append(os.stat(os.path.join(run_dir, "live_rows.jsonl")).st_size)
        except OSError:
            parts.append(0)
        for key in PANELS:
            if info.get(key):
                parts.append(json.dumps(info[key], sort_keys=True, default=str))
        return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


#: The monitor's science panels (an operation's ``panel`` in the registry; "progress" has none).
PANELS = ("saxs", "sfx", "laue", "tomo")


def _panel(kind: Any) -> str | None:
    op = kind_of(kind) if isinstance(kind, str) else None
    return op.panel if op is not None else None


def _tables(kind: Any) -> tuple[str, ...]:
    """The table files of a run of this kind: a live run's own table first, as the registry names them."""
    op = kind_of(kind) if isinstance(kind, str) else None
    if op is None:
        return ()
    if kind.endswith("-live") and op.extra_tables:
        return tuple(op.extra_tables)
    return op.tables[:1]


_ALL_TABLES = tuple(dict.fromkeys(name for op in OPERATIONS.values() for name in op.tables))


def _http_url(url: Any) -> str | None:
    """Only http(s) links reach the page (a record cannot plant a javascript: link)."""
    return url if isinstance(url, str) and re.match(r"^https?://", url) else None


def _frame_label(row: dict) -> str:
    """A short name of a table row's frame: file name, event, integration."""
    frame = row.get("frame", row.get("path"))
    name = os.path.basename(str(frame)) if isinstance(frame, str) else str(frame)
    event = row.get("event")
    if isinstance(event, int) and event >= 0 and f":{event}" not in name:
        name += f" //{event}"
    return f"{name} ({row.get('integration')})" if row.get("integration") is not None else name


def _map_cell(row: dict) -> tuple[int, int] | None:
    """(map_row, map_col) of a Laue image row, None when it has no (valid) place in the map."""
    r, c = row.get("map_row"), row.get("map_col")
    if (
        isinstance(r, int)
        and isinstance(c, int)
        and not isinstance(r, bool)
        and not isinstance(c, bool)
        and r >= 0
        and c >= 0
    ):
        return r, c
    return None


def _map_shape(record: dict | None) -> list[int] | None:
    """The record's ``map_shape`` [rows, cols] (the Laue flow writes the whole scan's at its start)."""
    shape = (record or {}).get("map_shape")
    if (
        isinstance(shape, list)
        and len(shape) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 100_000 for x in shape)
    ):
        return [int(shape[0]), int(shape[1])]
    return None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _guess_kind(summary: dict, live: Any, training: Any, ledger: bool) -> tuple[str | None, str]:
    if isinstance(live, dict) or (ledger and not summary):
        return "saxs-live", "frames"
    if training is not None and not summary:
        return "classify-train", "frames"
    if "volume" in summary and ("plan" in summary or "pass2_chunk_s" in summary):
        return "tomo", "chunks"
    if "images_done" in summary:
        return "laue", "images"
    if "hit_rate_percent" in summary:
        return "sfx", "frames"
    if "good_list" in summary:
        return "classify-sort", "frames"
    if "frames_done" in summary:
        return "saxs", "frames"
    return None, "frames"


def _read_hits_meta(path: str) -> dict:
    """Peak counts, source labels and the number of stored frames of a hits file."""
    import h5py

    from photonflow.io import read_cxi_peaks, read_cxi_sources

    counts = [len(p) for p in read_cxi_peaks(path)]
    labels = [
        f"{os.path.basename(f)} //{e}" if e is not None else os.path.basename(f) if f else f"hit {k}"
        for k, (f, e) in enumerate(read_cxi_sources(path))
    ]
    with h5py.File(path, "r", locking=False) as f:
        frames = f["/entry_1/data_1/data"].shape[0] if "/entry_1/data_1/data" in f else 0
    return {"n": len(counts), "counts": counts, "labels": labels, "frames": int(frames)}


def _read_hit_frame(path: str, k: int) -> dict:
    """Hit ``k`` of a hits file: its frame (photonflow.io.read_frame) and peak positions (slab px)."""
    from photonflow.io import read_cxi_peaks, read_frame

    peaks = read_cxi_peaks(path)[k]
    return {"frame": read_frame(path, k), "fs": peaks.fs, "ss": peaks.ss}
