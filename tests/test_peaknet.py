"""PeakNet-style peak finder: loss, network, normalisation, inference, checkpoints, training.

Fast: tiny models (base 4 channels, depth 2) on 64-128 px synthetic frames (Gaussian blobs on a
noisy background plus a bright ring as the artifact); the shipped default model is checked on a
simulated 256x256 hit frame when the SFX simulator is present.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from photonflow.peaks.peaklist import match_peaks
from photonflow.peaks.peaknet import (
    DEFAULT_CHECKPOINT,
    AttentionGate,
    PeakNetFinder,
    ResidualAttentionUNet,
    focal_loss,
    load_checkpoint,
    normalise_frames,
    peaks_from_labels,
    resolve_device,
    save_checkpoint,
)
from photonflow.peaks.training import augment, evaluate, train_on_simulated, train_peakfinder

REPO_ROOT = Path(__file__).resolve().parents[1]


def synthetic_frames(n, size=64, seed=0, n_peaks=6):
    """Gaussian blobs (sigma 0.8 px) on a Poisson-ish background plus a bright ring artifact.

    Returns images (n, size, size) float32, labels uint8 (1 within 2 px of a blob, 2 on the
    ring), true positions [(k, 2) (fs, ss)].
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(float)
    images, labels, truth = [], [], []
    for _ in range(n):
        img = rng.normal(20.0, 3.0, (size, size))
        lab = np.zeros((size, size), np.uint8)
        cy, cx = rng.uniform(-size, 2 * size, 2)
        r = np.hypot(yy - cy, xx - cx)
        r0 = rng.uniform(0.2, 0.8) * np.median(r)
        ring = np.abs(r - r0) < 2.5
        img += 60.0 * np.exp(-0.5 * ((r - r0) / 1.5) ** 2)
        lab[ring] = 2
        pos = []
        for _ in range(n_peaks):
            for _try in range(20):
                fs, ss = rng.uniform(4, size - 5, 2)
                if abs(np.hypot(ss - cy, fs - cx) - r0) > 6 and all(np.hypot(fs - a, ss - b) > 6 for a, b in pos):
                    break
            amp = rng.uniform(80, 300)
            img += amp * np.exp(-0.5 * ((xx - fs) ** 2 + (yy - ss) ** 2) / 0.8**2)
            lab[(np.hypot(xx - fs, yy - ss) <= 1.6) & (lab == 0)] = 1
            pos.append((fs, ss))
        images.append(img.astype(np.float32))
        labels.append(lab)
        truth.append(np.array(pos))
    return np.stack(images), np.stack(labels), truth


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    model = ResidualAttentionUNet(base_channels=kw.pop("base_channels", 4), depth=kw.pop("depth", 2), **kw)
    # non-trivial batch-norm statistics, so eval-mode outputs vary across pixels
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.3)
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
    return model.eval()


# ---------------------------------------------------------------------------------- loss
def test_focal_loss_gamma0_is_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 7, generator=g)
    target = torch.randint(0, 3, (2, 5, 7), generator=g)
    target[0, 0, :3] = 255
    ce = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), ce, atol=1e-6)
    w = torch.tensor([0.2, 3.0, 1.0])
    assert torch.allclose(
        focal_loss(logits, target, gamma=0.0, alpha=w) * (target != 255).sum(),
        F.cross_entropy(logits, target, weight=w, ignore_index=255, reduction="sum"),
        atol=1e-5,
    )


def test_focal_loss_downweights_easy_pixels():
    # two pixels: an easy one (p_t = 0.9) and a hard one (p_t = 0.2); logits = log p gives exactly p
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    logits = probs.log().T.reshape(1, 3, 1, 2)
    target = torch.tensor([[[0, 0]]])
    easy = -((1 - 0.9) ** 2) * math.log(0.9)  # 0.0010536
    hard = -((1 - 0.2) ** 2) * math.log(0.2)  # 1.0300
    assert focal_loss(logits[..., :1], target[..., :1]).item() == pytest.approx(easy, rel=1e-5)
    assert focal_loss(logits[..., 1:], target[..., 1:]).item() == pytest.approx(hard, rel=1e-5)
    assert focal_loss(logits, target).item() == pytest.approx((easy + hard) / 2, rel=1e-5)
    # relative to cross-entropy the easy pixel is down-weighted 100x, the hard one only 1.56x
    ce = F.cross_entropy(logits, target, reduction="none")[0, 0]
    assert ce[0].item() / easy == pytest.approx(100.0, rel=1e-4)
    assert ce[1].item() / hard == pytest.approx(1 / 0.64, rel=1e-4)
    # all pixels ignored: zero, with a gradient path
    assert focal_loss(logits, torch.full_like(target, 255)).item() == 0.0


