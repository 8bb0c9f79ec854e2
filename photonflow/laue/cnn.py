"""A CNN that predicts the Laue spot descriptors of Kirstein et al. (Materials 2023, 16, 3397) from a
32 × 32 cutout, in place of the 2D Gaussian fit of :mod:`photonflow.laue.fit`.

The paper's text was not at hand; the following are *our* definitions, chosen to follow it.

Architecture (:class:`LaueSpotNet`, 349,377 weights)
    input 1 × 32 × 32 → three blocks (widths 32, 48, 96) of [conv 3×3 (pad 1) + batch norm + ReLU]
    × 2 and max-pool 2 → 96 × 4 × 4 = 1536 → dense 112 → ReLU → 56 → ReLU → 22 → ReLU → 5 → sigmoid.

Input normalisation (:func:`normalise_cutouts`)
    per cutout, pixels that are saturated or masked are first set to the maximum of the valid
    pixels (a saturated spot is bright, not a hole), then ``(A − min) / (max − min)`` → [0, 1]
    (a flat cutout → 0).

Outputs (:data:`OUTPUTS`, all in [0, 1]; :func:`labels_from_descriptors`, :func:`descriptors_from_outputs`)
    ``Sim``; ``Pos*_row``, ``Pos*_col`` = clip(0.5 + (Pos − s) / (2 P), 0, 1) with ``P`` = 4 px (an
    offset of ±4 px from the seed ``s`` spans the output); ``Area*`` = clip(Area / A_max, 0, 1) with
    ``A_max`` = 64 px²; ``Asp``. Spots whose fit is meaningless (Sim = 0, including fits that did not
    converge) get ``Pos* = 0.5`` (the seed) and ``Area* = 0``. ``P`` and ``A_max`` are stored in the
    checkpoint metadata. Descriptors (as :func:`photonflow.laue.fit.descriptors`): Sim0 = normalised
    cross-correlation of cutout and fitted model, Sim = 0 below 0.85 else (Sim0 − 0.85)/0.15,
    Pos = s + μ, Asp = min σ / max σ, Area = π σ1 σ2; quality = Sim > 0.5 and |Pos − s| ≤ 0.9 px.

Training data (:class:`SpotSet`)
    39 × 39 *context* boxes centred on the seed (index 19), so that a 32 × 32 cutout (seed at index
    16) can be taken at shifts of up to ±3 px; labels from the 2D Gaussian fit of the unshifted
    32 × 32 cutout (the same path for real and simulated spots). Real spots: seeds by
    :func:`~photonflow.laue.spots.find_seeds` on each image of :data:`REAL_DATASETS`, labels by
    :func:`~photonflow.laue.fit.fit_spots`. Simulated spots (:mod:`photonflow.simulate.laue`):
    single Gaussians, double spots, irregular spots and empty boxes; single spots also keep their
    true parameters.

Augmentation (:func:`augment`)
    one of the 8 dihedral operations (rot90 × k, then an optional left-right flip) on the context
    box, with the position offset rotated/reflected the same way ((dr, dc) → (−dc, dr) per rot90,
    (dr, dc) → (dr, −dc) per flip; Sim, Area, Asp unchanged), then a shift of the 32 × 32 window by
    up to ±3 px per axis, subtracting the shift from the offset (relative to the new cutout centre).

Training (:func:`train_cnn`)
    each epoch redraws the training set uniformly over Sim (:func:`uniform_resample`: 12 equal bins
    on [0, 1], Sim = 0 in the first; the same number drawn with replacement from each non-empty
    bin), Adam (lr 1e-3), batch 32, mean absolute error (L1) on the 5 outputs, ``torch.manual_seed``.

Evaluation (:func:`metrics`, :func:`cross_validate`)
    MAE and R² of Sim, mean Euclidean position error (px) and R² of the position (R² on the offset
    Pos − s, row and column averaged: on absolute image coordinates R² would be trivially 1), MAE
    (px²) and R² of Area, MAE and R² of Asp; over all spots and over good spots (fit quality True).
    Truth = the (adjusted) labels decoded to physical units. Cross-validation by dataset: train on
    all sets but one, test on the held-out one.

Command line::

    python -m photonflow.laue.cnn train photonflow/laue/models/laue_cnn_default.pt --lr-final 1e-5   # shipped
    python -m photonflow.laue.cnn crossval --lr-final 1e-5                                           # per fold

Default model (:data:`DEFAULT_CHECKPOINT`, metadata in ``models/laue_cnn_default.json``)
    trained by the first command (``--epochs 15 --n-sim 16000 --seed 0``, Adam starting at 1e-3 with
    a cosine decay to 1e-5 — the paper trains at a constant 1e-3; the decay lowered the final
    training L1 from 0.031 to 0.023 and the median position error on held-out simulated spots from
    0.17 to 0.062 px) on the three real sets (158 + 89 + 245 spots) and 16,000 simulated spots;
    6.8 min wall on the 2 CPU cores here. On 3,000 held-out simulated spots: MAE_Sim 0.028 (R² 0.97),
    position error vs the fit labels 0.14 px (good spots 0.062 px, R² 0.985), median vs the true
    position of single spots 0.062 px (the fit itself: 0.013–0.028 px), MAE_Area 1.0 px² (good
    spots 0.42 px², R² 0.995), MAE_Asp 0.064 (good spots 0.014).

Cross-validation by dataset (``crossval --lr-final 1e-5``: 8 epochs of 8,000 resampled spots per
fold, 8,000 simulated spots; 6.8 min on 2 CPU cores)::

    held out    subset     n   MAE_Sim    R2_Sim    PosErr    R2_Pos  MAE_Area   R2_Area   MAE_Asp    R2_Asp
    Ge_sCMOS    all      158     0.053     0.892     0.083     0.914     0.307     0.895     0.040     0.371
    Ge_sCMOS    good     133     0.050     0.469     0.060     0.976     0.243     0.909     0.031     0.346
    Ge_blanc    all       89     0.062     0.935     0.088     0.902     0.161     0.764     0.046     0.561
    Ge_blanc    good      74     0.066     0.160     0.070     0.960     0.106     0.893     0.046     0.554
    AH12        all      245     0.197     0.207     0.230     0.572     0.856     0.851     0.043     0.925
    AH12        good     141     0.043    -0.069     0.091     0.946     0.282     0.947     0.024     0.965
    simulated   all     8000     0.267     0.399     2.090   -13.163    17.253    -5.920     0.157    -0.127
    simulated   good    1526     0.151    -0.976     0.210     0.785     1.328     0.956     0.092     0.547

(PosErr px, MAE_Area px².) R² over good spots is low or negative where the held-out set's values
span a narrow range (Sim of good spots ≈ 0.9–1), so small biases dominate. AH12 "all": 59 of its
spots have the label Sim = 0, 57 of them because they are sharper than the fit can resolve (bright
spots of 2–4 px; σ < 0.35 px, which the fit stops as undersampled, not converged); the network
gives those a middling Sim. The "simulated" fold trains on the 492 real spots alone, which do not
cover the simulated variety (offsets, weak, double and irregular spots): it shows how little real
data alone teaches. With a constant learning rate (the paper's) the real folds' position errors were
0.13–0.26 px instead of 0.08–0.23 px.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from photonflow.io.atomic import atomic_path, atomic_write_text
from photonflow.torch_device import resolve_device

from .fit import cutouts, descriptors, fit_gaussians, fit_spots
from .spots import LaueImage, SearchParams, find_seeds, read_laue_image

__all__ = [
    "AREA_MAX",
    "CONTEXT",
    "CUTOUT",
    "DEFAULT_CHECKPOINT",
    "OUTPUTS",
    "POS_SCALE",
    "REAL_DATASETS",
    "LaueSpotCNN",
    "LaueSpotNet",
    "SpotSet",
    "augment",
    "crop",
    "cross_validate",
    "descriptors_from_outputs",
    "dihedral",
    "evaluate",
    "format_table",
    "labels_from_descriptors",
    "load_cnn",
    "metrics",
    "normalise_cutouts",
    "predict_descriptors",
    "predict_outputs",
    "real_spot_sets",
    "resolve_device",
    "save_cnn",
    "simulated_spot_set",
    "spot_set_from_image",
    "train_cnn",
    "uniform_resample",
]

CUTOUT = 32  # px, network input; the seed sits at index CUTOUT // 2
MAX_SHIFT = 3  # px, largest augmentation shift per axis
CONTEXT = CUTOUT + 2 * MAX_SHIFT + 1  # 39 px: seed at index CONTEXT // 2 = 19 (rotations keep it there)
POS_SCALE = 4.0  # P, px: Pos* = 0.5 + (Pos - s) / (2 P)
AREA_MAX = 64.0  # A_max, px²: Area* = Area / A_max
SIM_BINS = 12
OUTPUTS = ("Sim", "Pos_row", "Pos_col", "Area", "Asp")
NORMALISATION = "minmax-satmax-v1"
FORMAT = "photonflow-laue-cnn-1"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "models" / "laue_cnn_default.pt"
# (name, file, IntensityThreshold): AH12 _0000/_0001/_0003 are byte-identical, so one dataset
REAL_DATASETS = (
    ("Ge_sCMOS", "img_Ge_sCMOS_0000.tif", 400.0),
    ("Ge_blanc", "Ge_blanc_0000.mccd", 100.0),
    ("AH12", "AH12_CMT_r14_0000.tif", 400.0),
)


# ----------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------
class LaueSpotNet(nn.Module):
    """Conv blocks (two 3×3 conv + BN + ReLU, max-pool 2) of ``widths``, dense ``dense`` with ReLU,
    ``n_outputs`` sigmoid outputs. Input ``(n, 1, size, size)`` normalised cutouts."""

    def __init__(self, widths=(32, 48, 96), dense=(112, 56, 22), n_outputs: int = 5, size: int = CUTOUT):
        super().__init__()
        self.config = {"widths": list(widths), "dense": list(dense), "n_outputs": int(n_outputs), "size": int(size)}
        layers: list[nn.Module] = []
        c = 1
        for w in widths:
            layers += [
                nn.Conv2d(c, w, 3, padding=1),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c = w
        self.features = nn.Sequential(*layers)
        n = c * (size // 2 ** len(widths)) ** 2
        head: list[nn.Module] = [nn.Flatten()]
        for d in dense:
            head += [nn.Linear(n, d), nn.ReLU(inplace=True)]
            n = d
        head += [nn.Linear(n, n_outputs), nn.Sigmoid()]
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ----------------------------------------------------------------------------------------------
# labels, normalisation, augmentation
# ----------------------------------------------------------------------------------------------
def labels_from_descriptors(
    sim, offset, area, asp, *, pos_scale: float = POS_SCALE, area_max: float = AREA_MAX
) -> np.ndarray:
    """Network targets ``(n, 5)`` float32 in [0, 1] (:data:`OUTPUTS`) from Sim, ``offset = Pos − s``
    ``(n, 2)`` px, Area px², Asp. Sim = 0 (or NaN) → Pos* = 0.5, Area* = 0 (and Asp NaN → 0)."""
    sim = np.nan_to_num(np.asarray(sim, np.float64), nan=0.0)
    off = np.asarray(offset, np.float64).reshape(-1, 2)
    bad = (sim <= 0) | ~np.all(np.isfinite(off), axis=1)
    sim = np.where(bad, 0.0, sim)
    pos = np.clip(0.5 + np.nan_to_num(off) / (2 * pos_scale), 0, 1)
    pos[bad] = 0.5
    a = np.clip(np.nan_to_num(np.asarray(area, np.float64)) / area_max, 0, 1)
    a[bad] = 0.0
    asp = np.clip(np.nan_to_num(np.asarray(asp, np.float64)), 0, 1)
    return np.column_stack([np.clip(sim, 0, 1), pos, a, asp]).astype(np.float32)


def descriptors_from_outputs(
    outputs,
    seeds=None,
    *,
    pos_scale: float = POS_SCALE,
    area_max: float = AREA_MAX,
    quality_sim: float = 0.5,
    quality_dist: float = 0.9,
) -> dict:
    """Inverse of :func:`labels_from_descriptors`: dict ``Sim``, ``Pos`` (absolute ``[row, col]`` px;
    ``seeds=None``: relative to the seed, i.e. the offset), ``offset`` (px), ``dist`` (px), ``Area``
    (px²), ``Asp``, ``quality`` (Sim > quality_sim and dist ≤ quality_dist)."""
    out = np.asarray(outputs, np.float64).reshape(-1, 5)
    off = (out[:, 1:3] - 0.5) * 2 * pos_scale
    seeds = np.zeros_like(off) if seeds is None else np.asarray(seeds, np.float64).reshape(-1, 2)
    dist = np.hypot(off[:, 0], off[:, 1])
    sim = out[:, 0]
    return {
        "Sim": sim,
        "Pos": seeds + off,
        "offset": off,
        "dist": dist,
        "Area": out[:, 3] * area_max,
        "Asp": out[:, 4],
        "quality": (sim > quality_sim) & (dist <= quality_dist),
    }


def normalise_cutouts(stack, valid=None) -> np.ndarray:
    """Per-cutout min–max scaling to [0, 1] as float32 ``(n, H, W)``; pixels with ``valid`` False
    (saturated / masked / outside) are set to the cutout's maximum valid value first."""
    a = np.asarray(stack, np.float32)
    if a.ndim == 2:
        a = a[None]
    if valid is not None:
        v = np.asarray(valid, bool).reshape(a.shape)
        vmax = np.where(v, a, -np.inf).max(axis=(1, 2), keepdims=True)
        vmax = np.where(np.isfinite(vmax), vmax, 0.0).astype(np.float32)
        a = np.where(v, a, vmax)
    lo = a.min(axis=(1, 2), keepdims=True)
    span = a.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (a - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)


