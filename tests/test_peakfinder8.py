"""peakfinder8 against OM's compiled implementation (ondamonitor 23.8.3, the test oracle) and
against analytic peaks."""

import numpy as np
import pytest
from om.algorithms._crystallography import peakfinder_8 as om_peakfinder_8

from photonflow.peaks import match_peaks
from photonflow.peaks.peakfinder8 import AsicGrid, Peakfinder8, Peakfinder8Params, peakfinder8


def om_peaks(data, radius, mask, asics: AsicGrid, p: Peakfinder8Params):
    """OM's peak list for the same frame and parameters (OM masks the resolution limits itself)."""
    m = np.asarray(mask, np.int8).copy()
    m[radius < p.min_res] = 0
    m[radius > p.max_res] = 0
    out = om_peakfinder_8(
        p.max_num_peaks,
        np.asarray(data, np.float32),
        m,
        np.asarray(radius, np.float32),
        0,
        None,
        None,
        0,
        asics.asic_nx,
        asics.asic_ny,
        asics.nasics_x,
        asics.nasics_y,
        p.adc_threshold,
        p.minimum_snr,
        p.min_pixel_count,
        p.max_pixel_count,
        p.local_bg_radius,
    )
    return {
        "fs": np.array(out[0]),
        "ss": np.array(out[1]),
        "intensity": np.array(out[2]),
        "npix": np.array(out[4]),
        "max": np.array(out[5]),
        "snr": np.array(out[7]),
    }