# ---------------------------------------------------------------------------------- network
@pytest.mark.parametrize("shape", [(1, 1, 37, 53), (2, 1, 64, 65), (1, 1, 8, 9)])
def test_unet_output_shape_any_size(shape):
    model = ResidualAttentionUNet(base_channels=4, depth=3).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], 3, *shape[2:])


def test_attention_gates_on_every_skip():
    model = ResidualAttentionUNet(base_channels=4, depth=3).eval()
    gates = [m for m in model.modules() if isinstance(m, AttentionGate)]
    assert len(gates) == 3
    with torch.no_grad():
        model(torch.randn(1, 1, 37, 45))
    for level, gate in enumerate(model.gates):
        a = gate.last_attention
        assert a.shape == (1, 1, 40 // 2**level, 48 // 2**level)  # padded to a multiple of 8
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_receptive_radius_bounds_influence():
    model = tiny_model(depth=3)
    x = torch.zeros(1, 1, 160, 160)
    with torch.no_grad():
        a = model(x)
        x[0, 0, 77, 83] = 10.0
        b = model(x)
    ys, xs = np.nonzero((a - b).abs().amax(1)[0].numpy() > 0)
    r = model.receptive_radius()
    assert len(ys) and max(abs(ys - 77).max(), abs(xs - 83).max()) <= r


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------- normalisation
def test_normalisation_is_affine_invariant_and_masks():
    images, _, _ = synthetic_frames(2, 64)
    mask = np.zeros((64, 64), bool)
    mask[:5] = True
    a = normalise_frames(images, mask)
    b = normalise_frames(images * 7.5 + 1000.0, mask)
    assert a.shape == (2, 64, 64) and a.dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-4)
    assert float(a[:, :5].abs().max()) == 0.0
    # background ~ 0, noise ~ O(0.3), peaks compressed to a few units
    assert abs(float(a[0, 5:].median())) < 0.1
    assert 2.0 < float(a.max()) < 6.0
    # sparse photon-counting frame (MAD = 0) still gives a finite scale
    sparse = np.zeros((32, 32))
    sparse[3, 4] = 1
    sparse[10, 10] = 50
    s = normalise_frames(sparse)
    assert torch.isfinite(s).all() and float(s[0, 10, 10]) > float(s[0, 3, 4]) > 0


# ---------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path):
    model = tiny_model(seed=3)
    path = save_checkpoint(tmp_path / "m" / "pn.pt", model, {"training": {"epochs": 1}, "validation": {"x": 0.5}})
    assert [p.name for p in path.parent.iterdir()] == ["pn.pt"]  # atomic: no temporary left
    loaded, meta = load_checkpoint(path, device="cpu")
    x = torch.randn(2, 1, 48, 40)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta["architecture"] == {"in_channels": 1, "n_classes": 3, "base_channels": 4, "depth": 2}
    assert meta["classes"] == ["background", "peak", "artifact"]
    assert meta["training"]["epochs"] == 1 and meta["validation"]["x"] == 0.5
    assert {"normalisation", "torch_version", "date"} <= set(meta)
    json.dumps(meta)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


# ---------------------------------------------------------------------------------- peaks
def _blob_frame(fs0=30.3, ss0=20.7, size=64, bg=10.0, amp=1000.0, sigma=1.0):
    yy, xx = np.mgrid[:size, :size].astype(float)
    frame = bg + amp * np.exp(-0.5 * ((xx - fs0) ** 2 + (yy - ss0) ** 2) / sigma**2)
    labels = np.zeros((size, size), np.uint8)
    labels[np.hypot(xx - fs0, yy - ss0) <= 6.0] = 1
    return frame, labels


def test_intensity_weighted_centre_is_analytic():
    frame, labels = _blob_frame()
    pk = peaks_from_labels(frame, labels)
    assert len(pk) == 1
    assert pk.fs[0] == pytest.approx(30.3, abs=1e-3) and pk.ss[0] == pytest.approx(20.7, abs=1e-3)
    assert pk.intensity[0] == pytest.approx(2 * np.pi * 1000.0, rel=1e-3)  # background 10 removed
    assert pk.npix[0] == int(labels.sum())
    assert pk.max_intensity[0] == pytest.approx(1000.0 * np.exp(-0.5 * (0.3**2 + 0.3**2)), rel=1e-6)


