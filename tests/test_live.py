"""Live reduction end to end: `photonflow watch` (killed and restarted), the ZMQ feeder, a served
deployment triggered by the watcher's event on a real `prefect server start`, and the submit API."""

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from photonflow.deployments.cli.sfx import SIMULATED_DETECTOR_PF8
from photonflow.io import read_chi
from photonflow.simulate.detector import DetectorWriter

REPO = Path(__file__).resolve().parents[1]
SHAPE = (96, 80)


def write_setup(root: Path, **watch_extra) -> Path:
    """A small SAXSDOG calibration, a mask and a watch config; returns the watch config path."""
    tifffile.imwrite(root / "mask.tif", np.zeros(SHAPE, np.uint8))
    cal = {
        "Geometry": {
            "BeamCenter": [50.5, 40.25],
            "DedectorDistanceMM": 1000.0,
            "PixelSizeMicroM": [172.0],
            "Imagesize": list(SHAPE),
            "Tilt": {"TiltRotDeg": 0.0, "TiltAngleDeg": 0.0},
        },
        "Wavelength": 1.0,
        "Masks": [
            {
                "Name": "full",
                "MaskFile": "mask.tif",
                "Oversampling": 2,
                "PixelPerRadialElement": 1.0,
                "qStart": 0.05,
                "qStop": 0.8,
            }
        ],
    }
    (root / "cal.json").write_text(json.dumps(cal))
    watch = {
        "calibration": "cal.json",
        "output_dir": "out",
        "settle_s": 0.3,
        "event_interval_s": 0.2,
        "batch_max_frames": 8,
        "batch_max_wait_ms": 20,
    }
    watch.update(watch_extra)
    (root / "watch.json").write_text(json.dumps(watch))
    return root / "watch.json"


def frames(n=6, seed=0):
    return np.random.default_rng(seed).poisson(200.0, (n, *SHAPE)).astype(np.int32)


def ledger_rows(path: Path):
    """The ledger's items; none yet while the watch process has created the file but not its table."""
    con = sqlite3.connect(str(path))
    try:
        return con.execute("SELECT path, event, state, attempts, outputs FROM items").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return []
    finally:
        con.close()


