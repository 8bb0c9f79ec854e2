"""Azimuthal sectors against pyFAI's azimuth_range; integral parameters against analytic integrals."""

import warnings

import fabio
import numpy as np
import pytest

from photonflow.geometry import Geometry
from photonflow.integrate import RadialBins, build_integrator, integral_parameters

pyFAI = pytest.importorskip("pyFAI")


@pytest.mark.parametrize("sector", [(-45.0, 45.0), (100.0, 170.0)])
def test_sector_matches_pyfai_azimuth_range(shared_data, sector):
    poni = shared_data / "saxs" / "CeO2_Pilatus1M.poni"
    image = fabio.open(str(shared_data / "saxs" / "CeO2_Pilatus1M.tif")).data
    geometry = Geometry.from_poni_file(poni, shape=image.shape)
    mask = image < 0
    bins = RadialBins.linear(2.0, 50.0, 400)
    ours = build_integrator(geometry, bins, mask=mask, split=False, sector_deg=sector).integrate(image)
    ai = pyFAI.load(str(poni))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ai.integrate1d(
            image,
            400,
            unit="q_nm^-1",
            radial_range=(2.0, 50.0),
            azimuth_range=sector,
            method=("no", "histogram", "numpy"),
            mask=mask,
            correctSolidAngle=False,
        )
    i = ours.intensity[0]
    ok = np.isfinite(i) & (ref.intensity != 0)
    assert ok.sum() > 300
    assert np.max(np.abs(i[ok] - ref.intensity[ok]) / np.abs(ref.intensity[ok])) < 2e-3
    # a sector sees fewer pixels than the full circle
    full = build_integrator(geometry, bins, mask=mask, split=False)
    assert ours.sigma[0][ok].mean() > full.integrate(image).sigma[0][ok].mean()


def test_wrapping_sector_is_the_complement():
    g = Geometry(
        shape=(80, 90), pixel1_um=172, pixel2_um=172, dist_mm=200, poni1_mm=6.0, poni2_mm=7.0, wavelength_A=1.0
    )
    bins = RadialBins.linear(0.0, 4.0, 40)
    a = build_integrator(g, bins, split=False, sector_deg=(90.0, 270.0)).matrix
    b = build_integrator(g, bins, split=False, sector_deg=(-90.0, 90.0)).matrix
    full = build_integrator(g, bins, split=False).matrix
    assert abs((a + b) - full).max() < 1e-6


def test_integral_parameters_against_analytic_integrals():
    """I(q) = exp(−q/a): ∫ I dq, ∫ I q dq, ∫ I q² dq in closed form over [q0, q1)."""
    a, q0, q1 = 0.7, 0.5, 3.0
    edges = np.linspace(0.0, 5.0, 5001)
    q = 0.5 * (edges[1:] + edges[:-1])
    intensity = np.exp(-q / a)

    def primitive(n, x):  # ∫ x^n e^{−x/a} dx
        if n == 0:
            return -a * np.exp(-x / a)
        if n == 1:
            return -a * np.exp(-x / a) * (x + a)
        return -a * np.exp(-x / a) * (x * x + 2 * a * x + 2 * a * a)

    expected = [primitive(n, q1) - primitive(n, q0) for n in range(3)]
    p = integral_parameters(q, intensity, q0, q1)
    for key, value in zip(("I0", "I1", "I2"), expected):
        assert float(p[key]) == pytest.approx(value, rel=2e-3)
    assert float(p["correlation_length"]) == pytest.approx(np.pi * expected[1] / expected[2], rel=3e-3)


def test_integral_parameters_skip_nan_bins_and_batch():
    q = np.linspace(0.05, 1.0, 20)
    curves = np.vstack([np.ones(20), 2 * np.ones(20)])
    curves[0, 3] = np.nan
    p = integral_parameters(q, curves, 0.0, 2.0)
    dq = q[1] - q[0]
    assert p["I0"].shape == (2,)
    assert p["I0"][0] == pytest.approx(19 * dq)
    assert p["I0"][1] == pytest.approx(40 * dq)
