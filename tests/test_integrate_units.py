"""Integrator units: dtypes, per-frame masking of bad pixels, monitor, cache, shape errors."""

import numpy as np
import pytest

from photonflow.geometry import Geometry
from photonflow.integrate import RadialBins, build_integrator

G = Geometry(shape=(40, 50), pixel1_um=172, pixel2_um=172, dist_mm=100, poni1_mm=3.1, poni2_mm=4.3, wavelength_A=1.0)
BINS = RadialBins.linear(0.0, 5.0, 30)


@pytest.fixture(scope="module")
def integrator():
    return build_integrator(G, BINS, oversampling=2)


@pytest.mark.parametrize("dtype", [np.int32, ">i4", np.uint16, np.float32, ">f8"])
def test_dtypes_give_the_same_curve(integrator, dtype):
    frames = np.full((3, 40, 50), 9, np.int32)
    ref = integrator.integrate(frames).intensity
    got = integrator.integrate(frames.astype(dtype)).intensity
    assert np.allclose(got, ref, equal_nan=True, rtol=1e-6)
    ok = np.isfinite(ref)
    assert np.allclose(ref[ok], 9.0, rtol=2e-6)  # float32 sums: about 1e-6 relative


def test_bad_pixels_are_masked_in_their_frame_only(integrator):
    rng = np.random.default_rng(0)
    frames = rng.poisson(100.0, size=(4, 40, 50)).astype(np.float32)
    clean = integrator.integrate(frames)
    dirty = frames.copy()
    dirty[1, 10, 10] = -2  # bad pixel, frame 1 only
    dirty[2, :, 20:23] = np.nan  # a dead band, frame 2 only
    dirty[3, 5, 5] = np.inf
    res = integrator.integrate(dirty)
    assert np.allclose(res.intensity[0], clean.intensity[0], equal_nan=True)
    # the affected frames equal an integration with those pixels masked statically
    for f, bad in ((1, dirty[1] < 0), (2, np.isnan(dirty[2])), (3, np.isinf(dirty[3]))):
        ref = build_integrator(G, BINS, oversampling=2, mask=bad).integrate(frames[f])
        assert np.allclose(res.intensity[f], ref.intensity[0], equal_nan=True, rtol=1e-5)
        assert np.allclose(res.sigma[f], ref.sigma[0], equal_nan=True, rtol=1e-5)


def test_monitor_divides(integrator):
    frames = np.full((2, 40, 50), 50.0)
    res = integrator.integrate(frames, monitor=[1.0, 5.0])
    ok = np.isfinite(res.intensity[0])
    assert np.allclose(res.intensity[1][ok], res.intensity[0][ok] / 5.0)
    assert np.allclose(res.sigma[1][ok], res.sigma[0][ok] / 5.0)


def test_poisson_sigma_of_a_uniform_image(integrator):
    """Unsplit pixels: σ_k = sqrt(N_k · c)/N_k for N_k pixels of c counts."""
    unsplit = build_integrator(G, BINS, split=False)
    c = 400.0
    res = unsplit.integrate(np.full((40, 50), c))
    counts = np.asarray(unsplit.matrix.sum(axis=1)).ravel()
    ok = counts > 0
    assert np.allclose(res.sigma[0][ok], np.sqrt(counts[ok] * c) / counts[ok])
    assert np.isnan(res.intensity[0][~ok]).all()


def test_cache_round_trip(tmp_path, integrator):
    a = build_integrator(G, BINS, oversampling=2, cache_dir=tmp_path)
    files = list(tmp_path.glob("integrator-*.npz"))
    assert len(files) == 1
    b = build_integrator(G, BINS, oversampling=2, cache_dir=tmp_path)  # loaded, not rebuilt
    assert b.key == a.key and (b.matrix != a.matrix).nnz == 0
    frames = np.random.default_rng(1).poisson(30.0, size=(2, 40, 50))
    assert np.allclose(a.integrate(frames).intensity, b.integrate(frames).intensity, equal_nan=True)
    other = build_integrator(G, BINS, oversampling=3, cache_dir=tmp_path)
    assert other.key != a.key and len(list(tmp_path.glob("integrator-*.npz"))) == 2


def test_shape_mismatch_is_an_error(integrator):
    with pytest.raises(ValueError, match=r"frame shape \(41, 50\) differs"):
        integrator.integrate(np.zeros((41, 50)))
