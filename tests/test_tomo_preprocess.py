"""Tomography pass-1 preprocessing against analytic cases and algotom (test oracle)."""

import numpy as np
import pytest

from photonflow.tomo.preprocess import (
    PreprocessError,
    air_correction,
    apply_i0,
    detect_stripes,
    flat_dark_normalise,
    i0_factors,
    paganin_filter,
    paganin_kernel,
    remove_all_stripes,
    remove_dead_stripes,
    remove_large_stripes,
    remove_stripe_sorting,
    remove_stripes_in_projections,
    remove_zingers,
    wavelength_m,
)

RNG = np.random.default_rng(5)


def test_flat_dark_with_flats_before_and_after():
    n, rows, cols = 11, 8, 10
    T = RNG.uniform(0.2, 1.0, (n, rows, cols)).astype(np.float32)
    dark = RNG.uniform(90, 110, (rows, cols))
    f0 = RNG.uniform(900, 1100, (rows, cols))
    f1 = f0 * 1.2  # the beam drifted during the scan
    w = np.arange(n) / (n - 1)
    P = dark + T * ((1 - w)[:, None, None] * f0 + w[:, None, None] * f1)
    flats_b = np.stack([dark + f0, dark + f0])
    flats_a = np.stack([dark + f1])
    darks = np.stack([dark, dark])
    out = flat_dark_normalise(P, flats_b, darks, flats_after=flats_a)
    assert np.allclose(out, T, rtol=1e-5)
    # a chunk in the middle of the scan uses its own position
    out = flat_dark_normalise(P[4:7], flats_b, darks, flats_after=flats_a, first_index=4, n_total=n)
    assert np.allclose(out, T[4:7], rtol=1e-5)
    with pytest.raises(PreprocessError, match="no darks"):
        flat_dark_normalise(P, flats_b, [])
    with pytest.raises(PreprocessError, match="flats have frames"):
        flat_dark_normalise(P, flats_b[:, :4], darks)


def test_i0_from_monitor_and_air_region():
    proj = np.ones((6, 4, 20), np.float32) * 0.5
    proj[:, :, 15:] = 1.0  # air on the right
    drop = np.array([1, 1, 0.95, 1, 0.9, 1.0])
    seen = proj * drop[:, None, None]
    f = i0_factors(seen, air_columns=(15, 20))
    assert np.allclose(f, drop)
    assert np.allclose(apply_i0(seen, f), proj)
    assert np.allclose(i0_factors(monitor=1000 * drop), drop)  # median 1000 is the reference
    with pytest.raises(PreprocessError, match="monitor or an air region"):
        i0_factors(seen)
    with pytest.raises(PreprocessError, match="5 I0 factors for 6"):
        apply_i0(seen, f[:5])


def test_zingers_removed_rest_untouched():
    proj = RNG.normal(1.0, 0.01, (3, 32, 32)).astype(np.float32)
    spikes = [(0, 5, 7), (1, 20, 20), (2, 31, 0)]
    dirty = proj.copy()
    for k, r, c in spikes:
        dirty[k, r, c] += 5.0
    clean = remove_zingers(dirty, threshold=0.2)
    for k, r, c in spikes:
        assert abs(clean[k, r, c] - 1.0) < 0.05
    untouched = np.ones(dirty.shape, bool)
    for k, r, c in spikes:
        untouched[k, r, c] = False
    assert np.array_equal(clean[untouched], dirty[untouched])


