"""Accuracy of photonflow.integrate against pyFAI and against the simulator's exact ground truth.

Oracles
* pyFAI (installed here) on the real CeO2 / Pilatus 1M image with its PONI file, and on simulated
  tilted detectors set up through pyFAI's own ``setFit2D``;
* ``photonflow.simulate.ground_truth_curve``: the exact binned expectation of a noise-free image,
  computed without the integrator.

Tolerances
* unsplit pixels vs pyFAI ("no", "histogram", "numpy", float64 positions): the same pixels land in
  the same bins, so every bin must agree to 2e-3 (measured ~6e-8: float32 sums);
* split pixels, ov = 3 sub-pixel bounding boxes vs pyFAI's exact polygon splitting ("full"): the
  two splittings differ where I changes within a pixel, so the median bin must agree to 1e-3;
* integrator vs ground truth: 1e-3 in bins with at least 100 unmasked pixels (away from the
  beam stop and the detector corners), on a SAXS geometry where the pixel-smearing term
  (Δq_pixel²/24)·I''/I is small (see test_split_integration_matches_simulated_ground_truth).

Measured numbers are printed (``pytest -s``) with the prefix ``ACCURACY``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from photonflow.geometry import Geometry
from photonflow.integrate import Corrections, Integrator, RadialBins, build_integrator, saxsdog_bins
from photonflow.simulate import ground_truth_curve, guinier_porod, powder_rings, simulate_image

pyFAI = pytest.importorskip("pyFAI", reason="pyFAI (the oracle) is not installed")
from pyFAI.detectors import Detector  # noqa: E402
from pyFAI.integrator.azimuthal import AzimuthalIntegrator  # noqa: E402

PIXEL_UM = 172.0


def report(name: str, value) -> None:
    print(f"ACCURACY {name}: {value}")


def rel_diff(ours, theirs):
    """|ours − theirs| / |theirs| over bins finite in both; also whether the empty bins agree."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    both = np.isfinite(ours) & np.isfinite(theirs) & (theirs != 0)
    return np.abs(ours[both] - theirs[both]) / np.abs(theirs[both])


# ====================================================================== real CeO2 image
Q_RANGE = (2.0, 60.0)
NPT = 1000


@pytest.fixture(scope="module")
def ceo2(shared_data):
    import tifffile

    image = tifffile.imread(shared_data / "saxs" / "CeO2_Pilatus1M.tif")
    poni = shared_data / "saxs" / "CeO2_Pilatus1M.poni"
    mask = image < 0
    geometry = Geometry.from_poni_file(poni, shape=image.shape)
    ai = pyFAI.load(str(poni))
    bins = RadialBins.linear(*Q_RANGE, NPT)
    return {"image": image, "mask": mask, "geometry": geometry, "ai": ai, "bins": bins}


def _pyfai_ceo2(ceo2, method, **kw):
    kw.setdefault("correctSolidAngle", False)
    return ceo2["ai"].integrate1d(
        ceo2["image"],
        NPT,
        unit="q_nm^-1",
        radial_range=Q_RANGE,
        method=method,
        mask=ceo2["mask"],
        error_model="poisson",
        **kw,
    )


@pytest.fixture(scope="module")
def ceo2_split3(ceo2):
    return build_integrator(ceo2["geometry"], ceo2["bins"], 3, mask=ceo2["mask"], split=True)


def test_ceo2_bins_match_pyfai(ceo2):
    res = _pyfai_ceo2(ceo2, ("no", "histogram", "numpy"))
    np.testing.assert_allclose(res.radial, ceo2["bins"].centres, rtol=1e-12)


