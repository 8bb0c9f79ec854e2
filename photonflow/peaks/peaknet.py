"""A PeakNet-style neural Bragg peak finder (after Wang, Li, Thayer & Yoon 2023, "PeakNet").

A residual attention U-Net segments each frame into three classes (:data:`CLASSES`):
0 background, 1 Bragg peak, 2 artifact (ice/water rings, streaks, hot or dead regions: anything
that should be masked). Peaks are the 8-connected components of the peak class, split along panel
boundaries when a panel map is given; each gets an intensity-weighted centre computed from the
background-subtracted *raw* frame values (:func:`peaks_from_labels`). The artifact class, slightly
dilated, is an automatic mask (:meth:`PeakNetFinder.artifact_mask`).

Conventions
    Frames are ``(H, W)`` or ``(n, H, W)`` arrays in detector units (ADU or photons: the
    normalisation makes the network independent of the unit). Masks are boolean, **True = masked**
    (as :mod:`photonflow.io.masks`). Peak coordinates are slab pixels: the centre of pixel
    ``data[ss, fs]`` is at ``(fs, ss)`` (see :mod:`photonflow.peaks.peaklist`).

Inference is batched (``batch_size`` frames or tiles per forward pass, under
``torch.inference_mode``) and tiles large frames with an overlap wider than the network's receptive
field, so a tiled pass gives the labels of a whole-frame pass (up to float rounding) in bounded memory.

Default model (:data:`DEFAULT_CHECKPOINT`, metadata in ``models/peaknet_default.json``)
    base_channels 8, depth 3 (128 k parameters, 0.6 MB), trained for 8.7 min on 2 CPU cores on
    simulated frames of the ``sim256`` and ``sim1920`` geometries
    (``python -m photonflow.peaks.training``, see :mod:`photonflow.peaks.training`). On held-out
    simulated frames (simulator defaults, recall over spots with snr ≥ 3, 1.5 px match radius):
    sim256 precision 0.976, recall 0.932; sim1920 precision 0.961, recall 0.882; artifact-pixel
    recall 0.887 / 0.917. CPU (2 cores): about 1.3 s per 1920 × 1920 frame, 30 ms per 256 × 256.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from photonflow.io.atomic import atomic_path
from photonflow.torch_device import resolve_device

from .peaklist import PeakList

__all__ = [
    "CLASSES",
    "DEFAULT_CHECKPOINT",
    "NORMALISATION",
    "AttentionGate",
    "ResidualBlock",
    "ResidualAttentionUNet",
    "PeakNetFinder",
    "focal_loss",
    "fuse_for_inference",
    "label_components",
    "load_checkpoint",
    "normalise_frames",
    "peaks_from_labels",
    "resolve_device",
    "save_checkpoint",
]

CLASSES = ("background", "peak", "artifact")
BACKGROUND, PEAK, ARTIFACT = 0, 1, 2
NORMALISATION = "median-mad-asinh-v1"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "models" / "peaknet_default.pt"


# ----------------------------------------------------------------------------------------------
# device, normalisation, loss
# ----------------------------------------------------------------------------------------------
def _as_frames(frames) -> tuple[np.ndarray | torch.Tensor, bool]:
    """(n, H, W) view of ``frames`` and whether the input was a single (H, W) frame."""
    single = frames.ndim == 2
    if single:
        frames = frames[None]
    if frames.ndim != 3:
        raise ValueError(f"frames must be (H, W) or (n, H, W), got shape {tuple(frames.shape)}")
    return frames, single


def _as_masks(mask, shape: tuple[int, int, int]) -> np.ndarray | None:
    """Broadcast a mask ((H, W) for all frames, or (n, H, W)) to ``shape``; None stays None."""
    if mask is None:
        return None
    mask = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool)
    if mask.shape == shape[1:]:
        return np.broadcast_to(mask, shape)
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} matches neither a frame {shape[1:]} nor the frames {shape}")
    return mask


def normalise_frames(
    frames: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | None = None,
    *,
    softening: float = 3.0,
    stride: int = 4,
) -> torch.Tensor:
    """Per-frame robust normalisation: float32 tensor of shape (n, H, W) ((H, W) input → n = 1).

    For each frame, over its unmasked, finite pixels (sampled every ``stride`` rows and columns
    for speed): ``m`` = median, ``s`` = 1.4826 × median absolute deviation (a Gaussian sigma; if
    it is 0, as on sparse photon-counting frames, the standard deviation of the pixels below
    the 99.9th percentile, then 1). Output ``asinh((x − m) / (softening · s))``: linear for
    noise (|x − m| ≲ 3 s), logarithmic for bright peaks, so one model covers detectors and
    background levels without tuning. Masked and non-finite pixels → 0 (background level).
    The name of this recipe is :data:`NORMALISATION` (stored in checkpoints).
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames, _ = _as_frames(np.asarray(frames))
    masks = _as_masks(mask, frames.shape)
    out = np.empty(frames.shape, np.float32)
    for i, frame in enumerate(frames):
        frame = np.asarray(frame, dtype=np.float32)
        valid = np.isfinite(frame)
        if masks is not None:
            valid &= ~masks[i]
        sample = frame[::stride, ::stride][valid[::stride, ::stride]]
        if sample.size < 16:
            sample = frame[valid]
        if sample.size == 0:
            out[i] = 0.0
            continue
        med = float(np.median(sample))
        scale = 1.4826 * float(np.median(np.abs(sample - med)))
        if not scale > 0:
            clipped = sample[sample <= np.percentile(sample, 99.9)]
            scale = float(np.std(clipped)) if clipped.size else 0.0
        if not scale > 0:
            scale = 1.0
        np.subtract(frame, med, out=out[i])
        out[i] *= 1.0 / (softening * scale)
        np.arcsinh(out[i], out=out[i])
        out[i][~valid] = 0.0
    return torch.from_numpy(out)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: Sequence[float] | torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Categorical focal loss (Lin et al. 2017), mean over the pixels not equal to ``ignore_index``.

    ``logits``: (n, C, H, W); ``target``: (n, H, W) integer class indices. Per pixel
    ``−α_t (1 − p_t)^γ log p_t`` with ``p_t`` the softmax probability of the true class and
    ``α_t`` = ``alpha[target]`` (1 when ``alpha`` is None). ``gamma = 0`` and no ``alpha`` is the
    cross-entropy; ``gamma = 2`` down-weights easy (well-classified) pixels. All pixels ignored → 0.
    """
    target = target.long()
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    logp = F.log_softmax(logits.float(), dim=1)
    logp_t = logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    loss = -logp_t
    if gamma:
        loss = loss * (1.0 - logp_t.exp()).clamp_min(0.0).pow(gamma)
    if alpha is not None:
        alpha = torch.as_tensor(alpha, dtype=loss.dtype, device=loss.device)
        loss = loss * alpha[safe]
    n_valid = valid.sum()
    if n_valid == 0:
        return logits.sum() * 0.0
    return (loss * valid).sum() / n_valid


# ----------------------------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """Two 3×3 conv + BatchNorm + ReLU with an identity (or 1×1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Oktay et al. 2018, "Attention U-Net").

    ``alpha = sigmoid(psi(relu(W_x x + W_g g)))`` per pixel, output ``x * alpha``: the decoder
    feature ``g`` (same resolution as the skip ``x`` here, after up-sampling) decides which skip
    pixels pass. ``last_attention`` keeps the latest coefficients (n, 1, H, W) for inspection.
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int):
        super().__init__()
        self.w_x = nn.Conv2d(skip_channels, inter_channels, 1, bias=False)
        self.w_g = nn.Conv2d(gate_channels, inter_channels, 1, bias=True)
        self.psi = nn.Sequential(nn.Conv2d(inter_channels, 1, 1, bias=True), nn.BatchNorm2d(1))
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.psi(F.relu(self.w_x(x) + self.w_g(g))))
        self.last_attention = a.detach()
        return x * a


