"""The one runner of the map-over-frames operations (saxs, sfx, laue, classify-sort).

:func:`run_batches` cuts the items into batches, submits one ``process-batch`` task per batch
(:mod:`photonflow.tasks.batch`), collects the results in completion order, keeps the progress
artifact, the run record (``run.json``, ``live_rows.jsonl``) and a progress line on the terminal up
to date, and turns a task that failed as a whole into one named failure per item. :func:`finish_run`
writes what every run ends with: the operation's table (CSV and HDF5), its Prefect table artifact,
the markdown summary artifact and ``summary.json``. An operation's flow adds only its own science
(its plots, lists and figures) between the two.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed

from photonflow.flows._runrecord import RunRecord
from photonflow.io import FrameRef, atomic_write_text, write_table_csv, write_table_hdf5
from photonflow.operations import Operation
from photonflow.results import BatchResult, RunSummary
from photonflow.tasks.batch import process_batch

MAX_TABLE_ARTIFACT_ROWS = 500


def batch_name(index: int) -> str:
    """The name of a run's ``index``-th batch (its output files carry it): ``batch_00000``."""
    return f"batch_{index:05d}"


def split_batches(items: list, batch_size: int) -> list[list]:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


@dataclass
class BatchRun:
    """What :func:`run_batches` collected: every batch's result, in completion order."""

    results: list[BatchResult] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    done: int = 0
    skipped: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    peak_rss_mb: float = 0.0
    record: RunRecord | None = None

    def extra_sum(self, key: str) -> float:
        return sum(r.extra.get(key) or 0 for r in self.results)

    def files(self, key: str) -> list[str]:
        """The batches' ``extra[key]`` files (e.g. each batch's CXI peak list), sorted."""
        return sorted(r.extra[key] for r in self.results if r.extra.get(key))


def _bar(fraction: float, width: int = 30) -> str:
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def failed_batch(refs: list[FrameRef], reason) -> BatchResult:
    """A task that failed as a whole (after its retries): every item of it is a named failure."""
    result = BatchResult()
    for ref in refs:
        result.fail(ref, f"batch failed: {reason}")
    return result


def run_batches(
    op: Operation,
    refs: list[FrameRef],
    options: dict,
    output_dir: Path,
    batch_size: int,
    *,
    on_rows: Callable[[list[dict]], None] | None = None,
    record: RunRecord | None = None,
    progress_note: Callable[[BatchRun], str] | None = None,
) -> BatchRun:
    """Process ``refs`` with ``op``'s processor, ``batch_size`` items per task.

    options: the processor's JSON-able options (the same for every batch); on_rows: called with
    each batch's rows before they are recorded (to add the run's own columns: an index, a map
    place); record: the run record (made here when None); progress_note: extra text for the
    progress line (e.g. hits so far).
    """
    logger = get_run_logger()
    batches = split_batches(list(refs), int(batch_size))
    run = BatchRun(record=record or RunRecord(output_dir, op.name, unit=op.unit, total=len(refs)))
    progress_id = create_progress_artifact(
        0.0, description=f"{op.title}: {len(refs)} {op.unit} in {len(batches)} batches"
    )
    task = process_batch.with_options(name=f"{op.name}-batch")
    futures = {
        task.submit(op.name, options, [tuple(r) for r in batch], batch_name(k)): batch
        for k, batch in enumerate(batches)
    }
    t0 = time.perf_counter()
    finished = 0
    for fut in as_completed(list(futures)):
        batch = futures[fut]
        value = fut.result(raise_on_failure=False)
        result = BatchResult.from_dict(value) if isinstance(value, dict) else failed_batch(batch, value)
        if on_rows is not None:
            on_rows(result.rows)
        failed = len(batch) - result.done - result.skipped
        run.results.append(result)
        run.rows.extend(result.rows)
        run.failures.extend(result.failures)
        run.done += result.done
        run.skipped += result.skipped
        run.failed += failed
        run.peak_rss_mb = max(run.peak_rss_mb, result.peak_rss_mb)
        run.record.progress(
            done=result.done,
            skipped=result.skipped,
            failed=failed,
            rows=result.rows,
            task_s=result.elapsed_s if isinstance(value, dict) else None,
        )
        finished += len(batch)
        update_progress_artifact(progress_id, 100.0 * finished / len(refs))
        note = f"; {progress_note(run)}" if progress_note else ""
        logger.info(
            "%s %5.1f %% (%d/%d %s; %d done, %d skipped, %d failed%s; %.1f %s/s)",
            _bar(finished / len(refs)),
            100.0 * finished / len(refs),
            finished,
            len(refs),
            op.unit,
            run.done,
            run.skipped,
            run.failed,
            note,
            run.done / max(time.perf_counter() - t0, 1e-9),
            op.unit,
        )
    run.elapsed_s = time.perf_counter() - t0
    return run


