"""The serial-crystallography flow end to end: real Prefect runs, simulated CXI data, bad input."""

import json

import h5py
import numpy as np
import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from photonflow.flows.sfx import sfx_flow
from photonflow.io import read_table_csv
from photonflow.io.cxi import read_cxi_peaks, read_cxi_sources, read_hit_list
from photonflow.io.geom import load_geometry
from photonflow.peaks import match_peaks
from photonflow.peaks.peakfinder8 import AsicGrid, Peakfinder8, Peakfinder8Params
from photonflow.sfx import resolution_estimate
from photonflow.simulate.sfx import read_sfx_truth, write_sfx_dataset

GEOMETRY = "config/geometry/sim256.geom"
PF8 = {
    "adc_threshold": 100,
    "minimum_snr": 5,
    "min_pixel_count": 2,
    "max_pixel_count": 40,
    "local_bg_radius": 3,
    "max_res": 2000,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sfx")
    ds = write_sfx_dataset(root / "run", load_geometry(GEOMETRY), 24, frames_per_file=12, seed=3)
    # bad input: NaN pixels in a frame, a file of the wrong frame shape, a CXI without data
    with h5py.File(root / "nan.cxi", "w") as f:
        frames = h5py.File(ds.cxi_files[0], "r")["/entry_1/data_1/data"][:2].astype(np.float32)
        frames[1, 100, 50] = np.nan
        f["/entry_1/data_1/data"] = frames
    with h5py.File(root / "wrong_shape.cxi", "w") as f:
        f["/entry_1/data_1/data"] = np.zeros((1, 100, 100), np.float32)
    with h5py.File(root / "no_data.cxi", "w") as f:
        f["/entry_1/result_1/nPeaks"] = np.zeros(3, np.int32)
    return {"root": root, "ds": ds, "truth": read_sfx_truth(ds.truth_path)}


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    root = dataset["root"]
    inputs = [str(p) for p in dataset["ds"].cxi_files] + [
        str(root / "nan.cxi"),
        str(root / "wrong_shape.cxi"),
        str(root / "no_data.cxi"),
    ]
    flow = sfx_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    state = flow(
        geometry=str(dataset["ds"].geometry_path),
        inputs=inputs,
        output_dir=str(out),
        batch_size=7,
        min_peaks=10,
        max_peaks=1000,
        peakfinder8=PF8,
        return_state=True,
    )
    return out, state.result(), state


def test_good_frames_done_bad_ones_named(run):
    _, summary, _ = run
    assert summary["done"] == 24 + 1  # the NaN file's good frame too
    failures = "\n".join(summary["failures"])
    assert "nan.cxi:1" in failures and "NaN pixel" in failures and "ss=100, fs=50" in failures
    assert "wrong_shape.cxi" in failures and "does not match the geometry" in failures
    assert "no_data.cxi" in failures and "not found" in failures


def test_peak_lists_are_peakfinder8_on_each_frame(run, dataset):
    out, summary, _ = run
    geom = load_geometry(dataset["ds"].geometry_path)
    finder = Peakfinder8(
        geom.radius_map(), AsicGrid.from_layout(geom.asic_layout()), geom.good_pixel_mask(), Peakfinder8Params(**PF8)
    )
    found = {}
    for path in summary["peak_files"]:
        for (src, event), peaks in zip(read_cxi_sources(path), read_cxi_peaks(path)):
            found[(src, event)] = peaks
    assert len(found) == 25
    for cxi in dataset["ds"].cxi_files:
        frames = h5py.File(cxi, "r")["/entry_1/data_1/data"][()]
        for event, frame in enumerate(frames):
            direct = finder.find(frame)
            stored = found[(str(cxi), event)]
            assert len(stored) == len(direct)
            np.testing.assert_allclose(stored.fs, direct.fs, atol=1e-3)  # float32 in the file
            np.testing.assert_allclose(stored.ss, direct.ss, atol=1e-3)


def test_hits_follow_the_inclusive_bounds_and_truth(run, dataset):
    out, summary, _ = run
    table = read_table_csv(out / "frames.csv")
    n = np.asarray(table["n_peaks"])
    hit = np.asarray(table["hit"]).astype(str) == "True"
    np.testing.assert_array_equal(hit, (n >= 10) & (n <= 1000))
    listed = read_hit_list(out / "hits.lst")
    assert len(listed) == summary["hits"] == hit.sum()
    paths = np.asarray(table["path"]).astype(str)
    events = np.asarray(table["event"]).astype(int)
    assert listed == [(p, int(e)) for p, e, h in zip(paths, events, hit) if h]
    # The simulated hits are found: every true hit with 20+ detectable spots is a hit.
    truth = dataset["truth"]
    for (path, event), t in zip(truth.refs, truth.truths):
        if t.is_hit and (t.snr >= 5).sum() >= 20:
            assert (str(path), int(event)) in listed
        if not t.is_hit:
            assert (str(path), int(event)) not in listed


def test_found_peaks_match_the_true_spots(run, dataset):
    out, summary, _ = run
    truth = dataset["truth"]
    stored = {}
    for path in summary["peak_files"]:
        for (src, event), peaks in zip(read_cxi_sources(path), read_cxi_peaks(path)):
            stored[(src, event)] = peaks
    total = strong_total = None
    for (path, event), t in zip(truth.refs, truth.truths):
        peaks = stored[(str(path), int(event))]
        score = match_peaks(peaks.positions(), t.positions(), radius=1.5)
        strong = match_peaks(peaks.positions(), t.positions()[t.snr >= 8], radius=1.5)
        total = score if total is None else total + score
        strong_total = strong if strong_total is None else strong_total + strong
    # Found peaks are true spots; the clear spots (SNR >= 8) are found (misses: overlapping spots).
    assert total.precision > 0.95
    assert strong_total.recall > 0.85


def test_resolution_estimate_is_the_third_highest_resolution_peak():
    assert resolution_estimate(np.array([5.0, 2.1, 3.0, 2.5, 9.0])) == 3.0
    assert resolution_estimate(np.array([4.0, 2.0])) == 4.0
    assert np.isnan(resolution_estimate(np.array([])))


def test_hits_file_holds_the_hit_frames_with_their_peaks(run, dataset):
    out, summary, _ = run
    for path in summary["hit_files"]:
        with h5py.File(path, "r") as f:
            data = f["/entry_1/data_1/data"]
            assert data.chunks == (1, *data.shape[1:])  # one frame per chunk
            assert f["/entry_1/result_1/nPeaks"].shape[0] == data.shape[0]
            src = read_cxi_sources(path)
            for k, (file, event) in enumerate(src):
                original = h5py.File(file, "r")["/entry_1/data_1/data"][event]
                np.testing.assert_array_equal(data[k], original)
            assert 32008 in [int(k) for k in data._filters]  # Bitshuffle-LZ4


def test_outputs_plots_and_artifacts(run):
    out, summary, state = run
    for name in ("frames.csv", "frames.h5", "hits.lst", "hit_rate.png", "peak_overlay.png", "summary.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "summary.json").read_text())
    assert saved["hits"] == summary["hits"] and saved["done"] == 25
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    assert {"progress", "table", "markdown"} <= {a.type for a in artifacts}
    md = [a for a in artifacts if a.type == "markdown"][0].data
    assert f"| 25 | {summary['failed']} | {summary['hits']} |" in md  # done, failed, hits


def test_bad_geometry_fails_before_any_work(dataset, tmp_path):
    bad = tmp_path / "bad.geom"
    bad.write_text(
        "res = 13333.3\nclen = 0.05\np0/min_fs = 0\np0/max_fs = 255\np0/min_ss = 0\np0/max_ss = 255\n"
        "p0/corner_x = -128\np0/corner_y = -128\np0/fs = 1x+\np0/ss = +1y\n"
    )
    flow = sfx_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))
    with pytest.raises(Exception, match=r"bad.geom line 9"):
        flow(geometry=str(bad), inputs=[str(dataset["ds"].cxi_files[0])], output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_event_range_on_the_default_dask_cluster(dataset, tmp_path):
    """A CXI event range on the embedded default (a local Dask cluster), torch backend."""
    cxi = dataset["ds"].cxi_files[1]
    summary = sfx_flow(
        geometry=str(dataset["ds"].geometry_path),
        inputs=[f"{cxi}:2-7"],
        output_dir=str(tmp_path),
        batch_size=3,
        peakfinder8=PF8,
        backend="torch",
        device="cpu",
    )
    assert summary["done"] == 5 and summary["failed"] == 0
    assert sorted(
        e for _, e in read_cxi_sources(summary["peak_files"][0]) + read_cxi_sources(summary["peak_files"][1])
    ) == [2, 3, 4, 5, 6]


def test_command_line_with_a_run_config_and_overrides(dataset, tmp_path, capsys):
    """`photonflow sfx --config RUN.json` (paths relative to the file) with a command-line override."""
    from photonflow.deployments.cli import main

    config = tmp_path / "run.json"
    config.write_text(
        json.dumps(
            {
                "geometry": str(dataset["ds"].geometry_path),
                "inputs": [f"{dataset['ds'].cxi_files[0]}:0-6"],
                "output_dir": "out",
                "peakfinder8": PF8,
                "min_peaks": 10,
                "max_peaks": 1000,
                "batch_size": 3,
            }
        )
    )
    code = main(["sfx", "--config", str(config), "--cluster", "threads", "--min-peaks", "5"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "frames done: 6," in printed and "hit_list:" in printed
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    table = read_table_csv(tmp_path / "out" / "frames.csv")
    n = np.asarray(table["n_peaks"])
    assert summary["hits"] == int(((n >= 5) & (n <= 1000)).sum())


def test_command_line_config_errors_name_the_field(dataset, tmp_path, capsys):
    from photonflow.deployments.cli import main

    config = tmp_path / "run.json"
    config.write_text(
        json.dumps(
            {
                "geometry": str(dataset["ds"].geometry_path),
                "inputs": ["x.cxi"],
                "output_dir": "out",
                "peakfinder8": {"minimum_snr": -1, "bogus": 3},
            }
        )
    )
    assert main(["sfx", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "peakfinder8.minimum_snr" in err and "bogus" in err
    assert main(["validate", str(config)]) == 2  # the schema is guessed from the keys
    assert (
        main(
            [
                "sfx",
                str(dataset["ds"].geometry_path),
                str(dataset["ds"].cxi_files[0]),
                "--out",
                str(tmp_path / "o"),
                "--min-peaks",
                "9",
                "--max-peaks",
                "3",
            ]
        )
        == 2
    )
    assert "min_peaks" in capsys.readouterr().err


@pytest.fixture(scope="module")
def network_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("out-net")
    flow = sfx_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))
    summary = flow(
        geometry=str(dataset["ds"].geometry_path),
        inputs=[str(p) for p in dataset["ds"].cxi_files],
        output_dir=str(out),
        batch_size=12,
        finder="peaknet",
        min_peaks=10,
        device="cpu",
    )
    return out, summary


def test_network_finds_the_true_spots_without_tuning(network_run, dataset):
    out, summary = network_run
    assert summary["done"] == 24 and summary["failed"] == 0
    truth = dataset["truth"]
    stored = {}
    for path in summary["peak_files"]:
        for (src, event), peaks in zip(read_cxi_sources(path), read_cxi_peaks(path)):
            stored[(src, event)] = peaks
    total = strong_total = None
    for (path, event), t in zip(truth.refs, truth.truths):
        peaks = stored[(str(path), int(event))]
        score = match_peaks(peaks.positions(), t.positions(), radius=1.5)
        strong = match_peaks(peaks.positions(), t.positions()[t.snr >= 8], radius=1.5)
        total = score if total is None else total + score
        strong_total = strong if strong_total is None else strong_total + strong
    assert total.precision > 0.85
    assert strong_total.recall > 0.85


def test_network_artifact_mask_covers_the_hot_pixels(network_run, dataset):
    """Hot pixels are the same in every frame of a dataset: the automatic mask must hold them."""
    out, summary = network_run
    assert summary["outputs"]["artifact_mask"] == str(out / "artifact_mask.h5")
    with h5py.File(out / "artifact_mask.h5", "r") as f:
        good = f["mask"][()].astype(bool)
        assert f.attrs["frames"] == 24
    hot = dataset["truth"].truths[0].hot_pixels
    assert len(hot) > 0
    assert (~good.ravel()[hot]).mean() > 0.8
    assert (~good).mean() < 0.01  # and little else
    assert (out / "artifact_mask.png").is_file()


def test_single_frame_images_and_an_extra_mask(dataset, tmp_path):
    """TIFF frames work like CXI events; an extra mask (nonzero = good) removes its pixels' peaks."""
    import tifffile

    from photonflow.sfx import SfxProcessor

    cxi = dataset["ds"].cxi_files[0]
    frames = h5py.File(cxi, "r")["/entry_1/data_1/data"][:4]
    paths = []
    for k, frame in enumerate(frames):
        paths.append(tmp_path / f"frame_{k}.tif")
        tifffile.imwrite(paths[-1], frame)
    geometry = dataset["ds"].geometry_path
    plain = SfxProcessor(geometry, tmp_path / "a", peakfinder8=PF8).process([(str(p), None) for p in paths], "b0")
    from_cxi = SfxProcessor(geometry, tmp_path / "b", peakfinder8=PF8).process([(str(cxi), k) for k in range(4)], "b0")
    assert [r["n_peaks"] for r in plain.rows] == [r["n_peaks"] for r in from_cxi.rows]
    assert sum(r["n_peaks"] for r in plain.rows) > 0
    good = np.ones(frames.shape[1:], np.uint8)
    good[:, :128] = 0  # mask the left half
    tifffile.imwrite(tmp_path / "mask.tif", good)
    masked = SfxProcessor(geometry, tmp_path / "c", peakfinder8=PF8, mask=tmp_path / "mask.tif")
    report = masked.process([(str(p), None) for p in paths], "b0")
    for peaks in read_cxi_peaks(report.extra["peaks_file"]):
        assert np.all(peaks.fs >= 127.5)


def test_train_command_writes_a_checkpoint_the_flow_uses(dataset, tmp_path, capsys):
    """`photonflow sfx-train` (a tiny run) then `photonflow sfx --finder peaknet --checkpoint`."""
    from photonflow.deployments.cli import main
    from photonflow.peaks.peaknet import load_checkpoint

    model = tmp_path / "tiny.pt"
    code = main(
        [
            "sfx-train",
            "--out",
            str(model),
            "--geometry",
            GEOMETRY,
            "--frames",
            "4",
            "--val-frames",
            "2",
            "--test-frames",
            "2",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--base-channels",
            "4",
            "--depth",
            "2",
            "--crop",
            "64",
            "--device",
            "cpu",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "peak_recall" in printed and "artifact_pixel_recall" in printed
    net, meta = load_checkpoint(model, device="cpu")
    assert meta["architecture"]["base_channels"] == 4 and "validation" in meta
    assert json.loads(model.with_suffix(".json").read_text())["architecture"]["depth"] == 2
    code = main(
        [
            "sfx",
            str(dataset["ds"].geometry_path),
            f"{dataset['ds'].cxi_files[0]}:0-3",
            "--out",
            str(tmp_path / "run"),
            "--finder",
            "peaknet",
            "--checkpoint",
            str(model),
            "--cluster",
            "threads",
            "--device",
            "cpu",
        ]
    )
    assert code == 0, capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["done"] == 3 and summary["parameters"]["checkpoint"] == str(model)


def test_geometry_masks_from_a_mask_file_and_from_the_data_files(dataset, tmp_path):
    """CrystFEL's `mask`/`mask_file`/`mask_good`/`mask_bad`: good when value & good == good and
    value & bad == 0; a mask stored in each data file is read per file."""
    from photonflow.sfx import SfxProcessor

    geom_text = dataset["ds"].geometry_path.read_text()
    cxi = dataset["ds"].cxi_files[0]
    frames = h5py.File(cxi, "r")["/entry_1/data_1/data"][:6]
    bits = np.ones(frames.shape[1:], np.uint16)  # bit 0: good
    bits[:, :100] = 0  # not good
    bits[200:, :] |= 2  # bit 1: bad
    with h5py.File(tmp_path / "mask.h5", "w") as f:
        f["/mask"] = bits
    static = tmp_path / "static.geom"
    static.write_text("mask = /mask\nmask_file = mask.h5\nmask_good = 0x1\nmask_bad = 0x2\n" + geom_text)
    processor = SfxProcessor(static, tmp_path / "o1", peakfinder8=PF8)
    expected = ((bits & 1) == 1) & ((bits & 2) == 0) & load_geometry(GEOMETRY).good_pixel_mask()
    np.testing.assert_array_equal(processor.good, expected)
    report = processor.process([(str(cxi), k) for k in range(6)], "b0")
    for peaks in read_cxi_peaks(report.extra["peaks_file"]):
        assert np.all((peaks.fs >= 99.5) & (peaks.ss <= 199.5))

    # the same mask inside each data file (no mask_file): read per file; a file without it fails, named
    with h5py.File(tmp_path / "with_mask.cxi", "w") as f:
        f["/entry_1/data_1/data"] = frames
        f["/entry_1/data_1/mask"] = bits
    in_data = tmp_path / "in_data.geom"
    in_data.write_text("mask = /entry_1/data_1/mask\nmask_good = 0x1\nmask_bad = 0x2\n" + geom_text)
    processor = SfxProcessor(in_data, tmp_path / "o2", peakfinder8=PF8)
    report = processor.process([(str(tmp_path / "with_mask.cxi"), k) for k in range(6)] + [(str(cxi), 0)], "b0")
    assert report.done == 6 and len(report.failures) == 1
    assert str(cxi) in report.failures[0] and "mask" in report.failures[0]
    same = SfxProcessor(static, tmp_path / "o3", peakfinder8=PF8).process([(str(cxi), k) for k in range(6)], "b0")
    assert [r["n_peaks"] for r in report.rows] == [r["n_peaks"] for r in same.rows]