def test_segment_then_find(monkeypatch):
    """find() = segment() then components + centres on the raw frame (segmentation stubbed)."""
    frame, labels = _blob_frame(fs0=40.25, ss0=12.6)
    frame2, labels2 = _blob_frame(fs0=10.5, ss0=50.0)
    finder = PeakNetFinder(tiny_model(), device="cpu")
    both = np.stack([frame, frame2])
    monkeypatch.setattr(finder, "segment", lambda frames, mask=None: np.stack([labels, labels2]))
    peaks = finder.find(both)
    assert len(peaks) == 2
    assert (peaks[0].fs[0], peaks[0].ss[0]) == pytest.approx((40.25, 12.6), abs=1e-3)
    assert (peaks[1].fs[0], peaks[1].ss[0]) == pytest.approx((10.5, 50.0), abs=1e-3)
    assert peaks[0].snr[0] == 0.0  # noiseless background: sigma 0
    # a panel boundary through the blob splits it into two peaks, one on each side
    panel_map = np.zeros((64, 64), int)
    panel_map[:, 41:] = 1
    finder_p = PeakNetFinder(tiny_model(), device="cpu", panel_map=panel_map)
    monkeypatch.setattr(finder_p, "segment", lambda frames, mask=None: labels[None])
    split = finder_p.find(frame)[0]
    assert len(split) == 2 and split.fs.min() < 41 <= split.fs.max()
    # single pixels are dropped by min_pixel_count
    lone = np.zeros((64, 64), np.uint8)
    lone[5, 5] = 1
    assert len(peaks_from_labels(frame, lone, min_pixel_count=2)) == 0


def test_batching_equals_one_by_one():
    images, _, _ = synthetic_frames(5, 64, seed=2)
    model = tiny_model(seed=1)
    batched = PeakNetFinder(model, device="cpu", batch_size=3, peak_probability=None)
    single = PeakNetFinder(model, device="cpu", batch_size=1, peak_probability=None)
    lab_b = batched.segment(images)
    lab_s = np.concatenate([single.segment(im) for im in images])
    assert lab_b.shape == (5, 64, 64) and lab_b.dtype == np.uint8
    assert len(np.unique(lab_b)) > 1  # not a trivial output
    assert np.mean(lab_b != lab_s) < 1e-4
    pb, ps = batched.find(images), [single.find(im)[0] for im in images]
    assert [len(p) for p in pb] == [len(p) for p in ps]


def test_tiled_inference_equals_whole_frame():
    rng = np.random.default_rng(5)
    frame = rng.normal(100, 10, (200, 264)).astype(np.float32)
    frame[rng.random(frame.shape) < 0.01] += 500
    model = tiny_model(seed=4, depth=3)
    whole = PeakNetFinder(model, device="cpu", tile=4096, peak_probability=None)
    tiled = PeakNetFinder(model, device="cpu", tile=64, batch_size=5, peak_probability=None)
    assert whole.tiling(200, 264) == (200, 264)
    assert tiled.tiling(200, 264) == (56, 56)  # 4 x 5 tiles, each with 64 px of context per side
    pa, pb = whole.probabilities(frame), tiled.probabilities(frame)
    assert pa.shape == (1, 3, 200, 264)
    np.testing.assert_allclose(pa, pb, atol=2e-5)  # float rounding only
    assert pa[0].std(axis=(1, 2)).min() > 1e-3  # the model's output is not constant
    a, b = whole.segment(frame), tiled.segment(frame)
    assert np.mean(a != b) < 1e-4  # equal up to float rounding at class ties


def test_masked_pixels_are_background_and_artifact_mask():
    images, labels, _ = synthetic_frames(1, 64, seed=3)
    finder = PeakNetFinder(tiny_model(), device="cpu", artifact_dilation=1)
    mask = np.zeros((64, 64), bool)
    mask[10:20] = True
    lab = finder.segment(images, mask)
    assert (lab[0][mask] == 0).all()
    am = finder.artifact_mask_from_labels(labels)
    assert am.shape == (1, 64, 64) and am.dtype == bool
    assert am[0][labels[0] == 2].all() and am.sum() > (labels == 2).sum()


