"""CrystFEL geometry: parser, pixel maps against cfelpyutils and OM, masks, projection, resolution."""

from __future__ import annotations

import io
import types
from pathlib import Path

import numpy as np
import pytest

from photonflow.io.geom import (
    HC_EV_A,
    AsicLayout,
    BadRegion,
    GeometryError,
    load_geometry,
    parse_geometry,
    simulated_detector,
    write_geometry,
)

REPO = Path(__file__).resolve().parents[1]
SIM256 = REPO / "config" / "geometry" / "sim256.geom"
SIM1920 = REPO / "config" / "geometry" / "sim1920.geom"

# Rotated (fs = -y, 30°), tilted (ss with a z part), per-panel clen and coffset, a global `res`
# between panels (applies only to panels first mentioned later), slab pixels on no panel,
# x/y, panel fs/ss and slab-wide fs/ss bad regions, a no_index panel, rigid groups, comments.
HAND = """\
; hand-written test geometry
photon_energy = 9300
res = 13333.3
adu_per_eV = 0.0001
clen = 0.12
coffset = 0.001
data = /data/data
dim0 = %
dim1 = ss
dim2 = fs
mask_good = 0x0000
mask_bad = 0xffff
rigid_group_q0 = a0,a1
rigid_group_collection_all = q0

a0/min_fs = 0
a0/max_fs = 63
a0/min_ss = 0
a0/max_ss = 31
a0/fs = +0x -y        ; rotated by 90 degrees (both terms: cfelpyutils keeps unnamed components)
a0/ss = +1x +0y        ; (OM cannot read a bare "+x")
a0/corner_x = 40.5
a0/corner_y = 20.25

a1/min_fs = 64
a1/max_fs = 127
a1/min_ss = 0
a1/max_ss = 31
a1/fs = 0.866025x +0.5y
a1/ss = -0.5x +0.866025y
a1/corner_x = -100.7
a1/corner_y = 12.3
a1/clen = 0.125
a1/coffset = -0.002

res = 10000
a2/min_fs = 0
a2/max_fs = 127
a2/min_ss = 32
a2/max_ss = 63
a2/fs = +1.0x -0.0y
a2/ss = +0x +0.9659258y +0.258819z
a2/corner_x = -64
a2/corner_y = -90.5
a2/no_index = 0

a3/min_fs = 0
a3/max_fs = 59
a3/min_ss = 70
a3/max_ss = 99
a3/fs = -x
a3/ss = -y
a3/corner_x = 150
a3/corner_y = -20
a3/no_index = 1

badA/min_x = 45
badA/max_x = 60
badA/min_y = -5
badA/max_y = 5

badB/min_fs = 10
badB/max_fs = 20
badB/min_ss = 40
badB/max_ss = 45
badB/panel = a2

bad_rows/min_fs = 100
bad_rows/max_fs = 110
bad_rows/min_ss = 0
bad_rows/max_ss = 40
"""


# ---------------------------------------------------------------- oracles


def cfel_maps(text: str, float64: bool = False):
    """cfelpyutils' pixel maps; float64=True runs its own code with float64 arrays instead of float32."""
    import cfelpyutils.geometry.geometry as cg
    from cfelpyutils.geometry import load_crystfel_geometry

    detector = load_crystfel_geometry(io.StringIO(text)).detector
    if not float64:
        return cg.compute_pix_maps(detector)
    shim = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    shim.zeros = lambda shape, dtype=None: np.zeros(shape, dtype=np.float64)
    original = cg.numpy
    cg.numpy = shim
    try:
        return cg.compute_pix_maps(detector)
    finally:
        cg.numpy = original


@pytest.fixture(scope="module")
def om_geometry():
    """OM 23.8.3's GeometryInformation (its annotations use np.float_, gone in numpy 2)."""
    with pytest.MonkeyPatch.context() as mp:
        if not hasattr(np, "float_"):
            mp.setattr(np, "float_", np.float64, raising=False)
        from om.lib.geometry import GeometryInformation
    return lambda text: GeometryInformation(geometry_description=text.splitlines(True), geometry_format="crystfel")


