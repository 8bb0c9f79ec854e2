"""The PADT artefact simulator: labels, the gain-switch step, shadows, the window, files, geometry."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from photonflow.io import read_frames, read_hit_list
from photonflow.io.geom import load_geometry
from photonflow.simulate.padt import (
    ARTEFACTS,
    BAD,
    GOOD,
    PadtConfig,
    epix_detector,
    padt_roi,
    read_padt_truth,
    simulate_padt_frame,
    simulate_padt_frames,
    write_padt_dataset,
)

GEOMETRY_DIR = Path(__file__).resolve().parents[1] / "config" / "geometry"
CONFIG = PadtConfig()
ADU = CONFIG.adu_per_photon
THRESHOLD = CONFIG.gain_switch_threshold


@pytest.fixture(scope="module")
def geom():
    return load_geometry(GEOMETRY_DIR / "sim_epix.geom")


def test_geometry_file(geom):
    assert len(geom.panels) == 4
    assert [(p.height, p.width) for p in geom.panels] == [(176, 192)] * 4
    assert geom.slab_shape == (352, 384)
    assert [p.name for p in geom.panels] == ["p0", "p1", "p2", "p3"]
    assert all(abs(p.res - 1e4) < 1e-9 for p in geom.panels)  # 100 µm pixels
    assert geom.panels == epix_detector().panels  # the file is what epix_detector() makes
    assert padt_roi(geom) == (slice(0, 176), slice(0, 192)) == padt_roi(geom, "p0")
    q = geom.q_map()
    for p in geom.panels:  # the water ring (20 nm⁻¹) and its shoulder (30 nm⁻¹) cross every ASIC
        qp = q[p.slab_slices]
        assert qp.min() < 15.0 and qp.max() > 32.0
        ring = np.abs(qp - 20.0) < 0.5
        assert ring.sum() > 1000
    r = geom.radius_map()[np.abs(q - 20.0) < 0.05]
    assert 115 < r.mean() < 125


def test_labels_reasons_and_ring_levels(geom):
    frames = simulate_padt_frames(geom, 300, seed=3, roi=padt_roi(geom))
    assert frames[0].image.shape == (176, 192) and frames[0].image.dtype == np.float32
    labels = np.array([f.label for f in frames])
    reasons = [f.reason for f in frames]
    ring = np.array([f.ring_level for f in frames])
    bad = labels == BAD
    assert set(labels) == {GOOD, BAD}
    assert abs(bad.mean() - CONFIG.bad_fraction) < 0.08
    assert all((r is None) == (lab == GOOD) for r, lab in zip(reasons, labels))
    probs = CONFIG.artefact_probabilities
    for a in ARTEFACTS:
        frac = sum(r == a for r in reasons) / bad.sum()
        assert abs(frac - probs[a]) < 0.15, (a, frac)
    # every frame's ring in the configured range; gain-switch rings above the threshold (with margin)
    lo, hi = CONFIG.ring_photons
    assert ring.min() >= lo and ring.max() <= hi
    gs = np.array([r == "gain_switch" for r in reasons])
    assert ring[gs].min() >= CONFIG.gain_switch_margin * THRESHOLD
    # good frames (and the other bad ones) span both sides of the threshold: the ring level alone
    # cannot tell a gain-switch frame
    good_above = (ring[~bad] > THRESHOLD).mean()
    assert 0.35 < good_above < 0.65
    assert (ring[~bad] > CONFIG.gain_switch_margin * THRESHOLD).sum() > (ring[gs]).size
    assert ((ring < THRESHOLD) & bad & ~gs).any()
    gains = np.array([f.gain_factor for f in frames])
    assert np.all(gains[~gs] == 1.0)
    g = gains[gs]
    assert np.all(((g >= 0.7) & (g <= 0.85)) | ((g >= 1 / 0.85) & (g <= 1 / 0.7)))
    assert 0.05 < (g > 1).mean() < 0.5  # steps up (gain_error_up_probability) and down
    # deterministic, and frame i does not depend on how many frames are drawn
    again = simulate_padt_frames(geom, 5, seed=3)
    for a, b in zip(frames[:5], again):
        np.testing.assert_array_equal(a.image, b.image[padt_roi(geom)])
        assert (a.label, a.reason, a.ring_level) == (b.label, b.reason, b.ring_level)
    other = simulate_padt_frames(geom, 3, seed=4)
    assert not np.array_equal(other[0].image, again[0].image)


def _ratio(frame, region):
    """Mean measured photons over mean expected photons in ``region``, and its standard error."""
    measured, expected = frame.image[region] / ADU, frame.expected[region]
    ratio = float(measured.mean() / expected.mean())
    se = float((measured - ratio * expected).std() / np.sqrt(region.sum()) / expected.mean())
    return ratio, se


def _assert_ratio(frame, region, want, rel=0.01):
    """The measured level is ``want`` × the expected one within ``rel`` plus five standard errors."""
    ratio, se = _ratio(frame, region)
    assert abs(ratio - want) < rel * want + 5.0 * se, (ratio, want, se)


def test_gain_switch_step(geom):
    rng = np.random.default_rng(11)
    panels = [p.slab_slices for p in geom.panels]
    target = panels[CONFIG.target_panel]
    n = 0
    while n < 8:
        f = simulate_padt_frame(geom, rng, reason="gain_switch", return_maps=True)
        assert f.label == BAD and f.ring_level >= CONFIG.gain_switch_margin * THRESHOLD
        assert f.switched_fraction > 0.01  # a band of the ROI's ring switched
        if f.ring_level < 2 * THRESHOLD:  # a wide band, every pixel of it switched
            continue
        n += 1
        # the ring region (where every pixel switched) of the target panel reads g × the truth
        for i, sl in enumerate(panels):
            ring = np.zeros(f.expected.shape, bool)
            ring[sl] = f.expected[sl] >= 1.5 * THRESHOLD
            assert ring.sum() > 1000
            expected_ratio = f.gain_factor if sl == target else 1.0
            _assert_ratio(f, ring, expected_ratio)
        # below the threshold the target panel is right: the step is at the switching point
        low = np.zeros(f.expected.shape, bool)
        low[target] = (f.expected[target] < 0.6 * THRESHOLD) & (f.expected[target] > 2.0)
        _assert_ratio(f, low, 1.0)
        assert f.switched[target].mean() == pytest.approx(f.switched_fraction) and f.switched_fraction > 0.05
    # good frames whose ring is well above the threshold switch too, correctly calibrated: no step
    n = 0
    while n < 4:
        f = simulate_padt_frame(geom, rng, label=GOOD, return_maps=True)
        if f.ring_level < 2 * THRESHOLD:
            continue
        n += 1
        assert f.reason is None and f.gain_factor == 1.0 and f.switched_fraction > 0.05
        ring = np.zeros(f.expected.shape, bool)
        ring[target] = f.expected[target] >= 1.5 * THRESHOLD
        _assert_ratio(f, ring, 1.0)
    # noise free: exactly g × photons on the switched pixels of the target panel, photons elsewhere
    exact = PadtConfig(
        poisson=False, read_noise_adu=0.0, low_gain_noise_adu=0.0, gain_error=(0.8, 0.8), gain_error_up_probability=0.0
    )
    f = simulate_padt_frame(geom, 5, exact, reason="gain_switch", return_maps=True)
    want = f.expected * ADU
    sw = np.zeros(f.expected.shape, bool)
    sw[target] = f.expected[target] >= THRESHOLD
    np.testing.assert_array_equal(f.switched, f.expected >= THRESHOLD)
    want[sw] *= 0.8
    np.testing.assert_allclose(f.image, want, rtol=1e-6)


@pytest.mark.parametrize("reason", ["shadow", "window"])
def test_shadow_and_window(geom, reason):
    rng = np.random.default_rng(21 if reason == "shadow" else 22)
    target = padt_roi(geom)
    lo_f, hi_f = getattr(CONFIG, f"{reason}_fraction")
    lo_t, hi_t = getattr(CONFIG, f"{reason}_transmission")
    shapes, untouched = set(), 0
    for _ in range(8):
        f = simulate_padt_frame(geom, rng, reason=reason, return_maps=True)
        d = f.details
        t = d["transmission"]
        assert f.label == BAD and f.gain_factor == 1.0 and lo_t <= t <= hi_t
        shapes.add(d.get("shape", "window"))
        # the target panel is cut by the configured fraction
        assert lo_f - 0.01 <= f.attenuated_fraction <= hi_f + 0.01
        assert abs(f.attenuated_fraction - d["fraction"]) < 0.01
        unshadowed = f.expected / f.transmission
        # deep in the shadow the panel reads t × the unshadowed level
        deep = f.transmission <= t + 0.005 * (1.0 - t)
        roi_deep = np.zeros_like(deep)
        roi_deep[target] = deep[target]
        assert roi_deep.sum() > 100
        measured = f.image[roi_deep] / ADU
        se = measured.std() / np.sqrt(roi_deep.sum()) / unshadowed[roi_deep].mean()
        assert abs(measured.mean() / unshadowed[roi_deep].mean() - t) < 0.01 * t + 5 * se + 1e-3, (measured, t)
        # where nothing blocks, the level is unchanged
        clear = f.transmission == 1.0
        assert clear.sum() > 2000
        _assert_ratio(f, clear, 1.0)
        for p in geom.panels:  # panels the shadow misses are untouched (to the float32 noise floor)
            if f.transmission[p.slab_slices].min() > 1 - 1e-6:
                region = np.zeros(deep.shape, bool)
                region[p.slab_slices] = True
                _assert_ratio(f, region, 1.0)
                untouched += 1
        # the soft edge: between the deep shadow and the clear region the transmission runs through
        edge = (f.transmission > t + 0.1 * (1 - t)) & (f.transmission < 1 - 0.1 * (1 - t))
        assert edge[target].sum() > 50
        if reason == "window":  # the rim is a circle whose centre is shifted away from the target panel
            cx, cy = d["centre_x_px"], d["centre_y_px"]
            assert np.hypot(cx, cy) == pytest.approx(d["shift_px"], rel=1e-6)
            px, py = (float(a[target].mean()) for a in np.meshgrid(np.arange(384), np.arange(352)))
            beam_fs, beam_ss = 197.3 - 0.5, 181.4 - 0.5  # the beam's slab position on sim_epix.geom
            away = np.degrees(np.arctan2(beam_ss - py, beam_fs - px))
            assert abs((np.degrees(np.arctan2(cy, cx)) - away + 180) % 360 - 180) <= CONFIG.window_angle_deg + 1e-6
    assert untouched > 0
    if reason == "shadow":
        assert shapes <= {"edge", "disk"}


def test_write_and_read_dataset(tmp_path, geom):
    config = PadtConfig(bad_fraction=0.5)
    ds = write_padt_dataset(tmp_path / "padt", geom, n_frames=25, frames_per_file=10, seed=7, config=config)
    assert [p.name for p in ds.cxi_files] == ["padt_0000.cxi", "padt_0001.cxi", "padt_0002.cxi"]
    assert ds.n_frames == 25
    frames = simulate_padt_frames(geom, 25, seed=7, config=config)
    assert ds.n_bad == sum(f.label == BAD for f in frames) and 0 < ds.n_bad < 25
    # CXI: readable, Bitshuffle-compressed, one chunk per frame, the simulated frames rounded to int32 ADU
    for k, path in enumerate(ds.cxi_files):
        with h5py.File(path, "r") as f:
            d = f["/entry_1/data_1/data"]
            assert d.dtype == np.int32 and d.chunks == (1, 352, 384)
            plist = d.id.get_create_plist()
            assert 32008 in [plist.get_filter(j)[0] for j in range(plist.get_nfilters())]  # Bitshuffle
            n = d.shape[0]
        events = list(range(n))[::-1]
        data = read_frames(path, events)
        for j, e in enumerate(events):
            np.testing.assert_array_equal(data[j], np.rint(frames[10 * k + e].image).astype(np.int32))
    # truth
    truth = read_padt_truth(ds.truth_path)
    assert [(t.path, t.event) for t in truth] == ds.refs
    assert ds.refs[:11] == [(ds.cxi_files[0], e) for e in range(10)] + [(ds.cxi_files[1], 0)]
    for t, f in zip(truth, frames):
        assert (t.label, t.reason) == (f.label, f.reason)
        assert t.ring_level == f.ring_level and t.gain_factor == f.gain_factor
        assert t.attenuated_fraction == f.attenuated_fraction and t.details == f.details
    # label lists: every event exactly once, good and bad disjoint, event 0 of every file listed
    good, bad = read_hit_list(ds.good_list), read_hit_list(ds.bad_list)
    assert ds.good_list.read_text().splitlines()[0].endswith(f" //{good[0][1]}")
    refs = [(p.name, e) for p, e in ds.refs]
    assert len(good) + len(bad) == 25 and set(good).isdisjoint(bad)
    assert sorted(good + bad) == sorted(refs) and len(set(good + bad)) == 25
    assert set(good) == {(t.path.name, t.event) for t in truth if t.label == GOOD}
    assert set(bad) == {(t.path.name, t.event) for t in truth if t.label == BAD}
    assert all((p.name, 0) in set(good) | set(bad) for p in ds.cxi_files)
    # the geometry copy describes the files
    g = load_geometry(ds.geometry_path)
    assert g.slab_shape == (352, 384) and all(p.adu_per_photon == config.adu_per_photon for p in g.panels)
    assert ds.manifest_path.is_file()
    # float32: the frames exactly
    ds32 = write_padt_dataset(tmp_path / "f32", geom, n_frames=2, seed=7, config=config, dtype=np.float32)
    np.testing.assert_array_equal(read_frames(ds32.cxi_files[0]), np.stack([f.image for f in frames[:2]]))


def test_config_checks(geom):
    c = PadtConfig(bad_fraction=0.2, ring_photons=(1.0, 100.0))
    assert PadtConfig.from_dict(c.to_dict()) == c
    assert sum(c.artefact_probabilities.values()) == pytest.approx(1.0)
    for bad in (
        dict(bad_fraction=1.5),
        dict(ring_photons=(1.0, 20.0)),
        dict(gain_switch_margin=0.5),
        dict(shadow_fraction=(0.0, 0.5)),
        dict(artefact_mix=(1.0, 0.0)),
        dict(low_gain_noise_adu=1.0),
        dict(window_transmission=(0.0, 1.0)),
    ):
        with pytest.raises(ValueError):
            PadtConfig(**bad)
    with pytest.raises(ValueError):
        PadtConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError):
        simulate_padt_frame(geom, 0, label=GOOD, reason="shadow")
    with pytest.raises(ValueError):
        simulate_padt_frame(geom, 0, reason="ice")
    with pytest.raises(ValueError):
        simulate_padt_frame(geom, 0, PadtConfig(target_panel=4))
    only_window = PadtConfig(artefact_mix=(0.0, 0.0, 1.0))
    assert simulate_padt_frame(geom, 0, only_window, label=BAD).reason == "window"
    assert simulate_padt_frame(geom, 1, PadtConfig(bad_fraction=0.0)).label == GOOD
