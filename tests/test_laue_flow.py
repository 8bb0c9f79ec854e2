"""The Laue flow end to end: a real Prefect run over the real BM32 images (with a broken file), the
spot tables against LaueTools' own peak lists, map placement, and the command line."""

import json

import numpy as np
import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from photonflow.deployments.cli import main
from photonflow.flows.laue import laue_flow
from photonflow.io import read_table_csv
from photonflow.io.tables import read_table_hdf5
from photonflow.laue import SearchParams, read_laue_image, read_lauetools_dat
from photonflow.laue.scan import SPOT_COLUMNS, LaueSettings, read_positions_csv, scan_maps, scan_positions, spot_table


def _match(ref, pos, radius=1.5):
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pos).query(ref)
    m = d <= radius
    return m.mean(), np.median(d[m])


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    laue = shared_data / "laue"
    root = tmp_path_factory.mktemp("laue")
    (root / "broken.tif").write_bytes(b"II*\x00 this is not a whole TIFF")
    images = [laue / "AH12_CMT_r14_0000.tif", laue / "Ge_blanc_0000.mccd", root / "broken.tif"]
    positions = root / "positions.csv"
    positions.write_text("image,x,y\nAH12_CMT_r14_0000.tif,0,0\nGe_blanc_0000.mccd,5,0\nbroken.tif,0,5\n")
    out = root / "out"
    flow = laue_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    summary = flow(
        inputs=[str(p) for p in images],
        output_dir=str(out),
        search={"IntensityThreshold": 100},
        positions=str(positions),
        batch_size=2,
    )
    return {"out": out, "summary": summary, "laue": laue}


def test_good_images_done_broken_one_named(run):
    s = run["summary"]
    assert s["done"] == 2 and s["failed"] == 1
    assert len(s["failures"]) == 1 and "broken.tif" in s["failures"][0]
    images = read_table_csv(run["out"] / "images.csv")
    assert list(images["status"][:2]) == ["ok", "ok"] and "broken.tif" in images["status"][2]
    assert json.loads((run["out"] / "summary.json").read_text())["spots"] == s["spots"]


def test_spot_tables_h5_csv_and_counts(run):
    images = read_table_csv(run["out"] / "images.csv")
    for k in range(2):
        h5 = read_table_hdf5(images["spots_file"][k], group="spots")
        csv = read_table_csv(str(images["spots_file"][k]).replace(".h5", ".csv"))
        assert list(h5) == SPOT_COLUMNS
        assert len(h5["row"]) == images["n_spots"][k]
        assert int(np.sum(h5["quality"])) == images["n_good"][k]
        ok = h5["status"] == "ok"
        assert np.allclose(h5["row"][ok], csv["row"][ok]) and np.allclose(h5["Sim"][ok], csv["Sim"][ok])
        assert images["n_not_fitted"][k] == np.count_nonzero(~ok)
        # intensity is the Gaussian's integral 2π α σ1 σ2
        assert np.allclose(h5["intensity"][ok], 2 * np.pi * h5["amplitude"][ok] * h5["sigma1"][ok] * h5["sigma2"][ok])
    assert sum(run["summary"]["spots_not_fitted_by_reason"].values()) == run["summary"]["spots_not_fitted"]


def test_positions_agree_with_lauetools(run):
    """The flow's tables against the peak lists LaueTools wrote for the same images (1-based X, Y)."""
    images = read_table_csv(run["out"] / "images.csv")
    spots = read_table_hdf5(images["spots_file"][1], group="spots")  # Ge_blanc (MarCCD)
    lt = read_lauetools_dat(run["laue"] / "Ge_blanc_0000.dat")
    ref = np.c_[lt[:, 1] - 1, lt[:, 0] - 1]
    ok = spots["status"] == "ok"
    frac, off = _match(ref, np.c_[spots["row"], spots["col"]][ok])
    print(f"Ge_blanc via the flow: {frac:.3f} of LaueTools' peaks matched, median offset {off:.4f} px")
    assert frac >= 0.85 and off < 0.05
    spots = read_table_hdf5(images["spots_file"][0], group="spots")  # AH12 (sCMOS)
    lt = read_lauetools_dat(run["laue"] / "AH12_CMT_r14_0000_LT_0.dat")
    ref = np.c_[lt[:, 1] - 1, lt[:, 0] - 1]
    described = np.array([s == "ok" or s.startswith("undersampled") for s in spots["status"]])
    frac, off = _match(ref, np.c_[spots["row"], spots["col"]][described])
    print(f"AH12 via the flow: {frac:.3f} matched, median offset {off:.4f} px")
    assert frac >= 0.95 and off < 0.05


