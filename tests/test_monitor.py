"""The live monitor's reading side and web app, on real flow outputs: runs found under output roots,
read per kind (SAXS, SFX from real flow runs; Laue and tomography records as the flows write them),
plots drawn, files never served from outside the roots, bad runs answered with a clear message."""

import json
import os
import shutil
import time
import warnings
from pathlib import Path

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

with warnings.catch_warnings():  # starlette's note that httpx2 is its future test client
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from monitor_helpers import run_saxs_flow, write_saxs_dataset

from photonflow.monitor import MonitorError, RunStore
from photonflow.monitor.app import COOKIE, create_app
from photonflow.monitor.runs import MAX_READERS, _FileCache, _JsonLines

GEOMETRY = "config/geometry/sim256.geom"
PNG = b"\x89PNG\r\n\x1a\n"


def client(roots, **kwargs) -> TestClient:
    return TestClient(create_app([str(r) for r in roots], **kwargs), base_url="http://127.0.0.1")


def run_id_of(store: RunStore, directory: Path) -> str:
    real = os.path.realpath(directory)
    ids = [i for i, (d, _) in store.scan(force=True).items() if d == real]
    assert ids, f"{directory} not found as a run"
    return ids[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture(scope="module")
def saxs_run(root, tmp_path_factory):
    cal, data = write_saxs_dataset(tmp_path_factory.mktemp("saxs-data"), 10)
    out = root / "saxs" / "run1"
    state = run_saxs_flow(cal, data, out, batch_size=4, workers=2)
    assert state.is_completed()
    return out, state


@pytest.fixture(scope="module")
def sfx_run(root, tmp_path_factory):
    from photonflow.flows.sfx import sfx_flow
    from photonflow.io.geom import load_geometry
    from photonflow.simulate.sfx import write_sfx_dataset

    ds = write_sfx_dataset(
        tmp_path_factory.mktemp("sfx-data") / "run", load_geometry(GEOMETRY), 12, frames_per_file=6, seed=3
    )
    out = root / "sfx"
    pf8 = {
        "adc_threshold": 100,
        "minimum_snr": 5,
        "min_pixel_count": 2,
        "max_pixel_count": 40,
        "local_bg_radius": 3,
        "max_res": 2000,
    }
    flow = sfx_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    state = flow(
        geometry=str(ds.geometry_path),
        inputs=[str(p) for p in ds.cxi_files],
        output_dir=str(out),
        batch_size=6,
        min_peaks=10,
        max_peaks=1000,
        peakfinder8=pf8,
        return_state=True,
    )
    assert state.is_completed()
    return out, state


def test_saxs_run_read_from_its_outputs(root, saxs_run):
    out, state = saxs_run
    store = RunStore([root])
    rid = run_id_of(store, out)
    assert rid in {r["id"] for r in store.runs()}
    info = store.run(rid)
    assert (info["kind"], info["state"], info["unit"]) == ("saxs", "completed", "frames")
    assert (info["total"], info["done"], info["failed"]) == (11, 10, 1)  # the garbage file failed
    assert info["history"] and info["history"][-1][2] == 10
    assert info["prefect"]["flow_run_id"] == str(state.state_details.flow_run_id)
    assert info["saxs"]["rows"] == 10 and info["saxs"]["curves"] == 10 and info["saxs"]["integrations"] == ["full"]
    assert info["saxs"]["curve_integration"] == "full" and info["saxs"]["curves_total"] == 10
    assert info["saxs"]["latest"]["I0"] > 0 and info["saxs"]["latest_curve"].startswith("frame_")
    assert info["plots"] == ["progress", "saxs-curve", "saxs-params"]
    assert {"summary.json", "run.json", "integral_parameters.csv", "curves.png"} <= {f["name"] for f in info["files"]}
    assert not info["message"] and not info["notes"]
    json.dumps(info, allow_nan=False)  # JSON-able as it is
    # the curves the plot reads are the run's .chi files, oldest first
    curves = store.curve_paths(rid)
    assert len(curves) == 10 and all(p.startswith(str(Path(out).resolve())) and p.endswith(".chi") for _, p in curves)


def test_plots_are_small_pngs_and_cached(root, saxs_run, sfx_run):
    c = client([root])
    runs = c.get("/api/runs").json()["runs"]
    assert {r["kind"] for r in runs} >= {"saxs", "sfx"}
    for r in runs:
        info = c.get(f"/api/runs/{r['id']}").json()
        for name in info["plots"]:
            t = time.perf_counter()
            resp = c.get(f"/api/runs/{r['id']}/plot/{name}", params={"sel": "0"} if name == "saxs-curve" else {})
            assert resp.status_code == 200, (name, resp.text)
            jpeg = name == "sfx-latest-hit"  # a detector image
            assert resp.headers["content-type"] == ("image/jpeg" if jpeg else "image/png")
            assert resp.content.startswith(b"\xff\xd8" if jpeg else PNG), name
            assert 5_000 < len(resp.content) < 150_000, (name, len(resp.content))
            first = time.perf_counter() - t
            t = time.perf_counter()
            again = c.get(f"/api/runs/{r['id']}/plot/{name}", params={"sel": "0"} if name == "saxs-curve" else {})
            assert again.content == resp.content and time.perf_counter() - t < max(first, 0.05)  # from the cache
    saxs = next(r for r in runs if r["kind"] == "saxs")
    bad = c.get(f"/api/runs/{saxs['id']}/plot/saxs-curve", params={"sel": "99"})
    assert bad.status_code == 404 and "10 curves" in bad.json()["error"]
    assert c.get(f"/api/runs/{saxs['id']}/plot/sfx-hits").status_code == 404
    assert "no plot 'nope'" in c.get(f"/api/runs/{saxs['id']}/plot/nope").json()["error"]


def test_sfx_run_hits_and_latest_hit(root, sfx_run):
    out, _ = sfx_run
    store = RunStore([root])
    rid = run_id_of(store, out)
    info = store.run(rid)
    summary = json.loads((out / "summary.json").read_text())
    assert info["kind"] == "sfx" and info["done"] == 12
    s = info["sfx"]
    assert s["frames"] == 12 and s["hits"] == summary["hits"] > 0
    assert s["hit_rate_percent"] == pytest.approx(summary["hit_rate_percent"])
    assert s["mean_peaks_per_frame"] == pytest.approx(summary["mean_peaks_per_frame"])
    hit = s["latest_hit"]
    assert hit["file"].startswith("hits/") and hit["n_peaks"] >= 10
    full = store.latest_hit(rid)
    assert full["frame"].ndim == 2 and len(full["fs"]) == hit["n_peaks"]
    assert info["plots"] == ["progress", "sfx-hits", "sfx-latest-hit"]


def test_older_run_without_record_is_recognised(root, saxs_run, tmp_path):
    out, _ = saxs_run
    old = tmp_path / "old"
    shutil.copytree(out, old / "saxs")
    (old / "saxs" / "run.json").unlink()
    (old / "saxs" / "live_rows.jsonl").unlink()
    (old / "strange").mkdir()
    (old / "strange" / "summary.json").write_text('{"something": 1}')
    store = RunStore([old])
    info = store.run(run_id_of(store, old / "saxs"))
    assert (info["kind"], info["state"], info["done"], info["failed"]) == ("saxs", "completed", 10, 1)
    assert "older run without run.json" in info["notes"][0]
    assert info["saxs"]["rows"] == 10 and info["saxs"]["curves"] == 10  # from the table and chi/
    assert info["plots"] == ["progress", "saxs-curve", "saxs-params"]
    strange = store.run(run_id_of(store, old / "strange"))
    assert strange["kind"] is None and "not a photonflow run" in strange["message"]


def _record(out: Path, **fields) -> dict:
    rec = {
        "format": "photonflow-run/1",
        "kind": "laue",
        "flow_name": "laue",
        "flow_run_id": "abc",
        "flow_run_name": "x",
        "prefect_ui_url": "http://127.0.0.1:4200/runs/flow-run/abc",
        "output_dir": str(out),
        "started": "2026-01-01T00:00:00.000000Z",
        "updated": "2026-01-01T00:00:05.000000Z",
        "finished": None,
        "state": "running",
        "error": None,
        "unit": "images",
        "total": 6,
        "arrived": 6,
        "done": 4,
        "failed": 0,
        "skipped": 0,
        "history": [[0.0, 6, 0, 0], [2.0, 6, 2, 0], [5.0, 6, 4, 0]],
        "stage": None,
    }
    rec.update(fields)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps(rec))
    return rec


