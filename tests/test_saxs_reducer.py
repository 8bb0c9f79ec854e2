"""SaxsReducer without Prefect: monitor normalisation, dark and flat, per-frame failures."""

import json

import fabio
import h5py
import numpy as np

from photonflow.calibration import load_calibration
from photonflow.io import FrameRef, read_chi
from photonflow.saxs import SaxsReducer

SHAPE = (64, 72)


def write_calibration(tmp_path, **extra):
    cal = {
        "Geometry": {
            "BeamCenter": [30.0, 35.0],
            "DedectorDistanceMM": 500.0,
            "PixelSizeMicroM": [172.0],
            "Imagesize": list(SHAPE),
            "Tilt": {"TiltRotDeg": 0.0, "TiltAngleDeg": 0.0},
        },
        "Wavelength": 1.0,
        "Masks": [
            {
                "Name": "m",
                "MaskFile": None,
                "Oversampling": 1,
                "PixelPerRadialElement": 1.0,
                "qStart": 0.0,
                "qStop": 5.0,
            }
        ],
    }
    cal.update(extra)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal))
    return path


def test_monitor_from_edf_header(tmp_path):
    cal = write_calibration(tmp_path, MonitorKey="Monitor")
    frame = np.full(SHAPE, 400, np.int32)
    fabio.edfimage.EdfImage(data=frame, header={"Monitor": "2.0"}).write(str(tmp_path / "a.edf"))
    fabio.edfimage.EdfImage(data=frame, header={"Monitor": "4.0"}).write(str(tmp_path / "b.edf"))
    fabio.edfimage.EdfImage(data=frame, header={"Other": "1"}).write(str(tmp_path / "c.edf"))
    reducer = SaxsReducer(load_calibration(cal), tmp_path / "out", input_root=str(tmp_path))
    report = reducer.reduce([FrameRef(str(tmp_path / n)) for n in ("a.edf", "b.edf", "c.edf")])
    assert report.done == 2
    assert len(report.failures) == 1 and "c.edf" in report.failures[0] and "'Monitor'" in report.failures[0]
    _, ia, sa, _ = read_chi(tmp_path / "out" / "chi" / "a_m.chi")
    _, ib, _, _ = read_chi(tmp_path / "out" / "chi" / "b_m.chi")
    ok = np.isfinite(ia)
    assert np.allclose(ia[ok], 200.0) and np.allclose(ib[ok], 100.0)
    assert not (tmp_path / "out" / "chi" / "c_m.chi").exists()


def test_monitor_from_hdf5_dataset(tmp_path):
    cal = write_calibration(tmp_path, MonitorKey="/entry/monitor")
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["/entry/data/data"] = np.full((3, *SHAPE), 600, np.int32)
        f["/entry/monitor"] = np.array([1.0, 2.0, 3.0])
    reducer = SaxsReducer(load_calibration(cal), tmp_path / "out", input_root=str(tmp_path))
    report = reducer.reduce([FrameRef(str(tmp_path / "s.h5"), e) for e in range(3)])
    assert report.done == 3 and not report.failures
    for e, expected in enumerate((600.0, 300.0, 200.0)):
        _, i, _, _ = read_chi(tmp_path / "out" / "chi" / f"s_{e:05d}_m.chi")
        assert np.allclose(i[np.isfinite(i)], expected)


def test_dark_and_flat(tmp_path):
    rng = np.random.default_rng(3)
    dark = np.full(SHAPE, 10.0, np.float32)
    flat = rng.uniform(0.5, 1.5, SHAPE)
    fabio.edfimage.EdfImage(data=dark).write(str(tmp_path / "dark.edf"))
    fabio.edfimage.EdfImage(data=flat).write(str(tmp_path / "flat.edf"))
    cal = write_calibration(tmp_path, Dark="dark.edf", Flat="flat.edf")
    truth = 250.0
    frame = (truth * flat + dark).astype(np.float32)  # a flat-field response to a uniform 250
    fabio.edfimage.EdfImage(data=frame).write(str(tmp_path / "f.edf"))
    reducer = SaxsReducer(load_calibration(cal), tmp_path / "out", input_root=str(tmp_path))
    assert reducer.reduce([FrameRef(str(tmp_path / "f.edf"))]).done == 1
    _, i, _, _ = read_chi(tmp_path / "out" / "chi" / "f_m.chi")
    assert np.allclose(i[np.isfinite(i)], truth, rtol=1e-5)


def test_unwritable_output_is_a_named_failure(tmp_path):
    cal = write_calibration(tmp_path)
    fabio.edfimage.EdfImage(data=np.ones(SHAPE, np.int32)).write(str(tmp_path / "a.edf"))
    out = tmp_path / "out"
    (out / "chi").mkdir(parents=True)
    (out / "chi" / "a_m.chi").mkdir()  # a directory where the file should go
    reducer = SaxsReducer(load_calibration(cal), out, input_root=str(tmp_path))
    report = reducer.reduce([FrameRef(str(tmp_path / "a.edf"))], overwrite=True)
    assert len(report.failures) == 1 and "a_m.chi" in report.failures[0]


def test_empty_bins_are_nan_not_zero(tmp_path):
    cal = write_calibration(
        tmp_path,
        Masks=[
            {
                "Name": "m",
                "MaskFile": "mask.npy",
                "Oversampling": 1,
                "PixelPerRadialElement": 1.0,
                "qStart": 0.0,
                "qStop": 5.0,
            }
        ],
    )
    mask = np.zeros(SHAPE, bool)
    mask[:, :40] = True  # everything left of the beam is masked
    np.save(tmp_path / "mask.npy", mask)
    fabio.edfimage.EdfImage(data=np.full(SHAPE, 7, np.int32)).write(str(tmp_path / "a.edf"))
    SaxsReducer(load_calibration(cal), tmp_path / "out", input_root=str(tmp_path)).reduce(
        [FrameRef(str(tmp_path / "a.edf"))]
    )
    q, i, s, _ = read_chi(tmp_path / "out" / "chi" / "a_m.chi")
    assert np.isnan(i).any() and not (i == 0).any()
    assert np.allclose(i[np.isfinite(i)], 7.0)
