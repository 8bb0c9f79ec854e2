"""GISAXS slices: q_H/q_V against pyFAI's grazing-incidence units, cuts against analytic images."""

import numpy as np
import pytest

from photonflow.calibration import SliceSpec
from photonflow.geometry import Geometry
from photonflow.slices import build_slice_integrator, q_h_q_v

pyFAI = pytest.importorskip("pyFAI")

SHAPE = (300, 280)


def geometry(tilt=0.0):
    return Geometry.from_fit2d(800.0, 140.3, 90.7, tilt, 40.0, 172.0, shape=SHAPE, wavelength_A=1.2, y_origin="bottom")


@pytest.mark.parametrize("tilt", [0.0, 2.5])
def test_q_components_match_pyfai_grazing_units(tilt):
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    g = geometry(tilt)
    ai = AzimuthalIntegrator(
        dist=g.dist_mm * 1e-3,
        poni1=g.poni1_mm * 1e-3,
        poni2=g.poni2_mm * 1e-3,
        rot1=g.rot1,
        rot2=g.rot2,
        rot3=g.rot3,
        wavelength=g.wavelength_A * 1e-10,
    )
    ai.detector = pyFAI.detectors.Detector(172e-6, 172e-6, max_shape=SHAPE)
    r, c = g.pixel_centres(1)
    qh, qv = q_h_q_v(g, r[:, None], c[None, :])
    # pyFAI's GI frame at zero incidence: qx along columns, qy along rows (pointing down)
    assert np.allclose(qh, ai.center_array(SHAPE, unit="qxgi_nm^-1"), atol=1e-9)
    assert np.allclose(qv, -ai.center_array(SHAPE, unit="qygi_nm^-1"), atol=1e-9)


@pytest.mark.parametrize("incident_deg", [0.2, 1.0])
def test_q_vertical_with_incidence_matches_pyfai_fibre_units_on_flipped_image(incident_deg):
    """pyFAI counts its vertical axis towards increasing rows: our numbers for the image flipped."""
    import pyFAI.units as units
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    g = geometry(0.0)
    f = g.to_fit2d()
    ai = AzimuthalIntegrator(wavelength=g.wavelength_A * 1e-10)
    ai.detector = pyFAI.detectors.Detector(172e-6, 172e-6, max_shape=SHAPE)
    # the same detector seen upside down: y from the other edge, tilt-plane rotation mirrored
    ai.setFit2D(
        f["distance_mm"],
        f["center_x"],
        SHAPE[0] - f["center_y"],
        f["tilt_deg"],
        -f["tilt_plane_rotation_deg"],
        172,
        172,
    )
    unit = units.get_unit_fiber("qoop_nm^-1", incident_angle=np.radians(incident_deg))
    qoop_flipped = ai.array_from_unit(SHAPE, unit=unit, typ="center")
    r, c = g.pixel_centres(1)
    _, qv = q_h_q_v(g, r[:, None], c[None, :], incident_deg)
    assert np.max(np.abs(qv - qoop_flipped[::-1])) < 1e-9


def test_horizontal_cut_recovers_analytic_profile():
    g = geometry()
    r, c = g.pixel_centres(4)
    qh, _ = q_h_q_v(g, r[:, None], c[None, :])

    def profile(q):
        return 1000.0 + 400.0 * np.cos(2.0 * q)

    # pixel value = its area average of the profile (4×4 sub-pixel quadrature)
    image = profile(qh).reshape(SHAPE[0], 4, SHAPE[1], 4).mean(axis=(1, 3))
    beam_row_from_bottom = SHAPE[0] - g.beam_centre_px()[0]
    spec = SliceSpec("h", "x", "InPlane", position=beam_row_from_bottom + 30, margin=4)
    integ = build_slice_integrator(g, spec, oversampling=4)
    res = integ.integrate(image)
    ok = np.isfinite(res.intensity[0])
    assert ok.sum() > 0.9 * integ.n_bins
    # bin average of a cosine vs its value at the bin centre: relative < 1e-3 for these bins
    assert np.max(np.abs(res.intensity[0][ok] - profile(res.q[ok])) / profile(res.q[ok])) < 1e-3
    # the strip spans the full width: q_H from one edge to the other
    assert res.q.min() < qh.min() + 0.01 and res.q.max() > qh.max() - 0.01


def test_vertical_cut_vertical_plane():
    g = geometry()
    r, c = g.pixel_centres(1)
    _, qv = q_h_q_v(g, r[:, None], c[None, :])
    image = 500.0 + 100.0 * qv  # linear: the bin average equals the value at the bin centre
    spec = SliceSpec("v", "y", "Vertical", position=140.0, margin=3)
    res = build_slice_integrator(g, spec, oversampling=1).integrate(image)
    ok = np.isfinite(res.intensity[0])
    # with unsplit pixels the bin average is the mean of the pixel centres in the bin
    assert np.max(np.abs(res.intensity[0][ok] - (500.0 + 100.0 * res.q[ok]))) < 100.0 * np.diff(res.q)[0]


def test_strip_outside_image_is_an_error():
    with pytest.raises(ValueError, match="outside the image"):
        build_slice_integrator(geometry(), SliceSpec("bad", "x", "InPlane", position=5000, margin=2))
    with pytest.raises(ValueError, match="Direction"):
        build_slice_integrator(geometry(), SliceSpec("bad", "z", "InPlane", position=5, margin=2))
