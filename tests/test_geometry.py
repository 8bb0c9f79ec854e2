"""Geometry against pyFAI: PONI maps, the FIT2D tilt model (both y conventions), SAXSDOG's formula."""

import warnings

import numpy as np
import pytest

from photonflow.geometry import Geometry, q_from_two_theta, read_poni, two_theta_from_q

pyFAI = pytest.importorskip("pyFAI")
from pyFAI.integrator.azimuthal import AzimuthalIntegrator  # noqa: E402

SHAPE = (407, 487)  # one Pilatus module: small and fast
# (tilt °, tilt-plane rotation °). Exactly 90° is left to the SAXSDOG-formula test: there pyFAI's
# setFit2D returns rot1 = −1.5e-8 rad instead of 0 (float32 rounding), 7e-6 relative at 2θ = 2 mrad.
FIT2D_CASES = [(0.0, 0.0), (0.5, 30.0), (1.5, -120.0), (3.0, 200.0), (6.0, 89.0), (10.0, 301.0)]


def pyfai_fit2d(distance, cx, cy, tilt, rot, pixel=172.0, wavelength=1.0):
    ai = AzimuthalIntegrator(wavelength=wavelength * 1e-10)
    ai.detector = pyFAI.detectors.Detector(pixel * 1e-6, pixel * 1e-6, max_shape=SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ai.setFit2D(distance, cx, cy, tilt, rot, pixel, pixel)
    return ai


def two_theta(ai, shape=SHAPE):
    return ai.center_array(shape, unit="2th_rad", scale=False)


def assert_same_two_theta(ours, ref):
    """Relative 1e-6 away from the direct beam; within a pixel of it (2θ < 2 mrad) pyFAI's own
    FIT2D conversion carries float32 rounding (e.g. rot1 = −1.5e-8 instead of 0 at a tilt-plane
    rotation of exactly 90°), so there the check is absolute: 1e-7 rad."""
    far = ref > 2e-3
    assert np.max(np.abs(ours[far] - ref[far]) / ref[far]) < 1e-6
    assert np.max(np.abs(ours - ref)) < 1e-7


@pytest.mark.parametrize("tilt,rot", FIT2D_CASES)
def test_fit2d_array_convention_matches_pyfai(tilt, rot):
    g = Geometry.from_fit2d(180.0, 250.3, 190.7, tilt, rot, 172.0, shape=SHAPE, wavelength_A=1.0, y_origin="array")
    ref = two_theta(pyfai_fit2d(180.0, 250.3, 190.7, tilt, rot))
    assert_same_two_theta(g.two_theta_array(), ref)


@pytest.mark.parametrize("tilt,rot", FIT2D_CASES)
def test_fit2d_bottom_origin_matches_pyfai_on_flipped_image(tilt, rot):
    """FIT2D counts y from the bottom: pyFAI sees FIT2D's frame when the image is flipped upside down."""
    g = Geometry.from_fit2d(180.0, 250.3, 120.2, tilt, rot, 172.0, shape=SHAPE, wavelength_A=1.0, y_origin="bottom")
    ref_flipped = two_theta(pyfai_fit2d(180.0, 250.3, 120.2, tilt, rot))
    assert_same_two_theta(g.two_theta_array(), ref_flipped[::-1])


@pytest.mark.parametrize("tilt,rot", FIT2D_CASES[1:] + [(6.0, 90.0), (2.0, 180.0)])
def test_fit2d_matches_saxsdog_law_of_cosines(tilt, rot):
    """SAXSDOG's tilt model written from its geometry: the in-plane direction φ (measured with rows
    going down, beam centre row = rows − y) rises out of the plane by α, sin α = sin τ cos(φ + rot)."""
    d, bx, by = 180.0, 250.3, 120.2
    g = Geometry.from_fit2d(d, bx, by, tilt, rot, 172.0, shape=SHAPE, wavelength_A=1.0, y_origin="bottom")
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]] + 0.5
    z = (cols - bx) + 1j * (rows - (SHAPE[0] - by))
    r = np.abs(z) * 0.172
    phi = np.angle(z)
    alpha = np.arcsin(np.sin(np.radians(tilt)) * np.cos(phi + np.radians(rot)))
    l2 = d * d + r * r + 2 * d * r * np.sin(alpha)
    expected = np.arccos((d * d + l2 - r * r) / (2 * d * np.sqrt(l2)))
    ours = g.two_theta_array()
    assert np.max(np.abs(ours - expected) / expected) < 1e-6


def test_fit2d_round_trip():
    g = Geometry.from_fit2d(250.0, 500.5, 400.25, 4.0, -37.0, 75.0, 80.0, shape=(1000, 1100), wavelength_A=0.8)
    f = g.to_fit2d()
    assert f["distance_mm"] == pytest.approx(250.0, rel=1e-12)
    assert (f["center_x"], f["center_y"]) == pytest.approx((500.5, 400.25), abs=1e-9)
    assert f["tilt_deg"] == pytest.approx(4.0, abs=1e-9)
    assert f["tilt_plane_rotation_deg"] == pytest.approx(-37.0, abs=1e-9)


def test_poni_maps_match_pyfai(shared_data):
    poni = shared_data / "saxs" / "CeO2_Pilatus1M.poni"
    shape = (1043, 981)
    g = Geometry.from_poni_file(poni, shape=shape)
    ai = pyFAI.load(str(poni))
    tth = ai.center_array(shape, unit="2th_rad", scale=False)
    chi = ai.center_array(shape, unit="chi_rad", scale=False)
    assert np.max(np.abs(g.two_theta_array() - tth) / tth) < 1e-9
    assert np.max(np.abs(np.angle(np.exp(1j * (g.chi_array() - chi))))) < 1e-9
    q = ai.center_array(shape, unit="q_nm^-1")
    assert np.max(np.abs(g.q_array() - q) / q) < 1e-9
    solid = ai.solidAngleArray(shape)
    assert np.max(np.abs(g.solid_angle_array() - solid) / solid) < 1e-5
    pol = ai.polarization(shape, factor=0.95)
    assert np.max(np.abs(g.polarization_array(0.95) - pol)) < 1e-5


def test_read_poni_values(shared_data):
    p = read_poni(shared_data / "saxs" / "CeO2_Pilatus1M.poni")
    assert p["distance"] == pytest.approx(0.208651380603)
    assert p["wavelength"] == pytest.approx(4.066e-11)
    assert p["pixel1"] == pytest.approx(172e-6)


def test_q_two_theta_inverse():
    q = np.linspace(0.01, 50, 7)
    assert np.allclose(q_from_two_theta(two_theta_from_q(q, 1.5406), 1.5406), q, rtol=1e-12)
    # Bragg: d = 2π/q; Cu Kα, Si(111) d = 3.1356 Å → 2θ = 28.44°
    assert np.degrees(two_theta_from_q(2 * np.pi / 0.31356, 1.5406)) == pytest.approx(28.44, abs=0.01)


def test_invalid_geometry_is_named():
    with pytest.raises(ValueError, match="distance"):
        Geometry(shape=(10, 10), pixel1_um=100, pixel2_um=100, dist_mm=-1, poni1_mm=0, poni2_mm=0)
    with pytest.raises(ValueError, match="y_origin"):
        Geometry.from_fit2d(100, 5, 5, shape=(10, 10), y_origin="top")