def test_ceo2_unsplit_every_bin_matches_pyfai(ceo2):
    it = build_integrator(ceo2["geometry"], ceo2["bins"], mask=ceo2["mask"], split=False)
    ours = it.integrate(ceo2["image"])
    ref = _pyfai_ceo2(ceo2, ("no", "histogram", "numpy"))
    np.testing.assert_array_equal(np.isfinite(ours.intensity[0]), np.isfinite(ref.intensity))
    d = rel_diff(ours.intensity[0], ref.intensity)
    report("CeO2 unsplit I vs pyFAI numpy histogram, max rel", f"{d.max():.2e}")
    assert d.size > 0.95 * NPT
    assert d.max() < 2e-3
    # σ, Poisson model, whole pixels (ov = 1): exact propagation, as pyFAI's "poisson" error model
    # (pyFAI takes var = max(x, 1), we max(x, 0): three zero-count pixels in this image)
    s = rel_diff(ours.sigma[0], ref.sigma)
    report("CeO2 unsplit sigma(poisson) vs pyFAI, max rel", f"{s.max():.2e}")
    assert s.max() < 2e-3


def test_ceo2_split_median_matches_pyfai_full_splitting(ceo2, ceo2_split3):
    ours = ceo2_split3.integrate(ceo2["image"])
    ref = _pyfai_ceo2(ceo2, ("full", "csr", "cython"))
    d = rel_diff(ours.intensity[0], ref.intensity)
    report("CeO2 split ov=3 vs pyFAI full/csr, median rel", f"{np.median(d):.2e} (p90 {np.percentile(d, 90):.2e})")
    assert np.median(d) < 1e-3


@pytest.mark.parametrize(
    "corrections, pyfai_kw",
    [
        (Corrections(solid_angle=True), {"correctSolidAngle": True}),
        (Corrections(polarization_factor=0.95), {"polarization_factor": 0.95}),
        (
            Corrections(solid_angle=True, polarization_factor=0.95),
            {"correctSolidAngle": True, "polarization_factor": 0.95},
        ),
    ],
    ids=["solid_angle", "polarization", "both"],
)
def test_ceo2_corrections_match_pyfai(ceo2, corrections, pyfai_kw):
    it = build_integrator(ceo2["geometry"], ceo2["bins"], mask=ceo2["mask"], split=False, corrections=corrections)
    ours = it.integrate(ceo2["image"])
    ref = _pyfai_ceo2(ceo2, ("no", "histogram", "numpy"), **pyfai_kw)
    d = rel_diff(ours.intensity[0], ref.intensity)
    s = rel_diff(ours.sigma[0], ref.sigma)
    report(f"CeO2 corrections {pyfai_kw} unsplit vs pyFAI, max rel I / sigma", f"{d.max():.2e} / {s.max():.2e}")
    assert d.max() < 2e-3
    assert s.max() < 2e-3


def test_ceo2_saxsdog_sigma_ratio(ceo2, ceo2_split3):
    """SAXSDOG's σ (Σw instead of Σw²) over the Poisson σ, at ov = 3. It depends on how many bins a
    pixel is spread over: on SAXSDOG's own grid (bins one pixel wide) it is ~1.2 (the issue's
    "~22 %"); on 1000 bins of half a pixel it is larger."""

    def ratio(base):
        sx = Integrator(base.matrix, base.bins, base.shape, base.static_mask, base.normalisation, error_model="saxsdog")
        return sx.integrate(ceo2["image"]).sigma[0] / base.integrate(ceo2["image"]).sigma[0]

    fine = ratio(ceo2_split3)
    grid = saxsdog_bins(ceo2["geometry"], 3, 1.0)
    native = ratio(build_integrator(ceo2["geometry"], grid, 3, mask=ceo2["mask"]))
    report("CeO2 sigma saxsdog/poisson ov=3, SAXSDOG grid (PPRE=1), median", f"{np.nanmedian(native):.3f}")
    report("CeO2 sigma saxsdog/poisson ov=3, 1000 bins 2-60 nm^-1, median", f"{np.nanmedian(fine):.3f}")
    assert np.all(native[np.isfinite(native)] >= 1 - 1e-6)
    assert 1.10 < np.nanmedian(native) < 1.40
    assert np.nanmedian(fine) > np.nanmedian(native)
    # with whole pixels (ov = 1, unsplit) the two models coincide
    it1 = build_integrator(ceo2["geometry"], ceo2["bins"], mask=ceo2["mask"], split=False)
    one = ratio(it1)
    np.testing.assert_allclose(one[np.isfinite(one)], 1.0, rtol=1e-6)