def _text(path: Path) -> str:
    return path.read_text()


# ---------------------------------------------------------------- default files


def test_default_files_are_what_the_generator_writes(tmp_path):
    g1920 = simulated_detector(
        8,
        8,
        240,
        75.0,
        100.0,
        photon_energy_eV=9500.0,
        bad_regions=[BadRegion("bad_beamstop", min_x=-8, max_x=8, min_y=-8, max_y=8)],
    )
    g256 = simulated_detector(2, 2, 128, 75.0, 50.0, photon_energy_eV=9500.0)
    for g, path in ((g1920, SIM1920), (g256, SIM256)):
        out = write_geometry(g, tmp_path / path.name)
        assert out.read_text() == path.read_text()
        loaded = load_geometry(path)
        assert loaded.panels == g.panels and loaded.bad_regions == g.bad_regions
        assert loaded.warnings == []
        # and a second write of the loaded file is identical (round trip)
        assert write_geometry(loaded, tmp_path / "again.geom").read_text() == path.read_text()


def test_sim1920_layout():
    g = load_geometry(SIM1920)
    assert g.slab_shape == (1920, 1920)
    assert len(g.panels) == 64
    assert g.photon_energy_eV == 9500.0
    assert g.wavelength_A == pytest.approx(1.305096825, abs=1e-8)
    assert g.clen_m == 0.1
    assert g.panels[0].res == pytest.approx(13333.33, abs=0.01)
    assert g.panels[0].data == "/entry_1/data_1/data"
    assert g.panels[0].dim_structure == ("%", "ss", "fs")
    assert g.asic_layout() == AsicLayout(240, 240, 8, 8)
    assert len(g.bad_regions) == 1
    # gap: the first pixel of ASIC 1 is 240 + 4 pixels along x from the first pixel of ASIC 0
    x, y, _ = g.pixel_maps()
    assert x[0, 240] - x[0, 0] == pytest.approx(244.0, abs=1e-9)
    assert y[240, 0] - y[0, 0] == pytest.approx(244.0, abs=1e-9)
    # beam: a fraction of a pixel off the centre of slab pixel (961, 962)
    panel, fs, ss = g.project(np.array([0.0, 0.0, 1.0]))
    assert (fs, ss) == (pytest.approx(961.3, abs=1e-9), pytest.approx(961.6, abs=1e-9))
    assert g.panels[panel].name == "p36"


# ---------------------------------------------------------------- pixel maps vs cfelpyutils


@pytest.mark.parametrize("source", ["sim256", "sim1920", "hand"])
def test_pixel_maps_match_cfelpyutils(source):
    text = HAND if source == "hand" else _text(SIM256 if source == "sim256" else SIM1920)
    g = parse_geometry(text, f"{source}.geom")
    x, y, z = g.pixel_maps()
    on = g.panel_map() >= 0
    ref = cfel_maps(text)  # float32 maps, as cfelpyutils returns them
    assert ref.x.shape == x.shape
    np.testing.assert_array_equal(x[on].astype(np.float32), ref.x[on])
    np.testing.assert_array_equal(y[on].astype(np.float32), ref.y[on])
    ref64 = cfel_maps(text, float64=True)  # the same formula in float64
    np.testing.assert_allclose(x[on], ref64.x[on], rtol=0, atol=1e-6)
    np.testing.assert_allclose(y[on], ref64.y[on], rtol=0, atol=1e-6)
    r = np.hypot(x, y)
    np.testing.assert_allclose(r[on], np.hypot(ref64.x, ref64.y)[on], rtol=0, atol=1e-6)
    # z: cfelpyutils gives clen only; photonflow adds coffset and the z part of tilted panels
    coffset = np.zeros_like(x)
    untilted = np.zeros_like(on)
    for p in g.panels:
        coffset[p.slab_slices] = p.coffset
        untilted[p.slab_slices] = p.fs[2] == 0 and p.ss[2] == 0
    np.testing.assert_allclose(z[untilted], (ref64.z + coffset)[untilted], rtol=0, atol=1e-12)
    assert np.isnan(x[~on]).all() and np.isnan(y[~on]).all() and np.isnan(z[~on]).all()