def failures_markdown(failures: list[str], limit: int = 100) -> list[str]:
    """Markdown lines of a run summary's failures section (empty when none)."""
    if not failures:
        return []
    lines = ["", "## Failures", ""] + [f"- {f}" for f in failures[:limit]]
    if len(failures) > limit:
        lines.append(f"- … and {len(failures) - limit} more (see summary.json)")
    return lines


def write_run_table(
    op: Operation, output_dir: Path, rows: list[dict], columns=None, group: str | None = None, artifact_columns=None
) -> str | None:
    """The operation's table (``<table>.csv`` and ``.h5``) and its Prefect table artifact; the CSV's path."""
    if not rows or op.table is None:
        return None
    columns = list(columns or op.table_columns)
    table = {c: [r[c] for r in rows] for c in columns}
    csv_path = output_dir / f"{op.table}.csv"
    write_table_csv(csv_path, table)
    write_table_hdf5(output_dir / f"{op.table}.h5", table, **({"group": group} if group else {}))
    shown = list(artifact_columns or columns)
    create_table_artifact(
        table=[{c: r[c] for c in shown} for r in rows[:MAX_TABLE_ARTIFACT_ROWS]],
        key=f"{op.name}-{op.table.replace('_', '-')}",
        description=f"{op.title}: {min(len(rows), MAX_TABLE_ARTIFACT_ROWS)} of {len(rows)} rows; all in {csv_path}",
    )
    return str(csv_path)


def finish_run(
    op: Operation, summary: RunSummary, headline: dict[str, str], notes: list[str], record: RunRecord | None
) -> dict:
    """The markdown summary artifact (``headline``: column -> value; ``notes``: lines below it, then
    the failures), ``summary.json``, the run record's end; returns the summary as a dict."""
    logger = get_run_logger()
    if record is not None and summary.task_granularity is None:
        summary.task_granularity = record.granularity()
    data = summary.to_dict()
    cols = {
        f"{summary.unit} done": str(summary.done),
        "failed": str(summary.failed),
        **headline,
        "time (s)": f"{summary.elapsed_s:.1f}",
        f"{summary.unit}/s": f"{summary.per_s:.1f}",
    }
    lines = (
        [
            f"# {op.title}: run summary",
            "",
            "| " + " | ".join(cols) + " |",
            "|" + "---|" * len(cols),
            "| " + " | ".join(cols.values()) + " |",
            "",
        ]
        + notes
        + failures_markdown(summary.failures)
    )
    create_markdown_artifact("\n".join(lines), key=f"{op.name}-run-summary", description=f"{op.title}: run summary")
    out = Path(summary.output_dir)
    atomic_write_text(out / "summary.json", json.dumps(data, indent=2, default=str))
    if record is not None:
        record.finish()
    logger.info("%s: %s; outputs in %s", op.name, summary.line(), out)
    for failure in summary.failures[:20]:
        logger.warning("failed: %s", failure)
    return data
