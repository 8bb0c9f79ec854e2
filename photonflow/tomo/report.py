"""The PDF report of a reconstruction (reportlab), as the DanMAX pipeline ends each one.

Page 1: the dataset and the run (files, shapes, sizes, backend, centre, the corrections and their
parameters, timings per stage). Page 2: a raw projection and a raw sinogram next to the corrected
ones. Page 3: three orthogonal slices through the volume (the slow axis — along the rows —
subsampled when read), with their intensity scale.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np


def _png(
    images, titles, suptitle: str, cmap: str = "gray", figsize=(7.5, 3.6), colorbar_label: str | None = None
) -> bytes:
    from photonflow.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(images), figsize=figsize, squeeze=False)
    for ax, img, title in zip(axes[0], images, titles):
        img = np.asarray(img, dtype=np.float64)
        finite = img[np.isfinite(img)]
        lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (0, 1)
        im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1, aspect="auto", interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
        if colorbar_label:
            cb = fig.colorbar(im, ax=ax, fraction=0.046)
            cb.ax.tick_params(labelsize=6)
            cb.set_label(colorbar_label, fontsize=7)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def orthogonal_slices(volume, slow_step: int = 1) -> dict[str, np.ndarray]:
    """Three central orthogonal slices of a (z, y, x) volume (an array or HDF5 dataset): xy at the
    middle z, xz and yz through the middle, read with every ``slow_step``-th z."""
    z, y, x = volume.shape
    return {
        "xy": np.asarray(volume[z // 2]),
        "xz": np.asarray(volume[::slow_step, y // 2, :]),
        "yz": np.asarray(volume[::slow_step, :, x // 2]),
    }


def _table(rows, widths):
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    t = Table(rows, colWidths=widths)
    t.setStyle(
        TableStyle(
            [
                ("FONTSIZE", (0, 0), (-1, -1), 8),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                ("BACKGROUND", (0, 0), (0, -1), colors.whitesmoke),
            ]
        )
    )
    return t


def write_report(
    path,
    *,
    title: str,
    dataset: dict,
    parameters: dict,
    timings: dict,
    raw_projection,
    raw_sinogram,
    corrected_projection,
    corrected_sinogram,
    slices: dict[str, np.ndarray],
    value_label: str,
    notes: list[str] | None = None,
) -> Path:
    """Write the PDF. ``dataset``: facts about the input and output (shapes, sizes, files);
    ``parameters``: the corrections and settings applied (nested dicts are shown as JSON);
    ``timings``: seconds per stage; images as 2D arrays; ``slices``: from :func:`orthogonal_slices`;
    ``value_label``: the volume's unit (e.g. "μ (1/px)" or "uint16 of [a, b] 1/px")."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.platypus import Image, PageBreak, Paragraph, SimpleDocTemplate, Spacer

    from photonflow.io.atomic import atomic_path

    styles = getSampleStyleSheet()
    story = [Paragraph(title, styles["Title"])]
    story.append(Paragraph("Dataset", styles["Heading2"]))
    story.append(_table([[k, Paragraph(str(v), styles["BodyText"])] for k, v in dataset.items()], [5 * cm, 12 * cm]))
    story.append(Paragraph("Corrections and parameters", styles["Heading2"]))
    rows = []
    for k, v in parameters.items():
        text = json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)
        rows.append([k, Paragraph(text if v not in (None, False, {}) else "off", styles["BodyText"])])
    story.append(_table(rows, [5 * cm, 12 * cm]))
    story.append(Paragraph("Timings per stage", styles["Heading2"]))
    total = sum(v for v in timings.values() if isinstance(v, (int, float)))
    story.append(
        _table(
            [[k, f"{v:.2f} s ({100 * v / total:.0f} %)" if total else f"{v:.2f} s"] for k, v in timings.items()]
            + [["total", f"{total:.2f} s"]],
            [5 * cm, 12 * cm],
        )
    )
    for note in notes or []:
        story.append(Spacer(1, 4))
        story.append(Paragraph(note, styles["BodyText"]))
    story.append(PageBreak())
    png = _png(
        [raw_projection, corrected_projection], ["raw projection (counts)", "corrected projection"], "Projections"
    )
    story.append(Image(io.BytesIO(png), width=17 * cm, height=8.2 * cm))
    png = _png(
        [raw_sinogram, corrected_sinogram],
        ["raw sinogram (counts)", "corrected sinogram (−log)"],
        "Sinograms (angle down, detector column across)",
    )
    story.append(Image(io.BytesIO(png), width=17 * cm, height=8.2 * cm))
    story.append(PageBreak())
    png = _png(
        [slices["xy"], slices["xz"], slices["yz"]],
        ["xy (middle row)", "xz", "yz"],
        "Orthogonal slices",
        figsize=(9, 3.4),
        colorbar_label=value_label,
    )
    story.append(Image(io.BytesIO(png), width=18 * cm, height=6.8 * cm))
    path = Path(path)
    with atomic_path(path) as tmp:
        SimpleDocTemplate(
            str(tmp),
            pagesize=A4,
            title=title,
            leftMargin=1.5 * cm,
            rightMargin=1.5 * cm,
            topMargin=1.5 * cm,
            bottomMargin=1.5 * cm,
        ).build(story)
    return path