def test_hand_geometry_semantics():
    g = parse_geometry(HAND, "hand.geom")
    a0, a1, a2, a3 = g.panels
    assert a0.fs == (0.0, -1.0, 0.0) and a0.ss == (1.0, 0.0, 0.0)
    assert a1.fs == (0.866025, 0.5, 0.0)
    assert a2.fs == (1.0, 0.0, 0.0) and a2.ss == (0.0, 0.9659258, 0.258819)
    # the global `res = 10000` sits between a1 and a2: it reaches only a2 and a3
    assert (a0.res, a1.res, a2.res, a3.res) == (13333.3, 13333.3, 10000.0, 10000.0)
    assert (a0.clen, a1.clen, a2.clen) == (0.12, 0.125, 0.12) and g.clen_m is None
    assert (a0.coffset, a1.coffset) == (0.001, -0.002)
    assert a2.no_index is False and a3.no_index is True  # CrystFEL's atob("0") is false
    assert a0.adu_per_eV == 0.0001 and a0.data == "/data/data"
    assert (g.mask_good, g.mask_bad, a0.mask_bad) == (0, 0xFFFF, 0xFFFF)
    assert g.slab_shape == (100, 128)
    assert g.asic_layout() is None
    # tilted panel z: clen + coffset + ss·ss_z/res at the pixel corner (cfelpyutils/OM convention)
    _, _, z = g.pixel_maps()
    assert z[32 + 10, 5] == pytest.approx(0.12 + 0.001 + 10 * 0.258819 / 10000.0, abs=1e-15)
    assert [r.name for r in g.bad_regions] == ["badA", "badB", "bad_rows"]
    assert g.bad_regions[1].panel == "a2" and g.bad_regions[2].panel is None
    assert g.warnings == []


def test_good_pixel_mask_follows_crystfel_rules():
    g = parse_geometry(HAND, "hand.geom")
    ref = cfel_maps(HAND, float64=True)
    pmap = g.panel_map()
    expected = pmap >= 0
    expected[pmap == 3] = False  # a3: no_index
    expected[40:46, 10:21] = False  # badB (inside a2)
    expected[0:41, 100:111] = False  # bad_rows, slab-wide
    bad_a = (ref.x >= 45) & (ref.x <= 60) & (ref.y >= -5) & (ref.y <= 5) & (pmap >= 0)
    # on a0 (x = 40.5 + ss, y = 20.25 - fs): ss 5..19 and fs 16..25, 150 pixels
    assert bad_a.sum() == 150 and (pmap[bad_a] == 0).all()
    assert bad_a[5:20, 16:26].all()
    expected &= ~bad_a
    mask = g.good_pixel_mask()
    np.testing.assert_array_equal(mask, expected)
    assert g.panel_map()[65, 5] == -1 and g.panel_map()[80, 100] == -1


def test_panel_map_and_slab_gaps():
    g = parse_geometry(HAND, "hand.geom")
    pmap = g.panel_map()
    assert pmap.dtype == np.int32
    assert (pmap[0:32, 0:64] == 0).all() and (pmap[0:32, 64:] == 1).all()
    assert (pmap[32:64] == 2).all() and (pmap[64:70] == -1).all()
    assert (pmap[70:, :60] == 3).all() and (pmap[70:, 60:] == -1).all()


# ---------------------------------------------------------------- OM