def _sinogram_with_stripes(n_angles=180, width=128):
    """Transmission sinogram of smooth blobs plus column gain errors (small and one large stripe)
    and a dead (unresponsive) column."""
    theta = np.linspace(0, np.pi, n_angles, endpoint=False)
    x = np.arange(width) - width / 2 + 0.5
    sino = np.zeros((n_angles, width))
    for cx, cy, sig, amp in ((0, 0, 25, 0.8), (15, 5, 6, 0.3), (-20, -10, 5, 0.2)):
        s = cx * np.cos(theta) + cy * np.sin(theta)
        sino += amp * np.exp(-((x[None, :] - s[:, None]) ** 2) / (2 * sig**2))
    clean = np.exp(-sino).astype(np.float32)
    gain = np.ones(width)
    gain[[20, 21, 50, 90]] = [1.05, 0.96, 1.03, 0.97]  # small stripes
    gain[60:64] = 1.12  # a large one
    dirty = clean * gain[None, :].astype(np.float32)
    dirty += RNG.normal(0, 0.002, dirty.shape).astype(np.float32)
    dirty[:, 100] = 0.61  # dead (unresponsive) column
    return clean, dirty


def _stripe_metric(sino, clean):
    """Column-to-column jumps of the column-mean error against the clean sinogram (what makes
    rings): std of that error minus its 9-px median."""
    from scipy.ndimage import median_filter

    e = np.mean(sino - clean, axis=0)
    return float(np.std(e - median_filter(e, 9)))


def test_stripe_removal_reduces_stripes_and_agrees_with_algotom():
    algotom = pytest.importorskip("algotom.prep.removal")
    clean, dirty = _sinogram_with_stripes()
    before = _stripe_metric(dirty, clean)
    ours = remove_all_stripes(dirty, snr=3.0, la_size=31, sm_size=21)
    theirs = algotom.remove_all_stripe(dirty, snr=3.0, la_size=31, sm_size=21)
    after, ref = _stripe_metric(ours, clean), _stripe_metric(theirs, clean)
    print(f"stripe metric: dirty {before:.5f}, photonflow {after:.5f}, algotom {ref:.5f}")
    assert after < before / 4
    assert after < 1.5 * ref
    # the sorting-based filter is the same algorithm as algotom's
    s1 = remove_stripe_sorting(dirty, 21)
    s2 = algotom.remove_stripe_based_sorting(dirty, 21)
    assert np.median(np.abs(s1 - s2)) < 1e-3
    assert _stripe_metric(remove_large_stripes(dirty, 3.0, 31), clean) < before
    dead = remove_dead_stripes(dirty, 3.0, 31, residual=False)
    assert np.std(dead[:, 100]) > 10 * np.std(dirty[:, 100])  # the dead column now varies with angle again


def test_detect_stripes_and_projection_wrapper():
    profile = np.ones(200) + RNG.normal(0, 0.001, 200)
    profile[[30, 31, 120]] = [1.1, 1.08, 0.9]
    mask = detect_stripes(profile, 3.0)
    assert set(np.flatnonzero(mask)) == {30, 31, 120}
    _, dirty = _sinogram_with_stripes(90, 128)
    proj = np.stack([dirty, dirty], axis=1)  # (angles, rows=2, cols)
    out = remove_stripes_in_projections(proj, "sorting", size=11)
    assert np.array_equal(out[:, 0], remove_stripe_sorting(dirty, 11))
    with pytest.raises(PreprocessError, match="stripe method"):
        remove_stripes_in_projections(proj, "magic")


def test_air_correction_flattens_rows():
    proj = np.full((2, 5, 30), 0.5, np.float32)
    proj[:, :, :5] = 1.0
    proj *= np.linspace(0.9, 1.1, 5, dtype=np.float32)[None, :, None]  # a drift along the rows
    out = air_correction(proj, (0, 5))
    assert np.allclose(out[:, :, :5], 1.0) and np.allclose(out[:, :, 10:], 0.5)


