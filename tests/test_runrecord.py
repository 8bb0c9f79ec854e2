"""The run record (run.json, live_rows.jsonl) every flow keeps, and the task-granularity rule."""

import json
import math
import time

import numpy as np
import pytest
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from photonflow.flows._runrecord import TASK_OVERHEAD_S, RunRecord, record_failure, task_granularity
from photonflow.flows.saxs import saxs_flow
from photonflow.io import read_table_csv
from photonflow.simulate.saxs import write_demo_dataset


def test_granularity_counts_the_overhead_share():
    dask = TASK_OVERHEAD_S["DaskTaskRunner"]
    coarse = task_granularity([5.0] * 10, "DaskTaskRunner")
    assert coarse["tasks"] == 10 and coarse["median_task_s"] == 5.0 and not coarse["too_small"]
    assert coarse["overhead_share"] == pytest.approx(10 * dask / (10 * dask + 50.0))
    fine = task_granularity([0.01] * 100, "DaskTaskRunner")
    assert fine["too_small"] and fine["overhead_share"] > 0.95
    assert "0.01 s of work each (median of 100)" in fine["advice"] and "DaskTaskRunner" in fine["advice"]
    # the same tasks on the thread pool cost far less each
    assert task_granularity([0.1] * 100, "ThreadPoolTaskRunner")["overhead_share"] < 0.1
    # too few tasks to matter, or none
    assert not task_granularity([0.01] * 3, "DaskTaskRunner")["too_small"]
    assert task_granularity([], None)["tasks"] == 0


def test_record_writes_json_safe_rows_and_throttles(tmp_path):
    record = RunRecord(tmp_path, "laue", unit="images", total=4, interval_s=60.0)
    first = json.loads((tmp_path / "run.json").read_text())
    assert first["state"] == "running" and first["total"] == 4 and first["arrived"] == 4 and first["done"] == 0
    record.progress(done=2, rows=[{"n_good": np.int64(3), "mean_sim": math.nan}, {"n_good": 1, "mean_sim": 0.5}])
    # within the interval the file is not rewritten, but the rows are appended at once
    assert json.loads((tmp_path / "run.json").read_text())["done"] == 0
    rows = [json.loads(line) for line in (tmp_path / "live_rows.jsonl").read_text().splitlines()]
    assert rows == [{"n_good": 3, "mean_sim": None}, {"n_good": 1, "mean_sim": 0.5}]
    record.progress(failed=1, done=1, task_s=0.2, force=True)
    now = json.loads((tmp_path / "run.json").read_text())
    assert (now["done"], now["failed"]) == (3, 1) and [h[2:] for h in now["history"]] == [[0, 0], [2, 0], [3, 1]]
    record.finish()
    final = json.loads((tmp_path / "run.json").read_text())
    assert final["state"] == "completed" and final["finished"] and final["task_granularity"]["tasks"] == 1
    # a new run in the same directory starts with no rows
    RunRecord(tmp_path, "laue", unit="images", total=1)
    assert (tmp_path / "live_rows.jsonl").read_text() == ""


def test_a_throttled_update_is_written_when_the_interval_is_over(tmp_path):
    record = RunRecord(tmp_path, "tomo", unit="chunks", total=3, interval_s=0.5)
    record.progress(done=1)  # within the interval: not written yet ...
    assert json.loads((tmp_path / "run.json").read_text())["done"] == 0
    time.sleep(1.0)  # ... but written by itself once the interval is over, with no further event
    assert json.loads((tmp_path / "run.json").read_text())["done"] == 1
    record.finish()


def test_a_quiet_run_keeps_its_record_fresh(tmp_path):
    record = RunRecord(tmp_path, "saxs-live", unit="frames", heartbeat_s=0.3)
    first = json.loads((tmp_path / "run.json").read_text())["updated"]
    time.sleep(0.8)
    beat = json.loads((tmp_path / "run.json").read_text())
    assert beat["updated"] > first and beat["state"] == "running" and beat["done"] == 0
    record.finish()
    final = json.loads((tmp_path / "run.json").read_text())["updated"]
    time.sleep(0.5)  # no heartbeat after the end
    assert json.loads((tmp_path / "run.json").read_text())["updated"] == final


