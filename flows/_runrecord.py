"""The record every flow run keeps in its output directory, for people and the live monitor.

- ``run.json``: what runs (kind, Prefect flow run id and UI link), its state, counts, a short
  history of the counts, the tomography stage and chunk states, and at the end how coarse the
  tasks were. Rewritten atomically at start, within ``interval_s`` (1 s) of any change, every
  ``heartbeat_s`` (10 s) while running, and at the end (``state`` "completed", or "failed" with
  the reason).
- ``live_rows.jsonl``: the rows of the run's table (the same keys as its final CSV), appended as
  batches finish, so that a monitor can plot them while the run goes on.

Also the rule that a Prefect task carries seconds of work: :func:`task_granularity` compares the
work per task with the measured overhead of a task on the runner in use (``TASK_OVERHEAD_S``,
checked by ``benchmarks/overhead.py``) and the record logs a warning at the end of a run whose tasks
are too small to pay for themselves.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from photonflow.io import atomic_write_text, json_safe

__all__ = ["RunRecord", "record_failure", "task_granularity", "TASK_OVERHEAD_S", "RUN_FORMAT"]

RUN_FORMAT = "photonflow-run/1"

#: Prefect's overhead per task (s) on each task runner, measured here by benchmarks/overhead.py
#: (an empty task, submit to result): mostly Prefect serialising its settings for a Dask worker.
TASK_OVERHEAD_S = {"DaskTaskRunner": 0.30, "ThreadPoolTaskRunner": 0.010}
#: The share of worker time spent on overhead above which a run is told to use bigger tasks.
MAX_OVERHEAD_SHARE = 0.25
_MAX_HISTORY = 1000

_open_records: dict[str, "RunRecord"] = {}
_log = logging.getLogger("photonflow.run")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def task_granularity(task_seconds: Iterable[float], runner: str | None) -> dict:
    """How much of the workers' time a run's Prefect tasks spent on overhead.

    task_seconds: the work each task did (s, measured inside the task); runner: the task runner's
    class name. Returns the counts, the median work per task, the runner's overhead per task
    (``TASK_OVERHEAD_S``), the estimated overhead share ``n·o / (n·o + Σ work)``, ``too_small``
    (share above ``MAX_OVERHEAD_SHARE`` with at least 4 tasks) and an advice line.
    """
    seconds = sorted(float(s) for s in task_seconds if s is not None and math.isfinite(float(s)))
    overhead = TASK_OVERHEAD_S.get(runner or "", TASK_OVERHEAD_S["DaskTaskRunner"])
    n, work = len(seconds), sum(seconds)
    share = n * overhead / (n * overhead + work) if n else 0.0
    median = seconds[n // 2] if n else None
    too_small = n >= 4 and share > MAX_OVERHEAD_SHARE
    advice = ""
    if too_small:
        factor = math.ceil(10 * overhead / max(median or 0.0, 1e-6))
        advice = (
            f"tasks carry {median:.3g} s of work each (median of {n}) against about {overhead:.3g} s of Prefect "
            f"overhead per task on {runner}: about {100 * share:.0f} % of the workers' time is overhead. "
            f"Give each task about {factor}x more (a bigger --batch-size or chunk) so that it carries seconds "
            "of work."
        )
    return {
        "runner": runner,
        "tasks": n,
        "task_work_s": work,
        "median_task_s": median,
        "overhead_per_task_s": overhead,
        "overhead_share": share,
        "too_small": too_small,
        "advice": advice,
    }


def _runner_name() -> str | None:
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        return type(ctx.task_runner).__name__ if ctx and ctx.task_runner else None
    except Exception:  # noqa: BLE001 - outside a flow run
        return None


def _prefect_run() -> dict:
    try:
        from prefect.runtime import flow_run
        from prefect.settings import PREFECT_UI_URL

        run_id = flow_run.get_id()
        ui = PREFECT_UI_URL.value()
        return {
            "flow_name": flow_run.get_flow_name(),
            "flow_run_id": run_id,
            "flow_run_name": flow_run.get_name(),
            "prefect_ui_url": f"{ui}/runs/flow-run/{run_id}" if ui and run_id else None,
        }
    except Exception:  # noqa: BLE001 - outside a flow run
        return {"flow_name": None, "flow_run_id": None, "flow_run_name": None, "prefect_ui_url": None}


class RunRecord:
    """``run.json`` and ``live_rows.jsonl`` of one flow run in ``output_dir``.

    kind: "saxs", "saxs-live", "sfx", "laue", "tomo", "classify-train" or "classify-sort";
    unit: what is counted ("frames", "images", "chunks"); total: how many (None while unknown,
    as for a watch); a batch flow's items have all arrived at the start.
    """

    def __init__(
        self,
        output_dir: str | Path,
        kind: str,
        *,
        unit: str,
        total: int | None = None,
        interval_s: float = 1.0,
        heartbeat_s: float = 10.0,
    ):
        self.out = Path(output_dir).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / "run.json"
        self.rows_path = self.out / "live_rows.jsonl"
        self._write_errors: set[Path] = set()
        try:
            self.rows_path.write_text("")  # this run's rows only
        except OSError as exc:
            self._cannot_write(self.rows_path, exc)
        self.interval_s = float(interval_s)
        self._t0 = time.time()
        self._last_write = 0.0
        self._task_s: list[float] = []
        self._lock = threading.RLock()  # a watch reports batches from its session's threads
        self._timer: threading.Timer | None = None
        self.runner = _runner_name()
        self.data: dict[str, Any] = {
            "format": RUN_FORMAT,
            "kind": kind,
            **_prefect_run(),
            "output_dir": str(self.out),
            "started": _now(),
            "updated": _now(),
            "finished": None,
            "state": "running",
            "error": None,
            "unit": unit,
            "total": total,
            "arrived": total or 0,
            "done": 0,
            "failed": 0,
            "skipped": 0,
            "history": [[0.0, total or 0, 0, 0]],
            "stage": None,
        }
        if self.data["flow_run_id"]:
            _open_records[str(self.data["flow_run_id"])] = self
        self._write(force=True)
        # While the run goes on, "updated" stays fresh even when nothing finishes (an idle watch,
        # a long chunk): a monitor can tell a quiet run from a dead one.
        self._stopped = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat, args=(float(heartbeat_s),), daemon=True, name=f"run-record-{kind}"
        )
        self._heartbeat.start()

    def _beat(self, period_s: float) -> None:
        while not self._stopped.wait(period_s):
            with self._lock:
                if self.data["finished"] is None:
                    self._write(force=True)

    # -- while running ---------------------------------------------------------------------
    def progress(
        self,
        *,
        done: int = 0,
        failed: int = 0,
        skipped: int = 0,
        arrived: int | None = None,
        rows: Iterable[dict] = (),
        task_s: float | None = None,
        totals: bool = False,
        force: bool = False,
    ) -> None:
        """Add a finished batch: its counts (increments; the run's totals with ``totals=True``), its
        table rows, the seconds of work its task did; ``arrived`` (a total, for a watch) when known."""
        with self._lock:
            self._progress(done, failed, skipped, arrived, rows, task_s, totals, force)

    def _progress(self, done, failed, skipped, arrived, rows, task_s, totals, force) -> None:
        d = self.data
        for key, value in (("done", done), ("failed", failed), ("skipped", skipped)):
            d[key] = int(value) if totals else d[key] + int(value)
        if arrived is not None:
            d["arrived"] = int(arrived)
        if task_s is not None:
            self._task_s.append(float(task_s))
        rows = list(rows)
        if rows:
            try:
                with open(self.rows_path, "a", encoding="utf-8") as f:
                    f.write("".join(json.dumps(json_safe(r), default=str) + "\n" for r in rows))
            except OSError as exc:
                self._cannot_write(self.rows_path, exc)
        history = d["history"]
        history.append([round(time.time() - self._t0, 3), d["arrived"], d["done"], d["failed"]])
        if len(history) > _MAX_HISTORY:
            d["history"] = history[:1] + history[1:-1:2] + history[-1:]
        self._write(force)

    def task_done(self, seconds: float) -> None:
        """Count the work of a task that is not a batch of items (e.g. a tomography chunk)."""
        self._task_s.append(float(seconds))

    def update(self, force: bool = False, **fields: Any) -> None:
        """Set fields (``stage``, ``chunks``, ``total`` …) and write (at most once per interval)."""
        with self._lock:
            self.data.update(fields)
            self._write(force)

    # -- at the end ------------------------------------------------------------------------
    def granularity(self) -> dict:
        """:func:`task_granularity` of the tasks recorded so far."""
        return task_granularity(self._task_s, self.runner)

    def finish(self, state: str = "completed", error: str | None = None) -> dict:
        """Write the final record; returns the task granularity (also logged when too small)."""
        self._stopped.set()
        with self._lock:
            granularity = self.granularity()
            self.data.update(state=state, error=error, finished=_now(), task_granularity=granularity)
            self._write(force=True)
        _open_records.pop(str(self.data.get("flow_run_id")), None)
        if granularity["too_small"]:
            _warn(granularity["advice"])
        return granularity

    def _write(self, force: bool = False) -> None:
        """Write run.json now, or (within ``interval_s`` of the last write) soon: a timer writes the
        latest state when the interval is over, so the file never lags by more than that."""
        with self._lock:
            now = time.time()
            wait = self._last_write + self.interval_s - now
            if not force and wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._write_pending)
                    self._timer.daemon = True
                    self._timer.start()
                return
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._last_write = now
            self.data["updated"] = _now()
            try:
                atomic_write_text(self.path, json.dumps(json_safe(self.data), indent=1, default=str))
            except OSError as exc:
                self._cannot_write(self.path, exc)

    def _cannot_write(self, path: Path, exc: OSError) -> None:
        """The record is for watching a run, not part of its results: a full or read-only disk here
        is logged (once per file) and the run goes on."""
        if path not in self._write_errors:
            self._write_errors.add(path)
            _warn(f"{path}: cannot write the run record ({exc}); the run goes on without it")

    def _write_pending(self) -> None:
        with self._lock:
            self._timer = None
            if self.data["finished"] is None:
                self._write(force=True)


def _warn(message: str) -> None:
    try:
        from prefect import get_run_logger

        get_run_logger().warning(message)
    except Exception:  # noqa: BLE001 - outside a run
        _log.warning(message)


def record_failure(flow, flow_run, state) -> None:
    """Prefect ``on_failure``/``on_crashed`` hook: mark the run's record failed with the reason."""
    record = _open_records.pop(str(flow_run.id), None)
    if record is not None:
        record.finish("failed", error=str(state.message or state.name))