def watch_process(config: Path, directory: Path, log: Path, *extra) -> subprocess.Popen:
    env = dict(os.environ, PHOTONFLOW_DASK_LOGS="warning")
    return subprocess.Popen(
        [sys.executable, "-m", "photonflow.deployments.cli", "watch", str(config), str(directory), *extra],
        cwd=REPO,
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and everything it started (its Prefect API server runs in a session of its
    own, so killing the process group alone would leave that behind)."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for p in [psutil.Process(proc.pid)] + children if proc.poll() is None else children:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(30)


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_watch_killed_and_restarted_processes_every_frame_exactly_once(tmp_path):
    config = write_setup(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    ledger = tmp_path / "out" / "ledger.sqlite"
    n = 150
    # frames written before the watch starts are caught up by its first scan
    early = DetectorWriter(data, frames(), rate_hz=0, mode="rename", count=20, name_pattern="early_{:04d}.tif")
    early.start()
    early.join()
    first = watch_process(config, data, tmp_path / "watch1.log")
    writer = DetectorWriter(data, frames(seed=1), rate_hz=60, mode="inplace", parts=3, part_delay_s=0.002, count=n)
    try:
        wait_for(lambda: ledger.exists(), 120, "the first watch to create its ledger")
        writer.start()
        wait_for(lambda: sum(r[2] == "done" for r in ledger_rows(ledger)) >= 60, 120, "60 frames done")
        kill_tree(first)  # a crash: no clean-up, batches in flight are lost

        done_at_kill = sum(r[2] == "done" for r in ledger_rows(ledger))
        writer.join()  # the detector keeps writing while nobody watches
        second = watch_process(config, data, tmp_path / "watch2.log", "--idle-timeout", "3")
        assert second.wait(180) in (0, 1), (tmp_path / "watch2.log").read_text()[-3000:]
    finally:
        writer.stop()
        kill_tree(first)
    rows = ledger_rows(ledger)
    written = {p for p, _e, _t in early.written} | {p for p, _e, _t in writer.written}
    assert len(written) == 20 + n
    assert {r[0] for r in rows} == written  # nothing missed, nothing unknown
    assert all(r[2] == "done" for r in rows), [r for r in rows if r[2] != "done"][:5]
    assert len(rows) == len(written)  # one ledger item per frame
    assert done_at_kill < len(written)  # the kill really happened mid-stream
    # at most the batches in flight at the kill were retried (attempts 2); everything else ran once.
    # The session keeps up to workers + 1 = 3 batches of at most 8 frames in flight.
    retried = [r for r in rows if r[3] > 1]
    assert len(retried) <= (2 + 1) * 8 and all(r[3] == 2 for r in retried)
    # exactly one result per frame, and each frame's curve is the frame's own
    chi = sorted((tmp_path / "out" / "chi").glob("*_full.chi"))
    assert len(chi) == len(written)
    for r in rows:
        assert len(json.loads(r[4])) == 1 and Path(json.loads(r[4])[0]).exists()
    q, intensity, _, _ = read_chi(chi[0])
    ok = np.isfinite(intensity)
    assert np.allclose(intensity[ok], 200.0, rtol=0.1)


# ----------------------------------------------------------------------------- SFX and Laue


def write_sfx_setup(root: Path, n_files=24, frames_per_file=4):
    """Simulated 256 x 256 serial-crystallography CXI files in a staging directory (moved into the
    watched one later, as a detector's file writer renames its files into place) and an SFX watch config."""
    from photonflow.io.geom import load_geometry
    from photonflow.simulate.sfx import write_sfx_dataset

    ds = write_sfx_dataset(
        root / "stage",
        load_geometry(REPO / "config" / "geometry" / "sim256.geom"),
        n_files * frames_per_file,
        frames_per_file=frames_per_file,
        seed=21,
    )
    watch = {
        "operation": "sfx",
        "output_dir": "out",
        "patterns": ["*.cxi"],
        "settle_s": 0.3,
        "event_interval_s": 0.5,
        "batch_max_frames": 8,
        "batch_max_wait_ms": 20,
        "workers": 2,
        "sfx": {
            "geometry": "stage/sfx.geom",
            "min_peaks": 10,
            "max_peaks": 1000,
            "peakfinder8": SIMULATED_DETECTOR_PF8,
        },
    }
    (root / "watch_sfx.json").write_text(json.dumps(watch))
    return root / "watch_sfx.json", ds.cxi_files


def sfx_key(path, event):
    return (str(path), -1 if event is None or int(event) < 0 else int(event))


@pytest.mark.slow
def test_sfx_watch_killed_and_restarted_has_every_frame_exactly_once(tmp_path):
    """Live peak and hit finding on CXI files arriving in the watched directory; the watch is killed
    (SIGKILL) mid-stream and restarted; frames.csv, hits.lst and the per-batch CXI files then hold
    every frame (hit) exactly once, with the peak counts of a batch SfxProcessor run over the same frames."""
    from photonflow.io import iter_frame_refs, read_table_csv
    from photonflow.io.cxi import read_cxi_sources, read_hit_list
    from photonflow.sfx import SfxProcessor

    config, staged = write_sfx_setup(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    ledger = out / "ledger.sqlite"

    def arrive(files, pause=0.0):
        for path in files:
            os.replace(path, data / path.name)  # complete when it appears, as a file writer's rename
            time.sleep(pause)

    def done():
        return sum(r[2] == "done" for r in ledger_rows(ledger))

    n_frames = 4 * len(staged)
    arrive(staged[:3])  # before the watch starts: its catch-up scan finds them
    first = watch_process(config, data, tmp_path / "watch1.log")
    second = None
    try:
        wait_for(ledger.exists, 120, "the first watch to create its ledger")
        mover = threading.Thread(target=arrive, args=(staged[3:12], 0.15))  # while it runs
        mover.start()
        wait_for(lambda: done() >= 20, 120, "20 frames done (log: %s)" % (tmp_path / "watch1.log"))
        kill_tree(first)  # a crash: no clean-up; batches in flight are lost, their CXI files maybe written
        mover.join()
        done_at_kill = done()
        arrive(staged[12:18])  # while nobody watches
        second = watch_process(config, data, tmp_path / "watch2.log")
        wait_for(lambda: done() >= 4 * 18, 180, "the restart to catch up (log: %s)" % (tmp_path / "watch2.log"))
        arrive(staged[18:], 0.05)  # and live again
        wait_for(lambda: done() >= n_frames, 180, "every frame done")
        second.send_signal(signal.SIGINT)  # as Ctrl-C: the watch drains and writes its tables
        assert second.wait(120) == 0, (tmp_path / "watch2.log").read_text()[-3000:]
    finally:
        kill_tree(first)
        if second is not None:
            kill_tree(second)
    assert done_at_kill < n_frames  # the kill really happened mid-stream

    # the batch run over the same frames
    files = sorted(data.glob("*.cxi"))
    refs = list(iter_frame_refs([str(p) for p in files]))
    assert len(refs) == n_frames
    options = {
        "geometry": str(tmp_path / "stage" / "sfx.geom"),
        "output_dir": str(tmp_path / "batch"),
        "peakfinder8": SIMULATED_DETECTOR_PF8,
        "hits": {"min_peaks": 10, "max_peaks": 1000},
    }
    batch = SfxProcessor.from_options(options).process(refs, "batch_00000")
    expected = {sfx_key(r["path"], r["event"]): r["n_peaks"] for r in batch.rows}
    expected_hits = sorted(sfx_key(r["path"], r["event"]) for r in batch.rows if r["hit"])
    assert len(expected) == n_frames and 0 < len(expected_hits) < n_frames

    rows = ledger_rows(ledger)
    assert len(rows) == n_frames and all(r[2] == "done" for r in rows)
    table = read_table_csv(out / "frames.csv")
    keys = [sfx_key(p, e) for p, e in zip(table["path"], table["event"])]
    assert len(keys) == len(set(keys)) == n_frames  # every frame exactly once
    assert {k: int(n) for k, n in zip(keys, table["n_peaks"])} == expected
    assert sorted(table["index"].tolist()) == list(range(n_frames))
    hits = [sfx_key(p, e) for p, e in read_hit_list(out / "hits.lst")]
    assert len(hits) == len(set(hits)) and sorted(hits) == expected_hits
    # the per-batch CXI files: each frame in one peak list, each hit in one hits file (a batch that died
    # at the kill left its files behind; the restart deleted them)
    in_peaks = collections.Counter(sfx_key(*s) for p in (out / "peaks").glob("*.cxi") for s in read_cxi_sources(p))
    assert set(in_peaks) == set(expected) and set(in_peaks.values()) == {1}
    in_hits = collections.Counter(sfx_key(*s) for p in (out / "hits").glob("*.cxi") for s in read_cxi_sources(p))
    assert sorted(in_hits) == expected_hits and set(in_hits.values()) == {1}
    summary = json.loads((out / "live_summary.json").read_text())
    assert summary["operation"] == "sfx" and summary["failed"] == 0 and summary["hits"] == len(expected_hits)
    assert summary["ledger_counts"]["done"] == n_frames and summary["per_s"] == summary["frames_per_s"]
    assert json.loads((out / "run.json").read_text())["kind"] == "sfx-live"


@pytest.mark.slow
def test_laue_watch_makes_a_spot_table_per_image_and_the_scan_table(tmp_path):
    from photonflow.flows.live import live_flow
    from photonflow.io import read_table_csv
    from photonflow.laue.scan import LaueProcessor, read_positions_csv, scan_positions
    from photonflow.simulate.laue import write_laue_scan

    scan = write_laue_scan(tmp_path / "stage", 2, 3, shape=(256, 256), n_spots=20, seed=2)
    data = tmp_path / "data"
    data.mkdir()
    watch = {
        "operation": "laue",
        "output_dir": "out",
        "patterns": ["*.tif"],
        "settle_s": 0.3,
        "batch_max_frames": 2,
        "laue": {"search": {"IntensityThreshold": 100}, "positions": "stage/positions.csv"},
    }
    (tmp_path / "watch_laue.json").write_text(json.dumps(watch))
    out = tmp_path / "out"
    images = scan["images"]
    for path in images[:3]:
        os.replace(path, data / path.name)

    def later():  # the rest of the scan arrives while the watch runs
        wait_for((out / "ledger.sqlite").exists, 120, "the watch to create its ledger")
        wait_for(lambda: sum(r[2] == "done" for r in ledger_rows(out / "ledger.sqlite")) >= 3, 120, "3 images done")
        for path in images[3:]:
            os.replace(path, data / path.name)

    mover = threading.Thread(target=later, daemon=True)
    mover.start()
    summary = live_flow(config=str(tmp_path / "watch_laue.json"), directories=[str(data)], max_frames=6, duration_s=300)
    mover.join(10)
    assert summary["operation"] == "laue" and (summary["done"], summary["failed"]) == (6, 0)
    table = read_table_csv(out / "images.csv")
    files = [str(data / p.name) for p in images]
    assert sorted(table["path"].tolist()) == sorted(files)
    reference = LaueProcessor.from_options(
        {"output_dir": str(tmp_path / "batch"), "search": {"IntensityThreshold": 100}}
    ).process([(f, None) for f in files])
    assert {p: int(n) for p, n in zip(table["path"], table["n_spots"])} == {
        r["path"]: r["n_spots"] for r in reference.rows
    }
    places = scan_positions([(f, None) for f in files], read_positions_csv(tmp_path / "stage" / "positions.csv"))
    expected = {f: (p["map_row"], p["map_col"]) for f, p in zip(files, places)}
    assert {p: (int(r), int(c)) for p, r, c in zip(table["path"], table["map_row"], table["map_col"])} == expected
    assert set(table["status"]) == {"ok"} and len(list((out / "spots").glob("*.h5"))) == 6
    assert summary["spots"] == sum(r["n_spots"] for r in reference.rows)
    assert json.loads((out / "run.json").read_text())["kind"] == "laue-live"


def test_watch_config_operations_and_their_errors(tmp_path):
    from photonflow.config import ConfigError, load_json, validate_config
    from photonflow.flows.live import _calibration_options, load_watch_config
    from photonflow.operations import live_names

    schema = load_json(REPO / "config" / "schemas" / "watch.schema.json")
    assert schema["properties"]["operation"]["enum"] == live_names()
    for example in sorted((REPO / "config" / "examples").glob("watch*.json")):
        validate_config(load_json(example), "watch", source=str(example))
    cfg = load_watch_config(REPO / "config" / "examples" / "watch_sfx.json")
    assert cfg["operation"] == "sfx" and cfg["sfx"]["geometry"] == str(REPO / "config" / "geometry" / "sim1920.geom")

    def errors(data):
        (tmp_path / "w.json").write_text(json.dumps(data))
        with pytest.raises(ConfigError) as err:
            load_watch_config(tmp_path / "w.json")
        return str(err.value)

    assert "calibration: required field is missing" in errors({"output_dir": "o"})
    assert "sfx: required field is missing" in errors({"output_dir": "o", "operation": "sfx"})
    assert "sfx.geometry: required field is missing" in errors({"output_dir": "o", "operation": "sfx", "sfx": {}})
    assert "sfx: parameters of operation 'sfx'" in errors({"output_dir": "o", "sfx": {"geometry": "g.geom"}})
    text = errors(
        {
            "output_dir": "o",
            "operation": "sfx",
            "sfx": {"geometry": "g.geom", "finder": "magic", "peakfinder8": {"adc_threshold": "x"}},
        }
    )
    assert "sfx.finder: 'magic' is not one of" in text and "sfx.peakfinder8.adc_threshold" in text
    assert "sfx.max_peaks: 5 is below min_peaks (20)" in errors(
        {"output_dir": "o", "operation": "sfx", "sfx": {"geometry": "g.geom", "min_peaks": 20, "max_peaks": 5}}
    )
    assert "laue.search.IntensityThreshold" in errors(
        {"output_dir": "o", "operation": "laue", "laue": {"search": {"IntensityThreshold": -1}}}
    )
    assert "operation: 'tomo' is not one of" in errors({"output_dir": "o", "operation": "tomo"})
    assert "mask: only for a pyFAI .poni calibration" in errors(
        {"output_dir": "o", "calibration": "c.json", "mask": "m.tif"}
    )
    # SAXS with a .poni: mask and polarization reach the calibration, paths resolved against the config
    (tmp_path / "w.json").write_text(
        json.dumps(
            {"output_dir": "o", "calibration": "c.poni", "mask": "m.tif", "polarization_factor": 0.95, "npt": 500}
        )
    )
    cfg = load_watch_config(tmp_path / "w.json")
    assert _calibration_options(cfg) == {
        "npt": 500,
        "oversampling": 1,
        "mask_file": str(tmp_path / "m.tif"),
        "polarization_factor": 0.95,
    }
    # Laue: the section may be left out, its defaults filled in
    (tmp_path / "w.json").write_text(json.dumps({"output_dir": "o", "operation": "laue"}))
    assert load_watch_config(tmp_path / "w.json")["laue"]["method"] == "fit"


def test_watch_with_nothing_to_watch_is_a_clear_error(tmp_path):
    from photonflow.deployments.cli import main

    config = write_setup(tmp_path)
    assert main(["watch", str(config)]) == 2


@pytest.mark.slow
def test_feeder_messages_signed_and_inside_roots_only(tmp_path, monkeypatch):
    """SAXSDOG's FEEDER publishes; the watch subscribes. Only the good message is processed."""
    from photonflow.flows.live import saxs_live_flow
    from photonflow.realtime.feeder import FeederPublisher, make_message, sign_message

    port = __import__("socket").socket()
    port.bind(("127.0.0.1", 0))
    address = f"tcp://127.0.0.1:{port.getsockname()[1]}"
    port.close()
    data = tmp_path / "data"
    data.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.setenv("PHOTONFLOW_TEST_SECRET", "s3cret")
    config = write_setup(
        tmp_path,
        feeder={
            "address": address,
            "socket_type": "sub",
            "bind": False,
            "secret_env": "PHOTONFLOW_TEST_SECRET",
            "roots": ["data"],
        },
    )
    good, unsigned, forged, escaped = data / "good.tif", data / "unsigned.tif", data / "forged.tif", outside / "x.tif"
    for path in (good, unsigned, forged, escaped):
        tifffile.imwrite(path, frames(1)[0])
    result = {}

    def run():
        result["summary"] = saxs_live_flow(config=str(config), directories=[], idle_timeout_s=4.0)

    with FeederPublisher(address, "pub", bind=True) as publisher:
        thread = threading.Thread(target=run)
        thread.start()
        publisher.wait_for_subscribers(1, timeout=60)
        publisher.send_raw(make_message(unsigned))  # no signature
        bad = sign_message({"command": "new file", "argument": str(forged)}, "wrong secret")
        publisher.send_raw(json.dumps(bad).encode())
        publisher.send_raw(make_message(escaped, secret="s3cret"))  # signed, but outside the data root
        publisher.send_raw(make_message(data / ".." / "elsewhere" / "x.tif", secret="s3cret"))
        publisher.send_raw(make_message(good, secret="s3cret"))
        thread.join(120)
    summary = result["summary"]
    assert summary["done"] == 1 and summary["failed"] == 0
    rows = ledger_rows(tmp_path / "out" / "ledger.sqlite")
    assert [Path(r[0]).name for r in rows] == ["good.tif"]
    assert (tmp_path / "out" / "chi" / "good_full.chi").exists()


# ----------------------------------------------------------------------------- real server


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    from realserver import running_prefect_server

    home = tmp_path_factory.mktemp("prefect-server")
    with running_prefect_server(
        home, extra_env={"PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.25"}
    ) as url:
        yield url


def _client_env(url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_API_URL=url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        PHOTONFLOW_DASK_LOGS="warning",
        PREFECT_HOME=os.environ.get("PREFECT_HOME", ""),
    )
    return env


@pytest.mark.slow
def test_watch_event_triggers_the_served_saxs_deployment_and_submit_api(tmp_path, real_server, monkeypatch):
    config = write_setup(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    from photonflow.io.geom import load_geometry
    from photonflow.simulate.sfx import write_sfx_dataset

    sfx_data = write_sfx_dataset(
        tmp_path / "sfx-data", load_geometry(REPO / "config" / "geometry" / "sim256.geom"), 6, frames_per_file=6, seed=4
    )
    # a small frame classifier for the served classify-sort deployment
    from photonflow.classify.features import FeatureRecipe, extract_features, roi_from_box
    from photonflow.classify.labels import load_labels
    from photonflow.classify.models import save_classifier, train_classifier
    from photonflow.simulate.padt import write_padt_dataset

    padt = write_padt_dataset(
        tmp_path / "padt", load_geometry(REPO / "config" / "geometry" / "sim_epix.geom"), 60, frames_per_file=30, seed=5
    )
    recipe = FeatureRecipe(roi=roi_from_box(0, 176, 0, 192), binning=16, log=True)
    labels = load_labels([padt.good_list], [padt.bad_list])
    feats = extract_features(labels.refs, recipe)
    save_classifier(
        tmp_path / "rf.joblib",
        train_classifier(
            feats.X, labels.labels, "random_forest", n_jobs=1, recipe=recipe.to_dict(), frame_shape=(352, 384)
        ),
    )
    serve_cfg = {
        "saxs": {
            "calibration": "cal.json",
            "output_dir": "served-out",
            "batch_size": 50,
            "cluster": "threads",
            "on_files_arrived": True,
            "watch_output_dir": "out",
        },
        "live": {"config": "watch.json"},
        "sfx": {
            "geometry": str(sfx_data.geometry_path),
            "output_dir": "sfx-out",
            "cluster": "threads",
            "min_peaks": 5,
            "peakfinder8": {"adc_threshold": 100, "max_pixel_count": 40},
        },
        "classify_sort": {"model": "rf.joblib", "output_dir": "sorted", "cluster": "threads"},
    }
    (tmp_path / "serve.json").write_text(json.dumps(serve_cfg))
    env = _client_env(real_server)
    serve = subprocess.Popen(
        [sys.executable, "-m", "photonflow.deployments.cli", "serve", str(tmp_path / "serve.json")],
        cwd=REPO,
        env=env,
        stdout=open(tmp_path / "serve.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        import prefect.settings
        from prefect.client.orchestration import get_client

        monkeypatch.setenv("PREFECT_API_URL", real_server)
        with prefect.settings.temporary_settings(updates={prefect.settings.PREFECT_API_URL: real_server}):

            def deployments():
                with get_client(sync_client=True) as client:
                    return {d.name for d in client.read_deployments()}

            wait_for(lambda: {"saxs", "live", "sfx", "classify-sort"} <= deployments(), 120, "the served deployments")

            def trigger_automations():
                with get_client(sync_client=True) as client:
                    return [a for a in client.read_automations() if "files-arrived" in a.name]

            # the trigger is an automation: an event that arrives before the server has loaded it is
            # not matched (seen once on a loaded CI machine); wait until it is listed, then a little
            wait_for(lambda: len(trigger_automations()) >= 1, 120, "the deployment trigger's automation")
            time.sleep(5)
            # the watcher (its flow, in this process, reporting to the real server) sees 5 frames and
            # emits 'photonflow.files.arrived'; the trigger runs the saxs deployment on those paths
            writer = DetectorWriter(data, frames(), rate_hz=20, mode="rename", count=5)
            writer.start()
            # the watcher as a beamline runs it: its own process, reporting to the server
            watch = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "photonflow.deployments.cli",
                    "watch",
                    str(config),
                    str(data),
                    "--idle-timeout",
                    "2",
                ],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            writer.join()
            assert watch.returncode == 0, watch.stdout[-2000:] + watch.stderr[-2000:]
            summary = json.loads((tmp_path / "out" / "live_summary.json").read_text())
            assert summary["done"] == 5
            served = tmp_path / "served-out" / "chi"
            wait_for(
                lambda: len(list(served.rglob("*_full.chi"))) == 5,
                180,
                "the triggered saxs run to write 5 curves (serve log: %s)" % (tmp_path / "serve.log"),
            )

            def triggered_runs():
                with get_client(sync_client=True) as client:
                    return [
                        r for r in client.read_flow_runs() if r.deployment_id and r.state and r.state.is_completed()
                    ]

            expected = {str(p) for p, _e, _t in writer.written}
            wait_for(
                lambda: {i for r in triggered_runs() for i in r.parameters["inputs"]} == expected,
                120,
                "the triggered runs to complete on the watched frames",
            )

            # the Python API: photonflow.submit over run_deployment, photonflow.status
            import photonflow

            run_id = photonflow.submit(
                "saxs", {"inputs": [str(data)], "output_dir": str(tmp_path / "submitted")}, wait=True, timeout=180
            )
            state = photonflow.status(run_id)
            assert state["state"] == "COMPLETED" and state["final"]
            assert len(list((tmp_path / "submitted" / "chi").rglob("*_full.chi"))) == 5
            # the served sfx deployment, with the serve config's geometry and parameters
            run_id = photonflow.submit("sfx", {"inputs": [str(p) for p in sfx_data.cxi_files]}, wait=True, timeout=180)
            assert photonflow.status(run_id)["state"] == "COMPLETED"
            sfx_summary = json.loads((tmp_path / "sfx-out" / "summary.json").read_text())
            assert sfx_summary["done"] == 6 and sfx_summary["parameters"]["adc_threshold"] == 100
            # and the served frame sorter, with the serve config's model
            run_id = photonflow.submit(
                "classify-sort", {"inputs": [str(p) for p in padt.cxi_files]}, wait=True, timeout=180
            )
            assert photonflow.status(run_id)["state"] == "COMPLETED"
            sorted_summary = json.loads((tmp_path / "sorted" / "summary.json").read_text())
            assert sorted_summary["done"] == 60 and sorted_summary["good"] + sorted_summary["bad"] == 60
            from photonflow.deployments.local_api import drain_prefect_workers

            drain_prefect_workers()  # the events for this server go now, not at exit when it is gone
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)


class PoisonedReducer:
    """A reducer whose worker process dies on frames named *poison* (every time, or only the first
    time when `once`): stands in for a crash in a decompression plugin or the OOM killer."""

    def __init__(self, calibration, out, root, marker_dir, once):
        from photonflow.calibration import load_calibration
        from photonflow.saxs import SaxsReducer

        self.inner = SaxsReducer(load_calibration(calibration), out, input_root=root)
        self.marker_dir, self.once = Path(marker_dir), once

    def reduce(self, refs, overwrite=True):
        for ref in refs:
            if "poison" in Path(ref.path).name:
                marker = self.marker_dir / (Path(ref.path).name + ".died")
                if not (self.once and marker.exists()):
                    marker.touch()
                    os._exit(1)
        return self.inner.reduce(refs, overwrite=overwrite)


@pytest.mark.parametrize("once", [True, False])
def test_a_dying_worker_is_replaced_and_its_frames_retried(tmp_path, once):
    from photonflow.realtime.ledger import Ledger
    from photonflow.realtime.session import MAX_ATTEMPTS, LiveSession, ReducerFactory
    from photonflow.realtime.watcher import FileWatcher

    write_setup(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    for i, frame in enumerate(frames(6)):
        tifffile.imwrite(data / f"frame_{i}.tif", frame)
    tifffile.imwrite(data / "poison_0.tif", frames(1)[0])
    (tmp_path / "markers").mkdir()
    factory = ReducerFactory(
        PoisonedReducer, str(tmp_path / "cal.json"), str(tmp_path / "out"), str(data), str(tmp_path / "markers"), once
    )
    ledger = Ledger(tmp_path / "out" / "ledger.sqlite")
    watcher = FileWatcher([str(data)], use_inotify=False, settle_s=0.1, poll_s=0.05)
    session = LiveSession(factory, ledger, [watcher], "cfg", max_frames=4, max_wait_s=0.01, workers=2)
    with watcher:
        stats = session.run(idle_timeout_s=3.0)
    rows = {Path(r[0]).name: r for r in ledger_rows(tmp_path / "out" / "ledger.sqlite")}
    assert all(rows[f"frame_{i}.tif"][2] == "done" for i in range(6))  # the innocent frames all made it
    poison = rows["poison_0.tif"]
    if once:
        assert poison[2] == "done" and poison[3] == 2 and stats.failed == 0
    else:
        assert poison[2] == "failed" and poison[3] == MAX_ATTEMPTS and stats.failed == 1
