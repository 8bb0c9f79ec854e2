"""Synthetic tomography (photonflow.simulate.tomo): analytic projections, scan artefacts, DXchange files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from photonflow.simulate.tomo import (
    Ellipsoid,
    ellipse_chord,
    half_acquisition_center,
    overlapping_scans,
    phantom_projections,
    phantom_volume,
    phase_contrast_projections,
    read_dxchange,
    shepp_logan_ellipsoids,
    simulate_scan,
    write_dxchange,
)
from photonflow.tomo.dxchange import DxchangeError


def test_sphere_projection_is_the_chord_length():
    n = 128
    radius_norm, mu = 0.5, 0.02  # radius 32 px
    x0, y0 = 0.25, -0.125  # (16, −8) px
    sphere = [Ellipsoid(mu, radius_norm, radius_norm, radius_norm, x0, y0, 0.0)]
    theta = np.array([0.0, 30.0, 90.0, 200.0])
    proj = phantom_projections((1, n), theta, sphere)[:, 0].astype(np.float64)
    r_px = radius_norm * n / 2
    z = 0.5  # row 0 of a 1-row volume sits at the centre height z = 0; use 2 rows → z = ±0.5
    proj2 = phantom_projections((2, n), theta, sphere)[:, 0].astype(np.float64)
    u = np.arange(n) - (n - 1) / 2
    for k, th in enumerate(np.deg2rad(theta)):
        d = u - (x0 * n / 2 * np.cos(th) + y0 * n / 2 * np.sin(th))
        expected = mu * 2 * np.sqrt(np.clip(r_px**2 - d**2, 0, None))
        np.testing.assert_allclose(proj[k], expected, rtol=1e-5, atol=1e-7)
        expected2 = mu * 2 * np.sqrt(np.clip(r_px**2 - z**2 - d**2, 0, None))
        np.testing.assert_allclose(proj2[k], expected2, rtol=1e-5, atol=1e-7)


def test_rotated_ellipse_chord_matches_numerical_integration():
    a, b, phi, x0, y0, th = 30.0, 12.0, np.deg2rad(25.0), 5.0, -3.0, np.deg2rad(70.0)
    d = np.linspace(-35, 35, 15)
    t = np.linspace(-60, 60, 240001)
    dt = t[1] - t[0]
    for di, val in zip(d, ellipse_chord(a, b, phi, x0, y0, th, d)):
        x = di * np.cos(th) - t * np.sin(th) - x0
        y = di * np.sin(th) + t * np.cos(th) - y0
        xr = x * np.cos(phi) + y * np.sin(phi)
        yr = -x * np.sin(phi) + y * np.cos(phi)
        assert val == pytest.approx(np.sum((xr / a) ** 2 + (yr / b) ** 2 <= 1) * dt, abs=2e-3)


def test_projections_agree_with_reprojected_voxel_phantom():
    n = 128
    vol = phantom_volume((1, n, n), oversample=4)[0].astype(np.float64)
    proj = phantom_projections((1, n), [0.0, 90.0], oversample=4)[:, 0]
    # θ = 0: rays along y → sum over rows; θ = 90°: rays along −x, column u ↔ y = (n−1)/2 − j
    scale = np.abs(proj).max()
    assert np.abs(vol.sum(axis=0) - proj[0]).max() < 0.02 * scale
    assert np.abs(vol.sum(axis=1)[::-1] - proj[1]).max() < 0.02 * scale
    assert np.abs(vol.sum(axis=0) - proj[0]).mean() < 2e-3 * scale


def test_shepp_logan_central_slice_values():
    n = 128
    vol = phantom_volume((1, n, n), shepp_logan_ellipsoids(1.0))[0]
    assert vol[n // 2, n // 2 - 1] == pytest.approx(0.2, abs=1e-6)  # brain
    assert vol[n // 2, 2] == 0.0  # outside
    assert vol.max() == pytest.approx(1.0, abs=1e-6)  # skull


def test_scan_artefacts_are_where_the_truth_says():
    scan = simulate_scan(
        4, 96, 60, dead_columns=(10,), hot_columns=(40,), zinger_probability=2e-3, i0_drop_fraction=0.1, seed=5
    )
    assert scan.data.dtype == np.uint16 and scan.data.shape == (60, 4, 96)
    assert scan.flats.shape == (20, 4, 96) and scan.darks.shape == (10, 4, 96)
    # darks at the dark level
    assert scan.darks.mean() == pytest.approx(scan.dark_level, abs=0.5)
    # flats: mean of the before-flats minus the dark follows the beam profile at t = 0
    f0 = scan.flats[: scan.n_flats_before].mean(axis=0) - scan.darks.mean(axis=0)
    good = np.ones(96, bool)
    good[10] = False
    rel = f0[:, good] / scan.expected_flat_before[:, good]
    assert abs(rel.mean() - 1) < 0.01
    assert not np.allclose(scan.expected_flat_before, scan.expected_flat_after)  # the beam drifts
    zmask = np.zeros(scan.data.shape, bool)
    zmask[tuple(scan.zingers.T)] = True
    # dead column reads the dark level only, in data (zingers aside) and flats
    dead = scan.data[:, :, 10].astype(float)
    assert np.abs(dead - scan.dark_level)[~zmask[:, :, 10]].max() < 15
    assert np.abs(scan.flats[:, :, 10].astype(float) - scan.dark_level).max() < 15
    # I0 drops: recorded factors in the range, monitor proportional
    dropped = scan.i0_factor < 1
    assert dropped.sum() == 6 and np.all((scan.i0_factor[dropped] >= 0.9) & (scan.i0_factor[dropped] <= 0.97))
    np.testing.assert_allclose(scan.monitor, 1e6 * scan.i0_factor)
    # zingers at the recorded pixels: far above the expected counts
    assert len(scan.zingers) > 0
    p, r, c = scan.zingers.T
    assert np.all(scan.data[p, r, c] > 15000)
    assert scan.data[~zmask].max() < 15000
    # hot column: transmission biased by the hot gain (flats do not have it)
    open_cols = scan.line_integrals[:, :, 40] == 0
    tr = (scan.data[:, :, 40] - scan.dark_level) / (scan.expected_flat_before[:, 40] * scan.i0_factor[:, None])
    if open_cols.any():
        assert tr[open_cols].mean() == pytest.approx(scan.hot_gain, rel=0.03)
    # the transmission of the projections follows exp(−line integral)
    k = np.argmax(scan.i0_factor == 1)
    expected = scan.expected_flat_before * np.exp(-scan.line_integrals[k]) + scan.dark_level
    sel = np.ones(96, bool)
    sel[[10, 40]] = False
    ratio = scan.data[k][:, sel] / expected[:, sel]
    assert abs(np.median(ratio) - 1) < 0.03


def test_scan_max_attenuation_scales_mu():
    scan = simulate_scan(1, 64, 30, max_attenuation=1.5, noise=False, oversample=1)
    assert scan.line_integrals.max() == pytest.approx(1.5, rel=1e-5)
    again = phantom_projections((1, 64), scan.theta_deg, scan.ellipsoids, oversample=1)
    np.testing.assert_allclose(again, scan.line_integrals, rtol=1e-5, atol=1e-6)


def test_half_acquisition_and_overlapping_scans():
    w, overlap = 80, 12
    c = half_acquisition_center(w, overlap)
    assert c == pytest.approx(w - 1 - 5.5)
    n_obj = 2 * w - overlap
    theta = np.arange(0, 360, 2.0)
    p360 = phantom_projections((1, n_obj), theta, n_cols=w, center_px=c)
    full = phantom_projections((1, n_obj), theta)
    np.testing.assert_allclose(p360[..., :w], full[..., :w], atol=1e-6)
    offsets = [0.0, 40.0, 70.25]
    scans = overlapping_scans((1, 200), theta[:5], None, 64, offsets)
    wide = phantom_projections((1, 200), theta[:5], n_cols=200, oversample=2)
    np.testing.assert_allclose(scans[1], wide[..., 40:104], atol=1e-6)
    # sub-pixel offset: column u sits at wide column u + 70.25 → between wide columns
    assert not np.allclose(scans[2][..., :10], wide[..., 70:80], atol=1e-6)


def test_phase_contrast_fringes_and_contact_limit():
    theta = [0.0]
    sphere = [Ellipsoid(1.0, 0.6, 0.6, 0.6)]
    contact, t_um = phase_contrast_projections(
        (1, 128), theta, sphere, distance_mm=1e-6, pixel_um=1.0, delta=1e-6, beta=1e-8
    )
    k = 2 * np.pi / (12.398419843320026 / 20.0 * 1e-4)
    np.testing.assert_allclose(contact, np.exp(-2 * k * 1e-8 * t_um), rtol=1e-4)
    far, _ = phase_contrast_projections((1, 128), theta, sphere, distance_mm=200.0, pixel_um=1.0, delta=1e-6, beta=1e-8)
    edge = int(np.argmax(t_um[0, 0] > 0))
    assert far[0, 0, edge - 3 : edge + 3].max() > 1.02  # an edge fringe above the flat level
    assert far[0, 0].mean() == pytest.approx(contact[0, 0].mean(), rel=0.02)  # flux conserved


@pytest.mark.parametrize("compression", [None, "gzip", "blosc-lz4", "bitshuffle-lz4"])
@pytest.mark.parametrize("external", [False, True])
def test_dxchange_round_trip(tmp_path, compression, external):
    scan = simulate_scan(2, 48, 12, n_flats_before=2, n_flats_after=2, n_darks=3, seed=1)
    path = write_dxchange(
        tmp_path / "scan.h5",
        scan.data,
        scan.flats,
        scan.darks,
        scan.theta_deg,
        compression=compression,
        monitor=scan.monitor,
        external_links=external,
    )
    back = read_dxchange(path)
    np.testing.assert_array_equal(back.data, scan.data)
    np.testing.assert_array_equal(back.flats, scan.flats)
    np.testing.assert_array_equal(back.darks, scan.darks)
    np.testing.assert_allclose(back.theta_deg, scan.theta_deg)
    np.testing.assert_allclose(back.monitor, scan.monitor)
    with h5py.File(path, "r") as f:
        link = f["exchange"].get("data", getlink=True)
        assert isinstance(link, h5py.ExternalLink) == external
        assert f["/exchange/theta"].attrs["units"] == "degrees"
        assert f["/exchange/data"].dtype == np.uint16
    assert (tmp_path / "scan_data.h5").exists() == external


def test_dxchange_errors(tmp_path):
    data = np.zeros((3, 4, 5), np.uint16)
    with pytest.raises(ValueError, match="2 angles for 3 projections"):
        write_dxchange(tmp_path / "x.h5", data, data, data, [0, 1])
    with pytest.raises(ValueError, match="unknown compression"):
        write_dxchange(tmp_path / "x.h5", data, data, data, [0, 1, 2], compression="zip")
    path = write_dxchange(tmp_path / "y.h5", data, data, data, [0, 1, 2], external_links=True)
    (tmp_path / "y_data.h5").unlink()
    with pytest.raises(DxchangeError, match="external link to y_data.h5:/exchange/data cannot be followed"):
        read_dxchange(path)
