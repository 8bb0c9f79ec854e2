"""The serial-crystallography simulator: exact spot centres, Ewald geometry, labels, files."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from photonflow.io import frame_count, read_frames
from photonflow.io.geom import load_geometry
from photonflow.simulate.sfx import (
    LABEL_ARTIFACT,
    LABEL_BACKGROUND,
    LABEL_PEAK,
    REAL_CELLS,
    SfxConfig,
    cell_reciprocal_basis,
    random_rotation,
    read_sfx_truth,
    simulate_sfx_frame,
    simulate_sfx_frames,
    write_sfx_dataset,
)

GEOMETRY_DIR = Path(__file__).resolve().parents[1] / "config" / "geometry"

# noise-free, nothing but Bragg spots
SPOTS_ONLY = dict(
    poisson=False,
    read_noise_adu=0.0,
    background_photons=0.0,
    diffuse_photons=0.0,
    water_photons=0.0,
    ring_probability=0.0,
    streak_probability=0.0,
    hot_pixel_fraction=0.0,
    dead_pixel_fraction=0.0,
)


@pytest.fixture(scope="module")
def geom256():
    return load_geometry(GEOMETRY_DIR / "sim256.geom")


@pytest.fixture(scope="module")
def geom1920():
    return load_geometry(GEOMETRY_DIR / "sim1920.geom")


def _d_from_cell(cell, hkl):
    """d-spacing from the cell metric (independent of cell_reciprocal_basis)."""
    a, b, c = cell[:3]
    al, be, ga = np.radians(cell[3:])
    G = np.array(
        [
            [a * a, a * b * np.cos(ga), a * c * np.cos(be)],
            [a * b * np.cos(ga), b * b, b * c * np.cos(al)],
            [a * c * np.cos(be), b * c * np.cos(al), c * c],
        ]
    )
    h = np.asarray(hkl, float)
    return 1.0 / np.sqrt(np.einsum("ni,ij,nj->n", h, np.linalg.inv(G), h))


def test_crystallography_helpers():
    rng = np.random.default_rng(1)
    for cell in REAL_CELLS.values():
        B = cell_reciprocal_basis(cell)
        hkl = rng.integers(-20, 21, (50, 3))
        hkl = hkl[np.any(hkl != 0, axis=1)]
        np.testing.assert_allclose(
            1.0 / np.linalg.norm(hkl @ B.T, axis=1), _d_from_cell(np.array(cell), hkl), rtol=1e-12
        )
    # uniform on SO(3): proper rotations, mean of R over many draws ≈ 0
    Rs = np.array([random_rotation(rng) for _ in range(4000)])
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", Rs, Rs), np.broadcast_to(np.eye(3), Rs.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(Rs), 1.0, atol=1e-12)
    assert np.abs(Rs.mean(axis=0)).max() < 0.05
    with pytest.raises(ValueError):
        cell_reciprocal_basis((10, 10, 10, 10, 10, 150))
    with pytest.raises(ValueError, match="hit_fraction"):
        SfxConfig(hit_fraction=1.5)
    cfg = SfxConfig(cells_A=(REAL_CELLS["myoglobin"],), d_min_A=2.5)
    assert SfxConfig.from_dict(cfg.to_dict()) == cfg


def test_spot_centroids_and_integrals_are_exact(geom256):
    """Noise-free isolated spots: the centroid and the sum of the image are the truth."""
    cfg = SfxConfig(**SPOTS_ONLY, cells_A=(REAL_CELLS["lysozyme_tetragonal"],), adu_per_photon=7.0)
    pmap = geom256.panel_map()
    checked = edge = 0
    for seed in range(12):
        fr = simulate_sfx_frame(geom256, seed, cfg, hit=True, return_expected=True)
        t = fr.truth
        np.testing.assert_allclose(fr.image, fr.expected * np.float32(7.0), rtol=1e-6)
        assert fr.image.dtype == np.float32 and fr.labels.dtype == np.uint8
        assert fr.image.sum() / 7.0 == pytest.approx(t.intensity.sum(), rel=1e-4)
        pos = t.positions()
        for i in range(t.n_peaks):
            others = np.delete(pos, i, axis=0)
            if len(others) and np.hypot(*(others - pos[i]).T).min() < 25:
                continue
            h = int(np.ceil(5 * max(t.sigma_fs[i], t.sigma_ss[i]))) + 2
            c0, r0 = int(round(t.fs_bragg[i])), int(round(t.ss_bragg[i]))
            ss, fs = np.mgrid[max(r0 - h, 0) : r0 + h + 1, max(c0 - h, 0) : c0 + h + 1]
            ok = (ss < 256) & (fs < 256)
            ss, fs = ss[ok], fs[ok]
            w = fr.expected[ss, fs].astype(np.float64)
            # nothing on other panels: the spot is clipped to its own panel
            assert w[pmap[ss, fs] != t.panel[i]].sum() == 0.0
            assert w.sum() == pytest.approx(t.intensity[i], rel=1e-5)
            assert abs((w * fs).sum() / w.sum() - t.fs[i]) < 1e-3
            assert abs((w * ss).sum() / w.sum() - t.ss[i]) < 1e-3
            b = geom256.panels[t.panel[i]]
            if min(
                t.fs_bragg[i] - b.min_fs, b.max_fs - t.fs_bragg[i], t.ss_bragg[i] - b.min_ss, b.max_ss - t.ss_bragg[i]
            ) < 2 * max(t.sigma_fs[i], t.sigma_ss[i]):
                edge += 1
            checked += 1
    assert checked >= 20
    assert edge >= 1  # clipped spots at panel edges were checked too


def test_reflections_lie_on_the_ewald_sphere(geom1920):
    cfg = SfxConfig(cell_jitter=0.005)
    lam = geom1920.wavelength_A
    k_in = np.array([0.0, 0.0, 1.0 / lam])
    res_map = geom1920.resolution_map()
    cut = cfg.excitation_cutoff_sigma * cfg.excitation_sigma_invA
    n = 0
    for seed in range(2):
        t = simulate_sfx_frame(geom1920, seed, cfg, hit=True).truth
        assert t.is_hit and t.n_peaks > 10
        A = t.reciprocal_basis
        B = cell_reciprocal_basis(t.cell_A)
        np.testing.assert_allclose(A.T @ A, B.T @ B, rtol=1e-12, atol=1e-15)  # A = U·B, U a rotation
        g = t.hkl @ A.T
        s = np.linalg.norm(k_in + g, axis=1) - 1.0 / lam
        assert np.all(np.abs(s) <= cut * (1 + 1e-9))
        np.testing.assert_allclose(s, t.excitation_error_invA, atol=1e-12)
        np.testing.assert_allclose(t.partiality, np.exp(-0.5 * (s / cfg.excitation_sigma_invA) ** 2), rtol=1e-9)
        np.testing.assert_allclose(t.d_A, _d_from_cell(t.cell_A, t.hkl), rtol=1e-9)
        assert t.d_A.min() >= cfg.d_min_A
        # the ray k_in + g meets the detector where the truth says
        lab = geom1920.slab_to_lab(t.fs_bragg, t.ss_bragg)
        ray = (k_in + g) / np.linalg.norm(k_in + g, axis=1, keepdims=True)
        cosang = np.einsum("ij,ij->i", lab / np.linalg.norm(lab, axis=1, keepdims=True), ray)
        assert np.all(cosang > 1 - 1e-12)
        # ... and the resolution there is the reflection's d (within the excitation error)
        tth = np.arccos(lab[:, 2] / np.linalg.norm(lab, axis=1))
        np.testing.assert_allclose(lam / (2 * np.sin(tth / 2)), t.d_A, rtol=2e-3)
        d_pix = res_map[np.rint(t.ss_bragg).astype(int), np.rint(t.fs_bragg).astype(int)]
        np.testing.assert_allclose(d_pix, t.d_A, rtol=0.03)
        # the spot centroid sits on the panel the ray hit, on the ray unless clipped at a panel edge
        assert np.all(geom1920.panel_map()[np.rint(t.ss).astype(int), np.rint(t.fs).astype(int)] == t.panel)
        shift = np.hypot(t.fs - t.fs_bragg, t.ss - t.ss_bragg)
        assert np.all(shift < 2 * np.maximum(t.sigma_fs, t.sigma_ss))
        assert np.median(shift) < 1e-3
        n += t.n_peaks
    assert n > 100


def test_label_map(geom256):
    cfg = SfxConfig(
        ring_probability=1.0,
        streak_probability=1.0,
        hit_fraction=0.5,
        hot_pixel_fraction=3e-3,
        dead_pixel_fraction=5e-3,
    )
    frames = simulate_sfx_frames(geom256, 8, seed=3, config=cfg)
    q = geom256.q_map()
    x, y, _ = geom256.lab_maps_m()
    px = 1.0 / geom256.panels[0].res
    hits = [f for f in frames if f.truth.is_hit]
    assert hits and len(hits) < len(frames)
    n_strong = n_weak = n_streak = 0
    for fr in frames:
        t, lab = fr.truth, fr.labels
        hot = np.unravel_index(t.hot_pixels, lab.shape)
        dead = np.unravel_index(t.dead_pixels, lab.shape)
        assert len(t.hot_pixels) > 100 and len(t.dead_pixels) > 200
        assert np.all(lab[hot] == LABEL_ARTIFACT) and np.all(fr.image[hot] > 0.15 * cfg.saturation_adu)
        assert np.all(lab[dead] == LABEL_BACKGROUND) and np.all(fr.image[dead] == 0)
        if not t.is_hit:
            assert t.n_peaks == 0 and not np.any(lab == LABEL_PEAK)
            continue
        # every spot bright enough to be labelled has its brightest pixel labelled
        strong = t.snr >= cfg.label_min_snr
        n_strong += strong.sum()
        n_weak += (~strong).sum()
        r, c = np.rint(t.ss_bragg[strong]).astype(int), np.rint(t.fs_bragg[strong]).astype(int)
        defect = np.isin(r * lab.shape[1] + c, np.concatenate([t.hot_pixels, t.dead_pixels]))
        assert np.all(lab[r[~defect], c[~defect]] == LABEL_PEAK)
        # no peak label far from a labelled spot
        pr, pc = np.nonzero(lab == LABEL_PEAK)
        dist = np.hypot(pr[:, None] - t.ss[strong][None], pc[:, None] - t.fs[strong][None]).min(axis=1)
        assert dist.max() < 3 * 1.6 + 1
        # rings: labelled artifact along their crest (where not a peak or defect)
        for ring in t.rings:
            crest = np.abs(q - ring["q_nm"]) < 0.2 * ring["sigma_nm"]
            assert crest.sum() > 10
            assert np.mean(lab[crest] == LABEL_ARTIFACT) > 0.8
        # streaks: labelled on their axis just past their start
        for st in t.streaks:
            a = np.radians(st["angle_deg"])
            along = (x * np.cos(a) + y * np.sin(a)) / px
            across = (y * np.cos(a) - x * np.sin(a)) / px
            on = (np.abs(across) < 0.3) & (along > st["start_px"] + 2) & (along < st["start_px"] + 30)
            if on.sum() > 5:
                assert np.mean(lab[on] != LABEL_BACKGROUND) > 0.8
                n_streak += 1
    assert n_strong > 50 and n_weak > 20 and n_streak > 2  # strong and many weak spots; streaks seen
    # water ring and smooth background carry no label
    quiet = simulate_sfx_frame(
        geom256, 0, SfxConfig(ring_probability=0, streak_probability=0, hot_pixel_fraction=0), hit=False
    )
    assert not quiet.labels.any()


def test_noise_statistics_and_determinism(geom256):
    cfg = SfxConfig(
        adu_per_photon=10.0,
        read_noise_adu=3.0,
        hot_pixel_fraction=0,
        dead_pixel_fraction=0,
        ring_probability=0,
        streak_probability=0,
        water_photons=4.0,
    )
    fr = simulate_sfx_frame(geom256, 11, cfg, hit=False, return_expected=True)
    resid = fr.image.astype(np.float64) - 10.0 * fr.expected
    var = 100.0 * fr.expected + 9.0
    n = resid.size
    assert abs(resid.mean()) < 5 * np.sqrt(var.mean() / n)
    assert (resid**2 / var).mean() == pytest.approx(1.0, abs=0.03)  # Poisson + read noise
    a = simulate_sfx_frames(geom256, 4, seed=7, config=cfg)
    b = simulate_sfx_frames(geom256, 6, seed=7, config=cfg)  # frame i does not depend on n_frames
    c = simulate_sfx_frames(geom256, 4, seed=8, config=cfg)
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.image, fb.image)
        np.testing.assert_array_equal(fa.labels, fb.labels)
        np.testing.assert_array_equal(fa.truth.fs, fb.truth.fs)
        assert fa.truth.is_hit == fb.truth.is_hit
    assert not np.array_equal(a[0].image, c[0].image)


def test_write_and_read_dataset(tmp_path, geom256):
    cfg = SfxConfig(hit_fraction=0.7, ring_probability=0.5, streak_probability=0.5)
    ds = write_sfx_dataset(tmp_path, geom256, n_frames=5, frames_per_file=2, seed=4, config=cfg, dtype=np.float32)
    assert [p.name for p in ds.cxi_files] == ["sfx_0000.cxi", "sfx_0001.cxi", "sfx_0002.cxi"]
    assert [frame_count(p) for p in ds.cxi_files] == [2, 2, 1]
    expected = simulate_sfx_frames(geom256, 5, seed=4, config=cfg)
    truth = read_sfx_truth(ds.truth_path, labels=True)
    assert len(truth) == 5 and truth.refs == ds.refs
    assert ds.n_hits == sum(f.truth.is_hit for f in expected)
    for i, (path, event) in enumerate(truth.refs):
        np.testing.assert_array_equal(read_frames(path, [event])[0], expected[i].image)
        np.testing.assert_array_equal(truth.labels[i], expected[i].labels)
        t, e = truth.truths[i], expected[i].truth
        assert t.is_hit == e.is_hit and t.rings == e.rings and t.streaks == e.streaks
        for name in ("fs", "ss", "intensity", "d_A", "hkl", "panel", "snr", "hot_pixels", "dead_pixels"):
            np.testing.assert_array_equal(getattr(t, name), getattr(e, name))
        np.testing.assert_array_equal(t.cell_A, e.cell_A)
    with h5py.File(ds.cxi_files[0], "r") as f:
        d = f["/entry_1/data_1/data"]
        assert d.dtype == np.float32 and d.chunks == (1, 256, 256)
        plist = d.id.get_create_plist()
        assert 32008 in [plist.get_filter(j)[0] for j in range(plist.get_nfilters())]  # Bitshuffle
    # int32 ADU (the default) compresses (float32 with read noise hardly does)
    ds2 = write_sfx_dataset(tmp_path / "int", geom256, n_frames=2, seed=4, config=cfg)
    with h5py.File(ds2.cxi_files[0], "r") as f:
        d = f["/entry_1/data_1/data"]
        assert d.dtype == np.int32 and d.id.get_storage_size() < 0.6 * d.size * 4
    img = read_frames(ds2.cxi_files[0])
    np.testing.assert_array_equal(img[1], np.rint(expected[1].image).astype(np.int32))
    g = load_geometry(ds.geometry_path)
    assert g.slab_shape == (256, 256) and g.panels[0].adu_per_photon == cfg.adu_per_photon
    assert truth.geometry_path == ds.geometry_path and truth.config == cfg.to_dict()
    ds3 = write_sfx_dataset(tmp_path / "plain", geom256, n_frames=1, seed=4, config=cfg, compression=None)
    with h5py.File(ds3.cxi_files[0], "r") as f:
        assert f["/entry_1/data_1/data"].id.get_create_plist().get_nfilters() == 0
    pl = expected[0].truth.peak_list(min_snr=3.0, adu_per_photon=cfg.adu_per_photon)
    assert len(pl) == int((expected[0].truth.snr >= 3).sum())
