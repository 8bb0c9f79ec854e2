"""ROI features read straight from HDF5, automatic labels by profile fitting, contact sheets."""

from pathlib import Path

import h5py
import hdf5plugin
import matplotlib.image
import numpy as np
import pytest
import tifffile

from photonflow.classify.autolabel import (
    auto_label,
    column_profile,
    fit_profiles,
    inflection_points,
    tukey_fences,
)
from photonflow.classify.features import (
    FeatureError,
    FeatureRecipe,
    Roi,
    extract_features,
    features_from_roi,
    read_roi,
    roi_from_box,
    roi_from_panel,
)
from photonflow.classify.labels import read_label_list
from photonflow.classify.sheets import HEADER, contact_sheet, sheet_size
from photonflow.io.geom import load_geometry
from photonflow.io.images import FrameReadError, read_frames

REPO = Path(__file__).resolve().parents[1]
GEOM256 = REPO / "config" / "geometry" / "sim256.geom"
GEOM1920 = REPO / "config" / "geometry" / "sim1920.geom"


def write_cxi(path, frames):
    """A Cheetah-style CXI file: Bitshuffle-LZ4, one frame per chunk."""
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "/entry_1/data_1/data", data=frames, chunks=(1, *frames.shape[1:]), **hdf5plugin.Bitshuffle(cname="lz4")
        )
    return str(path)


@pytest.fixture(scope="module")
def cxi(tmp_path_factory):
    rng = np.random.default_rng(7)
    frames = rng.poisson(30, size=(12, 256, 256)).astype(np.uint16)
    frames[:, 5, 7] = 65000  # a hot pixel
    path = write_cxi(tmp_path_factory.mktemp("cxi") / "run_0001.cxi", frames)
    return path, frames


# ----------------------------------------------------------------------------- ROI


def test_roi_from_panel_equals_the_panels_slab_box():
    geom = load_geometry(GEOM256)
    p1 = geom.panel("p1")
    roi = roi_from_panel(GEOM256, "p1")
    assert roi == Roi(0, 128, 128, 256, panel="p1")
    assert roi.slices == p1.slab_slices
    assert roi.shape == (p1.height, p1.width) == (128, 128)
    g1920 = load_geometry(GEOM1920)
    last = g1920.panels[-1]
    roi = roi_from_panel(g1920, last.name)  # a DetectorGeometry works too
    assert (roi.ss0, roi.ss1, roi.fs0, roi.fs1) == (last.min_ss, last.max_ss + 1, last.min_fs, last.max_fs + 1)
    assert roi.shape == (240, 240)
    assert Roi.from_dict(roi.to_dict()) == roi


def test_unknown_panel_error_lists_the_panels():
    with pytest.raises(FeatureError) as err:
        roi_from_panel(GEOM256, "q7")
    msg = str(err.value)
    assert "sim256.geom" in msg and "no panel named 'q7'" in msg and "the 4 panels are: p0, p1, p2, p3" in msg


def test_roi_from_box_is_validated():
    assert roi_from_box(10, 186, 0, 192, frame_shape=(352, 384)).shape == (176, 192)
    with pytest.raises(FeatureError, match=r"lies outside a frame of \(352, 384\)"):
        roi_from_box(200, 400, 0, 192, frame_shape=(352, 384))
    with pytest.raises(FeatureError, match="empty or negative"):
        roi_from_box(10, 10, 0, 5)
    with pytest.raises(FeatureError, match="integer"):
        roi_from_box(0.5, 10, 0, 5)


def test_recipe_counts_and_round_trip():
    roi = Roi(0, 176, 0, 192, panel="a0")
    assert FeatureRecipe(roi).n_features == 176 * 192
    r = FeatureRecipe(roi, binning=5, summary=True, log=True, saturation=16000.0)
    assert r.binned_shape == (35, 38) and r.n_features == 35 * 38 + 7
    assert r.feature_names()[-7:] == ["mean", "std", "p01", "p50", "p99", "zero_fraction", "saturated_fraction"]
    assert FeatureRecipe.from_dict(r.to_dict()) == r
    with pytest.raises(FeatureError, match="binning"):
        FeatureRecipe(roi, binning=0)


# ----------------------------------------------------------------------------- reading


