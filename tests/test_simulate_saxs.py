"""photonflow.simulate.saxs: synthetic SAXS/WAXS images with exact ground truth."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate as sp_integrate

from photonflow.geometry import Geometry, q_from_two_theta
from photonflow.simulate import (
    geometry_from_saxsdog,
    ground_truth_curve,
    guinier_porod,
    module_gaps,
    pilatus1m_gaps,
    pixel_average,
    powder_rings,
    saxsdog_calibration_dict,
    saxsdog_fit2d_params,
    simulate_image,
    sphere_form_factor,
    write_demo_dataset,
    write_series,
)

REPO = Path(__file__).resolve().parents[1]


def _small_geometry(y_origin="bottom", distance_mm=1000.0, shape=(160, 200)):
    return Geometry.from_fit2d(
        distance_mm,
        center_x=70.3,
        center_y=60.8,
        tilt_deg=2.0,
        tilt_plane_rotation_deg=35.0,
        shape=shape,
        wavelength_A=1.0,
        y_origin=y_origin,
    )


GP = partial(guinier_porod, i0=1.0e4, rg_nm=4.0, porod_exponent=4.0, background=20.0)


# ------------------------------------------------------------------ models
def test_guinier_porod_is_smooth_at_the_junction():
    rg, d = 4.0, 3.5
    q1 = np.sqrt(1.5 * d) / rg
    eps = 1e-10
    lo, hi = guinier_porod(np.array([q1 - eps, q1 + eps]), 100.0, rg, d)
    assert lo == pytest.approx(hi, rel=1e-6)
    h = 1e-5
    left = (guinier_porod(q1 - h, 100.0, rg, d) - guinier_porod(q1 - 2 * h, 100.0, rg, d)) / h
    right = (guinier_porod(q1 + 2 * h, 100.0, rg, d) - guinier_porod(q1 + h, 100.0, rg, d)) / h
    assert left == pytest.approx(right, rel=1e-3)
    assert guinier_porod(0.0, 100.0, rg, d, background=3.0) == pytest.approx(103.0)
    # Porod region: I ∝ q^-d
    assert guinier_porod(2.0, 1.0, rg, d) / guinier_porod(4.0, 1.0, rg, d) == pytest.approx(2**d)


def test_sphere_form_factor_limits():
    r = 5.0
    q = np.array([0.0, 1e-4, 0.3, 1.0])
    f = sphere_form_factor(q, r, scale=7.0)
    x = q[2:] * r
    exact = 7.0 * (3 * (np.sin(x) - x * np.cos(x)) / x**3) ** 2
    assert f[0] == pytest.approx(7.0, rel=1e-15)
    assert f[1] == pytest.approx(7.0 * (1 - (1e-4 * r) ** 2 / 10) ** 2, rel=1e-12)
    np.testing.assert_allclose(f[2:], exact, rtol=1e-12)
    # first zero of the sphere amplitude: tan x = x at x ≈ 4.4934
    assert sphere_form_factor(4.493409457909064 / r, r) < 1e-20


def test_powder_rings_peaks():
    q = np.array([2.0, 3.0, 3.1])
    v = powder_rings(q, [2.0, 3.0], [0.01, 0.1], [50.0, 10.0], background=1.0)
    assert v[0] == pytest.approx(51.0)
    assert v[1] == pytest.approx(11.0)
    assert v[2] == pytest.approx(1.0 + 10.0 * np.exp(-0.5))


# ------------------------------------------------------------------ expected values
def test_noise_free_image_matches_intensity_at_pixel_centres():
    """For a smooth I(q) the pixel average differs from I(q_centre) only by the curvature term
    ≈ (Δq_pixel²/24)·I''/I: Δq ≈ 0.011 nm⁻¹ here (1 m, 172 µm, λ = 1 Å) and |I''/I| ≤ ~50 nm²,
    so at most ~3e-4 (measured: max 1.9e-4, median 6.4e-5)."""
    g = _small_geometry()
    sim = simulate_image(g, GP, oversampling=5, poisson=False, dtype=np.float64)
    np.testing.assert_allclose(sim.q_map, q_from_two_theta(g.two_theta_array(), 1.0), rtol=1e-15)
    rel = np.abs(sim.expected / GP(sim.q_map) - 1)
    assert rel.max() < 3e-4, rel.max()
    assert np.median(rel) < 1e-4
    # noise-free float image is the expected image itself
    np.testing.assert_array_equal(sim.image, sim.expected)
    assert not sim.mask.any()
    # integer noise-free image: the rounded expectation
    sim_i = simulate_image(g, GP, oversampling=5, poisson=False)
    assert sim_i.image.dtype == np.int32
    np.testing.assert_array_equal(sim_i.image, np.rint(sim.expected).astype(np.int32))


def test_expected_value_is_the_pixel_area_average():
    """Against an adaptive 2D quadrature (scipy dblquad) of I over a few whole pixels: the
    ov × ov midpoint rule converges as 1/ov² to it."""
    g = _small_geometry(distance_mm=300.0)  # steeper curve per pixel than the SAXS case
    fn = partial(guinier_porod, i0=1.0e4, rg_nm=3.0, porod_exponent=4.0)
    e5 = pixel_average(g, fn, 5)
    e15 = pixel_average(g, fn, 15)
    for i, j in [(60, 75), (20, 10), (100, 150), (159, 199), (70, 60)]:

        def f(c, r):
            tth = g.two_theta_chi(r, c)[0]
            return float(fn(q_from_two_theta(tth, g.wavelength_A)))

        exact, _ = sp_integrate.dblquad(f, i, i + 1, j, j + 1, epsabs=0, epsrel=1e-12)
        err5 = abs(e5[i, j] / exact - 1)
        err15 = abs(e15[i, j] / exact - 1)
        assert err5 < 1e-4, (i, j, err5)
        assert err15 < err5 / 5 or err15 < 1e-9, (i, j, err5, err15)


def test_polarisation_and_solid_angle_factors():
    g = _small_geometry(distance_mm=200.0)
    base = simulate_image(g, GP, oversampling=2, poisson=False, dtype=np.float64).expected
    sim = simulate_image(
        g, GP, oversampling=2, poisson=False, dtype=np.float64, polarization_factor=0.95, solid_angle=True
    )
    np.testing.assert_allclose(sim.expected, base * g.polarization_array(0.95) * g.solid_angle_array(), rtol=1e-14)


def test_poisson_noise_statistics():
    """z_j = (x_j − μ_j)/√μ_j over N ≈ 1.3e5 pixels with μ_j ≥ 20: mean(z) has standard error
    1/√N ≈ 0.0028 and var(z) has standard error √((2 + 1/μ_min)/N) ≈ 0.0040 (Poisson fourth
    moment); the tolerances are 5 standard errors (false-alarm rate < 1e-6, and the seed is fixed)."""
    g = _small_geometry(shape=(360, 360))
    sim = simulate_image(g, GP, oversampling=2, seed=12345)
    mu = sim.expected
    assert mu.min() >= 20
    x = sim.image.astype(np.float64)
    z = (x - mu) / np.sqrt(mu)
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt((2 + 1 / mu.min()) / n)
    assert abs(x.sum() - mu.sum()) < 5 * np.sqrt(mu.sum())
    # a constant pattern: sample mean and variance both estimate λ
    flat = simulate_image(g, lambda q: np.full_like(q, 50.0), oversampling=1, seed=7).image.astype(float)
    assert abs(flat.mean() - 50) < 5 * np.sqrt(50 / flat.size)
    assert abs(flat.var() / 50 - 1) < 5 * np.sqrt(2.02 / flat.size)
    # reproducible with a seed, different without
    again = simulate_image(g, GP, oversampling=2, seed=12345)
    np.testing.assert_array_equal(again.image, sim.image)
    other = simulate_image(g, GP, oversampling=2, seed=54321)
    assert not np.array_equal(other.image, sim.image)


def test_invalid_intensity_is_reported():
    g = _small_geometry(shape=(20, 20))
    with pytest.raises(ValueError, match="q ="):
        simulate_image(g, lambda q: 5.0 - 100 * q)


# ------------------------------------------------------------------ gaps
def test_pilatus_gaps_reproduce_the_real_detector(shared_data):
    import tifffile

    real = tifffile.imread(shared_data / "saxs" / "CeO2_Pilatus1M.tif")
    gaps = pilatus1m_gaps()
    assert gaps.shape == real.shape == (1043, 981)
    np.testing.assert_array_equal(gaps, real == -1)


def test_simulated_pilatus_frame_has_gaps_and_bad_pixels():
    g = Geometry.from_fit2d(1000.0, 480.6, 650.3, 0.8, 35.0, shape=(1043, 981), wavelength_A=1.0, y_origin="bottom")
    beamstop = np.zeros(g.shape, bool)
    beamstop[380:400, 470:490] = True
    sim = simulate_image(g, GP, oversampling=1, gaps="pilatus", bad_pixels=27, mask=beamstop, seed=2)
    gaps = pilatus1m_gaps()
    np.testing.assert_array_equal(sim.image == -1, gaps)
    assert (sim.image == -2).sum() == 27
    assert not (gaps & (sim.image == -2)).any()
    assert (sim.image[beamstop & ~gaps] == 0).all()
    np.testing.assert_array_equal(sim.mask, gaps | (sim.image == -2) | beamstop)
    assert (sim.image[~sim.mask] >= 0).all()
    assert sorted(sim.params["bad_pixels"]) == sorted(np.flatnonzero(sim.image.ravel() == -2).tolist())
    # the layout for smaller Pilatus-like detectors is the same tiling
    np.testing.assert_array_equal(module_gaps((300, 500)), gaps[:300, :500])


# ------------------------------------------------------------------ ground truth curve
def test_ground_truth_curve_of_a_constant_and_areas():
    g = _small_geometry()
    mask = np.zeros(g.shape, bool)
    mask[:, :13] = True
    edges = np.linspace(0.0, g.q_array().max() * 1.01, 40)
    gt = ground_truth_curve(
        g, lambda q: np.full_like(q, 3.5), edges, oversampling=4, mask=mask, polarization_factor=0.9, solid_angle=True
    )
    filled = gt.area_px > 0
    np.testing.assert_allclose(gt.intensity[filled], 3.5, rtol=1e-13)
    assert np.isnan(gt.intensity[~filled]).all()
    assert gt.area_px.sum() == pytest.approx((~mask).sum())
    assert np.all((gt.q_mean[filled] >= edges[:-1][filled]) & (gt.q_mean[filled] < edges[1:][filled]))
    np.testing.assert_allclose(gt.analytic, 3.5)


def test_ground_truth_curve_converges_to_the_analytic_curve():
    """Narrow bins of a smooth curve: the bin average equals I(q_centre) up to (Δq_bin²/24)·I''/I."""
    g = _small_geometry()
    edges = np.linspace(0.05, 0.8, 60)
    gt = ground_truth_curve(g, GP, edges, oversampling=6)
    ok = gt.area_px > 50
    assert ok.sum() > 40
    rel = np.abs(gt.intensity[ok] / gt.analytic[ok] - 1)
    assert np.median(rel) < 2e-4, np.median(rel)


# ------------------------------------------------------------------ series
def _series_kwargs():
    shape = (60, 80)
    g = Geometry.from_fit2d(500.0, 30.2, 20.7, 1.5, -40.0, shape=shape, wavelength_A=1.2, y_origin="bottom")
    shadow = np.zeros(shape, bool)
    shadow[15:25, 25:35] = True
    return dict(
        geometry=g,
        model=guinier_porod,
        params={"i0": 5e3, "rg_nm": 2.0, "porod_exponent": 4.0, "background": 5.0},
        varying={"rg_nm": (2.0, 4.0)},
        gaps=module_gaps(shape, (25, 30), (3, 2)),
        bad_pixels=3,
        mask=shadow,
        seed=11,
    )


def test_series_round_trips_in_every_format(tmp_path):
    import fabio
    import h5py
    import tifffile

    kw = _series_kwargs()
    n = 4
    frames = {}
    for fmt in ("tif", "edf", "cbf", "h5"):
        s = write_series(tmp_path / fmt, n, fmt=fmt, frame_time_s=0.5, truth_file=tmp_path / f"{fmt}.json", **kw)
        assert [p["rg_nm"] for p in s.params] == pytest.approx([2.0, 2 + 2 / 3, 2 + 4 / 3, 4.0])
        np.testing.assert_allclose(s.times_s, [0.0, 0.5, 1.0, 1.5])
        truth = json.loads((tmp_path / f"{fmt}.json").read_text())
        assert [f["params"]["rg_nm"] for f in truth["frames"]] == pytest.approx([p["rg_nm"] for p in s.params])
        if fmt == "h5":
            assert s.paths == [tmp_path / "h5" / "sample.h5"]
            with h5py.File(s.paths[0], "r") as f:
                ds = f["/entry/data/data"]
                assert ds.shape == (n, *kw["geometry"].shape) and ds.dtype == np.int32
                assert ds.chunks == (1, *kw["geometry"].shape)
                assert ds.id.get_create_plist().get_filter(0)[0] == 32008  # Bitshuffle (LZ4)
                frames[fmt] = ds[()]
                np.testing.assert_allclose(f["/entry/simulation/rg_nm"][()], [p["rg_nm"] for p in s.params])
        else:
            assert [p.name for p in s.paths] == [f"sample_{i:05d}.{fmt}" for i in range(1, n + 1)]
            assert [e for _, e in s.frames] == [None] * n
            if fmt == "tif":
                stack = []
                for i, p in enumerate(s.paths):
                    with tifffile.TiffFile(p) as tf:
                        page = tf.pages[0]
                        assert page.compression == 1 and page.dtype == np.int32
                        meta = json.loads(page.description)
                        assert meta["params"]["rg_nm"] == pytest.approx(s.params[i]["rg_nm"])
                        stack.append(page.asarray())
                frames[fmt] = np.stack(stack)
            else:
                frames[fmt] = np.stack([fabio.open(str(p)).data for p in s.paths])
        assert not any(p.name.startswith(".") for p in (tmp_path / fmt).iterdir())  # no temporary left
    for fmt in ("edf", "cbf", "h5"):
        np.testing.assert_array_equal(frames[fmt], frames["tif"], err_msg=fmt)
    stack = frames["tif"]
    np.testing.assert_array_equal(stack[:, kw["gaps"]], -1)
    assert ((stack == -2).sum(axis=(1, 2)) == 3).all()
    assert (stack[:, kw["mask"] & ~kw["gaps"]] == 0).all()
    # a growing radius makes the low-q intensity fall: mean counts decrease frame by frame
    valid = ~s.mask
    means = stack[:, valid].mean(axis=1)
    assert np.all(np.diff(means) < 0)


def test_series_frames_are_the_simulated_expectation(tmp_path):
    import tifffile

    kw = _series_kwargs()
    s = write_series(tmp_path, 3, poisson=False, dtype=np.float32, oversampling=3, **kw)
    g = kw["geometry"]
    for i in range(3):
        fn = partial(guinier_porod, **s.params[i])
        sim = simulate_image(g, fn, oversampling=3, poisson=False, dtype=np.float64)
        img = tifffile.imread(s.paths[i])
        np.testing.assert_allclose(img[~s.mask], sim.expected[~s.mask], rtol=1e-6)
    # frame i's noise does not depend on the series length
    kw["varying"] = None
    a = write_series(tmp_path / "a", 2, **kw)
    b = write_series(tmp_path / "b", 3, **kw)
    for pa, pb in zip(a.paths, b.paths):
        np.testing.assert_array_equal(tifffile.imread(pa), tifffile.imread(pb))


def test_series_with_constant_parameters_and_callables(tmp_path):
    import tifffile

    g = _small_geometry(shape=(30, 40))
    s = write_series(
        tmp_path,
        3,
        g,
        powder_rings,
        {"q_peaks": [0.3], "widths": [0.02], "heights": [100.0], "background": 10.0},
        varying=lambda i, t: {"background": 10.0 + t},
        frame_time_s=2.0,
        poisson=False,
    )
    assert [p["background"] for p in s.params] == [10.0, 12.0, 14.0]
    imgs = [tifffile.imread(p) for p in s.paths]
    assert imgs[1].min() >= 12 and imgs[2].min() >= 14
    with pytest.raises(ValueError, match="fmt"):
        write_series(tmp_path, 1, g, fmt="png")
    with pytest.raises(ValueError, match="varying"):
        write_series(tmp_path, 3, g, varying={"rg_nm": [1.0, 2.0]})


# ------------------------------------------------------------------ SAXSDOG calibration and demo
def test_saxsdog_calibration_round_trip(shared_data):
    g = Geometry.from_poni_file(shared_data / "saxs" / "CeO2_Pilatus1M.poni", shape=(1043, 981))
    fit = saxsdog_fit2d_params(g)
    cal = saxsdog_calibration_dict(**fit, mask_file=None, q_start=5.0, q_stop=40.0)
    back = geometry_from_saxsdog(json.loads(json.dumps(cal)))
    np.testing.assert_allclose(back.two_theta_array(), g.two_theta_array(), rtol=1e-10)
    for name in ("dist_mm", "poni1_mm", "poni2_mm", "rot1", "rot2", "wavelength_A"):
        assert getattr(back, name) == pytest.approx(getattr(g, name), rel=1e-9, abs=1e-12), name
    # FIT2D counts y from the bottom: BeamCenter[0] = rows − row of the beam centre
    row, col = g.beam_centre_px()
    assert cal["Geometry"]["BeamCenter"] == pytest.approx([1043 - row, col])


def test_demo_dataset(tmp_path):
    import tifffile

    out = write_demo_dataset(tmp_path / "demo", n_frames=3, seed=0)
    cal_path = Path(out["calibration"])
    cal = json.loads(cal_path.read_text())
    geo = cal["Geometry"]
    for key in ("BeamCenter", "DedectorDistanceMM", "PixelSizeMicroM", "Imagesize", "Tilt"):
        assert key in geo, key
    assert set(geo["Tilt"]) == {"TiltRotDeg", "TiltAngleDeg"}
    assert geo["Imagesize"] == [1043, 981] and geo["PixelSizeMicroM"] == [172.0, 172.0]
    assert cal["Wavelength"] == 1.0
    assert cal["Slices"] == [] and cal["OverwriteFiles"] is False and cal["Threads"] == 2
    m = cal["Masks"][0]
    assert {"MaskFile", "Oversampling", "PixelPerRadialElement", "qStart", "qStop", "Name"} <= set(m)
    assert m["Oversampling"] == 3 and m["Name"] == "full"
    mask_path = cal_path.parent / m["MaskFile"]
    assert mask_path == Path(out["mask"]) and mask_path.is_file()
    schema_path = REPO / "config" / "schemas" / "saxsdog_calibration.schema.json"
    if schema_path.is_file():
        jsonschema = pytest.importorskip("jsonschema")
        jsonschema.validate(cal, json.loads(schema_path.read_text()))

    g = geometry_from_saxsdog(cal)
    assert g.to_dict() == out["geometry"]
    frames = [Path(p) for p in out["frames"]]
    assert len(frames) == 3 and all(p.is_file() for p in frames)
    assert out["inputs"] == [str(frames[0].parent)]
    mask = tifffile.imread(mask_path) != 0
    gaps = pilatus1m_gaps()
    assert (mask & gaps).sum() == gaps.sum() and mask.sum() > gaps.sum() + 27
    for p in frames:
        img = tifffile.imread(p)
        assert img.shape == (1043, 981) and img.dtype == np.int32
        np.testing.assert_array_equal(img == -1, gaps)
        assert (img < 0).sum() == gaps.sum() + 27
        assert not (img[~mask] < 0).any()
    truth = json.loads(Path(out["ground_truth"]).read_text())
    assert [f["params"]["rg_nm"] for f in truth["frames"]] == pytest.approx([3.0, 5.5, 8.0])
    assert [Path(f["path"]).name for f in truth["frames"]] == [p.name for p in frames]
    assert out["q_start"] < out["q_stop"] == m["qStop"]