# ---------------------------------------------------------------------------------- training
def test_augment_keeps_labels_with_image():
    images, labels, _ = synthetic_frames(1, 64, seed=4)
    x = normalise_frames(images)[0].numpy()
    rng = np.random.default_rng(0)
    for _ in range(10):
        xa, ya = augment(x, labels[0], rng)
        assert xa.shape == (64, 64) and xa.dtype == np.float32 and ya.dtype == np.uint8
        assert set(np.unique(ya)) <= {0, 1, 2}
        assert (ya[xa == 0] == 0).all()  # zeroed (masked / moved-in) pixels are background
        if (ya == 1).any():
            assert xa[ya == 1].mean() > xa[ya == 0].mean() + 1.0


def test_training_reduces_loss_and_evaluates():
    tr_x, tr_y, _ = synthetic_frames(8, 64, seed=10)
    va_x, va_y, va_t = synthetic_frames(2, 64, seed=11)
    logs = []
    model, metrics = train_peakfinder(
        tr_x,
        tr_y,
        va_x,
        va_y,
        epochs=4,
        steps_per_epoch=5,
        batch_size=4,
        crop=48,
        lr=1e-2,
        base_channels=4,
        depth=2,
        seed=0,
        device="cpu",
        log=logs.append,
        val_truth=va_t,
    )
    hist = metrics["history"]
    assert len(hist) == 4 and len(logs) == 4
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert min(h["val_loss"] for h in hist) < hist[0]["val_loss"]
    assert not model.training
    val = metrics["validation"]
    for key in ("peak_precision", "peak_recall", "artifact_pixel_recall", "peak_pixel_iou", "background_pixel_recall"):
        assert 0.0 <= val[key] <= 1.0
    again = evaluate(model, va_x, va_y, va_t)
    assert again["peak_true_positives"] == val["peak_true_positives"]


def test_train_on_simulated_writes_checkpoint_and_metadata(tmp_path):
    pytest.importorskip("photonflow.simulate.sfx", reason="SFX simulator not present")
    geom = pytest.importorskip("photonflow.io.geom", reason="geometry module not present")
    user_x, user_y, _ = synthetic_frames(2, 64, seed=12)
    out = tmp_path / "pn.pt"
    meta = train_on_simulated(
        out,
        geometry=geom.load_geometry(REPO_ROOT / "config" / "geometry" / "sim256.geom"),
        n_train=3,
        n_val=1,
        n_test=2,
        epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        crop=32,
        base_channels=4,
        depth=2,
        device="cpu",
        log=None,
        user_images=user_x,
        user_labels=user_y,
    )
    assert out.is_file() and meta["checkpoint"] == str(out)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["training"]["n_user"] == 2 and side["training"]["geometries"] == ["sim256"]
    for key in ("peak_precision", "peak_recall", "artifact_pixel_recall"):
        assert 0.0 <= side["validation"][key] <= 1.0
    model, loaded = load_checkpoint(out, device="cpu")
    assert loaded["architecture"]["base_channels"] == 4 and loaded["validation"] == side["validation"]


# ---------------------------------------------------------------------------------- default model
def test_default_model_finds_simulated_peaks():
    sfx = pytest.importorskip("photonflow.simulate.sfx", reason="SFX simulator not present")
    geom = pytest.importorskip("photonflow.io.geom", reason="geometry module not present")
    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip(f"default model not trained yet: {DEFAULT_CHECKPOINT}")
    geometry = geom.load_geometry(REPO_ROOT / "config" / "geometry" / "sim256.geom")
    config = sfx.SfxConfig()
    frame = sfx.simulate_sfx_frame(geometry, np.random.default_rng(20240), config, hit=True)
    truth = frame.truth
    strong = truth.snr >= config.label_min_snr
    assert frame.image.shape == (256, 256) and strong.sum() >= 10
    finder = PeakNetFinder(device="cpu", panel_map=geometry.panel_map())  # the shipped model
    assert finder.metadata["architecture"]["n_classes"] == 3
    peaks, labels = finder.find_with_labels(frame.image)
    found = peaks[0].positions()
    recall = match_peaks(found, truth.positions()[strong], radius=1.5).recall
    precision = match_peaks(found, truth.positions(), radius=1.5).precision
    assert recall >= 0.7, f"recall {recall:.3f} of {strong.sum()} detectable peaks"
    assert precision >= 0.7, f"precision {precision:.3f} of {len(found)} found peaks"
    assert labels.shape == (1, 256, 256)
    # the metadata beside the checkpoint is human-readable and records held-out metrics
    meta = json.loads(DEFAULT_CHECKPOINT.with_suffix(".json").read_text())
    assert meta["validation"]["peak_recall"] > 0.7 and "training" in meta