# ====================================================================== simulated tilted detectors
SIM_SHAPE = (400, 500)  # a Pilatus-like detector: one row gap (195–211), part of the column gap
WAVELENGTH_A = 1.0


def _fit2d(tilt, rot, distance_mm=300.0):
    return {
        "distance_mm": distance_mm,
        "center_x": 230.3,
        "center_y": 150.7,
        "tilt_deg": tilt,
        "tilt_plane_rotation_deg": rot,
    }


def _pyfai_fit2d(fit, shape=SIM_SHAPE):
    """The oracle: pyFAI set up from the same FIT2D numbers. For y_origin="bottom" pyFAI works on
    the image flipped upside down (FIT2D's native frame has row 0 at the bottom)."""
    ai = AzimuthalIntegrator(
        detector=Detector(pixel1=PIXEL_UM * 1e-6, pixel2=PIXEL_UM * 1e-6, max_shape=shape),
        wavelength=WAVELENGTH_A * 1e-10,
    )
    ai.setFit2D(
        fit["distance_mm"],
        fit["center_x"],
        fit["center_y"],
        fit["tilt_deg"],
        fit["tilt_plane_rotation_deg"],
        pixelX=PIXEL_UM,
        pixelY=PIXEL_UM,
    )
    return ai


def _geometry(fit, y_origin, shape=SIM_SHAPE):
    return Geometry.from_fit2d(**fit, pixel_x_um=PIXEL_UM, shape=shape, wavelength_A=WAVELENGTH_A, y_origin=y_origin)


@pytest.mark.parametrize("y_origin", ["array", "bottom"])
def test_two_theta_map_matches_pyfai_fit2d(y_origin):
    worst = 0.0
    for tilt in (0.0, 0.5, 2.0, 5.0, 10.0):
        for rot in (0.0, 30.0, 135.0, -60.0, 250.0):
            fit = _fit2d(tilt, rot)
            ours = _geometry(fit, y_origin).two_theta_array()
            ref = _pyfai_fit2d(fit).center_array(SIM_SHAPE, unit="2th_rad", scale=False)
            if y_origin == "bottom":
                ref = np.flipud(ref)
            d = np.max(np.abs(ours - ref) / ref)
            worst = max(worst, d)
            assert d < 1e-6, (tilt, rot, y_origin, d)
    report(f"2theta map vs pyFAI setFit2D ({y_origin}), max rel over 25 tilts", f"{worst:.1e}")


def _waxs(q):
    return guinier_porod(q, 1.0e5, 2.0, 4.0, 50.0) + powder_rings(q, [5.0, 8.5, 11.0], 0.08, [3.0e3, 2.0e3, 1.0e3])


@pytest.mark.parametrize(
    "tilt, rot, y_origin",
    [(2.0, 30.0, "array"), (2.0, 30.0, "bottom"), (5.0, 135.0, "bottom"), (1.0, -60.0, "array")],
)
def test_simulated_tilted_image_matches_pyfai(tilt, rot, y_origin):
    fit = _fit2d(tilt, rot)
    g = _geometry(fit, y_origin)
    sim = simulate_image(g, _waxs, oversampling=3, gaps="pilatus", bad_pixels=10, seed=3)
    flip = np.flipud if y_origin == "bottom" else (lambda a: a)
    ai = _pyfai_fit2d(fit)
    q_range, npt = (0.5, 12.0), 400
    bins = RadialBins.linear(*q_range, npt)
    kw = dict(unit="q_nm^-1", radial_range=q_range, mask=flip(sim.mask), error_model="poisson", correctSolidAngle=False)

    unsplit = build_integrator(g, bins, mask=sim.mask, split=False).integrate(sim.image)
    ref = ai.integrate1d(flip(sim.image), npt, method=("no", "histogram", "numpy"), **kw)
    np.testing.assert_array_equal(np.isfinite(unsplit.intensity[0]), np.isfinite(ref.intensity))
    d = rel_diff(unsplit.intensity[0], ref.intensity)
    s = rel_diff(unsplit.sigma[0], ref.sigma)
    assert d.max() < 2e-3
    assert s.max() < 2e-3

    split = build_integrator(g, bins, 3, mask=sim.mask).integrate(sim.image)
    ref_full = ai.integrate1d(flip(sim.image), npt, method=("full", "csr", "cython"), **kw)
    ds = rel_diff(split.intensity[0], ref_full.intensity)
    report(
        f"sim tilt={tilt} rot={rot} {y_origin}: unsplit max rel I {d.max():.1e}, sigma {s.max():.1e}; split ov=3 median",
        f"{np.median(ds):.1e}",
    )
    assert np.median(ds) < 1e-3