def test_read_roi_equals_slicing_full_frames(cxi):
    path, frames = cxi
    roi = roi_from_box(30, 150, 100, 220)
    events = [3, 4, 5, 9, 0, 1]  # two contiguous runs and a jump back
    got = read_roi(path, events, roi)
    full = read_frames(path, events)
    assert got.dtype == np.float32 and got.shape == (6, 120, 120)
    assert np.array_equal(got, full[:, 30:150, 100:220].astype(np.float32))
    assert np.array_equal(read_roi(path, None, roi), frames[:, 30:150, 100:220])
    assert np.array_equal(read_roi(path, 7, roi)[0], frames[7, 30:150, 100:220])
    with pytest.raises(FrameReadError, match=r"run_0001\.cxi \(event 12\): event 12 out of range \(file has 12"):
        read_roi(path, [1, 12], roi)


def test_read_roi_of_single_frame_tiff(tmp_path):
    img = np.arange(64 * 80, dtype=np.int32).reshape(64, 80)
    tifffile.imwrite(tmp_path / "shot.tif", img)
    roi = roi_from_box(8, 40, 10, 70)
    assert np.array_equal(read_roi(tmp_path / "shot.tif", None, roi)[0], img[8:40, 10:70])


def test_binning_equals_reshape_mean_by_hand(cxi):
    path, frames = cxi
    roi = roi_from_box(0, 128, 128, 256)
    recipe = FeatureRecipe(roi, binning=3)  # 128 = 42·3 + 2: the last 2 rows and columns are cropped
    fs = extract_features([(path, e) for e in range(4)], recipe)
    by_hand = frames[:4, 0:126, 128:254].astype(np.float64).reshape(4, 42, 3, 42, 3).mean(axis=(2, 4))
    assert fs.X.shape == (4, 42 * 42) and fs.X.dtype == np.float32
    np.testing.assert_allclose(fs.X, by_hand.reshape(4, -1), rtol=1e-6)
    logged = extract_features([(path, 0)], FeatureRecipe(roi, binning=3, log=True)).X[0]
    np.testing.assert_allclose(logged, np.log1p(by_hand[0].ravel()), rtol=1e-6)