def test_laue_maps_fill_in_and_tomo_chunks(tmp_path):
    laue = tmp_path / "laue"
    _record(laue, state="completed", finished="2026-01-01T00:00:05.000000Z")
    rows = [
        {
            "index": k,
            "path": f"img_{k}.tif",
            "event": -1,
            "map_row": k // 3,
            "map_col": k % 3,
            "x_um": 0.0,
            "y_um": 0.0,
            "n_spots": 10 + k,
            "n_good": 5 + k,
            "mean_sim": 0.5 + 0.1 * k,
            "n_not_fitted": 0,
            "status": "ok" if k != 3 else "cannot read",
            "spots_file": "",
            "seconds": 0.1,
        }
        for k in range(4)
    ]
    (laue / "live_rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tomo = tmp_path / "tomo"
    _record(
        tomo,
        kind="tomo",
        unit="chunks",
        total=5,
        done=3,
        stage="pass2",
        chunks={"pass1": ["done", "done"], "pass2": ["done", "pending", "failed"]},
    )
    c = client([tmp_path])
    runs = {r["kind"]: r for r in c.get("/api/runs").json()["runs"]}
    info = c.get(f"/api/runs/{runs['laue']['id']}").json()
    assert info["laue"] == {
        "images": 4,
        "images_failed": 1,
        "spots": 33,
        "good_spots": 18,
        "mean_sim": pytest.approx(0.6),
        "map_shape": [2, 3],
        "map_filled": 4,
    }
    assert info["rate_per_s"] == pytest.approx(0.8) and info["rate_recent_per_s"] == pytest.approx(0.8)
    assert info["prefect"]["url"] == "http://127.0.0.1:4200/runs/flow-run/abc"
    png = c.get(f"/api/runs/{runs['laue']['id']}/plot/laue-maps")
    assert png.status_code == 200 and png.content.startswith(PNG)
    info = c.get(f"/api/runs/{runs['tomo']['id']}").json()
    assert info["tomo"]["stage"] == "pass2" and info["tomo"]["volume"] is False
    assert info["tomo"]["chunks"]["pass2"] == {"total": 3, "pending": 1, "done": 1, "failed": 1}
    assert "tomo-slices" not in info["plots"]
    # a record cannot plant a script link
    _record(laue, state="completed", prefect_ui_url="javascript:alert(1)")
    assert c.get(f"/api/runs/{runs['laue']['id']}").json()["prefect"]["url"] is None


def test_live_rows_read_incrementally(tmp_path):
    path = tmp_path / "live_rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')  # the last line is still being written
    reader = _JsonLines(str(path))
    assert [r["a"] for r in reader.read("run1")] == [1, 2]
    with open(path, "a") as f:
        f.write("3}\nnot json\n")
    assert [r["a"] for r in reader.read("run1")] == [1, 2, 3] and reader.bad_lines == 1
    path.write_text('{"a": 10}\n')  # a new run truncates the file
    assert [r["a"] for r in reader.read("run1")] == [10]
    with open(path, "a") as f:
        f.write('{"a": 11}\n{"a": 12}\n')
    assert [r["a"] for r in reader.read("run2")] == [10, 11, 12]  # a new run start re-reads from the top


def test_files_parsed_again_only_when_changed(tmp_path):
    calls = []

    def parse(p):
        calls.append(p)
        return Path(p).read_text()

    cache = _FileCache()
    f = tmp_path / "x.json"
    f.write_text("one")
    assert cache.get(str(f), parse) == "one" and cache.get(str(f), parse) == "one"
    assert len(calls) == 1
    f.write_text("two!")
    assert cache.get(str(f), parse) == "two!" and len(calls) == 2


def test_files_outside_the_roots_are_never_served(tmp_path):
    root = tmp_path / "root"
    run = root / "run"
    _record(run)
    (run / "report.pdf").write_bytes(b"%PDF-1.4 report")
    (run / "page.html").write_text("<script>alert(1)</script>")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (run / "link_out.txt").symlink_to(secret)
    (run / "dir_out").symlink_to(tmp_path, target_is_directory=True)
    (root / "sibling.txt").write_text("not this run's")
    c = client([root])
    rid = c.get("/api/runs").json()["runs"][0]["id"]
    ok = c.get(f"/files/{rid}/report.pdf")
    assert (
        ok.status_code == 200 and ok.content == b"%PDF-1.4 report" and ok.headers["content-type"] == "application/pdf"
    )
    # no sandboxing CSP on a PDF (Chrome's PDF viewer refuses a sandboxed one); its type forced, never sniffed
    assert "sandbox" not in ok.headers.get("content-security-policy", "")
    assert ok.headers["x-content-type-options"] == "nosniff" and "attachment" not in ok.headers.get(
        "content-disposition", ""
    )
    assert {"name": "report.pdf", "url": f"/files/{rid}/report.pdf"} in c.get(f"/api/runs/{rid}").json()["files"]
    table = c.get(f"/files/{rid}/run.json")
    assert (
        "sandbox" in table.headers["content-security-policy"] and table.headers["x-content-type-options"] == "nosniff"
    )
    html = c.get(f"/files/{rid}/page.html")  # not a known output type: a download, never a page of this origin
    assert (
        html.headers["content-type"] == "application/octet-stream"
        and "attachment" in html.headers["content-disposition"]
    )
    assert "sandbox" in html.headers["content-security-policy"]
    for path in (
        "link_out.txt",
        "dir_out/secret.txt",
        "../sibling.txt",
        "..%2Fsibling.txt",
        "%2e%2e/%2e%2e/secret.txt",
        "%2Fetc%2Fpasswd",
        "dir_out/../../secret.txt",
    ):
        resp = c.get(f"/files/{rid}/{path}")
        assert resp.status_code in (403, 404), (path, resp.status_code)
        assert (
            b"top secret" not in resp.content and b"not this run" not in resp.content and b"root:" not in resp.content
        )
        assert "error" in resp.json()
    store = RunStore([root])
    for bad in ("link_out.txt", "../sibling.txt", "/etc/passwd", "dir_out/secret.txt", "", "a\x00b"):
        with pytest.raises(MonitorError) as err:
            store.resolve_file(rid, bad)
        assert err.value.status == 403
    assert store.resolve_file(rid, "report.pdf") == str((run / "report.pdf").resolve())
    assert c.get(f"/files/{rid}/missing.pdf").status_code == 404
    # a row of the run's own table cannot make the plots read a file outside it either
    saxs = root / "saxs"
    _record(saxs, kind="saxs", unit="frames")
    (saxs / "live_rows.jsonl").write_text(
        json.dumps({"frame": "x", "integration": "a", "time": 1.0, "I0": 1.0, "chi": "../../secret.txt"}) + "\n"
    )
    assert store.curve_paths(run_id_of(store, saxs)) == []


def test_discovery_skips_bulky_folders_and_links_out(tmp_path):
    root = tmp_path / "root"
    _record(root / "a")
    _record(root / "a" / "chi" / "not-a-run")
    outside = tmp_path / "elsewhere"
    _record(outside / "run")
    (root / "link").symlink_to(outside, target_is_directory=True)
    store = RunStore([root])
    assert [os.path.basename(d) for d, _ in store.scan(force=True).values()] == ["a"]


def test_bad_runs_give_a_message_not_an_error(tmp_path):
    root = tmp_path / "root"
    cases = {
        "half": '{"format": "photonflow-run/1", "kind": "sa',
        "list": "[1, 2]",
        "other": '{"format": "something-else/2"}',
        "empty": "",
    }
    for name, text in cases.items():
        (root / name).mkdir(parents=True)
        (root / name / "run.json").write_text(text)
    _record(root / "failed", state="failed", error="pass 1 failed, no volume written")
    _record(root / "gone")
    c = client([root])
    runs = {r["name"].split("/")[-1]: r for r in c.get("/api/runs").json()["runs"]}
    for name in cases:
        resp = c.get(f"/api/runs/{runs[name]['id']}")
        assert resp.status_code == 200
        assert "run.json" in resp.json()["message"], (name, resp.json()["message"])
        assert c.get(f"/api/runs/{runs[name]['id']}/plot/progress").status_code == 404
    failed = c.get(f"/api/runs/{runs['failed']['id']}").json()
    assert failed["state"] == "failed" and "pass 1 failed" in failed["message"]
    shutil.rmtree(root / "gone")  # vanished between the list and the read
    resp = c.get(f"/api/runs/{runs['gone']['id']}")
    assert resp.status_code == 404 and "is gone" in resp.json()["error"]
    resp = c.get("/api/runs/does-not-exist")
    assert resp.status_code == 404 and resp.json()["error"].startswith("no run 'does-not-exist'")
    assert c.get("/api/nothing").status_code == 404 and "error" in c.get("/api/nothing").json()
    # a running SAXS run whose curve files vanished: the plot says so, the page data still answer
    saxs = root / "saxs"
    _record(saxs, kind="saxs", unit="frames")
    (saxs / "live_rows.jsonl").write_text(
        json.dumps({"frame": "f", "integration": "a", "time": 1.0, "I0": 1.0, "chi": "chi/f_a.chi"}) + "\n"
    )
    rid = run_id_of(c.app.store, saxs)  # (the list itself is rescanned every few seconds)
    assert c.get(f"/api/runs/{rid}").status_code == 200
    resp = c.get(f"/api/runs/{rid}/plot/saxs-curve")
    assert resp.status_code == 404 and "no I(q) curve" in resp.json()["error"]


def test_token_and_loopback_host(tmp_path):
    _record(tmp_path / "run")
    c = client([tmp_path])
    assert c.get("/api/runs").status_code == 200
    refused = c.get("/api/runs", headers={"host": "attacker.example:8765"})
    assert refused.status_code == 421 and "loopback" in refused.json()["error"]

    c = client([tmp_path], token="s3cret")
    assert c.get("/api/runs", headers={"host": "beamline.example"}).status_code == 401
    assert c.get("/?token=wrong").status_code == 401
    first = c.get("/?token=s3cret&x=1", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/?x=1"
    assert "httponly" in first.headers["set-cookie"].lower() and COOKIE in first.headers["set-cookie"]
    assert c.get("/api/runs").status_code == 200  # the cookie from now on
    other = client([tmp_path], token="s3cret")
    assert other.get("/api/runs", headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert other.get("/api/runs", headers={"x-photonflow-token": "s3cret"}).status_code == 200
    assert other.get("/api/runs", headers={"authorization": "Bearer nope"}).status_code == 401
    page = other.get("/", headers={"authorization": "Bearer s3cret"})
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_cli_monitor_errors_and_help(tmp_path, capsys):
    from photonflow.deployments.cli import build_parser, main

    assert main(["monitor", str(tmp_path / "missing")]) == 2
    assert "output root is not a directory" in capsys.readouterr().err
    assert main(["monitor", str(tmp_path), "--interval", "0"]) == 2
    args = build_parser().parse_args(["monitor", str(tmp_path)])
    assert (args.port, args.host, args.token, args.interval) == (8765, "127.0.0.1", None, 2.0)


@pytest.fixture(scope="module")
def tomo_run(root, tmp_path_factory):
    import h5py

    from photonflow.flows.tomo import tomo_flow
    from photonflow.simulate.tomo import simulate_scan, write_tomo_scan

    data = tmp_path_factory.mktemp("tomo-data")
    scan = simulate_scan(n_rows=8, n_cols=96, n_angles=120, photons=20000, seed=1)
    path = write_tomo_scan(data / "scan.h5", scan)
    out = root / "tomo"
    flow = tomo_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    summary = flow(inputs=[str(path)], output_dir=str(out), chunks={"projections": 40, "rows": 4})
    with h5py.File(out / "volume.h5", "r") as f:
        assert f["volume"].shape[0] == 8
    return out, summary


def test_tomo_run_chunks_slices_and_report(root, tomo_run):
    out, summary = tomo_run
    c = client([root])
    store = c.app.store
    rid = run_id_of(store, out)
    info = c.get(f"/api/runs/{rid}").json()
    assert (info["kind"], info["state"], info["unit"], info["stage"]) == ("tomo", "completed", "chunks", "done")
    chunks = info["tomo"]["chunks"]
    assert (
        chunks["pass1"]["done"] == chunks["pass1"]["total"] == 3
        and chunks["pass2"]["done"] == chunks["pass2"]["total"] == 2
    )
    assert info["done"] == 5 and info["tomo"]["volume"] and info["tomo"]["report"]
    assert info["plots"] == ["progress", "tomo-slices"]
    png = c.get(f"/api/runs/{rid}/plot/tomo-slices")
    assert png.status_code == 200 and png.content.startswith(PNG)
    pdf = c.get(f"/files/{rid}/report.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_cli_generates_a_token_off_loopback(tmp_path, capsys, monkeypatch):
    import uvicorn

    from photonflow.deployments.cli import main

    served = {}
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: served.update(sockets=sockets, gate=self.config.app)
    )
    assert main(["monitor", str(tmp_path), "--host", "0.0.0.0", "--port", "0"]) == 0
    out = capsys.readouterr().out
    token = out.split("?token=")[1].split()[0]
    assert len(token) >= 24 and "a token was generated" in out
    assert served["gate"].token == token and served["gate"].allowed_hosts is None
    assert main(["monitor", str(tmp_path), "--port", "0"]) == 0  # loopback: no token, loopback Host names only
    out = capsys.readouterr().out
    assert "?token=" not in out and out.strip().split()[-1].startswith("http://127.0.0.1:")
    assert served["gate"].token is None and "127.0.0.1" in served["gate"].allowed_hosts


def test_real_laue_run_fills_its_maps(tmp_path):
    """A real Laue flow on a simulated 2 × 3 raster: the monitor's counts and map equal the flow's."""
    from photonflow.flows.laue import laue_flow
    from photonflow.simulate.laue import write_laue_scan

    scan = write_laue_scan(tmp_path / "data", 2, 3, shape=(256, 256), n_spots=12, seed=4)
    out = tmp_path / "outputs" / "laue"
    flow = laue_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    summary = flow(
        inputs=[str(p) for p in scan["images"]], output_dir=str(out), positions=str(scan["positions"]), batch_size=2
    )
    c = client([tmp_path / "outputs"])
    rid = run_id_of(c.app.store, out)
    info = c.get(f"/api/runs/{rid}").json()
    assert (info["kind"], info["state"], info["done"], info["total"]) == ("laue", "completed", 6, 6)
    assert info["laue"]["images"] == 6 and info["laue"]["map_shape"] == [2, 3] and info["laue"]["map_filled"] == 6
    assert info["laue"]["spots"] == summary["spots"] and info["laue"]["good_spots"] == summary["good_spots"]
    assert "laue-maps" in info["plots"]
    png = c.get(f"/api/runs/{rid}/plot/laue-maps")
    assert png.status_code == 200 and png.content.startswith(PNG)


def test_real_watch_run_shows_its_frames(tmp_path):
    """A real saxs-live watch (frames already in the watched directory, caught up, then idle):
    its record counts what its ledger says, and its curves and parameters are plotted."""
    from photonflow.flows.live import saxs_live_flow
    from photonflow.realtime.ledger import Ledger

    # (no garbage file here: the watcher may hold an unreadable .tif for its give-up time, 30 s)
    cal, data = write_saxs_dataset(tmp_path / "ds", 6, bad=False)
    out = tmp_path / "outputs" / "live"
    config = tmp_path / "watch.json"
    config.write_text(
        json.dumps(
            {
                "calibration": str(cal),
                "output_dir": str(out),
                "directories": [str(data)],
                "inotify": False,
                "settle_s": 0.1,
            }
        )
    )
    summary = saxs_live_flow(config=str(config), idle_timeout_s=3.0)
    assert summary["done"] == 6 and summary["failed"] == 0
    c = client([tmp_path / "outputs"])
    rid = run_id_of(c.app.store, out)
    info = c.get(f"/api/runs/{rid}").json()
    with Ledger(out / "ledger.sqlite") as ledger:
        counts = ledger.counts()
    assert (info["kind"], info["state"]) == ("saxs-live", "completed")
    assert (info["arrived"], info["done"], info["failed"]) == (6, counts["done"], counts["failed"]) == (6, 6, 0)
    assert info["total"] is None and info["saxs"]["curves"] == 6
    assert {"progress", "saxs-curve", "saxs-params"} <= set(info["plots"])


def test_summaries_follow_appended_rows_and_a_new_run(tmp_path):
    """The per-run summaries fold in only the appended rows, and start again for a new run."""
    out = tmp_path / "sfx"
    _record(out, kind="sfx", unit="frames", total=None)
    store = RunStore([tmp_path])
    rid = run_id_of(store, out)

    def append(rows):
        with open(out / "live_rows.jsonl", "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))

    append([{"frame": f"f{k}", "n_peaks": k, "hit": k >= 2} for k in range(4)])  # 2 hits, 6 peaks
    assert {k: store.run(rid)["sfx"][k] for k in ("frames", "hits", "mean_peaks_per_frame")} == {
        "frames": 4,
        "hits": 2,
        "mean_peaks_per_frame": 1.5,
    }
    append([{"frame": "f4", "n_peaks": 10, "hit": True}])
    assert {k: store.run(rid)["sfx"][k] for k in ("frames", "hits", "mean_peaks_per_frame")} == {
        "frames": 5,
        "hits": 3,
        "mean_peaks_per_frame": 3.2,
    }
    time.sleep(0.01)
    _record(out, kind="sfx", unit="frames", total=None, started="2026-01-02T00:00:00.000000Z")  # a new run
    (out / "live_rows.jsonl").write_text(json.dumps({"frame": "g0", "n_peaks": 1, "hit": False}) + "\n")
    assert {k: store.run(rid)["sfx"][k] for k in ("frames", "hits", "mean_peaks_per_frame")} == {
        "frames": 1,
        "hits": 0,
        "mean_peaks_per_frame": 1.0,
    }


def _now_iso(offset_s: float = 0.0) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(time.time() + offset_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_odd_values_in_a_run_do_not_break_the_list(tmp_path, monkeypatch):
    """Summaries and records with values of the wrong type: the list and each run still answer."""
    root = tmp_path / "root"
    summaries = {
        "saxs": {"frames_done": "ten", "frames_failed": [1], "frames_skipped": {"a": 1}},
        "tomo": {"volume": "v.h5", "plan": {}, "pass1_chunk_s": 3, "pass2_chunk_s": {"a": 1}},
        "laue": {"images_done": float("inf"), "images_failed": None},
        "sfx": {"hit_rate_percent": "x", "frames_done": 1e400},
    }
    for name, summary in summaries.items():
        (root / f"old-{name}").mkdir(parents=True)
        (root / f"old-{name}" / "summary.json").write_text(json.dumps(summary))
    _record(
        root / "list-kind",
        kind=["laue"],
        unit=7,
        total="many",
        history=[[0, float("nan"), 1, 2], "x"],
        chunks={"pass1": "all", "pass2": [1, None]},
        stage={"a": 1},
        error=["e"],
        started=5,
    )
    _record(root / "dict-kind", kind={"k": 1}, state=None, arrived=float("inf"))
    _record(root / "fine")
    c = client([root])
    resp = c.get("/api/runs")
    assert resp.status_code == 200
    runs = {r["name"].split("/")[-1]: r for r in resp.json()["runs"]}
    assert set(runs) == {*(f"old-{n}" for n in summaries), "list-kind", "dict-kind", "fine"}
    assert runs["old-tomo"]["kind"] == "tomo" and runs["old-tomo"]["done"] == 0
    assert runs["list-kind"]["kind"] is None and runs["list-kind"]["total"] is None
    for r in runs.values():
        assert c.get(f"/api/runs/{r['id']}").status_code == 200, r["name"]
    assert c.get(f"/api/runs/{runs['list-kind']['id']}").json()["chunks"] == {"pass2": ["1", "None"]}
    # whatever else goes wrong reading one run: that run says so in the list, the others are listed
    store = c.app.store
    real_base = store._base
    monkeypatch.setattr(
        store,
        "_base",
        lambda rid: (_ for _ in ()).throw(KeyError("boom")) if rid == runs["fine"]["id"] else real_base(rid),
    )
    listed = {r["id"]: r for r in store.runs()}
    assert len(listed) == len(runs) and "KeyError" in listed[runs["fine"]["id"]]["message"]
    assert listed[runs["fine"]["id"]]["state"] == "unknown"


def test_recent_rate_goes_to_zero_when_a_running_run_is_idle(tmp_path):
    out = tmp_path / "watch"
    history = [[0.0, 0, 0, 0], [5.0, 4, 4, 0], [9.0, 8, 8, 0]]
    _record(out, kind="saxs-live", total=None, started=_now_iso(-9.5), updated=_now_iso(), history=history)
    store = RunStore([tmp_path])
    rid = run_id_of(store, out)
    info = store.run(rid)
    assert info["rate_recent_per_s"] == pytest.approx(8 / 9.5, rel=0.05)  # younger than the window: since the start
    # the same counts 60 s after the start: nothing was done in the last 10 s
    time.sleep(0.02)  # (a new modification time: the record is read again)
    _record(out, kind="saxs-live", total=None, started=_now_iso(-60), updated=_now_iso(), history=history)
    info = store.run(rid)
    assert info["rate_recent_per_s"] == 0.0 and info["rate_per_s"] == pytest.approx(8 / 60, rel=0.05)
    # a finished run: the rate over its own last 10 s
    time.sleep(0.02)
    _record(
        out,
        kind="saxs-live",
        total=None,
        started=_now_iso(-60),
        state="completed",
        history=[[0.0, 0, 0, 0], [10.0, 10, 10, 0], [20.0, 30, 30, 0]],
    )
    assert store.run(rid)["rate_recent_per_s"] == pytest.approx(2.0)


def test_summaries_are_snapshots_not_shared_state(tmp_path):
    """What _fold hands out shares nothing mutable with the state other threads keep folding into."""
    import threading

    out = tmp_path / "saxs"
    _record(out, kind="saxs", unit="frames", total=None)
    store = RunStore([tmp_path])
    run_dir = os.path.realpath(out)
    rows = [{"frame": f"f{k}", "integration": "ab"[k % 2], "chi": f"chi/f{k}.chi"} for k in range(6)]
    first = store._saxs_state(run_dir, rows[:4])
    assert first["frames"] == 4 and first["integrations"] == ("a", "b")
    assert all(isinstance(v, tuple) for v in first["curves"].values())
    second = store._saxs_state(run_dir, rows)  # the same rows and two more: folded in place
    assert {k: len(v) for k, v in first["curves"].items()} == {"a": 2, "b": 2}  # the old snapshot did not move
    assert {k: len(v) for k, v in second["curves"].items()} == {"a": 3, "b": 3} and second["latest"] == "b"
    # many threads folding and reading at once: no "changed size during iteration", consistent counts
    errors, grown = [], list(rows)

    def work(k):
        try:
            for j in range(200):
                mine = grown + [{"frame": f"t{k}-{j}", "integration": f"i{j % 7}", "chi": f"chi/t{k}{j}.chi"}]
                snap = store._saxs_state(run_dir, mine)
                assert sorted(snap["integrations"]) == list(snap["integrations"])
                assert sum(len(v) for v in snap["curves"].values()) >= len(rows)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_allowed_host_includes_another_loopback_address(tmp_path, capsys, monkeypatch):
    import uvicorn

    from photonflow.deployments.cli import main

    _record(tmp_path / "run")
    served = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.update(gate=self.config.app))
    assert main(["monitor", str(tmp_path), "--host", "127.0.0.2", "--port", "0"]) == 0
    out = capsys.readouterr().out
    assert "?token=" not in out and "http://127.0.0.2:" in out
    gate = served["gate"]
    assert gate.token is None and "127.0.0.2" in gate.allowed_hosts
    port = out.split("http://127.0.0.2:")[1].split("/")[0]
    c = TestClient(gate, base_url=f"http://127.0.0.2:{port}")
    assert c.get("/api/runs").status_code == 200  # the Host it was opened with is its own address
    assert c.get("/api/runs", headers={"host": "attacker.example"}).status_code == 421
    # a token of the user's choice is URL-encoded in the printed URL
    assert main(["monitor", str(tmp_path), "--host", "0.0.0.0", "--port", "0", "--token", "a b/c&d"]) == 0
    out = capsys.readouterr().out
    assert "?token=a%20b%2Fc%26d" in out and served["gate"].token == "a b/c&d"


def _write_hits(path: Path, n: int, frames: bool = True) -> None:
    import h5py
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        res = f.create_group("/entry_1/result_1")
        res["nPeaks"] = np.full(n, 2, np.int32)
        res["peakXPosRaw"] = np.ones((n, 4), np.float32)
        res["peakYPosRaw"] = np.ones((n, 4), np.float32)
        res["peakTotalIntensity"] = np.ones((n, 4), np.float32)  # as photonflow.io.write_cxi_peaks writes
        if frames:
            f["/entry_1/data_1/data"] = np.arange(n * 64, dtype=np.float32).reshape(n, 8, 8)


def test_leftovers_of_an_earlier_run_are_not_shown(tmp_path):
    out = tmp_path / "sfx"
    _write_hits(out / "hits" / "old.cxi", 3)
    (out / "report.pdf").write_bytes(b"%PDF old")
    (out / "frames.csv").write_text("frame,hit\nold,True\n")
    old = time.time() - 3600
    for p in (out / "hits" / "old.cxi", out / "report.pdf", out / "frames.csv"):
        os.utime(p, (old, old))
    _record(out, kind="sfx", unit="frames", total=None, started=_now_iso(), updated=_now_iso())
    (out / "live_rows.jsonl").write_text(json.dumps({"frame": "new", "n_peaks": 2, "hit": True}) + "\n")
    store = RunStore([tmp_path])
    rid = run_id_of(store, out)
    info = store.run(rid)
    assert info["sfx"]["latest_hit"] is None and "sfx-latest-hit" not in info["plots"]
    assert {f["name"] for f in info["files"]} == {"run.json"}
    # this run's own hits file (without frames: no latest-hit picture offered), then one with frames
    _write_hits(out / "hits" / "new.cxi", 1, frames=False)
    info = store.run(rid)
    assert info["sfx"]["latest_hit"]["file"] == os.path.join("hits", "new.cxi")
    assert info["sfx"]["latest_hit"]["has_frame"] is False and "sfx-latest-hit" not in info["plots"]
    time.sleep(0.02)
    _write_hits(out / "hits" / "newer.cxi", 2)
    info = store.run(rid)
    assert info["sfx"]["latest_hit"]["row"] == 1 and "sfx-latest-hit" in info["plots"]
    # without a record nothing is dropped (an older run is all its files)
    (out / "summary.json").write_text(json.dumps({"frames_done": 1, "hit_rate_percent": 100.0}))
    (out / "run.json").unlink()
    (out / "live_rows.jsonl").unlink()
    assert "report.pdf" in {f["name"] for f in store.run(rid)["files"]}
    # a tomography directory: an earlier run's report is not this run's
    tomo = tmp_path / "tomo"
    tomo.mkdir()
    (tomo / "report.pdf").write_bytes(b"%PDF old")
    os.utime(tomo / "report.pdf", (old, old))
    _record(tomo, kind="tomo", unit="chunks", started=_now_iso(), stage="pass1")
    info = store.run(run_id_of(store, tomo))
    assert info["tomo"]["report"] is False and "report.pdf" not in {f["name"] for f in info["files"]}


def test_saxs_curves_are_kept_per_integration(tmp_path):
    out = tmp_path / "saxs"
    _record(out, kind="saxs", unit="frames", total=None)
    (out / "chi").mkdir()
    rows = []
    for k, integ in enumerate("ababa" + "b"):  # a: 3 curves, b: 3 curves; the newest is b's
        chi = f"chi/f{k}_{integ}.chi"
        (out / chi).write_text("".join(f"{q:.3f} {100.0 / (1 + k + q)}\n" for q in (0.1, 0.2, 0.4, 0.8)))
        rows.append({"frame": f"f{k}.tif", "integration": integ, "time": float(k), "I0": 1.0 + k, "chi": chi})
    rows.append({"frame": "f9.tif", "integration": "c", "time": 9.0, "I0": 2.0})  # a row without a curve
    (out / "live_rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = client([tmp_path])
    rid = run_id_of(c.app.store, out)
    s = c.get(f"/api/runs/{rid}").json()["saxs"]
    assert (s["curve_integration"], s["curves"], s["curves_total"]) == ("b", 3, 6)
    assert s["curves_by_integration"] == {"a": 3, "b": 3} and s["latest_curve"] == "f5.tif (b)"
    assert s["integrations"] == ["a", "b", "c"] and s["latest_integration"] == "c"
    plot = f"/api/runs/{rid}/plot/saxs-curve"
    # the slider's last position (curves - 1) is a curve the plot accepts; one past it is not
    for params in ({"sel": str(s["curves"] - 1), "integration": "b"}, {"sel": "0"}, {"sel": "2", "integration": "a"}):
        resp = c.get(plot, params=params)
        assert resp.status_code == 200 and resp.content.startswith(PNG), (params, resp.text)
    resp = c.get(plot, params={"sel": str(s["curves"]), "integration": "b"})
    assert resp.status_code == 404 and "3 curves" in resp.json()["error"]
    resp = c.get(plot, params={"integration": "zz"})
    assert resp.status_code == 404 and "no curves of integration 'zz'" in resp.json()["error"]
    store = c.app.store
    assert [label for label, _ in store.curve_paths(rid)] == ["f1.tif (b)", "f3.tif (b)", "f5.tif (b)"]
    assert [label for label, _ in store.curve_paths(rid, "a", indices=[2])] == ["f4.tif (a)"]


def test_laue_map_shape_from_the_record_and_growing_rows(tmp_path):
    from photonflow.monitor import plots

    out = tmp_path / "laue"
    _record(out, total=12, map_shape=[3, 4])
    rows = [
        {"index": k, "map_row": k // 4, "map_col": k % 4, "n_good": k, "mean_sim": 0.5, "status": "ok"}
        for k in range(2)
    ]
    rows.append({"index": 99, "map_row": -1, "map_col": 2, "n_good": 1, "mean_sim": 0.5, "status": "ok"})  # no place
    (out / "live_rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = client([tmp_path])
    store = c.app.store
    rid = run_id_of(store, out)
    info = store.run(rid)
    assert info["laue"]["map_shape"] == [3, 4] and info["laue"]["map_filled"] == 2  # the whole scan's, from the start
    # rows arriving between reading the run and drawing its map (beyond the shape the page was given)
    with open(out / "live_rows.jsonl", "a") as f:
        f.write(
            json.dumps({"index": 20, "map_row": 5, "map_col": 6, "n_good": 3, "mean_sim": 0.7, "status": "ok"}) + "\n"
        )
    fig = plots._laue_maps(store, rid, info, {})()
    assert fig.axes[0].images[0].get_array().shape == (6, 7)
    assert c.get(f"/api/runs/{rid}/plot/laue-maps").status_code == 200
    assert store.run(rid)["laue"]["map_shape"] == [6, 7]
    time.sleep(0.02)
    _record(out, total=12, map_shape="3x4")  # not a shape: as far as the rows reach
    assert store.run(rid)["laue"]["map_shape"] == [6, 7]


def test_live_row_readers_are_bounded(tmp_path):
    store = RunStore([tmp_path])
    for k in range(MAX_READERS + 5):
        out = tmp_path / f"r{k}"
        _record(out, kind="sfx", unit="frames")
        (out / "live_rows.jsonl").write_text(json.dumps({"frame": k, "hit": False}) + "\n")
        assert store.rows(run_id_of(store, out))[0]["frame"] == k
    assert len(store._lines) == MAX_READERS