def dihedral(box: np.ndarray, offset, k: int, flip: bool):
    """Rotate ``box`` (…, N, N; N odd, about its centre pixel) by ``k`` × 90° (``np.rot90``) then
    flip left-right if ``flip``; return it with the offset ``(dr, dc)`` px transformed alike."""
    dr, dc = float(offset[0]), float(offset[1])
    for _ in range(k % 4):
        dr, dc = -dc, dr
    box = np.rot90(box, k, axes=(-2, -1))
    if flip:
        box = box[..., ::-1]
        dc = -dc
    return box, np.array([dr, dc])


def crop(box: np.ndarray, shift=(0, 0), size: int = CUTOUT) -> np.ndarray:
    """The ``size`` × ``size`` window of a context box whose centre pixel is the box centre + ``shift``."""
    h = box.shape[-1] // 2 - size // 2
    r, c = h + int(shift[0]), h + int(shift[1])
    return box[..., r : r + size, c : c + size]


# ----------------------------------------------------------------------------------------------
# spot sets
# ----------------------------------------------------------------------------------------------
@dataclass
class SpotSet:
    """Spots with 39 × 39 context boxes (seed at the centre) and fit labels of the central cutout."""

    name: str
    context: np.ndarray  # (n, 39, 39) float32, counts
    valid: np.ndarray  # (n, 39, 39) bool: not saturated / masked
    sim: np.ndarray  # (n,) Sim of the fit (0 when the fit did not converge)
    offset: np.ndarray  # (n, 2) Pos − seed, px
    area: np.ndarray  # (n,) px²
    asp: np.ndarray  # (n,)
    good: np.ndarray  # (n,) bool: fit quality
    kind: np.ndarray  # (n,) str: "real" or the simulated kind
    truth_offset: np.ndarray | None = None  # (n, 2) px, true offset of simulated spots (NaN otherwise)
    seeds: np.ndarray | None = None  # (n, 2) absolute seeds (real images)
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sim)

    def labels(self, pos_scale: float = POS_SCALE, area_max: float = AREA_MAX) -> np.ndarray:
        return labels_from_descriptors(
            self.sim, self.offset, self.area, self.asp, pos_scale=pos_scale, area_max=area_max
        )

    def inputs(self) -> np.ndarray:
        """Normalised central 32 × 32 cutouts ``(n, 32, 32)`` float32 (no augmentation)."""
        return normalise_cutouts(crop(self.context), crop(self.valid))

    def subset(self, idx) -> SpotSet:
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return SpotSet(
            self.name,
            self.context[idx],
            self.valid[idx],
            self.sim[idx],
            self.offset[idx],
            self.area[idx],
            self.asp[idx],
            self.good[idx],
            self.kind[idx],
            pick(self.truth_offset),
            pick(self.seeds),
            dict(self.info),
        )

    @staticmethod
    def concat(sets: Sequence[SpotSet], name: str | None = None) -> SpotSet:
        def cat(key):
            vals = [getattr(s, key) for s in sets]
            if key == "truth_offset":
                vals = [np.full((len(s), 2), np.nan) if v is None else v for s, v in zip(sets, vals)]
            if key == "seeds":
                vals = [np.full((len(s), 2), -1) if v is None else v for s, v in zip(sets, vals)]
            return np.concatenate(vals)

        keys = ("context", "valid", "sim", "offset", "area", "asp", "good", "kind", "truth_offset", "seeds")
        out = SpotSet(name or "+".join(s.name for s in sets), **{k: cat(k) for k in keys})
        out.info = {"parts": {s.name: len(s) for s in sets}}
        return out