def test_summary_features_by_hand():
    rng = np.random.default_rng(3)
    stack = rng.normal(100, 10, size=(3, 40, 50)).astype(np.float32)  # 2000 pixels: exact percentiles
    stack[0, 0, :10] = 0
    stack[1, 1, :20] = 4000
    recipe = FeatureRecipe(roi_from_box(0, 40, 0, 50), binning=10, summary=True, saturation=3000)
    X = features_from_roi(stack, recipe)
    assert X.shape == (3, 4 * 5 + 7)
    flat = stack.reshape(3, -1).astype(np.float64)
    s = X[:, 20:]
    np.testing.assert_allclose(s[:, 0], flat.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(s[:, 1], flat.std(axis=1), rtol=1e-4)
    np.testing.assert_allclose(s[:, 2:5], np.percentile(flat, [1, 50, 99], axis=1).T, rtol=1e-6)
    assert s[:, 5].tolist() == pytest.approx([10 / 2000, 0, 0])
    assert s[:, 6].tolist() == pytest.approx([0, 20 / 2000, 0])


def test_failures_are_named_and_the_rest_goes_on(cxi, tmp_path):
    path, frames = cxi
    (tmp_path / "broken.h5").write_bytes(b"not an HDF5 file at all" * 10)
    small = write_cxi(tmp_path / "small.cxi", np.zeros((2, 64, 64), np.float32))
    roi = roi_from_box(0, 100, 0, 100)
    refs = [
        (path, 2),
        (path, 99),
        (str(tmp_path / "gone.cxi"), 0),
        (path, 0),
        (str(tmp_path / "broken.h5"), 1),
        (small, 0),
        (path, None),
        (path, 11),
    ]
    fs = extract_features(refs, FeatureRecipe(roi))
    assert fs.refs == [(path, 2), (path, 0), (path, 11)]
    assert fs.index.tolist() == [0, 3, 7]
    np.testing.assert_array_equal(fs.X, frames[[2, 0, 11], 0:100, 0:100].reshape(3, -1).astype(np.float32))
    assert len(fs.failures) == 5 and len(fs.failed) == 5
    text = "\n".join(fs.failures)
    assert f"{path} (event 99): event 99 out of range (file has 12 frames)" in text
    assert f"{path} (single frame): file has 12 frames: give an event (0..11)" in text
    assert f"{tmp_path / 'gone.cxi'} (1 event): no such file" in text
    assert f"{tmp_path / 'broken.h5'} (1 event): cannot open HDF5 file" in text
    assert f"{small} (1 event): ROI (ss 0:100, fs 0:100) lies outside the frame (64 x 64 pixels, ss x fs)" in text


def test_batches_smaller_than_a_file(cxi):
    path, frames = cxi
    roi = roi_from_box(0, 16, 0, 16)
    refs = [(path, e) for e in (11, 0, 5, 6, 7, 1, 2)]
    fs = extract_features(refs, FeatureRecipe(roi), batch=3)
    assert fs.refs == refs
    np.testing.assert_array_equal(fs.X, frames[[11, 0, 5, 6, 7, 1, 2], :16, :16].reshape(7, -1))


# ----------------------------------------------------------------------------- automatic labels


def quartic(x, x1, x2, c=1e-5):
    """A quartic whose second derivative is c·(x − x1)(x − x2): inflection points at x1 and x2."""
    return c * (x**4 / 12 - (x1 + x2) * x**3 / 6 + x1 * x2 * x**2 / 2)


def test_inflection_points_of_quartic_profiles():
    rng = np.random.default_rng(11)
    w = 192
    x = np.arange(w, dtype=float)
    x1 = rng.uniform(30, 80, 25)
    x2 = rng.uniform(110, 170, 25)
    stack = np.stack([100 + quartic(x, a, b) for a, b in zip(x1, x2)])[:, None, :] + rng.normal(0, 1, (25, 64, w))
    coef = fit_profiles(column_profile(stack), order=4)
    assert coef.shape == (25, 5)
    pts = inflection_points(coef, (0, w - 1))
    assert all(len(p) == 2 for p in pts)
    err = np.array([p - (a, b) for p, a, b in zip(pts, x1, x2)])
    assert np.abs(err).max() < 0.5
    # the same profiles placed at slab columns 500..691: points shift by 500
    pts500 = inflection_points(coef, (500, 500 + w - 1))
    np.testing.assert_allclose(np.array(pts500) - 500, np.array(pts), atol=1e-9)
    # a concave parabola has no inflection point
    assert len(inflection_points(fit_profiles(-((x - 90.0) ** 2), 4), (0, w - 1))[0]) == 0


def test_tukey_fences_by_hand():
    v = np.array([3.0, 7, 8, 5, 12, 14, 21, 13, 18])
    q1, q3 = np.percentile(v, 25), np.percentile(v, 75)
    assert (q1, q3) == (7.0, 14.0)
    assert tukey_fences(v) == (q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)) == (-3.5, 24.5)


def test_auto_label_flags_the_two_shifted_frames(tmp_path):
    rng = np.random.default_rng(5)
    h, width = 48, 200
    roi = roi_from_box(0, h, 4, 196)  # columns 4..195
    x = np.arange(width, dtype=float)
    shifted = {6, 17}
    frames, truth = [], []
    for i in range(22):
        a, b = 60 + rng.uniform(-1.5, 1.5), 130 + rng.uniform(-1.5, 1.5)
        if i in shifted:
            a, b = a + 25, b + 25
        truth.append((a, b))
        prof = 200 + quartic(x, a, b)
        frames.append(prof[None, :] + rng.normal(0, 1, (h, width)))
    path = write_cxi(tmp_path / "run.cxi", np.array(frames, np.float32))
    auto = auto_label([path], roi, order=4)
    assert auto.refs == [(path, i) for i in range(22)]
    assert sorted(np.flatnonzero(~auto.good).tolist()) == sorted(shifted)
    assert auto.decided.all() and auto.counts() == {"good": 20, "bad": 2, "undecided": 0, "failed": 0, "total": 22}
    assert auto.modes[path] == 2
    # inflection points in slab columns, close to the truth
    err = np.array([auto.inflections[i] - truth[i] for i in range(22)])
    assert np.abs(err).max() < 0.5
    # fences: numpy percentiles of the j-th points of the frames with the usual count (all 22 here)
    pts = np.array(auto.inflections)
    lo, hi = auto.fences[path]
    for j in range(2):
        q1, q3 = np.percentile(pts[:, j], [25, 75])
        assert lo[j] == pytest.approx(q1 - 1.5 * (q3 - q1)) and hi[j] == pytest.approx(q3 + 1.5 * (q3 - q1))
    assert auto.reasons[6].startswith("bad: inflection point 1 of 2 at 8")
    assert auto.reasons[0].startswith("good: inflection points")
    g, b = auto.write_lists(tmp_path / "good.lst", tmp_path / "bad.lst")
    assert read_label_list(b) == [(path, 6), (path, 17)]
    assert len(read_label_list(g)) == 20