class ResidualAttentionUNet(nn.Module):
    """Residual attention U-Net for per-pixel classification, (n, in_channels, H, W) → logits (n, n_classes, H, W).

    ``depth`` down-samplings (2×2 max-pool), channels ``base_channels · 2**level``; residual blocks
    at every level; transposed-conv up-sampling; an :class:`AttentionGate` on each skip connection.
    Any H, W: the input is zero-padded (bottom/right) to a multiple of ``2**depth`` and the output
    cropped back. Zero is the normalised background level (:func:`normalise_frames`).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 3, base_channels: int = 8, depth: int = 3):
        super().__init__()
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.config = dict(in_channels=in_channels, n_classes=n_classes, base_channels=base_channels, depth=depth)
        self.depth = depth
        ch = [base_channels * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList([ResidualBlock(in_channels, ch[0])])
        self.encoders.extend(ResidualBlock(ch[i - 1], ch[i]) for i in range(1, depth + 1))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in range(depth))
        self.gates = nn.ModuleList(AttentionGate(ch[i], ch[i], max(ch[i] // 2, 1)) for i in range(depth))
        self.decoders = nn.ModuleList(ResidualBlock(2 * ch[i], ch[i]) for i in range(depth))
        self.head = nn.Conv2d(ch[0], n_classes, 1)

    @property
    def multiple(self) -> int:
        """Input sizes are padded to a multiple of this (``2**depth``)."""
        return 2**self.depth

    def receptive_radius(self) -> int:
        """Half-width (pixels) of the receptive field: outputs farther than this from a tile edge
        do not depend on what lies beyond it (used for the tile overlap)."""
        r = 0
        for level in range(self.depth + 1):  # encoder blocks: two 3x3 convs at stride 2**level
            r += 2 * 2**level
        for level in range(self.depth):  # up-sampling (k=2, s=2) and the decoder blocks
            r += 2**level + 2 * 2**level
        r += sum(2**level for level in range(self.depth))  # pooling windows
        return r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        skips = []
        for level, enc in enumerate(self.encoders):
            x = enc(x)
            if level < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for level in reversed(range(self.depth)):
            g = self.ups[level](x)
            s = self.gates[level](skips[level], g)
            x = self.decoders[level](torch.cat([s, g], dim=1))
        return self.head(x)[..., :h, :w]


class _ChannelScale(nn.Module):
    """A 1×1 convolution from one input channel, as a broadcast multiply-add (oneDNN's
    convolutions with a single input channel are several times slower on a CPU)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        out = conv.out_channels
        self.weight = nn.Parameter(conv.weight.detach().reshape(1, out, 1, 1).clone(), requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(out)
        self.bias = nn.Parameter(bias.reshape(1, out, 1, 1).clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, x, self.weight)


def fuse_for_inference(model: ResidualAttentionUNet) -> ResidualAttentionUNet:
    """An eval-mode copy of ``model`` with every BatchNorm folded into its convolution (and a
    one-input-channel 1×1 shortcut as a multiply-add).

    Same outputs up to float rounding (~1e-6 relative), about 2x faster on a CPU: the BatchNorm
    passes over the full-resolution feature maps are memory-bound.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for mod in fused.modules():
        if isinstance(mod, ResidualBlock):
            mod.conv1, mod.bn1 = fuse_conv_bn_eval(mod.conv1, mod.bn1), nn.Identity()
            mod.conv2, mod.bn2 = fuse_conv_bn_eval(mod.conv2, mod.bn2), nn.Identity()
            if isinstance(mod.shortcut, nn.Sequential):
                mod.shortcut = fuse_conv_bn_eval(mod.shortcut[0], mod.shortcut[1])
                if mod.shortcut.in_channels == 1:
                    mod.shortcut = _ChannelScale(mod.shortcut)
        elif isinstance(mod, AttentionGate):
            mod.psi = fuse_conv_bn_eval(mod.psi[0], mod.psi[1])
    return fused


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, model: ResidualAttentionUNet, metadata: dict | None = None) -> Path:
    """Write ``model``'s weights and metadata to ``path`` atomically; return the path.

    Stored metadata: the caller's keys (training summary, validation metrics, ...) plus
    ``architecture`` (constructor kwargs), ``normalisation`` (:data:`NORMALISATION`), ``classes``,
    ``torch_version``, ``date`` (UTC ISO 8601), unless the caller set them. Metadata must be JSON
    serialisable (it is checked): checkpoints load with ``torch.load(weights_only=True)``.
    """
    meta = dict(metadata or {})
    meta.setdefault("format", "photonflow-peaknet-1")
    meta.setdefault("architecture", dict(model.config))
    meta.setdefault("normalisation", NORMALISATION)
    meta.setdefault("classes", list(CLASSES))
    meta.setdefault("torch_version", torch.__version__)
    meta.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta = json.loads(json.dumps(meta))  # plain types only (and a clear error otherwise)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "metadata": meta}, tmp)
    return Path(path)


def load_checkpoint(
    path: str | os.PathLike | None = None, device: str | torch.device = "auto"
) -> tuple[ResidualAttentionUNet, dict]:
    """Load a checkpoint written by :func:`save_checkpoint` → (model in eval mode on ``device``, metadata).

    ``path=None`` loads the shipped default model (:data:`DEFAULT_CHECKPOINT`).
    """
    path = Path(DEFAULT_CHECKPOINT if path is None else path)
    if not path.is_file():
        raise FileNotFoundError(f"PeakNet checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta = blob["metadata"]
        state = blob["state_dict"]
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise ValueError(f"{path}: not a photonflow PeakNet checkpoint ({type(exc).__name__}: {exc})") from exc
    if meta.get("normalisation", NORMALISATION) != NORMALISATION:
        raise ValueError(
            f"{path}: trained with normalisation {meta['normalisation']!r}, this version has {NORMALISATION!r}"
        )
    model = ResidualAttentionUNet(**meta["architecture"])
    model.load_state_dict(state)
    model.to(resolve_device(device)).eval()
    return model, meta


# ----------------------------------------------------------------------------------------------
# peaks from labels
# ----------------------------------------------------------------------------------------------
_EIGHT = np.ones((3, 3), bool)


def _panel_slices(panel_map: np.ndarray | None):
    """[(panel id, slice of its bounding box)] for a panel map (int array, <0 = no panel)."""
    if panel_map is None:
        return None
    panel_map = np.asarray(panel_map)
    ids = np.unique(panel_map)
    ids = ids[ids >= 0]
    out = []
    for pid in ids:
        rows, cols = np.nonzero(panel_map == pid)
        out.append((int(pid), (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))))
    return out


def label_components(
    peak_mask: np.ndarray, panel_map: np.ndarray | None = None, _slices=None
) -> tuple[np.ndarray, int]:
    """8-connected components of ``peak_mask`` (scipy.ndimage.label), not connected across panels.

    ``panel_map``: int array (H, W) of panel ids (negative: outside every panel); pixels of
    different panels never join one component. Returns (int32 component map, 0 = none; count).
    """
    if panel_map is None:
        comp, n = ndimage.label(peak_mask, structure=_EIGHT)
        return comp.astype(np.int32, copy=False), int(n)
    panel_map = np.asarray(panel_map)
    slices = _slices if _slices is not None else _panel_slices(panel_map)
    comp = np.zeros(peak_mask.shape, np.int32)
    n = 0
    for pid, sl in slices:
        sub = peak_mask[sl] & (panel_map[sl] == pid)
        lab, k = ndimage.label(sub, structure=_EIGHT)
        if k:
            comp[sl][sub] = lab[sub] + n
            n += k
    return comp, n


def peaks_from_labels(
    frame: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    panel_map: np.ndarray | None = None,
    min_pixel_count: int = 2,
    max_pixel_count: int | None = None,
    ring: tuple[int, int] = (2, 5),
    _panel_slices_cache=None,
) -> PeakList:
    """Peaks of one frame from its segmentation (peak class = 1).

    Components: 8-connected peak pixels (not across panels, see :func:`label_components`), kept
    when ``min_pixel_count <= npix <= max_pixel_count``. Local background per peak: the median
    of the raw values in a ring ``ring[0] < d <= ring[1]`` pixels (chessboard distance) around
    the component, excluding peak pixels, masked pixels and other panels; with fewer than 8 such
    pixels, the median of the frame's non-peak, unmasked pixels. ``sigma``: 1.4826 × MAD over
    the same pixels. Per peak: intensity = Σ (x − bg) over its pixels (ADU), centre =
    Σ w·(fs, ss) / Σ w with w = max(x − bg, 0) (slab pixels; the plain centroid of the pixels
    if all w are 0), ``max_intensity`` = max (x − bg), ``snr`` = intensity / sigma.
    """
    frame = np.asarray(frame, dtype=np.float64)
    labels = np.asarray(labels)
    valid = np.isfinite(frame)
    if mask is not None:
        valid &= ~np.asarray(mask, bool)
    peak_mask = (labels == PEAK) & valid
    comp, n = label_components(peak_mask, panel_map, _panel_slices_cache)
    if n == 0:
        return PeakList.empty()
    objects = ndimage.find_objects(comp)
    frame_level: list[float] = []  # frame-wide (median, sigma) of non-peak pixels, computed when first needed

    def frame_background() -> tuple[float, float]:
        if not frame_level:
            px = frame[valid & ~peak_mask]
            med = float(np.median(px)) if px.size else 0.0
            frame_level.extend([med, 1.4826 * float(np.median(np.abs(px - med))) if px.size else 0.0])
        return frame_level[0], frame_level[1]

    r_in, r_out = ring
    h, w = frame.shape
    rows = []
    for k, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        y0, y1 = max(sl[0].start - r_out, 0), min(sl[0].stop + r_out, h)
        x0, x1 = max(sl[1].start - r_out, 0), min(sl[1].stop + r_out, w)
        win = (slice(y0, y1), slice(x0, x1))
        own = comp[win] == k
        npix = int(own.sum())
        if npix < min_pixel_count or (max_pixel_count is not None and npix > max_pixel_count):
            continue
        # chessboard distance from the component, by dilation with square structuring elements
        far = ndimage.binary_dilation(own, structure=np.ones((2 * r_out + 1,) * 2, bool))
        near = ndimage.binary_dilation(own, structure=np.ones((2 * r_in + 1,) * 2, bool)) if r_in > 0 else own
        ring_px = far & ~near & valid[win] & ~peak_mask[win]
        if panel_map is not None:
            pid = panel_map[win][own][0]
            ring_px &= panel_map[win] == pid
        vals = frame[win][ring_px]
        if vals.size >= 8:
            bg = float(np.median(vals))
            sigma = 1.4826 * float(np.median(np.abs(vals - bg)))
        else:
            bg, sigma = frame_background()
        ys, xs = np.nonzero(own)
        x = frame[win][own] - bg
        wgt = np.clip(x, 0.0, None)
        tot_w = wgt.sum()
        if tot_w > 0:
            fs = x0 + float((wgt * xs).sum() / tot_w)
            ss = y0 + float((wgt * ys).sum() / tot_w)
        else:
            fs, ss = x0 + float(xs.mean()), y0 + float(ys.mean())
        intensity = float(x.sum())
        snr = intensity / sigma if sigma > 0 else 0.0
        rows.append((fs, ss, intensity, npix, float(x.max()), snr))
    if not rows:
        return PeakList.empty()
    a = np.array(rows, dtype=np.float64)
    return PeakList(a[:, 0], a[:, 1], a[:, 2], a[:, 3].astype(np.int64), a[:, 4], a[:, 5])


# ----------------------------------------------------------------------------------------------
# inference
# ----------------------------------------------------------------------------------------------
class PeakNetFinder:
    """Find Bragg peaks with a trained :class:`ResidualAttentionUNet`.

    ``checkpoint``: a path, a ``(model, metadata)`` pair, a model, or None (the shipped default
    model). ``batch_size``: tiles (whole frames up to ``tile`` pixels per side) per forward
    pass. ``min_pixel_count``: smallest peak kept (pixels). ``peak_probability``: a pixel is a
    peak where p(peak) ≥ this, otherwise the likelier of background and artifact (None: plain
    argmax). ``panel_map``: int array (H, W) of panel ids, peaks do not cross panels.
    ``tile``: frames larger than this (pixels, per side) are processed in tiles of at most ``tile`` core pixels plus ``halo`` pixels of context on
    every side (default: the receptive radius rounded up to a multiple of ``2**depth``), so
    labels equal a whole-frame pass (see :meth:`_segment_tiles`). ``artifact_dilation``: pixels
    added around the artifact class in :meth:`artifact_mask`. ``max_pass_pixels``: a forward
    pass also holds at most this many input pixels (at least one tile); default 1.5 Mpx on a
    CPU, where larger passes run slower (one 1088² tile per pass: 1.3 s per 1920² frame on 2
    cores, against 1.7 s with 4 tiles per pass), no limit on a GPU.
    """

    def __init__(
        self,
        checkpoint=None,
        device: str | torch.device = "auto",
        batch_size: int = 4,
        min_pixel_count: int = 2,
        peak_probability: float | None = 0.5,
        panel_map: np.ndarray | None = None,
        *,
        max_pixel_count: int | None = None,
        tile: int = 1024,
        halo: int | None = None,
        artifact_dilation: int = 2,
        max_pass_pixels: int | None = None,
    ):
        self.device = resolve_device(device)
        if checkpoint is None or isinstance(checkpoint, (str, os.PathLike)):
            model, meta = load_checkpoint(checkpoint, self.device)
        elif isinstance(checkpoint, tuple):
            model, meta = checkpoint
        elif isinstance(checkpoint, nn.Module):
            model, meta = checkpoint, {"architecture": dict(getattr(checkpoint, "config", {}))}
        else:
            raise TypeError(f"checkpoint must be a path, a model or (model, metadata), got {type(checkpoint).__name__}")
        self.model = model.to(self.device).eval()
        self.metadata = meta
        # inference network: BatchNorm folded into the convolutions, NHWC layout (oneDNN's fast path)
        self._net = fuse_for_inference(self.model).to(memory_format=torch.channels_last)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.min_pixel_count = int(min_pixel_count)
        self.max_pixel_count = max_pixel_count
        self.peak_probability = peak_probability
        self.panel_map = None if panel_map is None else np.asarray(panel_map)
        self._panel_slices = _panel_slices(self.panel_map)
        m = self.model.multiple
        self.tile = int(math.ceil(tile / m) * m)
        if halo is None:
            halo = self.model.receptive_radius()
        self.halo = int(math.ceil(halo / m) * m)
        self.artifact_dilation = int(artifact_dilation)
        if max_pass_pixels is None and self.device.type == "cpu":
            max_pass_pixels = 1_500_000
        self.max_pass_pixels = max_pass_pixels

    # -- network passes --------------------------------------------------------------------
    def _labels_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if self.peak_probability is None:
            return logits.argmax(1).to(torch.uint8)
        prob = torch.softmax(logits.float(), dim=1)
        other = torch.where(prob[:, ARTIFACT] > prob[:, BACKGROUND], ARTIFACT, BACKGROUND)
        return torch.where(prob[:, PEAK] >= self.peak_probability, PEAK, other).to(torch.uint8)

    def _forward(self, x: torch.Tensor, probabilities: bool = False) -> np.ndarray:
        """Labels (uint8 (b, H, W)) or probabilities (float32 (b, C, H, W)) of a batch of
        normalised inputs (b, H, W): one forward pass."""
        x = x.to(self.device, non_blocking=True).unsqueeze(1).contiguous(memory_format=torch.channels_last)
        logits = self._net(x)
        if probabilities:
            return torch.softmax(logits.float(), dim=1).cpu().numpy()
        return self._labels_from_logits(logits).cpu().numpy()

    def segment(self, frames, mask=None) -> np.ndarray:
        """Per-pixel classes (uint8 (n, H, W); 0 background, 1 peak, 2 artifact); masked pixels → 0."""
        return self._run(frames, mask, probabilities=False)

    def probabilities(self, frames, mask=None) -> np.ndarray:
        """Softmax class probabilities, float32 (n, 3, H, W) (masked pixels: background 1)."""
        return self._run(frames, mask, probabilities=True)

    def _run(self, frames, mask, probabilities: bool) -> np.ndarray:
        frames, _ = _as_frames(frames)
        n, h, w = frames.shape
        masks = _as_masks(mask, (n, h, w))
        n_classes = self.model.config["n_classes"]
        out = np.zeros((n, n_classes, h, w) if probabilities else (n, h, w), np.float32 if probabilities else np.uint8)
        with torch.inference_mode():
            # normalise a batch of frames at a time (bounded memory for long runs)
            for i0 in range(0, n, self.batch_size):
                i1 = min(i0 + self.batch_size, n)
                x = normalise_frames(frames[i0:i1], None if masks is None else masks[i0:i1])
                self._segment_tiles(x, out[i0:i1], probabilities)
        if masks is not None:
            if probabilities:
                out.transpose(1, 0, 2, 3)[:, masks] = 0.0
                out[:, BACKGROUND][masks] = 1.0
            else:
                out[masks] = BACKGROUND
        return out

    def tiling(self, h: int, w: int) -> tuple[int, int]:
        """Tile core size (rows, cols) for an (h, w) frame: the frame split evenly into
        ⌈h / tile⌉ × ⌈w / tile⌉ cores, each rounded up to a multiple of ``2**depth``."""
        m = self.model.multiple

        def core(size: int) -> int:
            n_tiles = math.ceil(size / self.tile)
            return math.ceil(math.ceil(size / n_tiles) / m) * m

        return core(h), core(w)

    def _segment_tiles(self, x: torch.Tensor, out: np.ndarray, probabilities: bool = False) -> None:
        """Labels of normalised frames x (b, H, W) into ``out``.

        Definition: the frame is embedded in zeros (the normalised background level, as masked
        pixels) ``halo`` pixels wide on every side and passed through the network. A frame larger
        than ``tile`` is cut into tile cores (:meth:`tiling`) each passed with ``halo`` pixels of
        context on every side; cores start at multiples of ``2**depth`` and ``halo`` exceeds the
        receptive radius, so the tiled labels equal the whole-frame ones (up to float rounding).
        ``batch_size`` tiles go through the network at a time.
        """
        b, h, w = x.shape
        p = self.halo
        cy, cx = self.tiling(h, w)
        ys, zs = range(0, h, cy), range(0, w, cx)
        xp = F.pad(x, (p, p + len(zs) * cx - w, p, p + len(ys) * cy - h))
        jobs = [(i, y, z) for i in range(b) for y in ys for z in zs]
        per_pass = self.batch_size
        if self.max_pass_pixels:
            per_pass = max(1, min(per_pass, self.max_pass_pixels // ((cy + 2 * p) * (cx + 2 * p))))
        for j0 in range(0, len(jobs), per_pass):
            chunk = jobs[j0 : j0 + per_pass]
            batch = torch.stack([xp[i, y : y + cy + 2 * p, z : z + cx + 2 * p] for i, y, z in chunk])
            result = self._forward(batch, probabilities)
            for (i, y, z), res in zip(chunk, result):
                hh, ww = min(cy, h - y), min(cx, w - z)
                out[i, ..., y : y + hh, z : z + ww] = res[..., p : p + hh, p : p + ww]

    # -- peaks and masks -------------------------------------------------------------------
    def peaks_from_labels(self, frames, labels, mask=None) -> list[PeakList]:
        """Peak lists of frames (n, H, W) from given labels (n, H, W); see :func:`peaks_from_labels`."""
        frames, _ = _as_frames(np.asarray(frames))
        labels, _ = _as_frames(np.asarray(labels))
        masks = _as_masks(mask, frames.shape)
        return [
            peaks_from_labels(
                frames[i],
                labels[i],
                None if masks is None else masks[i],
                panel_map=self.panel_map,
                min_pixel_count=self.min_pixel_count,
                max_pixel_count=self.max_pixel_count,
                _panel_slices_cache=self._panel_slices,
            )
            for i in range(len(frames))
        ]

    def find_with_labels(self, frames, mask=None) -> tuple[list[PeakList], np.ndarray]:
        """One forward pass → (peak list per frame, labels uint8 (n, H, W))."""
        frames, _ = _as_frames(np.asarray(frames))
        labels = self.segment(frames, mask)
        return self.peaks_from_labels(frames, labels, mask), labels

    def find(self, frames, mask=None) -> list[PeakList]:
        """Peak list per frame (a list of length n; one element for an (H, W) frame)."""
        return self.find_with_labels(frames, mask)[0]

    def artifact_mask_from_labels(self, labels: np.ndarray) -> np.ndarray:
        """Artifact class dilated by ``artifact_dilation`` pixels (square element): bool, True = mask."""
        labels, single = _as_frames(np.asarray(labels))
        art = labels == ARTIFACT
        if self.artifact_dilation > 0:
            el = np.ones((1, 2 * self.artifact_dilation + 1, 2 * self.artifact_dilation + 1), bool)
            art = ndimage.binary_dilation(art, structure=el)
        return art

    def artifact_mask(self, frames, mask=None) -> np.ndarray:
        """Automatic mask (bool (n, H, W), True = masked) where the network says artifact, dilated."""
        return self.artifact_mask_from_labels(self.segment(frames, mask))