def test_paganin_recovers_the_attenuation_image_analytically():
    """Single material, TIE regime: I_z = (1 − (z δ/μ) ∇²) exp(−μ t). The filter must return exp(−μ t)."""
    rows = cols = 128
    px_um, z_mm, e_kev, db = 1.0, 50.0, 20.0, 300.0
    yy, xx = np.mgrid[:rows, :cols]
    t_mu = 0.8 * np.exp(-((yy - 64) ** 2 + (xx - 60) ** 2) / (2 * 12.0**2))  # μ t, smooth and periodic enough
    att = np.exp(-t_mu)
    # (z δ/μ) with μ = 4πβ/λ: z δ λ / (4π β) = z λ (δ/β) / 4π, in m²; the Laplacian in 1/m²
    c = z_mm * 1e-3 * wavelength_m(e_kev) * db / (4 * np.pi)
    fy = np.fft.fftfreq(rows, d=px_um * 1e-6)
    fx = np.fft.fftfreq(cols, d=px_um * 1e-6)
    lap = -((2 * np.pi) ** 2) * (fy[:, None] ** 2 + fx[None, :] ** 2)
    intensity = att - c * np.real(np.fft.ifft2(lap * np.fft.fft2(att)))
    assert np.abs(intensity - att).max() > 0.01  # the fringes are there
    out = paganin_filter(intensity.astype(np.float64), px_um, z_mm, e_kev, db, pad=0)
    assert np.abs(out - att).max() < 1e-5
    k = paganin_kernel((4, 4), px_um, z_mm, e_kev, db)
    assert k[0, 0] == 1.0 and np.all(k <= 1.0)
    # with edge padding the interior is still right
    padded = paganin_filter(intensity, px_um, z_mm, e_kev, db)
    assert np.abs(padded - att)[20:-20, 20:-20].max() < 2e-3


def test_paganin_on_a_fresnel_propagated_phase_object():
    """A homogeneous object after free-space propagation (simulated by the Fresnel propagator, not
    by the TIE): the retrieval removes the fringes down to the attenuation image."""
    from photonflow.simulate.tomo import phase_contrast_projections, wavelength_um

    e_kev, z_mm, px_um, delta, beta = 20.0, 100.0, 1.0, 1e-6, 1e-9
    intensity, t_um = phase_contrast_projections(
        (64, 256), [0.0], None, energy_kev=e_kev, distance_mm=z_mm, pixel_um=px_um, delta=delta, beta=beta
    )
    att = np.exp(-2 * (2 * np.pi / wavelength_um(e_kev)) * beta * t_um[0])
    raw_err = np.abs(intensity[0] - att).max()
    out = paganin_filter(intensity[0], px_um, z_mm, e_kev, delta / beta)
    assert raw_err > 1.0  # strong fringes
    assert np.abs(out - att).max() < 0.05 * raw_err


@pytest.mark.parametrize("size", [3, 5])
def test_zinger_removal_equals_the_full_median_filter(size):
    """Medians only at the candidates (more than the threshold above the window's minimum) give the
    same result as median-filtering every pixel, edges included."""
    from scipy import ndimage

    proj = RNG.normal(1.0, 0.05, (3, 40, 50)).astype(np.float32)
    idx = RNG.integers(0, proj.size, 60)
    proj.flat[idx] += RNG.uniform(0.05, 2.0, 60).astype(np.float32)
    proj[:, 0, :5] += 1.0  # at the edges too
    med = ndimage.median_filter(proj, size=(1, size, size), mode="reflect")
    assert np.array_equal(remove_zingers(proj, 0.2, size), np.where(proj - med > 0.2, med, proj))


@pytest.mark.parametrize("shape, size", [((7, 50), 5), ((40, 300), 21), ((3, 22), 21), ((4, 10), 21)])
def test_running_median_equals_ndimage(shape, size):
    """The sorting filter's running median gives ndimage's median_filter values (ties, short rows)."""
    from scipy import ndimage

    from photonflow.tomo.preprocess import median_filter_rows

    x = RNG.random(shape).astype(np.float32)
    x[:, 3] = x[:, 4]
    assert np.array_equal(median_filter_rows(x, size), ndimage.median_filter(x, size=(1, size), mode="reflect"))
