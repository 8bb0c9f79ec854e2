"""The two passes on a simulated scan: chunk files, their virtual join, the volume and the pyramid."""

import h5py
import numpy as np
import pytest

from photonflow.simulate.tomo import phantom_volume, simulate_scan
from photonflow.tomo.passes import (
    ChunkError,
    check_sources,
    join,
    pass1_chunk,
    pass2_chunk,
    read_sinograms,
    write_pyramid,
)
from photonflow.tomo.preprocess import paganin_filter
from photonflow.tomo.recon import reconstruct

STEPS1 = {"i0": {"monitor": "/exchange/monitor"}, "zingers": {"threshold": 0.3, "size": 3}}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    root = tmp_path_factory.mktemp("tomo")
    s = simulate_scan(n_rows=10, n_cols=96, n_angles=120, photons=20000, zinger_probability=2e-4, seed=3)
    path = root / "scan.h5"
    nb = s.n_flats_before
    with h5py.File(path, "w") as f:
        ex = f.create_group("exchange")
        ex["data"] = s.data
        ex["data_white"] = s.flats[:nb]
        ex["data_white_end"] = s.flats[nb:]
        ex["data_dark"] = s.darks
        ex["theta"] = s.theta_deg
        ex["monitor"] = s.monitor
    return root, path, s


def _pass1(root, path, steps, chunks, rows, overlap, name):
    out = []
    for k, (a, b) in enumerate(chunks):
        out.append(pass1_chunk([str(path)], a, b, steps, rows, overlap, root / f"{name}_{k}.h5")["file"])
    return join(out, chunks, 0, root / f"{name}.h5")


def test_pass1_chunks_join_to_the_transmission(scan):
    root, path, s = scan
    joined = _pass1(root, path, STEPS1, [(0, 50), (50, 120)], rows=3, overlap=1, name="p1")
    with h5py.File(joined, "r") as f:
        assert f["data"].is_virtual and f["data"].shape == (120, 10, 96)
        trans = f["data"][()]
    truth = np.exp(-s.line_integrals)
    # flats before/after, monitor I0 and zingers handled: the error is the photon noise
    err = np.abs(trans - truth)
    assert np.median(err) < 0.01 and np.percentile(err, 99.9) < 0.06
    sino = read_sinograms(joined, 4, 6)
    assert sino.shape == (2, 120, 96) and np.array_equal(sino[0], trans[:, 4, :])


def test_paganin_in_row_subchunks_equals_whole_projections(scan):
    root, path, _ = scan
    pag = {"pixel_size_um": 1.0, "distance_mm": 20.0, "energy_kev": 20.0, "delta_beta": 100.0}
    from photonflow.tomo.preprocess import paganin_pad

    overlap = paganin_pad((10, 96), **pag)
    whole = _pass1(root, path, {"paganin": pag}, [(0, 120)], rows=10, overlap=0, name="pag_whole")
    split = _pass1(root, path, {"paganin": pag}, [(0, 120)], rows=3, overlap=overlap, name="pag_split")
    with h5py.File(whole, "r") as f, h5py.File(split, "r") as g:
        assert np.abs(f["data"][()] - g["data"][()]).max() < 1e-4
        plain = _pass1(root, path, {}, [(0, 120)], rows=10, overlap=0, name="plain")
        with h5py.File(plain, "r") as h:
            assert np.allclose(f["data"][()], paganin_filter(h["data"][()], **pag), atol=1e-5)


def test_pass2_chunks_make_the_volume(scan):
    root, path, s = scan
    joined = _pass1(root, path, STEPS1, [(0, 60), (60, 120)], rows=5, overlap=1, name="v1")
    steps2 = {"backend": "gridrec", "filter": "shepp", "circle_mask": True}
    files, ranges = [], [(0, 4), (4, 10)]
    for k, (a, b) in enumerate(ranges):
        files.append(
            pass2_chunk(joined, a, b, s.theta_deg, s.center_px, steps2, {"dtype": "float32"}, root / f"slices_{k}.h5")[
                "file"
            ]
        )
    vol_path = join(files, ranges, 0, root / "volume.h5", dataset="volume")
    with h5py.File(vol_path, "r") as f:
        vol = f["volume"][()]
    assert vol.shape == (10, 96, 96)
    # the same as reconstructing all rows at once
    direct = reconstruct(-np.log(np.maximum(read_sinograms(joined, 0, 10), 1e-6)), s.theta_deg, s.center_px)
    assert np.allclose(vol, direct, atol=1e-5)
    truth = phantom_volume((10, 96, 96), s.ellipsoids)
    inside = np.hypot(*np.meshgrid(np.arange(96) - 47.5, np.arange(96) - 47.5)) < 44
    rmse = np.sqrt(np.mean((vol - truth)[:, inside] ** 2))
    print(f"RMSE {rmse:.4g} 1/px, phantom max {truth.max():.4g}")
    assert rmse < 0.15 * truth.max()
    shapes = write_pyramid(vol_path, levels=2)
    assert shapes == [(5, 48, 48), (2, 24, 24)]
    with h5py.File(vol_path, "r") as f:
        assert np.isclose(f["pyramid/level_1"][0, 0, 0], vol[:2, :2, :2].mean(), atol=1e-6)
    # uint16 output with a fixed range
    out = pass2_chunk(
        joined, 0, 4, s.theta_deg, s.center_px, steps2, {"dtype": "uint16", "range": [0.0, 0.05]}, root / "u16.h5"
    )
    with h5py.File(out["file"], "r") as f:
        u = f["data"][()]
    assert u.dtype == np.uint16 and u.max() <= 65535
    assert np.allclose(u / 65535 * 0.05, np.clip(vol[:4], 0, 0.05), atol=0.05 / 65535)


def test_join_refuses_missing_or_incomplete_chunks(scan, tmp_path):
    root, path, _ = scan
    a = pass1_chunk([str(path)], 0, 60, {}, 10, 0, tmp_path / "a.h5")["file"]
    with pytest.raises(ChunkError, match="b.h5: missing"):
        join([a, str(tmp_path / "b.h5")], [(0, 60), (60, 120)], 0, tmp_path / "j.h5")
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["data"] = np.zeros((60, 10, 96), np.float32)  # no "complete" mark
    with pytest.raises(ChunkError, match="c.h5: not complete"):
        check_sources([a, str(tmp_path / "c.h5")], [(0, 60), (60, 120)], 0, (10, 96))
    assert not (tmp_path / "j.h5").exists()