@pytest.mark.parametrize("source", ["sim256", "sim1920", "hand"])
def test_radius_map_equals_om(source, om_geometry):
    text = HAND if source == "hand" else _text(SIM256 if source == "sim256" else SIM1920)
    g = parse_geometry(text, f"{source}.geom")
    om = om_geometry(text)
    radius = g.radius_map()
    assert radius.dtype == np.float32
    np.testing.assert_array_equal(radius, om.get_pixel_maps()["radius"])
    if source != "hand":
        assert g.asic_layout() == AsicLayout(**om.get_layout_info())


# ---------------------------------------------------------------- projection and lab positions


@pytest.mark.parametrize("source", ["sim256", "hand"])
def test_project_inverts_pixel_centres(source):
    g = parse_geometry(HAND if source == "hand" else _text(SIM256), f"{source}.geom")
    X, Y, Z = g.lab_maps_m(centre=True)
    pmap = g.panel_map()
    ss, fs = np.nonzero(pmap >= 0)
    dirs = np.column_stack([X[ss, fs], Y[ss, fs], Z[ss, fs]])
    dirs /= np.linalg.norm(dirs, axis=1)[:, None]
    panel, pfs, pss = g.project(dirs)
    np.testing.assert_array_equal(panel, pmap[ss, fs])
    np.testing.assert_allclose(pfs, fs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pss, ss, rtol=0, atol=1e-9)
    # pixel edges: a ray 0.49 pixel from a centre stays in that pixel
    lab = g.slab_to_lab(fs[:50] + 0.49, ss[:50] - 0.49)
    _, f2, s2 = g.project(lab)
    np.testing.assert_allclose(f2, fs[:50] + 0.49, atol=1e-9)
    np.testing.assert_allclose(s2, ss[:50] - 0.49, atol=1e-9)


def test_project_misses_gaps_and_backwards_rays():
    g = simulated_detector(2, 2, 128, 75.0, 50.0)
    # the beam's pixel (129.3, 129.6) is 1.8 / 2.1 pixels from the corner of p3; the gap is 4 pixels wide
    res, clen = g.panels[0].res, 0.05
    gap_x = -(1.8 + 2.0) / res  # the middle of the gap between p2 and p3, along x
    panel, fs, ss = g.project(np.array([[gap_x, 0.0, clen], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0, 0, 1.0]]))
    assert panel.tolist() == [-1, -1, -1, 3]
    assert np.isnan(fs[:3]).all() and np.isnan(ss[:3]).all()
    assert (fs[3], ss[3]) == (pytest.approx(129.3, abs=1e-9), pytest.approx(129.6, abs=1e-9))


# ---------------------------------------------------------------- resolution, 2θ, q


def test_resolution_two_theta_q_analytic():
    g = load_geometry(SIM256)
    lam = HC_EV_A / 9500.0
    p = 75e-6
    # the beam is at Cheetah (129.3, 129.6); pixel (139, 130) is on the same ASIC: offset (9.7, 0.4) pixels
    # pixel (120, 130) is across the 4-pixel gap: offset (129.3 - 120 + 4, 0.4) pixels
    for (fs, ss), (dx, dy) in (((139, 130), (9.7, 0.4)), ((120, 130), (13.3, 0.4)), ((5, 250), (128.3, 120.4))):
        two_theta = np.arctan(np.hypot(dx, dy) * p / 0.05)
        assert g.two_theta_map()[ss, fs] == pytest.approx(two_theta, rel=1e-12)
        d = lam / (2 * np.sin(two_theta / 2))
        assert g.resolution_map()[ss, fs] == pytest.approx(d, rel=1e-12)
        assert g.q_map()[ss, fs] == pytest.approx(2 * np.pi / (d / 10), rel=1e-12)
        assert g.resolution_map(wavelength_A=2 * lam)[ss, fs] == pytest.approx(2 * d, rel=1e-12)
    res = g.resolution_map()
    assert 4.5 < np.nanmin(res) < 5.0  # corners: a useful range at 50 mm
    assert np.isfinite(res).all()


