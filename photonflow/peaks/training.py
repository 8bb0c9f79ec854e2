"""Training and validation of the PeakNet-style peak finder (:mod:`photonflow.peaks.peaknet`).

Training data are frames with per-pixel labels (0 background, 1 peak, 2 artifact, 255 ignore):
simulated SFX frames (:mod:`photonflow.simulate.sfx`, exact labels) and, when given, frames a person
labelled. Frames are normalised whole (:func:`~photonflow.peaks.peaknet.normalise_frames`, as at
inference), then random crops are augmented (:func:`augment`) and fed in mini-batches to a
:class:`~photonflow.peaks.peaknet.ResidualAttentionUNet` trained with the categorical focal loss
(γ = 2). :func:`evaluate` reports pixel metrics per class and peak precision/recall at a match
radius; :func:`train_on_simulated` does all of it and writes a checkpoint with its metadata.

Command line (the defaults reproduce the shipped default model, about 9 min on 2 CPU cores)::

    python -m photonflow.peaks.training photonflow/peaks/models/peaknet_default.pt

which is the same as ``--geometry config/geometry/sim256.geom --geometry
config/geometry/sim1920.geom --n-train 160 24 --n-val 12 2 --n-test 32 8 --epochs 25
--steps-per-epoch 100``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from photonflow.io.atomic import atomic_write_text

from .peaklist import MatchScore, match_peaks
from .peaknet import (
    ARTIFACT,
    BACKGROUND,
    CLASSES,
    NORMALISATION,
    PeakNetFinder,
    ResidualAttentionUNet,
    focal_loss,
    normalise_frames,
    resolve_device,
    save_checkpoint,
)

__all__ = [
    "IGNORE",
    "augment",
    "evaluate",
    "train_on_simulated",
    "train_peakfinder",
]

IGNORE = 255  # label value excluded from the loss and the pixel metrics


# ----------------------------------------------------------------------------------------------
# augmentation
# ----------------------------------------------------------------------------------------------
def _random_masks(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """1-3 random zeroed regions: rectangles (panel gaps, beam-stop shadows, dead panels) or
    ring sectors (a shadowed annulus around a centre that may lie outside the crop)."""
    h, w = shape
    out = np.zeros(shape, bool)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(rng.integers(1, 4)):
        if rng.random() < 0.6:
            if rng.random() < 0.5:  # thin strip (a panel gap)
                t = int(rng.integers(2, 9))
                if rng.random() < 0.5:
                    y0 = int(rng.integers(0, h))
                    out[y0 : y0 + t, :] = True
                else:
                    x0 = int(rng.integers(0, w))
                    out[:, x0 : x0 + t] = True
            else:
                rh, rw = (int(rng.integers(max(s // 20, 2), max(s // 3, 3))) for s in (h, w))
                y0, x0 = int(rng.integers(-rh // 2, h)), int(rng.integers(-rw // 2, w))
                out[max(y0, 0) : y0 + rh, max(x0, 0) : x0 + rw] = True
        else:
            cy, cx = rng.uniform(-h, 2 * h), rng.uniform(-w, 2 * w)
            r = np.hypot(yy - cy, xx - cx)
            phi = np.arctan2(yy - cy, xx - cx)
            r_mid = np.median(r)
            r0 = rng.uniform(0.5, 1.0) * r_mid
            r1 = r0 + rng.uniform(3, max(h, w) / 3)
            a0 = rng.uniform(-np.pi, np.pi)
            da = rng.uniform(0.2, 1.5)
            dphi = np.mod(phi - a0, 2 * np.pi)
            out |= (r >= r0) & (r < r1) & (dphi < da)
    return out


def augment(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    max_angle: float = 15.0,
    max_shift: int = 8,
    p_rotate: float = 0.5,
    p_mask: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly transformed copies of a *normalised* image (H, W) and its labels (H, W).

    - a random multiple of 90° rotation and a random flip (square inputs keep their shape; a
      non-square input is only flipped and rotated by 180°);
    - with probability ``p_rotate``, a rotation by a uniform angle in ±``max_angle`` degrees
      (bilinear for the image, nearest-neighbour (order 0) for the labels, about the centre);
    - an integer shift of up to ``max_shift`` pixels on each axis;
    - with probability ``p_mask``, 1-3 zeroed regions (rectangles, thin strips, ring sectors).

    Every pixel that no longer has data (moved in from outside, or masked) gets image 0 — the
    normalised value of masked pixels at inference — and label **background** (0): at inference
    the finder sets masked pixels to background, and a peak cut by a mask stays a peak on its
    visible pixels, so the network learns that zeroed regions hold neither peaks nor artifacts.
    """
    img = np.asarray(image, dtype=np.float32)
    lab = np.asarray(labels, dtype=np.uint8)
    square = img.shape[0] == img.shape[1]
    k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    img, lab = np.rot90(img, k), np.rot90(lab, k)
    if rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    if max_angle > 0 and rng.random() < p_rotate:
        angle = float(rng.uniform(-max_angle, max_angle))
        img = ndimage.rotate(img, angle, reshape=False, order=1, mode="constant", cval=0.0)
        lab = ndimage.rotate(lab, angle, reshape=False, order=0, mode="constant", cval=BACKGROUND)
    if max_shift > 0:
        dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
        img = ndimage.shift(img, (dy, dx), order=0, mode="constant", cval=0.0)
        lab = ndimage.shift(lab, (dy, dx), order=0, mode="constant", cval=BACKGROUND)
    img, lab = np.ascontiguousarray(img, np.float32), np.ascontiguousarray(lab, np.uint8)
    if rng.random() < p_mask:
        hole = _random_masks(img.shape, rng)
        img[hole] = 0.0
        lab[hole & (lab != IGNORE)] = BACKGROUND
    return img, lab


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def _prepare(images, labels, masks=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Normalise frames whole (as at inference) → lists of float32 images and uint8 labels.

    ``images``/``labels``: arrays (n, H, W) or sequences of (H, W) arrays (shapes may differ);
    ``masks``: None, one (H, W) mask for all, or one per frame (True = masked): masked pixels
    become 0 with label background, as the finder reports them.
    """
    if labels is None or len(images) != len(labels):
        raise ValueError("every training image needs a label image of the same shape")
    xs, ys = [], []
    for i, (img, lab) in enumerate(zip(images, labels)):
        img, lab = np.asarray(img), np.asarray(lab)
        if img.shape != lab.shape or img.ndim != 2:
            raise ValueError(f"image {i}: shape {img.shape} and labels {lab.shape} must be the same (H, W)")
        m = _frame_mask(masks, i)
        x = normalise_frames(img, m)[0].numpy()
        y = lab.astype(np.uint8, copy=True)
        bad = (y > ARTIFACT) & (y != IGNORE)
        if bad.any():
            raise ValueError(f"labels {i}: values must be 0, 1, 2 or {IGNORE}, found {np.unique(y[bad])[:5]}")
        if m is not None:
            y[m] = BACKGROUND
        xs.append(x)
        ys.append(y)
    return xs, ys


def _frame_mask(masks, i: int) -> np.ndarray | None:
    """Frame i's mask from None, one (H, W) mask for all frames, or a per-frame sequence (entries may be None)."""
    if masks is None:
        return None
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        return masks.astype(bool, copy=False)
    return None if masks[i] is None else np.asarray(masks[i], bool)


def _random_crop(x: np.ndarray, y: np.ndarray, crop: int, rng: np.random.Generator):
    """A crop × crop window at a random place (zero/background padding for smaller frames)."""
    h, w = x.shape
    if h < crop or w < crop:
        ph, pw = max(crop - h, 0), max(crop - w, 0)
        x = np.pad(x, ((0, ph), (0, pw)))
        y = np.pad(y, ((0, ph), (0, pw)), constant_values=BACKGROUND)
        h, w = x.shape
    y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    return x[y0 : y0 + crop, x0 : x0 + crop], y[y0 : y0 + crop, x0 : x0 + crop]


def _batch(xs, ys, idx, crop, rng, do_augment=True) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, labs = [], []
    for i in idx:
        x, y = _random_crop(xs[i], ys[i], crop, rng)
        if do_augment:
            x, y = augment(x, y, rng)
        imgs.append(x)
        labs.append(y)
    return torch.from_numpy(np.stack(imgs)[:, None]), torch.from_numpy(np.stack(labs).astype(np.int64))


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def _val_windows(xs, ys, size: int, seed: int, per_frame: int = 4):
    """Fixed validation windows: frames up to ``size`` pixels per side whole, larger ones as up to
    ``per_frame`` random size × size windows (same windows every epoch)."""
    rng = np.random.default_rng(seed + 7919)
    out_x, out_y = [], []
    for x, y in zip(xs, ys):
        if x.shape[0] <= size and x.shape[1] <= size:
            out_x.append(x)
            out_y.append(y)
            continue
        k = min(per_frame, math.ceil(x.size / size**2))
        for _ in range(k):
            cx, cy = _random_crop(x, y, size, rng)
            out_x.append(cx)
            out_y.append(cy)
    return out_x, out_y


def _val_loss(model, xs, ys, device, gamma, alpha, batch_size=4) -> float:
    """Focal loss over whole validation frames (same shapes batched), eval mode."""
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for i0 in range(0, len(xs), batch_size):
            group = range(i0, min(i0 + batch_size, len(xs)))
            shapes = {xs[i].shape for i in group}
            for shape in shapes:
                sel = [i for i in group if xs[i].shape == shape]
                x = torch.from_numpy(np.stack([xs[i] for i in sel])[:, None]).to(device)
                y = torch.from_numpy(np.stack([ys[i] for i in sel]).astype(np.int64)).to(device)
                n = int((y != IGNORE).sum())
                total += float(focal_loss(model(x), y, gamma, alpha, IGNORE)) * n
                count += n
    return total / max(count, 1)


def train_peakfinder(
    train_images,
    train_labels,
    val_images=None,
    val_labels=None,
    *,
    epochs: int = 20,
    batch_size: int = 8,
    crop: int = 128,
    lr: float = 3e-3,
    base_channels: int = 8,
    depth: int = 3,
    seed: int = 0,
    device: str | torch.device = "auto",
    log: Callable[[str], object] | None = print,
    gamma: float = 2.0,
    alpha: Sequence[float] | None = None,
    steps_per_epoch: int | None = None,
    weight_decay: float = 1e-4,
    train_masks=None,
    val_masks=None,
    val_truth: list[np.ndarray] | None = None,
    val_truth_extra: list[np.ndarray] | None = None,
    match_radius: float = 1.5,
    augmentation: bool = True,
    model: ResidualAttentionUNet | None = None,
    frame_weights: Sequence[float] | None = None,
) -> tuple[ResidualAttentionUNet, dict]:
    """Train a :class:`ResidualAttentionUNet` on labelled frames → (model in eval mode, metrics).

    ``train_images``/``train_labels``: raw frames (n, H, W) (or sequences of (H, W), shapes may
    differ) and labels (0 background, 1 peak, 2 artifact, 255 ignore). Each step draws
    ``batch_size`` random ``crop`` × ``crop`` windows of normalised frames, augmented
    (:func:`augment`); an epoch is ``steps_per_epoch`` steps (default ⌈n / batch_size⌉).
    AdamW with a one-cycle learning-rate schedule peaking at ``lr``; focal loss with ``gamma``
    and per-class weights ``alpha``. After each epoch the focal loss over the whole validation
    frames (frames larger than max(2 crop, 256) px: 4 fixed windows of that size) is computed, and
    the weights of the best epoch are kept. ``model``: continue training
    this model instead of a new one (fine-tuning). ``metrics``: ``history`` (per-epoch train/val
    loss, seconds), ``best_epoch``, ``train_seconds``, and, with validation data,
    :func:`evaluate`'s metrics of the kept model (peak metrics when ``val_truth`` is given,
    ``val_truth_extra``: real but too-faint spots, see :func:`evaluate`). ``frame_weights``:
    relative probability of drawing each training frame for a crop (default: uniform).
    """
    device = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    say = log or (lambda _msg: None)
    xs, ys = _prepare(train_images, train_labels, train_masks)
    have_val = val_images is not None and len(val_images) > 0
    if have_val:
        vxs, vys = _val_windows(*_prepare(val_images, val_labels, val_masks), size=max(2 * crop, 256), seed=seed)
    if model is None:
        model = ResidualAttentionUNet(1, len(CLASSES), base_channels=base_channels, depth=depth)
    model.to(device)
    steps = steps_per_epoch or max(1, math.ceil(len(xs) / batch_size))
    if frame_weights is not None:
        prob = np.asarray(frame_weights, dtype=float)
        if prob.shape != (len(xs),) or not (prob >= 0).all() or prob.sum() <= 0:
            raise ValueError("frame_weights needs one non-negative weight per training frame")
        prob = prob / prob.sum()
    else:
        prob = None
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.15)
    history: list[dict] = []
    best = (math.inf, 0, None)
    t_start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        run = 0.0
        for _ in range(steps):
            idx = rng.choice(len(xs), size=batch_size, p=prob)
            x, y = _batch(xs, ys, idx, crop, rng, augmentation)
            x, y = x.to(device), y.to(device)
            loss = focal_loss(model(x), y, gamma, alpha, IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run += float(loss.detach())
        entry = {"epoch": epoch, "train_loss": run / steps}
        if have_val:
            entry["val_loss"] = _val_loss(model, vxs, vys, device, gamma, alpha)
            score = entry["val_loss"]
        else:
            score = entry["train_loss"]
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        history.append(entry)
        if score < best[0]:
            best = (score, epoch, copy.deepcopy(model.state_dict()))
        say(
            f"epoch {epoch}/{epochs}: train loss {entry['train_loss']:.5f}"
            + (f", val loss {entry['val_loss']:.5f}" if have_val else "")
            + f" ({entry['seconds']:.1f} s)"
        )
    model.load_state_dict(best[2])
    model.eval()
    metrics = {
        "history": history,
        "best_epoch": best[1],
        "train_seconds": round(time.perf_counter() - t_start, 1),
        "steps": epochs * steps,
        "device": str(device),
    }
    if have_val:
        metrics["validation"] = evaluate(
            model,
            val_images,
            val_labels,
            val_truth,
            match_radius=match_radius,
            truth_extra_positions=val_truth_extra,
            mask=val_masks,
            device=device,
        )
    return model, metrics


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------
def evaluate(
    model_or_finder,
    images,
    labels,
    truth_positions: list[np.ndarray] | None = None,
    match_radius: float = 1.5,
    *,
    truth_extra_positions: list[np.ndarray] | None = None,
    mask=None,
    device: str | torch.device = "auto",
) -> dict:
    """Segmentation and peak metrics of a model (or a :class:`PeakNetFinder`) on labelled frames.

    Pixel metrics over pixels whose true label is not 255, for each class name:
    ``pixel_precision``/``pixel_recall``/``pixel_iou``. ``artifact_pixel_recall``: fraction of
    true artifact pixels classified artifact; ``artifact_mask_recall``: fraction covered by the
    finder's dilated :meth:`~PeakNetFinder.artifact_mask`; ``artifact_mask_false_fraction``:
    fraction of the other pixels it masks. With ``truth_positions`` (one (k, 2) array of true
    (fs, ss) per frame, the peaks that should be found): peaks are matched one-to-one within
    ``match_radius`` pixels (:func:`photonflow.peaks.match_peaks`). ``peak_recall``: fraction of
    ``truth_positions`` matched. ``peak_precision``: fraction of found peaks matched to a true
    spot, where ``truth_extra_positions`` (per frame, optional) lists real spots too faint to be
    required (finding one is not a false positive); ``peak_precision_strict`` counts only
    ``truth_positions``. Also ``peak_f1``, counts, and ``peak_median_offset`` (pixels, found
    peak to the nearest true spot, over those within the radius).
    """
    if isinstance(model_or_finder, PeakNetFinder):
        finder = model_or_finder
    else:
        finder = PeakNetFinder(model_or_finder, device=device)
    t0 = time.perf_counter()
    labs = [np.asarray(lb) for lb in labels]
    if isinstance(images, np.ndarray) and images.ndim == 3 and (mask is None or isinstance(mask, np.ndarray)):
        found, preds = finder.find_with_labels(images, mask)  # batched
        frames = images
    else:  # frames of different shapes, or a list of per-frame masks: one at a time
        frames = [np.asarray(im) for im in images]
        found, preds = [], []
        for i, frame in enumerate(frames):
            pk, pred = finder.find_with_labels(frame, _frame_mask(mask, i))
            found.append(pk[0])
            preds.append(pred[0])
    seconds = time.perf_counter() - t0
    out: dict = {"n_frames": len(frames), "seconds_per_frame": round(seconds / max(len(frames), 1), 4)}
    for c, name in enumerate(CLASSES):
        tp = fp = fn = 0
        for pred, true in zip(preds, labs):
            valid = true != IGNORE
            p, t = (pred == c) & valid, (true == c) & valid
            tp += int(np.sum(p & t))
            fp += int(np.sum(p & ~t))
            fn += int(np.sum(~p & t))
        out[f"{name}_pixel_precision"] = tp / (tp + fp) if tp + fp else 1.0
        out[f"{name}_pixel_recall"] = tp / (tp + fn) if tp + fn else 1.0
        out[f"{name}_pixel_iou"] = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    covered = total_art = masked_other = total_other = 0
    for pred, true in zip(preds, labs):
        am = finder.artifact_mask_from_labels(pred)[0]
        valid = true != IGNORE
        art = (true == ARTIFACT) & valid
        other = (true != ARTIFACT) & valid
        covered += int(np.sum(am & art))
        total_art += int(art.sum())
        masked_other += int(np.sum(am & other))
        total_other += int(other.sum())
    out["artifact_mask_recall"] = covered / total_art if total_art else 1.0
    out["artifact_mask_false_fraction"] = masked_other / total_other if total_other else 0.0
    if truth_positions is not None:
        extra = truth_extra_positions if truth_extra_positions is not None else [None] * len(truth_positions)
        score = MatchScore(0, 0, 0)
        n_found = n_real = 0
        offsets = []
        for pk, true, weak in zip(found, truth_positions, extra):
            true = np.asarray(true, dtype=float).reshape(-1, 2)
            pos = pk.positions()
            score = score + match_peaks(pos, true, radius=match_radius)
            every = true if weak is None else np.concatenate([true, np.asarray(weak, float).reshape(-1, 2)])
            n_found += len(pos)
            n_real += match_peaks(pos, every, radius=match_radius).true_positives
            if len(pos) and len(every):
                d, _ = cKDTree(every).query(pos)
                offsets.extend(d[d <= match_radius].tolist())
        p = n_real / n_found if n_found else 1.0
        r = score.recall
        out.update(
            peak_match_radius=match_radius,
            peak_precision=p,
            peak_recall=r,
            peak_f1=2 * p * r / (p + r) if p + r else 0.0,
            peak_precision_strict=score.precision,
            peak_found=n_found,
            peak_true=score.true_positives + score.false_negatives,
            peak_true_positives=score.true_positives,
            peak_false_positives=n_found - n_real,
            peak_false_negatives=score.false_negatives,
            peak_median_offset=float(np.median(offsets)) if offsets else None,
        )
    return out


# ----------------------------------------------------------------------------------------------
# simulated training data
# ----------------------------------------------------------------------------------------------
def _plain(obj):
    """JSON-friendly copy of a config (dataclasses, numpy scalars and arrays, paths)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return _plain(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.size <= 64 else f"array{obj.shape}"
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _simulate(geometry, n: int, seed: int, config):
    """n simulated SFX frames → (images, labels, detectable truth, faint truth).

    Truth positions are (k, 2) (fs, ss) per frame: *detectable* spots have the simulator's
    ``snr ≥ config.label_min_snr`` (the spots it labels as peaks), *faint* ones are the rest.
    """
    from photonflow.simulate.sfx import SfxConfig, simulate_sfx_frames

    config = config if config is not None else SfxConfig()
    frames = simulate_sfx_frames(geometry, n, seed, config)
    images = np.stack([f.image for f in frames]).astype(np.float32)
    labels = np.stack([f.labels for f in frames]).astype(np.uint8)
    strong, faint = [], []
    for f in frames:
        pos = np.column_stack([np.asarray(f.truth.fs, float), np.asarray(f.truth.ss, float)]).reshape(-1, 2)
        ok = np.asarray(f.truth.snr, float) >= config.label_min_snr
        strong.append(pos[ok])
        faint.append(pos[~ok])
    return images, labels, strong, faint


def _default_geometries() -> list:
    """``config/geometry/sim256.geom`` and ``sim1920.geom`` (those present; else
    ``simulated_detector()``, the 1920 × 1920 one)."""
    from photonflow.config import CONFIG_DIR
    from photonflow.io.geom import load_geometry, simulated_detector

    root = CONFIG_DIR / "geometry"
    found = [load_geometry(root / f"{n}.geom") for n in ("sim256", "sim1920") if (root / f"{n}.geom").is_file()]
    return found or [simulated_detector()]


#: Training distribution of the simulated frames: more hits and more artifacts than the
#: simulator's defaults, so that each batch holds enough of the rare classes.
TRAIN_CONFIG = dict(hit_fraction=0.8, ring_probability=0.5, streak_probability=0.5)


def _geometry_label(geometry) -> str:
    src = getattr(geometry, "source_path", None)
    if src:
        return Path(src).stem
    n_ss, n_fs = geometry.slab_shape
    return f"{len(geometry.panels)} panels {n_ss}x{n_fs}"


def _per_geometry(value, n: int, name: str) -> list[int]:
    values = [value] * n if np.isscalar(value) else list(value)
    if len(values) != n:
        raise ValueError(f"{name}: {len(values)} counts for {n} geometries")
    return [int(v) for v in values]


def train_on_simulated(
    out_path: str | os.PathLike,
    *,
    geometry=None,
    n_train: int | Sequence[int] | None = None,
    n_val: int | Sequence[int] | None = None,
    n_test: int | Sequence[int] | None = None,
    epochs: int = 25,
    seed: int = 0,
    user_images=None,
    user_labels=None,
    user_masks=None,
    user_repeat: int = 4,
    config=None,
    test_config=None,
    crop: int = 128,
    batch_size: int = 8,
    lr: float = 3e-3,
    base_channels: int = 8,
    depth: int = 3,
    gamma: float = 2.0,
    alpha: Sequence[float] | None = None,
    steps_per_epoch: int | None = 100,
    match_radius: float = 1.5,
    device: str | torch.device = "auto",
    log: Callable[[str], object] | None = print,
    name: str = "peaknet",
    extra_metadata: dict | None = None,
) -> dict:
    """Simulate frames, train, evaluate on held-out simulated frames, save the checkpoint → metadata.

    ``geometry``: a detector geometry (:mod:`photonflow.io.geom`) or a list of them; default
    ``config/geometry/sim256.geom`` and ``sim1920.geom`` with 160 + 24 training, 12 + 2
    validation and 32 + 8 test frames — the defaults reproduce the shipped model (about 9 min on
    2 CPU cores). ``n_train``, ``n_val``, ``n_test``: frames per geometry (one count for all, or
    one per geometry; default 160, 12, 32 for geometries given). Three independent
    sets per geometry: training frames (seed ``seed``) and validation frames (seed ``seed + 1``,
    used only to keep the best epoch) drawn with ``config`` (default
    ``SfxConfig(**TRAIN_CONFIG)``), and held-out test frames (seed ``seed + 2``, used for nothing
    but the reported metrics) drawn with ``test_config`` (default: the simulator's defaults,
    ``SfxConfig()``), evaluated with the geometry's panel map. ``user_images``/``user_labels``
    (+ ``user_masks``): labelled frames added to the training set ``user_repeat`` times each
    (they are rarer than simulated ones). Writes ``out_path``
    (:func:`~photonflow.peaks.peaknet.save_checkpoint`) and its metadata as human-readable JSON
    beside it (``out_path`` with suffix ``.json``). Returns the metadata: ``training``,
    ``validation`` (held-out test metrics of :func:`evaluate`, all test frames pooled),
    ``validation_by_geometry``, and ``checkpoint`` (the path). ``extra_metadata``: more
    entries for the ``training`` section (for example the command that ran).
    """
    from photonflow.simulate.sfx import SfxConfig

    say = log or (lambda _msg: None)
    if geometry is None:
        geometries = _default_geometries()
        defaults = [(160, 12, 32), (24, 2, 8)][: len(geometries)]
    else:
        geometries = list(geometry) if isinstance(geometry, (list, tuple)) else [geometry]
        defaults = [(160, 12, 32)] * len(geometries)
    n_train = [d[0] for d in defaults] if n_train is None else n_train
    n_val = [d[1] for d in defaults] if n_val is None else n_val
    n_test = [d[2] for d in defaults] if n_test is None else n_test
    n_tr = _per_geometry(n_train, len(geometries), "n_train")
    n_va = _per_geometry(n_val, len(geometries), "n_val")
    n_te = _per_geometry(n_test, len(geometries), "n_test")
    config = SfxConfig(**TRAIN_CONFIG) if config is None else config
    test_config = SfxConfig() if test_config is None else test_config
    t0 = time.perf_counter()
    images: list = []
    labels: list = []
    weights: list = []  # each geometry (and the user frames) gets an equal share of the crops
    val_images: list = []
    val_labels: list = []
    tests = []
    for k, geom in enumerate(geometries):
        # distinct seeds per geometry: seed + 3k + (0 train, 1 validation, 2 test)
        tr_img, tr_lab, _, _ = _simulate(geom, n_tr[k], seed + 3 * k, config)
        va_img, va_lab, _, _ = _simulate(geom, n_va[k], seed + 3 * k + 1, config)
        tests.append(_simulate(geom, n_te[k], seed + 3 * k + 2, test_config))
        images.extend(tr_img)
        labels.extend(tr_lab)
        weights.extend([1.0 / max(n_tr[k], 1)] * n_tr[k])
        val_images.extend(va_img)
        val_labels.extend(va_lab)
        say(f"simulated {_geometry_label(geom)}: {n_tr[k]} training, {n_va[k]} validation, {n_te[k]} test frames")
    t_sim = time.perf_counter() - t0
    masks: list | None = None
    n_sim = len(images)
    n_user = 0
    if user_images is not None:
        if user_labels is None or len(user_labels) != len(user_images):
            raise ValueError("user_images need user_labels, one label image per frame")
        n_user = len(user_images)
        masks = [None] * n_sim
        # user frames: each drawn user_repeat times as often as a frame of the first geometry
        weights.extend([user_repeat / max(n_tr[0], 1)] * n_user)
        images.extend(np.asarray(u) for u in user_images)
        labels.extend(np.asarray(u) for u in user_labels)
        if user_masks is None:
            masks.extend([None] * n_user)
        elif isinstance(user_masks, np.ndarray) and user_masks.ndim == 2:
            masks.extend([np.asarray(user_masks, bool)] * n_user)
        else:
            masks.extend(None if m is None else np.asarray(m, bool) for m in user_masks)
    model, metrics = train_peakfinder(
        images,
        labels,
        val_images,
        val_labels,
        epochs=epochs,
        batch_size=batch_size,
        crop=crop,
        lr=lr,
        base_channels=base_channels,
        depth=depth,
        seed=seed,
        device=device,
        log=log,
        gamma=gamma,
        alpha=alpha,
        steps_per_epoch=steps_per_epoch,
        train_masks=masks,
        match_radius=match_radius,
        frame_weights=weights,
    )
    selection = metrics.pop("validation")
    by_geometry = {}
    for geom, (te_img, te_lab, te_truth, te_faint) in zip(geometries, tests):
        finder = PeakNetFinder(model, device=device, panel_map=geom.panel_map())
        by_geometry[_geometry_label(geom)] = evaluate(
            finder, te_img, te_lab, te_truth, match_radius, truth_extra_positions=te_faint
        )
        by_geometry[_geometry_label(geom)]["n_detectable_spots"] = int(sum(len(t) for t in te_truth))
        by_geometry[_geometry_label(geom)]["n_faint_spots"] = int(sum(len(t) for t in te_faint))
    test = _pool(list(by_geometry.values()))
    test["frames"] = (
        f"{sum(n_te)} held-out simulated frames ({', '.join(by_geometry)}; seeds seed + 3k + 2; simulator "
        f"defaults unless test_config given): {test['n_detectable_spots']} detectable spots "
        f"(snr >= {test_config.label_min_snr}, recall counts these), {test['n_faint_spots']} fainter ones "
        "(finding one is not a false positive)"
    )
    training = {
        "data": "simulated SFX frames (photonflow.simulate.sfx)" + (f" + {n_user} user-labelled" if n_user else ""),
        "geometries": [_geometry_label(g) for g in geometries],
        "n_train_simulated": n_tr,
        "n_val_simulated": n_va,
        "n_test_simulated": n_te,
        "n_user": n_user,
        "user_repeat": user_repeat if n_user else 0,
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "crop": crop,
        "lr": lr,
        "loss": f"categorical focal loss, gamma={gamma}, alpha={alpha}",
        "augmentation": "rot90/flip, rotation ±15° (p 0.5), shift ±8 px, random masking (p 0.5)",
        "simulator_config": _plain(config.to_dict() if hasattr(config, "to_dict") else config),
        "test_simulator_config": _plain(test_config.to_dict() if hasattr(test_config, "to_dict") else test_config),
        "simulation_seconds": round(t_sim, 1),
        "selection_metrics": {k: v for k, v in selection.items() if not k.startswith("seconds")},
        **metrics,
        **_plain(dict(extra_metadata or {})),
    }
    meta = {
        "name": name,
        "description": "PeakNet-style residual attention U-Net: background / Bragg peak / artifact",
        "normalisation": NORMALISATION,
        "training": training,
        "validation": test,
        "validation_by_geometry": by_geometry,
    }
    out_path = Path(out_path)
    save_checkpoint(out_path, model, meta)
    from .peaknet import load_checkpoint

    _, stored = load_checkpoint(out_path, device="cpu")
    atomic_write_text(out_path.with_suffix(".json"), json.dumps(stored, indent=2) + "\n")
    for label, m in by_geometry.items():
        say(
            f"held-out {label}: peak precision {m['peak_precision']:.3f}, recall {m['peak_recall']:.3f} "
            f"at {match_radius} px; artifact pixel recall {m['artifact_pixel_recall']:.3f}"
        )
    return {**stored, "checkpoint": str(out_path)}


def _pool(results: list[dict]) -> dict:
    """Pool :func:`evaluate` results of several test sets: counts add up, ratios are recomputed
    from the pooled counts where counts exist (peaks), pixel ratios are frame-weighted means."""
    if len(results) == 1:
        return dict(results[0])
    out: dict = {}
    n = [r["n_frames"] for r in results]
    for key in results[0]:
        vals = [r.get(key) for r in results]
        if any(v is None for v in vals) or isinstance(vals[0], str):
            continue
        if key.startswith(("n_", "peak_true", "peak_found", "peak_false")):
            out[key] = int(sum(vals))
        elif isinstance(vals[0], (int, float)):
            out[key] = float(np.average(vals, weights=n))
    tp, fn = out["peak_true_positives"], out["peak_false_negatives"]
    found, fp = out["peak_found"], out["peak_false_positives"]
    out["peak_recall"] = tp / (tp + fn) if tp + fn else 1.0
    out["peak_precision"] = (found - fp) / found if found else 1.0
    p, r = out["peak_precision"], out["peak_recall"]
    out["peak_f1"] = 2 * p * r / (p + r) if p + r else 0.0
    out["pixel_metrics_pooling"] = "frame-weighted mean over geometries"
    return out


def _main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train the PeakNet-style peak finder on simulated SFX frames")
    ap.add_argument("out", help="checkpoint path (.pt); metadata JSON is written beside it")
    ap.add_argument("--geometry", action="append", help=".geom file (repeat for several; default sim256 + sim1920)")
    ap.add_argument("--n-train", type=int, nargs="+", default=None, help="per geometry")
    ap.add_argument("--n-val", type=int, nargs="+", default=None, help="per geometry")
    ap.add_argument("--n-test", type=int, nargs="+", default=None, help="per geometry")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--base-channels", type=int, default=8)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--steps-per-epoch", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    import sys

    command = "python -m photonflow.peaks.training " + " ".join(sys.argv[1:] if argv is None else argv)
    geometry = None
    if a.geometry:
        from photonflow.io.geom import load_geometry

        geometry = [load_geometry(g) for g in a.geometry]

    def one(v):
        return v if v is None or len(v) != 1 else v[0]

    meta = train_on_simulated(
        a.out,
        geometry=geometry,
        n_train=one(a.n_train),
        n_val=one(a.n_val),
        n_test=one(a.n_test),
        epochs=a.epochs,
        crop=a.crop,
        batch_size=a.batch_size,
        lr=a.lr,
        base_channels=a.base_channels,
        depth=a.depth,
        steps_per_epoch=a.steps_per_epoch,
        seed=a.seed,
        device=a.device,
        extra_metadata={"command": command},
    )
    print(json.dumps(meta["validation"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