def _fit_labels(stack32, valid32):
    """Fit the central cutouts → sim (0 if not converged), offset, area, asp, good."""
    n = len(stack32)
    res = fit_gaussians(stack32.astype(np.float64), valid32.astype(np.float64))
    h = CUTOUT // 2
    d = descriptors(stack32, valid32.astype(np.float64), res, np.zeros((n, 2)), np.full((n, 2), h))
    sim = np.where(res.converged, d["Sim"], 0.0)
    return sim, d["Pos"] - h, d["Area"], d["Asp"], d["quality"] & res.converged


def spot_set_from_image(image, name: str, params: SearchParams | None = None, mask=None, saturation=None) -> SpotSet:
    """Real spots of one image: seeds by ``find_seeds``, labels by ``fit_spots`` (32 × 32 cutouts);
    spots whose 39 × 39 context leaves the image are dropped; non-converged fits get Sim = 0."""
    if not isinstance(image, LaueImage):
        image = LaueImage(np.asarray(image, np.float32), float("inf") if saturation is None else saturation)
    seeds = find_seeds(image, params, mask)
    ctx, w, _, ok, _ = cutouts(image, seeds, size=CONTEXT, mask=mask, saturation=saturation)
    fit = fit_spots(image, seeds, size=CUTOUT, mask=mask, saturation=saturation)
    keep = ok & np.isfinite(fit["Sim"])
    conv = fit["converged"][keep]
    sim = np.where(conv, fit["Sim"][keep], 0.0)
    n = int(keep.sum())
    return SpotSet(
        name=name,
        context=ctx[keep].astype(np.float32),
        valid=w[keep] > 0,
        sim=sim,
        offset=fit["Pos"][keep] - seeds[keep],
        area=fit["Area"][keep],
        asp=fit["Asp"][keep],
        good=fit["quality"][keep] & conv,
        kind=np.full(n, "real"),
        truth_offset=np.full((n, 2), np.nan),
        seeds=seeds[keep],
        info={"n_seeds": len(seeds)},
    )