def test_a_record_that_cannot_be_written_does_not_stop_the_run(tmp_path, caplog):
    (tmp_path / "run.json").mkdir()  # neither file can be written (a directory is in the way)
    (tmp_path / "live_rows.jsonl").mkdir()
    with caplog.at_level("WARNING", logger="photonflow.run"):
        record = RunRecord(tmp_path, "saxs", unit="frames", total=2)
        record.progress(done=2, rows=[{"I0": 1.0}], force=True)
        granularity = record.finish()
    assert granularity["tasks"] == 0 and record.data["done"] == 2 and record.data["state"] == "completed"
    assert caplog.text.count("cannot write the run record") == 2  # once per file, not per write
    assert "run.json" in caplog.text and "live_rows.jsonl" in caplog.text


def test_a_run_of_tiny_tasks_is_told_so(tmp_path, caplog):
    record = RunRecord(tmp_path, "sfx", unit="frames", total=10)
    for _ in range(10):
        record.progress(done=1, task_s=0.01)
    with caplog.at_level("WARNING", logger="photonflow.run"):
        granularity = record.finish()
    assert granularity["too_small"] and granularity["runner"] is None  # outside a flow: Dask's overhead assumed
    assert "bigger --batch-size" in caplog.text and "0.01 s of work each" in caplog.text


def test_a_failing_flow_is_marked_failed_with_its_reason(tmp_path):
    @flow(on_failure=[record_failure])
    def breaks(out: str):
        record = RunRecord(out, "saxs", unit="frames", total=2)
        record.progress(done=1, force=True)
        raise RuntimeError("the detector went away")

    state = breaks(str(tmp_path), return_state=True)
    assert state.is_failed()
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["state"] == "failed" and "the detector went away" in data["error"]
    assert data["flow_run_id"] == str(state.state_details.flow_run_id) and data["done"] == 1


def test_saxs_flow_keeps_its_record_and_counts_its_tasks(tmp_path):
    """Batches of one frame on the thread pool: every row is in live_rows.jsonl as in the final
    table, the record names the Prefect run, and the summary counts the tasks' work."""
    data = write_demo_dataset(tmp_path / "data", n_frames=8)
    out = tmp_path / "out"
    state = saxs_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))(
        calibration=data["calibration"], inputs=data["inputs"], output_dir=str(out), batch_size=1, return_state=True
    )
    summary = state.result()
    record = json.loads((out / "run.json").read_text())
    assert record["kind"] == "saxs" and record["state"] == "completed" and record["unit"] == "frames"
    assert (record["total"], record["done"], record["failed"]) == (8, 8, 0)
    assert record["flow_run_id"] == str(state.state_details.flow_run_id)
    assert record["history"][-1][1:] == [8, 8, 0]
    rows = [json.loads(line) for line in (out / "live_rows.jsonl").read_text().splitlines()]
    table = read_table_csv(out / "integral_parameters.csv")
    assert len(rows) == len(table["frame"])
    by_frame = {(r["frame"], r["integration"]): r for r in rows}
    for f, name, i0 in zip(table["frame"], table["integration"], table["I0"]):
        assert by_frame[(f, name)]["I0"] == pytest.approx(float(i0), rel=1e-6)
        assert (out / by_frame[(f, name)]["chi"]).is_file()
    granularity = summary["task_granularity"]
    assert granularity["runner"] == "ThreadPoolTaskRunner" and granularity["tasks"] == 8
    overhead = 8 * TASK_OVERHEAD_S["ThreadPoolTaskRunner"]
    assert granularity["overhead_share"] == pytest.approx(overhead / (overhead + granularity["task_work_s"]))
    assert granularity["too_small"] == (granularity["overhead_share"] > 0.25)
    assert record["task_granularity"]["tasks"] == 8