def test_maps_placed_by_positions(run):
    images = read_table_csv(run["out"] / "images.csv")
    assert list(images["map_row"]) == [0, 0, 1] and list(images["map_col"]) == [0, 1, 0]
    rows = [{k: images[k][i] for k in images} for i in range(3)]
    maps = scan_maps(rows)
    assert maps["n_good"][0, 0] == images["n_good"][0] and maps["n_good"][0, 1] == images["n_good"][1]
    assert np.isnan(maps["n_good"][1, 0])  # the broken image
    assert (run["out"] / "map_good_spots.png").stat().st_size > 1000
    assert (run["out"] / "map_mean_sim.png").stat().st_size > 1000


def test_edge_and_unconverged_spots_are_recorded(shared_data):
    im = read_laue_image(shared_data / "laue" / "Ge_blanc_0000.mccd")
    seeds = np.array([[3, 1000], [1000, 2040], [1000, 1000]])  # two at the edge, one in flat background
    table = spot_table(im, seeds, LaueSettings())
    assert list(table["status"][:2]) == ["edge", "edge"]
    assert np.isnan(table["row"][:2]).all() and not table["quality"][:2].any()
    assert table["status"][2] != "edge"


def test_scan_positions_raster_snake_and_errors(tmp_path):
    refs = [(f"/d/img_{k:04d}.tif", None) for k in range(6)]
    assert [(p["map_row"], p["map_col"]) for p in scan_positions(refs, scan_shape=(2, 3))] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 1),
        (1, 2),
    ]
    assert [(p["map_row"], p["map_col"]) for p in scan_positions(refs, scan_shape=(2, 3), snake=True)][3:] == [
        (1, 2),
        (1, 1),
        (1, 0),
    ]
    with pytest.raises(ValueError, match="holds 4 images"):
        scan_positions(refs, scan_shape=(2, 2))
    bad = tmp_path / "pos.csv"
    bad.write_text("image,x,y\nimg_0000.tif,1,a\n")
    with pytest.raises(ValueError, match="pos.csv line 2"):
        read_positions_csv(bad)
    good = tmp_path / "good.csv"
    good.write_text("image,x,y\nimg_0000.tif,10,20\n")
    with pytest.raises(ValueError, match="no map position for 5 image"):
        scan_positions(refs, read_positions_csv(good))


def test_cli_laue_config_errors(tmp_path, capsys):
    cfg = tmp_path / "run.json"
    cfg.write_text(
        json.dumps({"inputs": ["x.tif"], "output_dir": "o", "method": "magic", "search": {"IntensityThreshold": -3}})
    )
    assert main(["laue", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "method" in err and "magic" in err and "search.IntensityThreshold" in err
    assert main(["validate", str(cfg)]) == 2  # recognised as a laue run
    assert main(["laue", "--out", "o"]) == 2
    assert "INPUT" in capsys.readouterr().err
    assert main(["laue", "x.tif", "--out", "o", "--rotated", "--pixel-integrated"]) == 2
    assert "axis-aligned" in capsys.readouterr().err


def test_search_params_reach_the_flow(run):
    assert run["summary"]["settings"]["search"] == {**SearchParams().__dict__, "IntensityThreshold": 100}


def test_cnn_method_through_the_flow(shared_data, tmp_path):
    """method "cnn": the shipped network describes the spots; positions agree with LaueTools'."""
    import subprocess
    import sys

    laue = shared_data / "laue"
    # through the command line, in its own process (thread-pool profile): torch work inside Prefect
    # tasks of the test process was followed by lost events in a later test (see test_live)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "photonflow.deployments.cli",
            "laue",
            str(laue / "Ge_blanc_0000.mccd"),
            "--out",
            str(tmp_path),
            "--method",
            "cnn",
            "--threshold",
            "100",
            "--cluster",
            "threads",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["done"] == 1 and summary["method"] == "cnn"
    spots = read_table_hdf5(tmp_path / "spots" / "Ge_blanc_0000.h5", group="spots")
    ok = spots["status"] == "ok"
    assert np.isnan(spots["sigma1"][ok]).all() and np.isfinite(spots["Sim"][ok]).all()
    assert (spots["intensity"][ok] > 0).mean() > 0.95
    lt = read_lauetools_dat(laue / "Ge_blanc_0000.dat")
    frac, off = _match(np.c_[lt[:, 1] - 1, lt[:, 0] - 1], np.c_[spots["row"], spots["col"]][ok])
    print(
        f"CNN via the flow: {frac:.3f} of LaueTools' peaks matched, median offset {off:.3f} px; "
        f"good {spots['quality'].mean():.2f}"
    )
    assert frac >= 0.85 and off < 0.4
    assert spots["quality"].mean() > 0.5
