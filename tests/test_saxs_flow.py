"""The SAXS flow end to end: real Prefect runs (embedded API), real files, bad input, re-runs."""

import json
import os

import h5py
import numpy as np
import pytest
import tifffile
from prefect.task_runners import ThreadPoolTaskRunner

from photonflow.calibration import load_calibration
from photonflow.flows.saxs import saxs_flow
from photonflow.integrate import integral_parameters
from photonflow.io import read_chi, read_curves, read_table_csv

SHAPE = (120, 100)


def guinier(q, rg):
    return 1000.0 * np.exp(-((q * rg) ** 2) / 3.0) + 5.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("saxs")
    data = root / "data" / "run1"
    data.mkdir(parents=True)
    mask = np.zeros(SHAPE, np.uint8)
    mask[:, 48:52] = 1  # a module gap
    tifffile.imwrite(root / "mask.tif", mask)
    cal = {
        "Geometry": {
            "BeamCenter": [70.5, 40.25],
            "DedectorDistanceMM": 1000.0,
            "PixelSizeMicroM": [172.0, 172.0],
            "Imagesize": list(SHAPE),
            "Tilt": {"TiltRotDeg": 30.0, "TiltAngleDeg": 1.0},
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
            },
            {
                "Name": "sector",
                "MaskFile": "mask.tif",
                "Oversampling": 1,
                "PixelPerRadialElement": 2.0,
                "qStart": 0.05,
                "qStop": 0.8,
                "Sector": {"ChiStartDeg": -90, "ChiStopDeg": 90},
            },
        ],
        "Slices": [
            {"Name": "h", "Direction": "x", "Plane": "InPlane", "CutPosition": 70, "CutMargin": 3, "MaskRef": 0}
        ],
        "OverwriteFiles": False,
    }
    (root / "cal.json").write_text(json.dumps(cal))
    geometry = load_calibration(root / "cal.json").geometry
    q = geometry.q_array(1)
    rng = np.random.default_rng(1)
    rgs = np.linspace(3.0, 6.0, 10)
    for i, rg in enumerate(rgs):
        frame = rng.poisson(guinier(q, rg)).astype(np.int32)
        frame[5, 7] = -2  # a bad pixel in every frame
        tifffile.imwrite(data / f"frame_{i:03d}.tif", frame)
    # bad input: a truncated file, a wrong shape, garbage
    good = (data / "frame_000.tif").read_bytes()
    (data / "frame_900_truncated.tif").write_bytes(good[: len(good) // 2])
    tifffile.imwrite(data / "frame_901_wrongshape.tif", np.zeros((60, 50), np.int32))
    (data / "frame_902_garbage.tif").write_bytes(b"not a tiff at all")
    # an HDF5 stack of 6 frames
    with h5py.File(root / "stack.h5", "w") as f:
        f["/entry/data/data"] = np.stack([rng.poisson(guinier(q, 4.0)).astype(np.int32) for _ in range(6)])
    return {"root": root, "data": root / "data", "cal": root / "cal.json", "rgs": rgs, "geometry": geometry}


@pytest.fixture(scope="module")
def first_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    flow = saxs_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    state = flow(
        calibration=str(dataset["cal"]),
        inputs=[str(dataset["data"])],
        output_dir=str(out),
        batch_size=4,
        return_state=True,
    )
    return out, state.result(), state


def test_good_frames_done_bad_ones_named(first_run):
    out, summary, _ = first_run
    assert summary["done"] == 10
    assert summary["failed"] == 3
    text = "\n".join(summary["failures"])
    assert "frame_900_truncated.tif" in text and "truncated" in text
    assert "frame_901_wrongshape.tif" in text and "shape (60, 50) differs" in text
    assert "frame_902_garbage.tif" in text
    assert json.loads((out / "summary.json").read_text())["done"] == 10


def test_chi_files_mirror_the_tree_and_match_the_integrator(first_run, dataset):
    out, _, _ = first_run
    chi = sorted((out / "chi" / "run1").glob("*_full.chi"))
    assert len(chi) == 10
    assert len(list((out / "chi" / "run1").glob("*_sector.chi"))) == 10
    assert len(list((out / "chi" / "run1").glob("*_slice_h.chi"))) == 10
    cal = load_calibration(dataset["cal"])
    integ = cal.build_integrators()[0]
    frame = tifffile.imread(dataset["data"] / "run1" / "frame_003.tif")
    expected = integ.integrate(frame)
    q, intensity, sigma, header = read_chi(out / "chi" / "run1" / "frame_003_full.chi")
    assert np.allclose(q, expected.q)
    # float32 sums (about 1e-7 relative): a batch and a single frame may add in another order
    assert np.allclose(intensity, expected.intensity[0], equal_nan=True, rtol=1e-5, atol=0)
    assert np.allclose(sigma, expected.sigma[0], equal_nan=True, rtol=1e-5, atol=0)
    assert header["config"]["Geometry"]["DedectorDistanceMM"] == 1000.0
    params = integral_parameters(q, intensity, 0.05, 0.8)
    assert header["integral_params"]["I0"] == pytest.approx(float(params["I0"]))


def test_curves_follow_the_true_guinier_radius(first_run, dataset):
    """Each frame was drawn from a Guinier law with a known Rg: a fit to its curve recovers it."""
    out, _, _ = first_run
    for i in (0, 9):
        q, intensity, sigma, _ = read_chi(out / "chi" / "run1" / f"frame_{i:03d}_full.chi")
        ok = np.isfinite(intensity) & (q > 0.05) & (q < 1.0 / dataset["rgs"][i])
        slope = np.polyfit(q[ok] ** 2, np.log(intensity[ok] - 5.0), 1, w=1 / sigma[ok] * intensity[ok])[0]
        assert np.sqrt(-3 * slope) == pytest.approx(dataset["rgs"][i], rel=0.05)


def test_run_table_plot_and_nexus(first_run):
    out, summary, _ = first_run
    table = read_table_csv(out / "integral_parameters.csv")
    full = table["integration"] == "full"
    assert full.sum() == 10
    # larger particles scatter less at large q: I2 (∫I q² dq) falls as Rg grows
    i2 = table["I2"][full][np.argsort(table["frame"][full])]
    assert i2[0] > i2[-1]
    assert (out / "integral_parameters.h5").exists()
    assert (out / "integral_parameters.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["outputs"]["curves_plot"] and os.path.exists(summary["outputs"]["curves_plot"])
    nexus = sorted((out / "curves").glob("*_full.h5"))
    total = sum(len(read_curves(p).frame_ids) for p in nexus)
    assert total == 10


def test_prefect_artifacts(first_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    _, _, state = first_run
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    types = {a.type for a in artifacts}
    assert {"progress", "table", "markdown"} <= types
    progress = [a for a in artifacts if a.type == "progress"][0]
    assert float(progress.data) == pytest.approx(100.0)
    summary = [a for a in artifacts if a.type == "markdown"][0]
    assert "| 10 | 3 | 0 |" in summary.data  # done, failed, skipped


def test_rerun_skips_frames_already_done(first_run, dataset):
    out, _, _ = first_run
    chi = out / "chi" / "run1" / "frame_000_full.chi"
    before = chi.stat().st_mtime_ns
    flow = saxs_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    summary = flow(calibration=str(dataset["cal"]), inputs=[str(dataset["data"])], output_dir=str(out), batch_size=4)
    assert summary["done"] == 0 and summary["skipped"] == 10
    assert chi.stat().st_mtime_ns == before
    # the run table still lists every frame (read back from the .chi headers)
    assert (read_table_csv(out / "integral_parameters.csv")["integration"] == "full").sum() == 10


def test_hdf5_event_range_on_dask(dataset, tmp_path):
    """A (file, event) range of an HDF5 stack, on the embedded default: a local Dask cluster."""
    summary = saxs_flow(
        calibration=str(dataset["cal"]),
        inputs=[f"{dataset['root'] / 'stack.h5'}:1-4"],
        output_dir=str(tmp_path),
        batch_size=2,
    )
    assert summary["done"] == 3 and summary["failed"] == 0
    names = sorted(p.name for p in tmp_path.glob("chi/*_full.chi"))
    assert names == ["stack_00001_full.chi", "stack_00002_full.chi", "stack_00003_full.chi"]


def test_invalid_calibration_fails_before_work(dataset, tmp_path):
    bad = json.loads(dataset["cal"].read_text())
    bad["Masks"][0]["Oversampling"] = 0
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    flow = saxs_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))
    with pytest.raises(Exception, match=r"Masks\[0\]\.Oversampling"):
        flow(calibration=str(path), inputs=[str(dataset["data"])], output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out" / "chi").exists()


def test_missing_mask_file_fails_before_work(dataset, tmp_path):
    bad = json.loads(dataset["cal"].read_text())
    bad["Masks"][0]["MaskFile"] = "missing_mask.msk"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    flow = saxs_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))
    with pytest.raises(FileNotFoundError, match="missing_mask.msk"):
        flow(calibration=str(path), inputs=[str(dataset["data"])], output_dir=str(tmp_path / "out"))


def test_command_line_runs_the_real_flow(dataset, tmp_path, capsys):
    """`photonflow saxs` end to end (no stand-in flow): exit code 1 because three frames are bad."""
    from photonflow.deployments.cli import main

    out = tmp_path / "cli-out"
    code = main(
        [
            "saxs",
            str(dataset["cal"]),
            str(dataset["data"]),
            "--out",
            str(out),
            "--cluster",
            "threads",
            "--batch-size",
            "5",
        ]
    )
    printed = capsys.readouterr()
    assert code == 1
    assert "frame_900_truncated.tif" in printed.out + printed.err
    assert len(list((out / "chi" / "run1").glob("*_full.chi"))) == 10
    assert (out / "integral_parameters.png").exists()