def real_spot_sets(data_dir=None, datasets=REAL_DATASETS) -> list[SpotSet]:
    """One :class:`SpotSet` per image of ``datasets`` ((name, file, IntensityThreshold) in ``data_dir``,
    default ``../shared/data/laue`` beside the repository); missing files are skipped."""
    if data_dir is None:
        from photonflow.config import shared_data_dir

        data_dir = shared_data_dir() / "laue"
    data_dir = Path(data_dir)
    out = []
    for name, fname, thr in datasets:
        path = data_dir / fname
        if not path.is_file():
            continue
        s = spot_set_from_image(read_laue_image(path), name, SearchParams(IntensityThreshold=thr))
        s.info.update({"file": fname, "IntensityThreshold": thr})
        out.append(s)
    return out


def simulated_spot_set(n: int, seed: int = 0, name: str = "simulated", **kwargs) -> SpotSet:
    """``n`` simulated spots (:func:`photonflow.simulate.laue.simulate_spots`, ``kwargs`` passed on),
    labelled by fitting the central 32 × 32 cutouts; ``truth_offset`` = true offset of the main
    component (NaN for empty boxes)."""
    from photonflow.simulate.laue import simulate_spots

    sp = simulate_spots(n, seed, size=CONTEXT, **kwargs)
    valid = sp.valid
    sim, off, area, asp, good = _fit_labels(crop(sp.data).astype(np.float64), crop(valid))
    return SpotSet(
        name=name,
        context=sp.data,
        valid=valid,
        sim=sim,
        offset=off,
        area=area,
        asp=asp,
        good=good,
        kind=sp.kind,
        truth_offset=sp.centre - sp.seed_index,
        seeds=None,
        info={"seed": seed, "n": n, "sigma1": sp.sigma1, "sigma2": sp.sigma2, "theta": sp.theta},
    )


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def uniform_resample(sim, rng=None, n_per_bin: int | None = None, bins: int = SIM_BINS) -> np.ndarray:
    """Indices drawn with replacement, ``n_per_bin`` from each non-empty Sim bin (``bins`` equal bins
    on [0, 1]; Sim = 0 in the first; default ``n_per_bin`` = ceil(n / number of non-empty bins))."""
    rng = np.random.default_rng(rng)
    sim = np.nan_to_num(np.asarray(sim, np.float64))
    b = np.clip((sim * bins).astype(int), 0, bins - 1)
    groups = [np.flatnonzero(b == i) for i in range(bins)]
    groups = [g for g in groups if len(g)]
    if not groups:
        return np.zeros(0, int)
    m = n_per_bin or math.ceil(len(sim) / len(groups))
    return np.concatenate([rng.choice(g, m, replace=True) for g in groups])