def test_resolution_needs_energy_and_clen():
    g = parse_geometry(
        "photon_energy = /LCLS/photon_energy_eV\nclen = /LCLS/detector_1/EncoderValue\n"
        "p/min_fs = 0\np/max_fs = 9\np/min_ss = 0\np/max_ss = 9\np/corner_x = -5\n"
        "p/corner_y = -5\np/res = 10000\np/fs = x\np/ss = y\n",
        "path.geom",
    )
    assert g.photon_energy_eV is None and g.photon_energy_path == "/LCLS/photon_energy_eV"
    assert g.wavelength_A is None
    p = g.panels[0]
    assert p.clen is None and p.clen_path == "/LCLS/detector_1/EncoderValue" and p.clen_path_unit == "mm"
    with pytest.raises(GeometryError, match="path.geom.*with_clen"):
        g.two_theta_map()
    g2 = g.with_clen(0.2)
    with pytest.raises(GeometryError, match="path.geom.*photon energy"):
        g2.resolution_map()
    d = g2.with_photon_energy(12398.419843320026).resolution_map()  # λ = 1 Å
    r = np.hypot(4.5, 4.5) / 10000  # pixel (9, 9): centre at (4.5, 4.5) pixels
    assert d[9, 9] == pytest.approx(1 / (2 * np.sin(np.arctan(r / 0.2) / 2)), rel=1e-12)


# ---------------------------------------------------------------- parser details


def test_units_and_syntax_variants():
    base = "p/min_fs = 0\np/max_fs = 3\np/min_ss = 0\np/max_ss = 3\np/corner_x = 0\np/corner_y = 0\np/res = 5000\n"
    g = parse_geometry("photon_energy = 9.5 keV\nclen = 120 mm\n" + base + "p/fs = 0.5x+0.5y\np/ss = -0.5x +0.5y\n")
    assert g.photon_energy_eV == 9500.0 and g.panels[0].clen == pytest.approx(0.12, abs=1e-15)
    assert g.panels[0].fs == (0.5, 0.5, 0.0) and g.panels[0].ss == (-0.5, 0.5, 0.0)
    g = parse_geometry("wavelength = 1.5 A\r\nclen = 0.1 m\r\n" + base.replace("\n", "\r\n"))
    assert g.photon_energy_eV == pytest.approx(HC_EV_A / 1.5)
    assert g.panels[0].fs == (1.0, 0.0, 0.0) and g.panels[0].ss == (0.0, 1.0, 0.0)  # defaults, warned
    assert any("no fs direction" in w for w in g.warnings)
    # CrystFEL zeroes unnamed components (fs = -y is (0, -1, 0)); cfelpyutils would keep the old x
    g = parse_geometry("clen = 0.1\nfs = x\n" + base + "p/fs = -y\np/ss = +x\n")
    assert g.panels[0].fs == (0.0, -1.0, 0.0) and g.panels[0].ss == (1.0, 0.0, 0.0)
    g = parse_geometry(
        "clen = 0.1\n" + base + "p/fs = +x -0.0y +0.1z\np/ss = y\np/frobnicate = 2\nrigid_group_a = p\nres = 3\n"
    )
    assert g.panels[0].fs == (1.0, 0.0, 0.1)
    assert any("line 11" in w and "frobnicate" in w for w in g.warnings)
    assert any("line 13" in w and "applies to none" in w for w in g.warnings)
    # clen given only after the panels still reaches them (CrystFEL >= 0.10: clen is detector-wide)
    g = parse_geometry(base + "clen = 0.3\n")
    assert g.panels[0].clen == 0.3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clen = 0.1\np0/fs = 1x+\n", r"det\.geom line 2: p0/fs: cannot parse '1x\+'"),
        ("clen = 0.1\np0/min_fs = ten\n", r"det\.geom line 2: p0/min_fs: cannot parse 'ten'"),
        (
            "clen = 0.1\np0/max_fs = 9\np0/min_ss = 0\np0/max_ss = 9\np0/corner_x = 0\np0/corner_y = 0\np0/res = 1\n",
            r"det\.geom line 2: panel p0: missing p0/min_fs",
        ),
        (
            "clen = 0.1\np0/min_fs = 0\np0/max_fs = 9\np0/min_ss = 0\np0/max_ss = 9\np0/corner_x = 0\n"
            "p0/corner_y = 0\n",
            r"det\.geom line 2: panel p0: missing p0/res",
        ),
        ("photon_energy = 9 MeV\n", r"det\.geom line 1: photon_energy"),
        ("clen = 0.1\nthis line has no equals\n", r"det\.geom line 2: expected 'key = value'"),
        ("bad1/min_x = 0\nbad1/min_fs = 3\n", r"det\.geom line 2: bad1/min_fs: cannot mix"),
        ("bad1/colour = red\n", r"det\.geom line 1: bad1/colour: unknown bad-region key"),
    ],
)
def test_errors_name_file_and_line(text, message):
    with pytest.raises(GeometryError, match=message):
        parse_geometry(text, "det.geom")


