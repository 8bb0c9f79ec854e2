"""Contact sheets: PNG pages of frame thumbnails for checking labels by eye (no GUI toolkit needed).

Each cell of a page shows one frame (log colour scale, scaled to fit ``thumb`` × ``thumb`` pixels)
with

* its id number (top left), the number to give :func:`photonflow.classify.labels.labels_from_ids`
  (or ``python -m photonflow.classify.labels``) to write a label list;
* a border in its label's colour: green good, red bad, grey unlabelled/undecided;
* the ROI box (yellow) when the thumbnails are whole frames;
* under the image, a strip with the ROI's column profile (light dots), its polynomial fit (orange)
  and the fit's inflection points (magenta ticks).

Page size in pixels: ``columns · thumb`` wide and ``HEADER + rows · (thumb + strip)`` high, where
``strip = max(20, thumb // 4)`` and ``rows`` is the number of rows used on that page
(:func:`sheet_size`). More frames than ``columns · rows_per_page`` go to further pages:
``name_p01.png``, ``name_p02.png``, … (a single page keeps the name given). When the frames come
as refs, a candidate list ``name.lst`` (one ``file //event`` per id, in id order) is written beside
the pages, so that ids read off the sheet map back to events. Matplotlib's Agg backend only; every
file is written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from ..io.images import FrameReadError, read_frame
from .autolabel import AutoLabels, column_profile, evaluate_fits, fit_profiles, inflection_points
from .features import Roi
from .labels import write_label_list

__all__ = ["HEADER", "contact_sheet", "sheet_size", "thumbnail"]

HEADER = 24
_BORDER = 3
_COLOURS = {1: (0.15, 0.75, 0.25), 0: (0.90, 0.15, 0.15), -1: (0.55, 0.55, 0.55)}
_BACKGROUND = 0.12
_STRIP = 0.22


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _strip_height(thumb: int) -> int:
    return max(20, thumb // 4)


def sheet_size(n: int, columns: int = 8, thumb: int = 160) -> tuple[int, int]:
    """``(width, height)`` in pixels of a page holding ``n`` frames."""
    rows = max(1, math.ceil(n / columns))
    return columns * thumb, HEADER + rows * (thumb + _strip_height(thumb))


def thumbnail(frame: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """A frame scaled to fit ``size`` × ``size`` (block mean down, pixel repeat up), log scaled to
    [0, 1]; returns ``(image, scale)`` with scale = thumbnail pixels per frame pixel."""
    img = np.asarray(frame, dtype=np.float32)
    img = np.where(np.isfinite(img), img, 0.0)
    h, w = img.shape
    big = max(h, w)
    if big > size:
        f = math.ceil(big / size)
        hb, wb = max(1, h // f), max(1, w // f)
        img = img[: hb * f, : wb * f].reshape(hb, f, wb, f).mean(axis=(1, 3))
        scale = 1.0 / f
    else:
        u = max(1, size // big)
        img = np.repeat(np.repeat(img, u, axis=0), u, axis=1)
        scale = float(u)
    lo = np.percentile(img, 1.0) if img.size else 0.0
    v = np.log1p(np.clip(img - lo, 0, None))
    top = np.percentile(v, 99.5) if v.size else 0.0
    return (np.clip(v / top, 0, 1) if top > 0 else np.zeros_like(v)), scale


def _as_labels(labels, n: int) -> np.ndarray:
    if labels is None:
        return np.full(n, -1, np.int8)
    labels = list(labels)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} frames")
    out = np.full(n, -1, np.int8)
    for i, v in enumerate(labels):
        if v is not None and int(v) in (0, 1):
            out[i] = int(v)
    return out


def _load(refs, roi: Roi | None, whole: bool, dataset):
    """Frames (whole or ROI) of refs; a message instead of the array where one cannot be read."""
    frames: list = []
    for ref in refs:
        path, event = os.fspath(ref[0]), ref[1]
        try:
            frame = read_frame(path, event, dataset)
        except FrameReadError as exc:
            frames.append(f"unreadable: {exc.reason}")
            continue
        if roi is not None and not roi.fits(frame.shape):
            frames.append(f"{roi} outside the {frame.shape[0]} x {frame.shape[1]} frame")
        elif roi is not None and not whole:
            frames.append(np.asarray(frame[roi.slices], np.float32))
        else:
            frames.append(np.asarray(frame, np.float32))
    return frames


def contact_sheet(
    frames,
    path: str | os.PathLike,
    roi: Roi | None = None,
    labels=None,
    fits=None,
    ids: Sequence | None = None,
    columns: int = 8,
    thumb: int = 160,
    rows_per_page: int = 6,
    order: int = 4,
    whole: bool = True,
    dataset: str | None = None,
    title: str | None = None,
    candidates_path: str | os.PathLike | bool | None = None,
) -> list[str]:
    """Write contact-sheet page(s) of ``frames``; return the PNG paths (see the module doc).

    ``frames``: an array ``(n, h, w)`` (whole frames, or ROI images when ``roi`` is None or has
    their shape), a list of 2D arrays, or refs ``(path, event)`` read here (``whole=True``: whole
    frames with the ROI box drawn; False: the ROI only). ``roi``: where the profile is taken (None:
    the whole image). ``labels``: per frame 1 good / 0 bad / −1 or None unlabelled, or an
    :class:`~photonflow.classify.autolabel.AutoLabels` (labels, fits and inflection points taken
    from it; its refs are the frames when ``frames`` is None). ``fits``: ``(n, order + 1)``
    coefficients of :func:`~photonflow.classify.autolabel.fit_profiles`; None fits ``order`` here;
    False draws no fit. ``ids``: the numbers printed (default 0..n−1). ``candidates_path``: where
    the candidate list goes for refs (default ``<path without suffix>.lst``; False: none).
    """
    inflections = None
    if isinstance(labels, AutoLabels):
        auto = labels
        if frames is None:
            frames = auto.refs
        if roi is None:
            roi = auto.roi
        labels, inflections = auto.labels, auto.inflections
        if fits is None:
            fits = auto.coefficients
    refs = None
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        images = list(frames)
    elif (
        len(frames)
        and isinstance(frames[0], (tuple, list))
        and len(frames[0]) == 2
        and isinstance(frames[0][0], (str, os.PathLike))
    ):  # refs (path, event)
        refs = [(os.fspath(r[0]), r[1]) for r in frames]
        images = _load(refs, roi, whole, dataset)
    else:
        images = [np.asarray(f) if not isinstance(f, str) else f for f in frames]
    n = len(images)
    lab = _as_labels(labels, n)
    ids = list(range(n)) if ids is None else list(ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} frames")
    columns, thumb, rows_per_page = max(1, int(columns)), max(16, int(thumb)), max(1, int(rows_per_page))

    # profiles, fits and inflection points (in ROI column pixels 0..w-1)
    profiles: list = []
    for img in images:
        if isinstance(img, str):
            profiles.append(None)
        elif roi is not None and img.shape != roi.shape:
            profiles.append(column_profile(img[roi.slices])[0])
        else:
            profiles.append(column_profile(img)[0])
    widths = {len(p) for p in profiles if p is not None}
    curves: list = [None] * n
    points: list = [None] * n
    if fits is not False and len(widths) == 1:
        w = widths.pop()
        have = [i for i, p in enumerate(profiles) if p is not None]
        if fits is None:
            if w >= order + 1 and have:
                coef = np.full((n, order + 1), np.nan)
                coef[have] = fit_profiles(np.array([profiles[i] for i in have]), order)
            else:
                coef = None
        else:
            coef = np.atleast_2d(np.asarray(fits, dtype=np.float64))
            if len(coef) != n:
                raise ValueError(f"{len(coef)} fits for {n} frames")
        if coef is not None:
            fitted = evaluate_fits(coef, w)
            pts = inflection_points(coef, (0, w - 1))
            for i in have:
                curves[i] = fitted[i]
                if inflections is not None and roi is not None:  # AutoLabels: slab fs → ROI columns
                    points[i] = np.asarray(inflections[i]) - roi.fs0
                else:
                    points[i] = pts[i]

    path = Path(path)
    per_page = columns * rows_per_page
    n_pages = max(1, math.ceil(n / per_page))
    outputs = []
    for page in range(n_pages):
        sel = range(page * per_page, min(n, (page + 1) * per_page))
        out = path if n_pages == 1 else path.with_name(f"{path.stem}_p{page + 1:02d}{path.suffix or '.png'}")
        head = title or "Contact sheet"
        head = (
            f"{head}: frames {ids[sel[0]] if len(sel) else ''}–{ids[sel[-1]] if len(sel) else ''}"
            f" ({n} in all, page {page + 1}/{n_pages}) · border: green good, red bad, grey unlabelled"
        )
        _draw_page(
            out,
            [images[i] for i in sel],
            [profiles[i] for i in sel],
            [curves[i] for i in sel],
            [points[i] for i in sel],
            lab[list(sel)],
            [ids[i] for i in sel],
            roi,
            columns,
            thumb,
            head,
        )
        outputs.append(str(out))
    if refs is not None and candidates_path is not False:
        cand = path.with_suffix(".lst") if candidates_path in (None, True) else Path(candidates_path)
        write_label_list(cand, refs)
    return outputs


def _draw_page(path, images, profiles, curves, points, labels, ids, roi, columns, thumb, head) -> None:
    from matplotlib.collections import LineCollection

    plt = _pyplot()
    strip = _strip_height(thumb)
    width, height = sheet_size(len(images), columns, thumb)
    canvas = np.full((height, width, 3), _BACKGROUND, np.float32)
    inner = thumb - 2 * _BORDER
    boxes, prof_lines, fit_lines, ticks, texts = [], [], [], [], []
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        x0, y0 = c * thumb, HEADER + r * (thumb + strip)
        canvas[y0 : y0 + thumb + strip, x0 : x0 + thumb] = _COLOURS[int(labels[k])]
        canvas[y0 + _BORDER : y0 + thumb - _BORDER, x0 + _BORDER : x0 + thumb - _BORDER] = 0.0
        canvas[y0 + thumb : y0 + thumb + strip - _BORDER, x0 + _BORDER : x0 + thumb - _BORDER] = _STRIP
        texts.append((x0 + _BORDER + 2, y0 + _BORDER + 1, str(ids[k])))
        if isinstance(img, str):
            texts.append((x0 + _BORDER + 2, y0 + thumb // 2, img[:40]))
            continue
        t, scale = thumbnail(img, inner)
        th, tw = t.shape
        ox = x0 + _BORDER + (inner - tw) // 2
        oy = y0 + _BORDER + (inner - th) // 2
        canvas[oy : oy + th, ox : ox + tw] = t[:, :, None]
        if roi is not None and img.shape != roi.shape:  # a whole frame: draw the ROI box
            bx0, bx1 = ox + roi.fs0 * scale, ox + roi.fs1 * scale
            by0, by1 = oy + roi.ss0 * scale, oy + roi.ss1 * scale
            boxes.append([(bx0, by0), (bx1, by0), (bx1, by1), (bx0, by1), (bx0, by0)])
        prof = profiles[k]
        if prof is None or not np.isfinite(prof).any():
            continue
        sx0, sx1 = x0 + _BORDER + 1, x0 + thumb - _BORDER - 1
        sy0, sy1 = y0 + thumb + 2, y0 + thumb + strip - _BORDER - 2
        curve = curves[k]
        both = prof if curve is None else np.concatenate([prof, curve])
        both = both[np.isfinite(both)]
        lo, hi = float(both.min()), float(both.max())
        span = hi - lo if hi > lo else 1.0
        xs = np.linspace(sx0, sx1, len(prof))

        def ys(v, lo=lo, span=span, sy0=sy0, sy1=sy1):
            return sy1 - (np.asarray(v) - lo) / span * (sy1 - sy0)

        prof_lines.append(np.column_stack([xs, ys(prof)]))
        if curve is not None and np.isfinite(curve).all():
            fit_lines.append(np.column_stack([xs, ys(curve)]))
        if points[k] is not None and len(prof) > 1:
            for p in points[k]:
                px = sx0 + p / (len(prof) - 1) * (sx1 - sx0)
                ticks.append([(px, sy0), (px, sy1)])

    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(canvas, extent=(0, width, height, 0), interpolation="nearest", cmap="gray", vmin=0, vmax=1)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    if boxes:
        ax.add_collection(LineCollection(boxes, colors="yellow", linewidths=0.8))
    if prof_lines:
        ax.add_collection(LineCollection(prof_lines, colors="0.85", linewidths=0.6))
    if fit_lines:
        ax.add_collection(LineCollection(fit_lines, colors="orange", linewidths=1.0))
    if ticks:
        ax.add_collection(LineCollection(ticks, colors="magenta", linewidths=0.8))
    for x, y, s in texts:
        ax.text(
            x,
            y,
            s,
            color="white",
            fontsize=7,
            va="top",
            ha="left",
            bbox={"boxstyle": "square,pad=0.1", "fc": "black", "ec": "none", "alpha": 0.6},
        )
    ax.text(4, HEADER / 2, head, color="white", fontsize=8, va="center", ha="left")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
