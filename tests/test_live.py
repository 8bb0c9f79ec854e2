"""Live reduction end to end: `photonflow watch` (killed and restarted), the ZMQ feeder, a served
deployment triggered by the watcher's event on a real `prefect server start`, and the submit API."""

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

from photonflow.io import read_chi
from photonflow.simulate.detector import DetectorWriter

REPO = Path(__file__).resolve().parents[1]
SHAPE = (96, 80)


def write_setup(root: Path, **watch_extra) -> Path:
    """A small SAXSDOG calibration, a mask and a watch config; returns the watch config path."""
    tifffile.imwrite(root / "mask.tif", np.zeros(SHAPE, np.uint8))
    cal = {
        "Geometry": {"BeamCenter": [50.5, 40.25], "DedectorDistanceMM": 1000.0, "PixelSizeMicroM": [172.0],
                     "Imagesize": list(SHAPE), "Tilt": {"TiltRotDeg": 0.0, "TiltAngleDeg": 0.0}},
        "Wavelength": 1.0,
        "Masks": [{"Name": "full", "MaskFile": "mask.tif", "Oversampling": 2, "PixelPerRadialElement": 1.0,
                   "qStart": 0.05, "qStop": 0.8}],
    }
    (root / "cal.json").write_text(json.dumps(cal))
    watch = {"calibration": "cal.json", "output_dir": "out", "settle_s": 0.3, "event_interval_s": 0.2,
             "batch_max_frames": 8, "batch_max_wait_ms": 20}
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
    return subprocess.Popen([sys.executable, "-m", "deployments.cli", "watch", str(config), str(directory), *extra],
                            cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


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


def test_watch_with_nothing_to_watch_is_a_clear_error(tmp_path):
    from deployments.cli import main

    config = write_setup(tmp_path)
    assert main(["watch", str(config)]) == 2


@pytest.mark.slow
def test_feeder_messages_signed_and_inside_roots_only(tmp_path, monkeypatch):
    """SAXSDOG's FEEDER publishes; the watch subscribes. Only the good message is processed."""
    from flows.live import saxs_live_flow
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
    config = write_setup(tmp_path, feeder={"address": address, "socket_type": "sub", "bind": False,
                                           "secret_env": "PHOTONFLOW_TEST_SECRET", "roots": ["data"]})
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
    with running_prefect_server(home, extra_env={"PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.25"}) as url:
        yield url


def _client_env(url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=url, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_RUNNER_POLL_FREQUENCY="1", PHOTONFLOW_DASK_LOGS="warning",
               PREFECT_HOME=os.environ.get("PREFECT_HOME", ""))
    return env


@pytest.mark.slow
def test_watch_event_triggers_the_served_saxs_deployment_and_submit_api(tmp_path, real_server, monkeypatch):
    config = write_setup(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    from photonflow.io.geom import load_geometry
    from photonflow.simulate.sfx import write_sfx_dataset

    sfx_data = write_sfx_dataset(tmp_path / "sfx-data", load_geometry(REPO / "config" / "geometry" / "sim256.geom"), 6,
                                 frames_per_file=6, seed=4)
    # a small frame classifier for the served classify-sort deployment
    from photonflow.classify.features import FeatureRecipe, extract_features, roi_from_box
    from photonflow.classify.labels import load_labels
    from photonflow.classify.models import save_classifier, train_classifier
    from photonflow.simulate.padt import write_padt_dataset

    padt = write_padt_dataset(tmp_path / "padt", load_geometry(REPO / "config" / "geometry" / "sim_epix.geom"), 60,
                              frames_per_file=30, seed=5)
    recipe = FeatureRecipe(roi=roi_from_box(0, 176, 0, 192), binning=16, log=True)
    labels = load_labels([padt.good_list], [padt.bad_list])
    feats = extract_features(labels.refs, recipe)
    save_classifier(tmp_path / "rf.joblib", train_classifier(feats.X, labels.labels, "random_forest", n_jobs=1,
                                                             recipe=recipe.to_dict(), frame_shape=(352, 384)))
    serve_cfg = {"saxs": {"calibration": "cal.json", "output_dir": "served-out", "batch_size": 50, "cluster": "threads",
                          "on_files_arrived": True, "watch_output_dir": "out"},
                 "saxs_live": {"config": "watch.json"},
                 "sfx": {"geometry": str(sfx_data.geometry_path), "output_dir": "sfx-out", "cluster": "threads",
                         "min_peaks": 5, "peakfinder8": {"adc_threshold": 100, "max_pixel_count": 40}},
                 "classify_sort": {"model": "rf.joblib", "output_dir": "sorted", "cluster": "threads"}}
    (tmp_path / "serve.json").write_text(json.dumps(serve_cfg))
    env = _client_env(real_server)
    serve = subprocess.Popen([sys.executable, "-m", "deployments.cli", "serve", str(tmp_path / "serve.json")],
                             cwd=REPO, env=env, stdout=open(tmp_path / "serve.log", "w"), stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        import prefect.settings
        from prefect.client.orchestration import get_client

        monkeypatch.setenv("PREFECT_API_URL", real_server)
        with prefect.settings.temporary_settings(updates={prefect.settings.PREFECT_API_URL: real_server}):
            def deployments():
                with get_client(sync_client=True) as client:
                    return {d.name for d in client.read_deployments()}

            wait_for(lambda: {"saxs", "saxs-live", "sfx", "classify-sort"} <= deployments(), 120,
                     "the served deployments")

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
            watch = subprocess.run([sys.executable, "-m", "deployments.cli", "watch", str(config), str(data),
                                    "--idle-timeout", "2"], cwd=REPO, env=env, capture_output=True, text=True,
                                   timeout=300)
            writer.join()
            assert watch.returncode == 0, watch.stdout[-2000:] + watch.stderr[-2000:]
            summary = json.loads((tmp_path / "out" / "live_summary.json").read_text())
            assert summary["done"] == 5
            served = tmp_path / "served-out" / "chi"
            wait_for(lambda: len(list(served.rglob("*_full.chi"))) == 5, 180,
                     "the triggered saxs run to write 5 curves (serve log: %s)" % (tmp_path / "serve.log"))

            def triggered_runs():
                with get_client(sync_client=True) as client:
                    return [r for r in client.read_flow_runs() if r.deployment_id and r.state and r.state.is_completed()]

            expected = {str(p) for p, _e, _t in writer.written}
            wait_for(lambda: {i for r in triggered_runs() for i in r.parameters["inputs"]} == expected, 120,
                     "the triggered runs to complete on the watched frames")

            # the Python API: photonflow.submit over run_deployment, photonflow.status
            import photonflow

            run_id = photonflow.submit("saxs", {"inputs": [str(data)], "output_dir": str(tmp_path / "submitted")},
                                       wait=True, timeout=180)
            state = photonflow.status(run_id)
            assert state["state"] == "COMPLETED" and state["final"]
            assert len(list((tmp_path / "submitted" / "chi").rglob("*_full.chi"))) == 5
            # the served sfx deployment, with the serve config's geometry and parameters
            run_id = photonflow.submit("sfx", {"inputs": [str(p) for p in sfx_data.cxi_files]}, wait=True, timeout=180)
            assert photonflow.status(run_id)["state"] == "COMPLETED"
            sfx_summary = json.loads((tmp_path / "sfx-out" / "summary.json").read_text())
            assert sfx_summary["frames_done"] == 6 and sfx_summary["parameters"]["adc_threshold"] == 100
            # and the served frame sorter, with the serve config's model
            run_id = photonflow.submit("classify-sort", {"inputs": [str(p) for p in padt.cxi_files]}, wait=True,
                                       timeout=180)
            assert photonflow.status(run_id)["state"] == "COMPLETED"
            sorted_summary = json.loads((tmp_path / "sorted" / "summary.json").read_text())
            assert sorted_summary["sorted"] == 60 and sorted_summary["good"] + sorted_summary["bad"] == 60
            from deployments.local_api import drain_prefect_workers

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
    factory = ReducerFactory(PoisonedReducer, str(tmp_path / "cal.json"), str(tmp_path / "out"), str(data),
                             str(tmp_path / "markers"), once)
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
