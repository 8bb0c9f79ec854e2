"""SAXSDOG calibration JSON and PONI files → geometry, integrations, slices; errors name the field."""

import json

import numpy as np
import pytest
import tifffile

from photonflow.calibration import CalibrationError, calibration_from_saxsdog, load_calibration
from photonflow.geometry import Geometry


def saxsdog_dict(mask_file="mask.tif", **extra):
    d = {
        "Geometry": {
            "BeamCenter": [300.5, 200.25],
            "DedectorDistanceMM": 1500.0,
            "PixelSizeMicroM": [172.0],
            "Imagesize": [400, 350],
            "Tilt": {"TiltRotDeg": 25.0, "TiltAngleDeg": 2.0},
        },
        "Wavelength": 1.0,
        "Masks": [
            {"MaskFile": mask_file, "Oversampling": 2, "PixelPerRadialElement": 1.0, "qStart": 0.1, "qStop": 1.0}
        ],
        "OverwriteFiles": False,
    }
    d.update(extra)
    return d


def test_saxsdog_geometry_is_fit2d_from_the_bottom(tmp_path):
    tifffile.imwrite(tmp_path / "mask.tif", np.zeros((400, 350), np.uint8))
    cal = calibration_from_saxsdog(saxsdog_dict(), source=str(tmp_path / "cal.json"))
    ref = Geometry.from_fit2d(
        1500.0, 200.25, 300.5, 2.0, 25.0, 172.0, shape=(400, 350), wavelength_A=1.0, y_origin="bottom"
    )
    assert cal.geometry == ref
    row, col = cal.geometry.beam_centre_px()
    assert (row, col) == pytest.approx((400 - 300.5, 200.25), abs=1e-9)
    assert cal.radial[0].mask_file == str(tmp_path / "mask.tif")  # relative to the calibration file


def test_saxsdog_grid_starts_at_zero_with_ppre_pixels(tmp_path):
    tifffile.imwrite(tmp_path / "mask.tif", np.zeros((400, 350), np.uint8))
    cal = calibration_from_saxsdog(saxsdog_dict(), source=str(tmp_path / "cal.json"))
    bins = cal.bins_for(cal.radial[0])
    assert bins.edges[0] == 0.0
    dq = np.diff(bins.edges)
    assert np.allclose(dq, dq[0])
    # one bin ≈ one pixel at the detector edge (small angles: q per pixel = 2π·p/(λ·d))
    q_per_pixel = 2 * np.pi * 0.172 / (0.1 * 1500.0)
    assert dq[0] == pytest.approx(q_per_pixel, rel=0.01)
    assert bins.edges[-1] >= cal.geometry.q_array(2).max()


def test_polarisation_mapping_matches_saxsdog_formula(tmp_path):
    """SAXSDOG: P = F(1 − sin²(φ−A+90°)s²) + (1−F)(1 − cos²(φ−A+90°)s²), s = sin 2θ, φ its azimuth."""
    tifffile.imwrite(tmp_path / "mask.tif", np.zeros((400, 350), np.uint8))
    d = saxsdog_dict(PolarizationCorrection={"Fraction": 0.9, "Angle": 20.0})
    d["Geometry"]["Tilt"] = {"TiltRotDeg": 0.0, "TiltAngleDeg": 0.0}
    d["Geometry"]["DedectorDistanceMM"] = 100.0
    cal = calibration_from_saxsdog(d, source=str(tmp_path / "cal.json"))
    factor, offset = cal.polarization
    ours = cal.geometry.polarization_array(factor, np.radians(offset))
    rows, cols = np.mgrid[0:400, 0:350] + 0.5
    z = (cols - 200.25) + 1j * (rows - (400 - 300.5))
    phi = np.angle(z)
    s = np.sin(np.arctan(np.abs(z) * 0.172 / 100.0))
    rot = np.radians(20.0) - np.pi / 2
    expected = 0.9 * (1 - (np.sin(phi - rot) * s) ** 2) + 0.1 * (1 - (np.cos(phi - rot) * s) ** 2)
    assert np.max(np.abs(ours - expected)) < 1e-9


def test_bad_slice_reference_is_named(tmp_path):
    d = saxsdog_dict(Slices=[{"Direction": "x", "Plane": "InPlane", "CutPosition": 10, "CutMargin": 2, "MaskRef": 3}])
    with pytest.raises(CalibrationError, match=r"Slices\[0\]\.MaskRef"):
        calibration_from_saxsdog(d, source="cal.json")


def test_missing_mask_file_is_named(tmp_path):
    cal = calibration_from_saxsdog(saxsdog_dict(mask_file="nope.msk"), source=str(tmp_path / "cal.json"))
    with pytest.raises(FileNotFoundError, match="nope.msk"):
        cal.build_integrators()


def test_json_calibration_validated_against_schema(tmp_path):
    d = saxsdog_dict()
    d["Geometry"]["Tilt"]["TiltAngleDeg"] = "two"
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(d))
    with pytest.raises(Exception, match=r"Geometry\.Tilt\.TiltAngleDeg"):
        load_calibration(path)


def test_missing_calibration_file():
    with pytest.raises(FileNotFoundError, match="calibration file not found"):
        load_calibration("/nonexistent/cal.json")


def test_poni_calibration(shared_data):
    cal = load_calibration(
        shared_data / "saxs" / "CeO2_Pilatus1M.poni", shape=(1043, 981), npt=500, q_range=(1.0, 50.0)
    )
    assert cal.geometry.dist_mm == pytest.approx(208.651380603)
    bins = cal.bins_for(cal.radial[0])
    assert bins.n_bins == 500 and bins.edges[0] == 1.0 and bins.edges[-1] == 50.0