def test_auto_label_too_few_frames_and_read_failures(tmp_path):
    x = np.arange(64, dtype=float)
    frames = np.array([np.tile(100 + quartic(x, 20, 40, 1e-3), (8, 1))] * 3, np.float32)
    path = write_cxi(tmp_path / "short.cxi", frames)
    auto = auto_label([(path, 0), (path, 1), (path, 2), (path, 3)], roi_from_box(0, 8, 0, 64), min_frames=5)
    assert len(auto) == 3 and not auto.decided.any() and auto.labels.tolist() == [-1, -1, -1]
    assert "Tukey fences need at least 5" in auto.reasons[0]
    assert auto.failures == [f"{path} (event 3): event 3 out of range (file has 3 frames)"]


# ----------------------------------------------------------------------------- contact sheets


def test_contact_sheet_pixel_size_and_pages(tmp_path, cxi):
    path, frames = cxi
    roi = roi_from_box(0, 128, 128, 256)
    labels = [1, 0, None, 1, 0, -1, 1, 1, 0, 1]
    pages = contact_sheet(frames[:10], tmp_path / "sheet.png", roi=roi, labels=labels, columns=4, thumb=64)
    assert pages == [str(tmp_path / "sheet.png")]
    img = matplotlib.image.imread(pages[0])
    assert sheet_size(10, 4, 64) == (256, HEADER + 3 * (64 + 20)) == (256, 276)
    assert img.shape[:2] == (276, 256)
    # green border on frame 0, red on frame 1, grey on frame 2 (top-left border pixel of each cell)
    assert np.allclose(img[HEADER + 1, 1, :3], (0.15, 0.75, 0.25), atol=0.01)
    assert np.allclose(img[HEADER + 1, 64 + 1, :3], (0.90, 0.15, 0.15), atol=0.01)
    assert np.allclose(img[HEADER + 1, 128 + 1, :3], (0.55, 0.55, 0.55), atol=0.01)
    # from refs: two pages and a candidate list numbering the events
    refs = [(path, e) for e in range(10)]
    pages = contact_sheet(refs, tmp_path / "refs.png", roi=roi, columns=4, rows_per_page=2, thumb=64)
    assert pages == [str(tmp_path / "refs_p01.png"), str(tmp_path / "refs_p02.png")]
    assert matplotlib.image.imread(pages[0]).shape[:2] == (HEADER + 2 * 84, 256)
    assert matplotlib.image.imread(pages[1]).shape[:2] == (HEADER + 1 * 84, 256)
    assert read_label_list(tmp_path / "refs.lst") == refs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_non_finite_pixels_count_as_zero_and_2d_hdf5(tmp_path):
    stack = np.full((2, 4, 6), 2.0, np.float32)
    stack[1, 0, 0] = np.nan
    stack[1, 3, 5] = np.inf
    X = features_from_roi(stack, FeatureRecipe(roi_from_box(0, 4, 0, 6), binning=2, summary=True))
    assert np.isnan(stack[1, 0, 0])  # the input is left alone
    np.testing.assert_allclose(X[0, :6], 2.0)
    np.testing.assert_allclose(X[1, :6], [1.5, 2, 2, 2, 2, 1.5])
    assert X[1, 6] == pytest.approx(44 / 24) and X[1, 11] == pytest.approx(2 / 24)  # mean, zero fraction
    # a single image stored as a 2D HDF5 dataset
    img = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["/entry/data/data"] = img
    fs = extract_features(
        [(str(tmp_path / "one.h5"), None), (str(tmp_path / "one.h5"), 1)], FeatureRecipe(roi_from_box(5, 10, 20, 30))
    )
    np.testing.assert_array_equal(fs.X[0], img[5:10, 20:30].ravel())
    assert fs.failures == [f"{tmp_path / 'one.h5'} (event 1): event 1 out of range (file has 1 frame)"]