# ====================================================================== simulator ground truth
SAXS = partial(guinier_porod, i0=1.0e5, rg_nm=2.0, porod_exponent=4.0, background=50.0)


def _beamstop(g, radius_px=12.0, arm_px=6.0):
    row0, col0 = g.beam_centre_px()
    r = np.arange(g.shape[0])[:, None] + 0.5
    c = np.arange(g.shape[1])[None, :] + 0.5
    return ((r - row0) ** 2 + (c - col0) ** 2 <= radius_px**2) | ((np.abs(c - col0) <= arm_px / 2) & (r >= row0))


@pytest.mark.parametrize("corrected", [False, True], ids=["plain", "solid_angle+polarization"])
def test_split_integration_matches_simulated_ground_truth(corrected):
    """Noise-free SAXS image (1 m, tilted 3°, beam stop, Pilatus gaps, bad pixels), ov = 3.

    The integrator estimates the average of *pixel* values in a bin; the ground truth is the area
    average of I over the bin. They differ by the pixel-smearing term ≈ (Δq_pixel²/24)·I''/I
    (pyFAI's exact splitting shows the same difference), ~1e-4 at this distance; at 0.3 m it
    reaches ~1.5e-3 at the Guinier–Porod knee, for pyFAI too."""
    fit = _fit2d(3.0, 40.0, distance_mm=1000.0)
    g = _geometry(fit, "bottom")
    extra = {"polarization_factor": 0.95, "solid_angle": True} if corrected else {}
    sim = simulate_image(
        g,
        SAXS,
        oversampling=5,
        mask=_beamstop(g),
        gaps="pilatus",
        bad_pixels=10,
        poisson=False,
        dtype=np.float64,
        seed=1,
        **extra,
    )
    bins = RadialBins.linear(0.1, float(sim.q_map.max()), 300)
    truth = ground_truth_curve(g, SAXS, bins, oversampling=8, mask=sim.mask, **extra)
    corrections = Corrections(solid_angle=True, polarization_factor=0.95) if corrected else None
    ours = build_integrator(g, bins, 3, mask=sim.mask, corrections=corrections).integrate(sim.image)
    d = np.abs(ours.intensity[0] / truth.intensity - 1)
    full = (truth.area_px >= 100) & np.isfinite(d)
    assert full.sum() > 250
    report(
        f"integrator ov=3 vs ground truth ({'corrected' if corrected else 'plain'}), bins >= 100 px: max / median",
        f"{d[full].max():.1e} / {np.median(d[full]):.1e}",
    )
    assert d[full].max() < 1e-3
    assert np.median(d[full]) < 2e-4
    # against I at the bin centres the bin-averaging curvature term (Δq_bin²/24)·I''/I adds up
    a = np.abs(ours.intensity[0] / truth.analytic - 1)
    report("integrator ov=3 vs analytic I(q_centre), bins >= 100 px: median", f"{np.median(a[full]):.1e}")
    assert np.median(a[full]) < 1e-3
    # every non-empty bin of the ground truth is non-empty in the integrator and vice versa
    np.testing.assert_array_equal(np.isfinite(ours.intensity[0]), truth.area_px > 0)