def test_semantic_errors_name_the_panel_line(tmp_path):
    two = (
        "clen = 0.1\nres = 1000\nfs = x\nss = y\n"
        "p0/min_fs = 0\np0/max_fs = 9\np0/min_ss = 0\np0/max_ss = 9\np0/corner_x = 0\np0/corner_y = 0\n"
        "p1/min_fs = 9\np1/max_fs = 19\np1/min_ss = 0\np1/max_ss = 9\np1/corner_x = 0\np1/corner_y = 0\n"
    )
    path = tmp_path / "overlap.geom"
    path.write_text(two)
    with pytest.raises(GeometryError, match=r"overlap\.geom line 11: panel p1 overlaps panel p0"):
        load_geometry(path)
    fixed = two.replace("p1/min_fs = 9", "p1/min_fs = 10")
    assert load_geometry(_write(tmp_path / "ok.geom", fixed)).slab_shape == (10, 20)
    with pytest.raises(GeometryError, match=r"bad\.geom line 17: bad region badX lies outside its panel p0"):
        parse_geometry(
            fixed + "badX/min_fs = 5\nbadX/max_fs = 12\nbadX/min_ss = 0\nbadX/max_ss = 1\nbadX/panel = p0\n", "bad.geom"
        )
    with pytest.raises(GeometryError, match=r"sing\.geom line 5: panel p0: fs .* parallel"):
        parse_geometry(fixed.replace("ss = y", "ss = 2x"), "sing.geom")
    with pytest.raises(GeometryError, match=r"dims\.geom line 7: panel p0: dims"):
        parse_geometry("dim0 = ss\ndim1 = ss\n" + fixed, "dims.geom")
    with pytest.raises(GeometryError, match="missing.geom: cannot read"):
        load_geometry(tmp_path / "missing.geom")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_check_frame():
    g = load_geometry(SIM256)
    g.check_frame((256, 256))
    g.check_frame((10, 256, 256))
    with pytest.raises(GeometryError, match=r"run7\.h5 event 12: frame shape \(256, 255\).*sim256\.geom"):
        g.check_frame((256, 255), path="run7.h5", event=12)


def test_written_hand_geometry_reads_back_everywhere(tmp_path):
    g = parse_geometry(HAND, "hand.geom")
    out = write_geometry(g, tmp_path / "hand_out.geom")
    g2 = load_geometry(out)
    assert g2.panels == g.panels and g2.bad_regions == g.bad_regions
    assert (g2.photon_energy_eV, g2.mask_good, g2.mask_bad) == (9300.0, 0, 0xFFFF)
    text = out.read_text()
    ref = cfel_maps(text, float64=True)
    x, y, _ = g.pixel_maps()
    on = g.panel_map() >= 0
    np.testing.assert_allclose(x[on], ref.x[on], atol=1e-6)
    np.testing.assert_allclose(y[on], ref.y[on], atol=1e-6)
    np.testing.assert_array_equal(g2.good_pixel_mask(), g.good_pixel_mask())