def random_frame(rng):
    """A frame with random size, ASIC grid, background, crowded Gaussian peaks, mask and parameters."""
    na = int(rng.choice([1, 2, 4]))
    asz = int(rng.choice([32, 64, 100]))
    nay = int(rng.choice([1, 2])) if na > 1 else 1
    shape = (nay * asz, na * asz)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    radius = np.hypot(xx - rng.uniform(0, shape[1]), yy - rng.uniform(0, shape[0])).astype(np.float32)
    bg = rng.uniform(2, 200)
    data = rng.poisson(bg, shape).astype(np.float32) + rng.normal(0, rng.uniform(0, 5), shape).astype(np.float32)
    for _ in range(int(rng.integers(0, 300))):
        x, y = rng.uniform(-2, shape[1] + 2), rng.uniform(-2, shape[0] + 2)
        amp, sig = rng.lognormal(np.log(bg) + 1, 1.5), rng.uniform(0.5, 2)
        sl = (slice(max(int(y) - 6, 0), max(int(y) + 7, 0)), slice(max(int(x) - 6, 0), max(int(x) + 7, 0)))
        data[sl] += (amp * np.exp(-((xx[sl] - x) ** 2 + (yy[sl] - y) ** 2) / 2 / sig**2)).astype(np.float32)
    mask = (rng.random(shape) > rng.choice([0, 0.01, 0.1])).astype(np.int8)
    if rng.random() < 0.3:
        data[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = np.nan
    params = Peakfinder8Params(
        adc_threshold=float(rng.choice([0, bg, 3 * bg])),
        minimum_snr=float(rng.uniform(2, 8)),
        min_pixel_count=int(rng.integers(1, 4)),
        max_pixel_count=int(rng.integers(5, 60)),
        local_bg_radius=int(rng.integers(1, 5)),
        min_res=float(rng.choice([0, 10])),
        max_res=float(rng.choice([1e4, shape[1] / 2])),
        max_num_peaks=int(rng.choice([2048, 20])),
    )
    return data, radius, mask, AsicGrid(asz, asz, na, nay), params


def assert_same_as_om(found, om):
    assert len(found) == len(om["fs"])
    if len(found):
        np.testing.assert_allclose(found.fs, om["fs"], atol=1e-3, rtol=0)
        np.testing.assert_allclose(found.ss, om["ss"], atol=1e-3, rtol=0)
        np.testing.assert_array_equal(found.npix, om["npix"])
        np.testing.assert_allclose(found.intensity, om["intensity"], rtol=1e-4, atol=1e-2)
        np.testing.assert_allclose(found.snr, om["snr"], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(found.max_intensity, om["max"], rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("seed", range(0, 120, 3))
def test_matches_om_on_random_frames(seed):
    data, radius, mask, asics, params = random_frame(np.random.default_rng(seed))
    found = Peakfinder8(radius, asics, mask, params).find(data)
    assert_same_as_om(found, om_peaks(data, radius, mask, asics, params))


def test_matches_om_on_a_1920_frame_of_64_asics():
    rng = np.random.default_rng(7)
    n = 1920
    yy, xx = np.mgrid[0:n, 0:n]
    radius = np.hypot(xx - 960.3, yy - 955.6).astype(np.float32)
    data = rng.poisson(30.0, (n, n)).astype(np.float32)
    centres = rng.uniform(5, n - 5, (300, 2))
    for x, y in centres:
        sl = (slice(int(y) - 5, int(y) + 6), slice(int(x) - 5, int(x) + 6))
        data[sl] += rng.poisson(400 * np.exp(-((xx[sl] - x) ** 2 + (yy[sl] - y) ** 2) / 2)).astype(np.float32)
    asics = AsicGrid(240, 240, 8, 8)
    params = Peakfinder8Params(
        adc_threshold=60, minimum_snr=5, min_pixel_count=2, max_pixel_count=60, local_bg_radius=3, max_res=2000
    )
    found = Peakfinder8(radius, asics, None, params).find(data)
    assert_same_as_om(found, om_peaks(data, radius, np.ones((n, n), np.int8), asics, params))
    # And the peaks are the ones put there (those not cut by ASIC edges).
    score = match_peaks(found.positions(), centres, radius=1.0)
    assert score.precision > 0.97 and score.recall > 0.9


def test_centre_of_mass_of_an_isolated_peak_is_analytic():
    n = 64
    yy, xx = np.mgrid[0:n, 0:n]
    x0, y0 = 30.37, 27.81
    data = 10.0 + 1000.0 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 0.9**2))
    data = data.astype(np.float32)
    radius = np.hypot(xx - 5.5, yy - 5.5)
    found = peakfinder8(
        data, radius, adc_threshold=20, minimum_snr=3, min_pixel_count=1, max_pixel_count=100, local_bg_radius=3
    )
    assert len(found) == 1
    assert found.npix[0] >= 9
    # The centre of mass of raw values: the flat background pulls it only slightly.
    assert abs(found.fs[0] - x0) < 0.02 and abs(found.ss[0] - y0) < 0.02
    # Intensity: the peak's pixels (the brightest npix) less the local background, the mean of
    # the other pixels within 2 x local_bg_radius = 6 px of the rounded centre.
    peak = data >= np.sort(data.ravel())[::-1][found.npix[0] - 1]
    d = np.arange(-6, 6)
    disk = np.zeros_like(peak)
    for dy in d:
        for dx in d:
            if dx * dx + dy * dy <= 36:
                disk[round(y0) + dy, round(x0) + dx] = True
    local = data[disk & ~peak].mean()
    assert 10.0 < local < 11.0
    assert found.intensity[0] == pytest.approx(np.sum(data[peak] - local), rel=1e-5)
    assert found.max_intensity[0] == pytest.approx(data.max() - local, rel=1e-5)


def test_groups_never_cross_asic_edges_and_resolution_limits_mask():
    n = 40
    data = np.random.default_rng(3).poisson(10.0, (n, 2 * n)).astype(np.float32)
    data[18:22, 38:42] = 500.0  # a square cut in two by the ASIC edge at fs = 40
    yy, xx = np.mgrid[0:n, 0 : 2 * n]
    radius = np.hypot(xx - 40.2, yy - 0.3)
    params = Peakfinder8Params(
        adc_threshold=50, minimum_snr=3, min_pixel_count=2, max_pixel_count=20, local_bg_radius=2
    )
    both = Peakfinder8(radius, AsicGrid(n, n, 2, 1), None, params).find(data)
    assert len(both) == 2 and set(both.npix.tolist()) == {8}
    assert sorted(np.round(both.fs, 6).tolist()) == [38.5, 40.5]
    assert_same_as_om(both, om_peaks(data, radius, np.ones(data.shape), AsicGrid(n, n, 2, 1), params))
    whole = Peakfinder8(radius, None, None, params).find(data)
    assert len(whole) == 1 and whole.npix[0] == 16
    cut = Peakfinder8(
        radius, AsicGrid(n, n, 2, 1), None, Peakfinder8Params(**{**params.to_dict(), "max_res": 15.0})
    ).find(data)
    assert len(cut) == 0


def test_om_stale_coordinate_merge_is_reproduced_and_can_be_turned_off():
    """OM grows a peak with a coordinate list and reads one entry past its end: a coordinate
    left there by a peak on another ASIC can pull in an unrelated pixel group."""
    asz = 20
    data = np.random.default_rng(5).poisson(10.0, (asz, 2 * asz)).astype(np.float32)
    # ASIC 0: a 3-pixel peak, so OM's list holds 3 entries (local coordinates).
    data[5, 5:8] = 400.0
    # ASIC 1: a 1-pixel peak first in scan order, then a 2-pixel group next to where the stale
    # entry 1 (ASIC 0's second pixel, local (6, 5)... or its neighbour) lands in ASIC 1.
    data[2, asz + 15] = 400.0
    data[6, asz + 6 : asz + 8] = 400.0
    data[5, asz + 6] = 400.0
    yy, xx = np.mgrid[0:asz, 0 : 2 * asz]
    radius = np.hypot(xx - 20.5, yy - 10.5)
    mask = np.ones(data.shape, np.int8)
    asics = AsicGrid(asz, asz, 2, 1)
    params = Peakfinder8Params(
        adc_threshold=100, minimum_snr=3, min_pixel_count=1, max_pixel_count=50, local_bg_radius=2
    )
    om = om_peaks(data, radius, mask, asics, params)
    like_om = Peakfinder8(radius, asics, mask, params).find(data)
    plain = Peakfinder8(radius, asics, mask, params, om_compatible=False).find(data)
    assert_same_as_om(like_om, om)
    assert len(plain) == 3  # three separate groups
    assert len(like_om) == 2  # OM merged the two groups of ASIC 1
    assert sorted(like_om.npix.tolist()) == [3, 4]


@pytest.mark.parametrize("seed", range(1, 60, 6))
def test_torch_implementation_gives_the_same_peaks(seed):
    from photonflow.peaks.peakfinder8_torch import TorchPeakfinder8

    frames = []
    data, radius, mask, asics, params = random_frame(np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1000)
    frames = np.stack([data, data[::-1, ::-1] + rng.normal(0, 1, data.shape).astype(np.float32)])
    numpy_finder = Peakfinder8(radius, asics, mask, params)
    torch_finder = TorchPeakfinder8(radius, asics, mask, params, device="cpu", batch_size=2)
    for expected, got in zip(numpy_finder.find_batch(frames), torch_finder.find_batch(frames)):
        assert len(expected) == len(got)
        np.testing.assert_allclose(got.fs, expected.fs, atol=1e-6)
        np.testing.assert_allclose(got.ss, expected.ss, atol=1e-6)
        np.testing.assert_allclose(got.intensity, expected.intensity, rtol=1e-6)


@pytest.mark.parametrize(
    "geometry_file, n_frames", [("config/geometry/sim256.geom", 12), ("config/geometry/sim1920.geom", 2)]
)
def test_matches_om_on_simulated_serial_crystallography_frames(geometry_file, n_frames):
    """Simulated hits and non-hits (rings, streaks, hot/dead pixels) through a CrystFEL geometry,
    with CrystFEL's default parameters and with parameters tuned for this detector."""
    from photonflow.io.geom import load_geometry
    from photonflow.simulate.sfx import simulate_sfx_frames

    geometry = load_geometry(geometry_file)
    radius = geometry.radius_map()
    asics = AsicGrid.from_layout(geometry.asic_layout())
    mask = geometry.good_pixel_mask().astype(np.int8)
    frames = simulate_sfx_frames(geometry, n_frames, seed=11)
    for params in (
        Peakfinder8Params(),
        Peakfinder8Params(
            adc_threshold=100, minimum_snr=5, min_pixel_count=2, max_pixel_count=40, local_bg_radius=3, max_res=2000
        ),
    ):
        finder = Peakfinder8(radius, asics, mask, params)
        for frame in frames:
            assert_same_as_om(finder.find(frame.image), om_peaks(frame.image, radius, mask, asics, params))
