"""DXchange reading (compression, external links, bad files) and the chunk plan."""

import h5py
import hdf5plugin
import numpy as np
import pytest

from photonflow.tomo.dxchange import DxchangeError, open_scan, read_projections, read_references
from photonflow.tomo.plan import describe, plan_chunks


def _write(path, n=10, rows=6, cols=8, flats=3, darks=2, theta=None, compression=True, link_to=None):
    rng = np.random.default_rng(0)
    data = rng.integers(100, 4000, (n, rows, cols), dtype=np.uint16)
    kw = dict(hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.BITSHUFFLE)) if compression else {}
    with h5py.File(path, "w") as f:
        ex = f.create_group("exchange")
        if link_to is not None:
            with h5py.File(link_to, "w") as g:
                g.create_dataset("projections", data=data, chunks=(1, rows, cols), **kw)
            ex["data"] = h5py.ExternalLink(str(link_to.name), "/projections")
        else:
            ex.create_dataset("data", data=data, chunks=(1, rows, cols), **kw)
        if flats:
            ex.create_dataset("data_white", data=np.full((flats, rows, cols), 5000, np.uint16))
        if darks:
            ex.create_dataset("data_dark", data=np.full((darks, rows, cols), 100, np.uint16))
        ex.create_dataset("theta", data=np.linspace(0, 180, n, endpoint=False) if theta is None else theta)
        f.create_dataset("monitor", data=np.linspace(1.0, 2.0, n))
    return data


def test_read_compressed_and_externally_linked(tmp_path):
    data = _write(tmp_path / "a.h5")
    scan = open_scan(tmp_path / "a.h5", monitor="/monitor")
    assert scan.shape == (10, 6, 8) and scan.n_flats == 3 and scan.n_darks == 2 and scan.n_flats_end == 0
    assert np.array_equal(read_projections(scan, 2, 5), data[2:5].astype(np.float32))
    refs = read_references(scan, rows=slice(1, 3))
    assert refs["flats"].shape == (3, 2, 8) and refs["flats_end"] is None and len(refs["monitor"]) == 10
    data = _write(tmp_path / "master.h5", link_to=tmp_path / "data_0001.h5")
    scan = open_scan(tmp_path / "master.h5")
    assert np.array_equal(read_projections(scan, 0, 10, rows=slice(2, 4)), data[:, 2:4].astype(np.float32))
    (tmp_path / "data_0001.h5").unlink()
    with pytest.raises(DxchangeError, match="master.h5.*/exchange/data.*(external link|cannot be opened)"):
        open_scan(tmp_path / "master.h5")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(flats=0), "data_white: not found"),
        (dict(darks=0), "data_dark: not found"),
        (dict(theta=np.arange(7.0)), "7 angles for 10 projections"),
        (dict(theta=np.r_[np.arange(9.0), np.nan]), "non-finite angles"),
    ],
)
def test_bad_files_are_named_before_work(tmp_path, kwargs, message):
    _write(tmp_path / "bad.h5", **kwargs)
    with pytest.raises(DxchangeError, match=message) as err:
        open_scan(tmp_path / "bad.h5")
    assert "bad.h5" in str(err.value)


def test_bad_monitor_and_missing_file(tmp_path):
    _write(tmp_path / "a.h5")
    with pytest.raises(DxchangeError, match="/nope: not found"):
        open_scan(tmp_path / "a.h5", monitor="/nope")
    with pytest.raises(DxchangeError, match="file not found"):
        open_scan(tmp_path / "absent.h5")


def test_plan_fits_memory_and_covers_the_scan():
    gib = 2**30
    plan = plan_chunks((1500, 2048, 2048), 4 * gib, overlap=12)
    p1, p2 = plan["pass1"], plan["pass2"]
    assert p1["chunks"][0] == (0, p1["projections_per_chunk"]) and p1["chunks"][-1][1] == 1500
    assert sum(b - a for a, b in p1["chunks"]) == 1500 and sum(b - a for a, b in p2["chunks"]) == 2048
    assert p1["peak_bytes_estimate"] <= 2 * gib and p2["peak_bytes_estimate"] <= 2 * gib
    assert p1["overlap_rows"] == 12 and p1["rows_per_subchunk"] >= 1
    print(describe(plan))
    small = plan_chunks((1500, 2048, 2048), int(1.5 * gib), overlap=12)
    assert small["pass2"]["rows_per_chunk"] < p2["rows_per_chunk"]
    half = plan_chunks((1500, 2048, 2048), 4 * gib, half_acquisition=True)
    assert half["pass2"]["reconstructed_width"] == 4096
    with pytest.raises(ValueError, match="cannot hold one"):
        plan_chunks((24002, 2586, 24608), 64 * 2**20, overlap=20)


def test_non_finite_values_are_named(tmp_path):
    _write(tmp_path / "a.h5")
    with h5py.File(tmp_path / "a.h5", "a") as f:
        data = f["exchange/data"][()].astype(np.float32)
        data[7, 2, 3] = np.nan
        del f["exchange/data"]
        f["exchange/data"] = data
    scan = open_scan(tmp_path / "a.h5")  # projection 7 is not among the sampled ones
    with pytest.raises(
        DxchangeError, match=r"a.h5: /exchange/data: projection 7 has NaN or inf \(row 0 \+ 2, column 3"
    ):
        read_projections(scan, 5, 10)
    with h5py.File(tmp_path / "a.h5", "a") as f:
        f["exchange/data"][5, 0, 0] = np.inf
    with pytest.raises(DxchangeError, match="projection 5 contains NaN or inf"):
        open_scan(tmp_path / "a.h5")