def augment(
    spots: SpotSet, idx, rng, max_shift: int = MAX_SHIFT, pos_scale: float = POS_SCALE, area_max: float = AREA_MAX
):
    """Random dihedral op + shift for spots ``idx`` → (inputs ``(b, 1, 32, 32)`` float32, labels ``(b, 5)``)."""
    idx = np.asarray(idx)
    b = len(idx)
    x = np.empty((b, CUTOUT, CUTOUT), np.float32)
    v = np.empty((b, CUTOUT, CUTOUT), bool)
    off = np.empty((b, 2))
    ks = rng.integers(0, 4, b)
    flips = rng.random(b) < 0.5
    shifts = rng.integers(-max_shift, max_shift + 1, (b, 2))
    for j, i in enumerate(idx):
        box, o = dihedral(np.stack([spots.context[i], spots.valid[i]]), spots.offset[i], ks[j], flips[j])
        win = crop(box, shifts[j])
        x[j], v[j] = win[0], win[1] > 0
        off[j] = o - shifts[j]
    y = labels_from_descriptors(
        spots.sim[idx], off, spots.area[idx], spots.asp[idx], pos_scale=pos_scale, area_max=area_max
    )
    return normalise_cutouts(x, v)[:, None], y


def train_cnn(
    train: SpotSet,
    *,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device="auto",
    epoch_size: int | None = None,
    model: LaueSpotNet | None = None,
    log=None,
    lr_final: float | None = None,
):
    """Train (Adam, L1 loss) with per-epoch uniform Sim resampling and augmentation; an epoch is
    ``epoch_size`` spots (default ``len(train)``) drawn by :func:`uniform_resample`. ``lr_final``:
    if given, the learning rate decays from ``lr`` to it along a cosine over the epochs (default:
    constant ``lr``, as the paper).
    Returns ``(model in eval mode, history)``; history: list of per-epoch dicts (loss, seconds)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = resolve_device(device)
    model = (model or LaueSpotNet()).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.L1Loss()
    history = []
    for ep in range(epochs):
        t0 = time.perf_counter()
        if lr_final is not None and epochs > 1:
            for g in opt.param_groups:
                g["lr"] = lr_final + 0.5 * (lr - lr_final) * (1 + math.cos(math.pi * ep / (epochs - 1)))
        model.train()
        nonempty = len(np.unique(np.clip((np.nan_to_num(train.sim) * SIM_BINS).astype(int), 0, SIM_BINS - 1)))
        order = uniform_resample(train.sim, rng, math.ceil((epoch_size or len(train)) / nonempty))
        rng.shuffle(order)
        total, count = 0.0, 0
        for s in range(0, len(order) - 1, batch_size):  # a last batch of 1 would break batch norm
            xb, yb = augment(train, order[s : s + batch_size], rng)
            if len(xb) < 2:
                continue
            xb, yb = torch.from_numpy(xb).to(dev), torch.from_numpy(yb).to(dev)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(xb)
            count += len(xb)
        history.append(
            {"epoch": ep + 1, "loss": total / max(count, 1), "n": count, "seconds": round(time.perf_counter() - t0, 2)}
        )
        if log:
            log(f"epoch {ep + 1}/{epochs}: L1 {history[-1]['loss']:.4f} ({count} spots, {history[-1]['seconds']} s)")
    model.eval()
    return model, history


def predict_outputs(model: nn.Module, inputs, batch_size: int = 1024, device=None) -> np.ndarray:
    """Network outputs ``(n, 5)`` for normalised cutouts ``(n, 32, 32)``, batched, under inference_mode."""
    dev = next(model.parameters()).device if device is None else resolve_device(device)
    x = np.asarray(inputs, np.float32)
    out = np.empty((len(x), 5), np.float32)
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[s : s + batch_size, None])).to(dev)
            out[s : s + batch_size] = model(xb).float().cpu().numpy()
    return out


# ----------------------------------------------------------------------------------------------
# metrics, evaluation, cross-validation
# ----------------------------------------------------------------------------------------------
def _r2(t, p) -> float:
    """Coefficient of determination (as scikit-learn: 1 − SS_res / SS_tot; columns averaged)."""
    t = np.asarray(t, np.float64).reshape(len(t), -1)
    p = np.asarray(p, np.float64).reshape(len(p), -1)
    if len(t) < 2:
        return float("nan")
    ss_res = ((t - p) ** 2).sum(axis=0)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    r = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.where(ss_res == 0, 1.0, 0.0))
    return float(r.mean())


def metrics(pred: dict, truth: dict, good=None) -> dict:
    """The paper's metrics between two descriptor dicts (keys Sim, Pos (n, 2) px, Area px², Asp):
    MAE_Sim, R2_Sim, PosErr (mean Euclidean distance, px), R2_Pos (over Pos as given: pass offsets
    from the seed), MAE_Area (px²), R2_Area, MAE_Asp, R2_Asp, n; the same with suffix ``_good`` over
    the spots where ``good`` is True (if given)."""

    def one(sel):
        out = {"n": int(sel.sum())}
        if out["n"] == 0:
            return out | {
                k: float("nan")
                for k in ("MAE_Sim", "R2_Sim", "PosErr", "R2_Pos", "MAE_Area", "R2_Area", "MAE_Asp", "R2_Asp")
            }
        for key in ("Sim", "Area", "Asp"):
            t, p = np.asarray(truth[key], np.float64)[sel], np.asarray(pred[key], np.float64)[sel]
            out[f"MAE_{key}"] = float(np.mean(np.abs(t - p)))
            out[f"R2_{key}"] = _r2(t, p)
        t, p = np.asarray(truth["Pos"], np.float64)[sel], np.asarray(pred["Pos"], np.float64)[sel]
        out["PosErr"] = float(np.mean(np.hypot(*(t - p).T)))
        out["R2_Pos"] = _r2(t, p)
        return out

    n = len(np.asarray(truth["Sim"]))
    res = one(np.ones(n, bool))
    if good is not None:
        res.update({f"{k}_good": v for k, v in one(np.asarray(good, bool)).items()})
    return res


def evaluate(
    model: nn.Module, spots: SpotSet, pos_scale: float = POS_SCALE, area_max: float = AREA_MAX, batch_size: int = 1024
) -> dict:
    """:func:`metrics` of the model on the central cutouts of ``spots`` against their (adjusted)
    fit labels, positions as offsets from the seed; for simulated sets also ``PosErr_truth`` (px,
    mean) and ``PosErr_truth_median`` against the true positions of single spots with Sim > 0.5."""
    out = predict_outputs(model, spots.inputs(), batch_size)
    kw = {"pos_scale": pos_scale, "area_max": area_max}
    pred = descriptors_from_outputs(out, **kw)
    truth = descriptors_from_outputs(spots.labels(**kw), **kw)
    pred["Pos"], truth["Pos"] = pred["offset"], truth["offset"]
    res = metrics(pred, truth, spots.good)
    if spots.truth_offset is not None:
        sel = (spots.kind == "single") & (spots.sim > 0.5) & np.all(np.isfinite(spots.truth_offset), axis=1)
        if sel.any():
            e = np.hypot(*(pred["offset"][sel] - spots.truth_offset[sel]).T)
            res["PosErr_truth"] = float(e.mean())
            res["PosErr_truth_median"] = float(np.median(e))
            res["n_truth"] = int(sel.sum())
    return res


def cross_validate(
    sets: Sequence[SpotSet], *, epochs: int = 8, seed: int = 0, device="auto", log=None, **train_kwargs
) -> list[dict]:
    """For each set: train on all the others, evaluate on it. Returns per-fold dicts (held_out,
    n_train, n_test, seconds, and the :func:`evaluate` metrics)."""
    folds = []
    for i, test in enumerate(sets):
        train = SpotSet.concat([s for j, s in enumerate(sets) if j != i])
        t0 = time.perf_counter()
        model, hist = train_cnn(train, epochs=epochs, seed=seed, device=device, log=log, **train_kwargs)
        res = {
            "held_out": test.name,
            "n_train": len(train),
            "n_test": len(test),
            "final_loss": hist[-1]["loss"] if hist else float("nan"),
        }
        res.update(evaluate(model, test))
        res["seconds"] = round(time.perf_counter() - t0, 1)
        folds.append(res)
        if log:
            log(format_table([res]))
    return folds


_TABLE = ("MAE_Sim", "R2_Sim", "PosErr", "R2_Pos", "MAE_Area", "R2_Area", "MAE_Asp", "R2_Asp")


def format_table(folds: Sequence[dict]) -> str:
    """Per-fold metric table (all spots / good spots) as text."""
    head = f"{'held out':<12}{'subset':<6}{'n':>6}" + "".join(f"{k:>10}" for k in _TABLE)
    lines = [head]
    for f in folds:
        for sub, suf in (("all", ""), ("good", "_good")):
            if f"n{suf}" not in f:
                continue
            lines.append(
                f"{f['held_out']:<12}{sub:<6}{f[f'n{suf}']:>6}"
                + "".join(f"{f.get(k + suf, float('nan')):>10.3f}" for k in _TABLE)
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# checkpoints and inference
# ----------------------------------------------------------------------------------------------
def save_cnn(path, model: LaueSpotNet, metadata: dict | None = None) -> Path:
    """Write weights + metadata to ``path`` (.pt) and the metadata to ``path`` with suffix .json,
    atomically. Metadata gets ``format``, ``architecture``, ``outputs``, ``pos_scale_px`` (P),
    ``area_max_px2`` (A_max), ``normalisation``, ``n_parameters``, ``torch_version``, ``date``
    unless set; it must be JSON serialisable (checkpoints load with ``weights_only=True``)."""
    meta = dict(metadata or {})
    meta.setdefault("format", FORMAT)
    meta.setdefault("architecture", dict(model.config))
    meta.setdefault("outputs", list(OUTPUTS))
    meta.setdefault("pos_scale_px", POS_SCALE)
    meta.setdefault("area_max_px2", AREA_MAX)
    meta.setdefault("normalisation", NORMALISATION)
    meta.setdefault("n_parameters", sum(p.numel() for p in model.parameters()))
    meta.setdefault("torch_version", torch.__version__)
    meta.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta = json.loads(json.dumps(meta))
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "metadata": meta}, tmp)
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return path


def load_cnn(path=None, device="auto") -> tuple[LaueSpotNet, dict]:
    """Load a :func:`save_cnn` checkpoint → (model in eval mode on ``device``, metadata);
    ``path=None``: the shipped default (:data:`DEFAULT_CHECKPOINT`)."""
    path = Path(DEFAULT_CHECKPOINT if path is None else path)
    if not path.is_file():
        raise FileNotFoundError(f"Laue CNN checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta, state = blob["metadata"], blob["state_dict"]
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: not a photonflow Laue CNN checkpoint ({type(exc).__name__}: {exc})") from exc
    if meta.get("normalisation", NORMALISATION) != NORMALISATION:
        raise ValueError(f"{path}: normalisation {meta['normalisation']!r}, this version has {NORMALISATION!r}")
    model = LaueSpotNet(**meta["architecture"])
    model.load_state_dict(state)
    return model.to(resolve_device(device)).eval(), meta


class LaueSpotCNN:
    """A loaded checkpoint that predicts descriptors: ``LaueSpotCNN().predict(image, seeds)``."""

    def __init__(self, checkpoint=None, device="auto", batch_size: int = 1024):
        self.model, self.metadata = load_cnn(checkpoint, device)
        self.batch_size = int(batch_size)
        self.pos_scale = float(self.metadata.get("pos_scale_px", POS_SCALE))
        self.area_max = float(self.metadata.get("area_max_px2", AREA_MAX))

    def predict(
        self,
        image_or_stack,
        seeds=None,
        *,
        mask=None,
        saturation=None,
        valid=None,
        quality_sim: float = 0.5,
        quality_dist: float = 0.9,
    ) -> dict:
        """Descriptors (see :func:`descriptors_from_outputs`) plus ``ok`` (cutout inside the image)
        and ``outputs``. Input: an image (2D array or :class:`LaueImage`) with ``seeds (n, 2)``, or a
        stack ``(n, 32, 32)`` of cutouts (seed at index 16; ``seeds`` then default to (16, 16), i.e.
        Pos in cutout coordinates; ``valid`` optional (n, 32, 32) bool)."""
        arr = image_or_stack.data if isinstance(image_or_stack, LaueImage) else np.asarray(image_or_stack)
        if arr.ndim == 3:
            if arr.shape[1:] != (CUTOUT, CUTOUT):
                raise ValueError(f"cutout stack must be (n, {CUTOUT}, {CUTOUT}), got {arr.shape}")
            seeds = np.full((len(arr), 2), CUTOUT // 2) if seeds is None else seeds
            x = normalise_cutouts(arr, valid)
            ok = np.ones(len(arr), bool)
        else:
            if seeds is None:
                raise ValueError("seeds are required with a 2D image")
            stack, w, _, ok, _ = cutouts(image_or_stack, seeds, size=CUTOUT, mask=mask, saturation=saturation)
            x = normalise_cutouts(stack, w > 0)
        out = predict_outputs(self.model, x, self.batch_size)
        res = descriptors_from_outputs(
            out,
            seeds,
            pos_scale=self.pos_scale,
            area_max=self.area_max,
            quality_sim=quality_sim,
            quality_dist=quality_dist,
        )
        res["quality"] &= ok
        res["ok"] = ok
        res["outputs"] = out
        return res


_CACHE: dict = {}


def predict_descriptors(
    image_or_stack, seeds=None, checkpoint=None, device="auto", batch_size: int = 1024, **kwargs
) -> dict:
    """:meth:`LaueSpotCNN.predict` with a cached :class:`LaueSpotCNN` per (checkpoint, device)."""
    key = (str(checkpoint), str(resolve_device(device)))
    if key not in _CACHE:
        _CACHE[key] = LaueSpotCNN(checkpoint, device)
    cnn = _CACHE[key]
    cnn.batch_size = int(batch_size)
    return cnn.predict(image_or_stack, seeds, **kwargs)


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def _set_summary(s: SpotSet) -> dict:
    return {
        "name": s.name,
        "n": len(s),
        "n_good": int(s.good.sum()),
        "sim_hist_12": np.histogram(s.sim, SIM_BINS, (0, 1))[0].tolist(),
        **{k: v for k, v in s.info.items() if isinstance(v, (int, float, str, dict))},
    }


def _main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m photonflow.laue.cnn", description="Laue spot CNN")
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train on all real sets + simulated spots, write OUT.pt and OUT.json")
    tr.add_argument("out")
    tr.add_argument("--epochs", type=int, default=15)
    tr.add_argument("--n-sim", type=int, default=16000, help="simulated training spots")
    tr.add_argument("--n-test", type=int, default=3000, help="simulated test spots (seed + 1000)")
    cv = sub.add_parser("crossval", help="cross-validation by dataset; prints the per-fold table")
    cv.add_argument("--epochs", type=int, default=8)
    cv.add_argument("--epoch-size", type=int, default=8000, help="spots per epoch (the same in every fold)")
    cv.add_argument("--n-sim", type=int, default=8000)
    cv.add_argument("--json", default=None, help="also write the folds to this JSON file")
    for p in (tr, cv):
        p.add_argument(
            "--lr-final",
            type=float,
            default=None,
            help="cosine learning-rate decay from 1e-3 to this (default: constant 1e-3, as the paper)",
        )
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--data-dir", default=None, help="real images (default ../shared/data/laue)")
        p.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    command = "python -m photonflow.laue.cnn " + " ".join(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    real = real_spot_sets(a.data_dir)
    sim = simulated_spot_set(a.n_sim, seed=a.seed)
    print(
        f"data: {', '.join(f'{s.name} {len(s)}' for s in real + [sim])} ({time.perf_counter() - t0:.1f} s)", flush=True
    )
    log = lambda m: print(m, flush=True)  # noqa: E731
    if a.cmd == "crossval":
        folds = cross_validate(
            real + [sim],
            epochs=a.epochs,
            seed=a.seed,
            device=a.device,
            log=log,
            epoch_size=a.epoch_size,
            lr_final=a.lr_final,
        )
        print(format_table(folds))
        print(f"total {time.perf_counter() - t0:.0f} s")
        if a.json:
            Path(a.json).write_text(json.dumps({"command": command, "folds": folds}, indent=2) + "\n")
        return 0
    train = SpotSet.concat(real + [sim], name="train")
    model, hist = train_cnn(train, epochs=a.epochs, seed=a.seed, device=a.device, log=log, lr_final=a.lr_final)
    test = simulated_spot_set(a.n_test, seed=a.seed + 1000, name="simulated_test")
    res = {"simulated_test (held out)": evaluate(model, test)}
    res.update({f"{s.name} (training data)": evaluate(model, s) for s in real})
    meta = {
        "name": Path(a.out).stem,
        "description": "Laue spot CNN (Kirstein et al. 2023): Sim, Pos, Area, Asp",
        "training": {
            "command": command,
            "sets": [_set_summary(s) for s in real + [sim]],
            "n_train": len(train),
            "epochs": a.epochs,
            "batch_size": 32,
            "lr": 1e-3,
            "lr_final": a.lr_final,
            "loss": "L1 (MAE)",
            "seed": a.seed,
            "resampling": f"uniform over {SIM_BINS} Sim bins, redrawn each epoch",
            "augmentation": "8 dihedral ops, shifts up to ±3 px, labels adjusted",
            "history": hist,
            "seconds": round(time.perf_counter() - t0, 1),
        },
        "metrics": res,
    }
    save_cnn(a.out, model, meta)
    print(json.dumps(res, indent=2))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
