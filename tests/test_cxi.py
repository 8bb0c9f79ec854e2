"""CXI peak lists (Cheetah/OM/CrystFEL layout) and CrystFEL hit lists."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

from photonflow.io.cxi import (
    CxiError,
    read_cxi_peaks,
    read_cxi_sources,
    read_hit_list,
    write_cxi_peaks,
    write_hit_list,
)
from photonflow.peaks.peaklist import PeakList


def _peaks(rng, n):
    return PeakList(
        fs=rng.uniform(0, 1919, n),
        ss=rng.uniform(0, 1919, n),
        intensity=rng.uniform(10, 1e4, n),
        npix=rng.integers(2, 30, n),
        max_intensity=rng.uniform(5, 500, n),
        snr=rng.uniform(4, 80, n),
    )


def test_layout_and_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    lists = [_peaks(rng, 7), PeakList.empty(), _peaks(rng, 1), _peaks(rng, 40)]
    out = write_cxi_peaks(tmp_path / "run1.cxi", lists, max_peaks=64)
    assert out == tmp_path / "run1.cxi"
    assert [p.name for p in tmp_path.iterdir()] == ["run1.cxi"]  # no temporary file left behind
    with h5py.File(out, "r") as f:
        g = f["/entry_1/result_1"]
        assert g["nPeaks"].dtype == np.int32 and g["nPeaks"][()].tolist() == [7, 0, 1, 40]
        for name in ("peakXPosRaw", "peakYPosRaw", "peakTotalIntensity", "peakNPixels", "peakMaximumValue", "peakSNR"):
            assert g[name].dtype == np.float32 and g[name].shape == (4, 64)
        x = g["peakXPosRaw"][()]
        np.testing.assert_array_equal(x[0, :7], lists[0].fs.astype(np.float32))
        assert (x[0, 7:] == 0).all() and (x[1] == 0).all()  # zero padding
        np.testing.assert_array_equal(g["peakYPosRaw"][3, :40], lists[3].ss.astype(np.float32))
        np.testing.assert_array_equal(g["peakNPixels"][3, :40], lists[3].npix.astype(np.float32))
        assert g.attrs["max_peaks"] == 64 and len(g.attrs["truncated_frames"]) == 0
        assert f["cxi_version"][()] == 150
    back = read_cxi_peaks(out)
    assert [len(p) for p in back] == [7, 0, 1, 40]
    for a, b in zip(lists, back):
        for attr in ("fs", "ss", "intensity", "max_intensity", "snr"):
            np.testing.assert_array_equal(getattr(b, attr), getattr(a, attr).astype(np.float32))
        np.testing.assert_array_equal(b.npix, a.npix)


def test_pixel_centre_positions_are_written_unshifted(tmp_path):
    # A peak at the centre of pixel data[12, 34] is (fs, ss) = (34, 12): written as is, CrystFEL adds 0.5.
    out = write_cxi_peaks(tmp_path / "c.cxi", [PeakList([34.0], [12.0], [100.0])])
    with h5py.File(out, "r") as f:
        assert f["/entry_1/result_1/peakXPosRaw"][0, 0] == 34.0
        assert f["/entry_1/result_1/peakYPosRaw"][0, 0] == 12.0


def test_too_many_peaks_are_cut_and_recorded(tmp_path):
    rng = np.random.default_rng(0)
    lists = [_peaks(rng, 10), _peaks(rng, 3000), _peaks(rng, 2048)]
    with pytest.warns(UserWarning, match=r"many\.cxi: 1 frame\(s\) had more than 2048 peaks.*rows \[1\]"):
        out = write_cxi_peaks(tmp_path / "many.cxi", lists)
    with h5py.File(out, "r") as f:
        g = f["/entry_1/result_1"]
        assert g["nPeaks"][()].tolist() == [10, 2048, 2048]
        assert g["peakXPosRaw"].shape == (3, 2048)
        assert g.attrs["truncated_frames"].tolist() == [1]
        assert g.attrs["truncated_counts"].tolist() == [3000]
    back = read_cxi_peaks(out)
    np.testing.assert_array_equal(back[1].fs, lists[1].fs[:2048].astype(np.float32))


def test_sources_and_events(tmp_path):
    lists = [PeakList([1.0], [2.0], [3.0])] * 3
    out = write_cxi_peaks(
        tmp_path / "s.cxi", lists, events=[0, 17, None], sources=["/data/run1.cxi", "/data/run1.cxi", "/data/single.h5"]
    )
    assert read_cxi_sources(out) == [("/data/run1.cxi", 0), ("/data/run1.cxi", 17), ("/data/single.h5", None)]
    with h5py.File(out, "r") as f:
        assert [s.decode() for s in f["/entry_1/result_1/sourceEvent"][()]] == ["//0", "//17", ""]
    plain = write_cxi_peaks(tmp_path / "plain.cxi", lists)
    assert read_cxi_sources(plain) == [(None, None)] * 3


def test_write_errors_leave_old_file(tmp_path):
    target = tmp_path / "keep.cxi"
    write_cxi_peaks(target, [PeakList([1.0], [1.0], [1.0])])
    before = target.read_bytes()
    with pytest.raises(ValueError, match=r"keep\.cxi: 1 events for 2 peak lists"):
        write_cxi_peaks(target, [PeakList.empty()] * 2, events=[0])
    with pytest.raises(ValueError, match="max_peaks must be at least 1"):
        write_cxi_peaks(target, [PeakList.empty()], max_peaks=0)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.cxi"]


def test_read_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.cxi"
    with h5py.File(bad, "w") as f:
        f.create_dataset("/entry_1/result_1/nPeaks", data=np.array([5], np.int32))
        for name in ("peakXPosRaw", "peakYPosRaw", "peakTotalIntensity"):
            f.create_dataset(f"/entry_1/result_1/{name}", data=np.zeros((1, 4), np.float32))
    with pytest.raises(CxiError, match=r"bad\.cxi: row 0: nPeaks = 5 outside 0\.\.4"):
        read_cxi_peaks(bad)
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(CxiError, match=r"empty\.h5: no peak list group /entry_1/result_1"):
        read_cxi_peaks(empty)
    # a Cheetah-style file without the optional columns reads with zeros there
    with h5py.File(bad, "a") as f:
        f["/entry_1/result_1/nPeaks"][0] = 2
    (p,) = read_cxi_peaks(bad)
    assert len(p) == 2 and (p.snr == 0).all() and (p.npix == 0).all()


def test_hit_list_round_trip(tmp_path):
    hits = [("/data/run3.cxi", 0), ("/data/run3.cxi", 12), ("/data/frame_0001.cbf", None), ("rel/run4.h5", 7)]
    out = write_hit_list(tmp_path / "hits.lst", hits)
    assert out.read_text() == "/data/run3.cxi //0\n/data/run3.cxi //12\n/data/frame_0001.cbf\nrel/run4.h5 //7\n"
    assert read_hit_list(out) == hits
    assert write_hit_list(tmp_path / "none.lst", []).read_text() == ""
    assert read_hit_list(tmp_path / "none.lst") == []


def test_hit_list_errors(tmp_path):
    with pytest.raises(ValueError, match=r"x\.lst: hit 1: file name 'my run\.h5'"):
        write_hit_list(tmp_path / "x.lst", [("a.h5", 0), ("my run.h5", 1)])
    with pytest.raises(ValueError, match=r"hit 0 \(a\.h5\): event must be a frame index"):
        write_hit_list(tmp_path / "x.lst", [("a.h5", -1)])
    assert not (tmp_path / "x.lst").exists()
    bad = tmp_path / "bad.lst"
    bad.write_text("a.cxi //3\n\nb.cxi event7\n")
    with pytest.raises(CxiError, match=r"bad\.lst line 3: expected 'file' or 'file //N', got 'b\.cxi event7'"):
        read_hit_list(bad)


def test_no_warning_without_truncation(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_cxi_peaks(tmp_path / "q.cxi", [PeakList.empty()], max_peaks=4)
