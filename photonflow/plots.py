"""PNG plots a person would rather look at than read (matplotlib, no display needed)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "plot_integral_parameters",
    "plot_curves",
    "plot_hit_rate",
    "plot_peak_overlay",
    "plot_mask",
    "plot_scan_map",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_integral_parameters(rows: list[dict], path, title: str = "Integral parameters") -> str:
    """Integral intensity, invariant and correlation length against frame time (as SAXSLEASH's
    history tab), one line per integration; ``rows`` as produced by photonflow.saxs."""
    from .io.atomic import atomic_path

    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    names = sorted({r["integration"] for r in rows})
    t0 = min((r["time"] for r in rows if np.isfinite(r["time"])), default=0.0)
    panels = [
        ("I0", "integral intensity I0"),
        ("I2", "invariant I2"),
        ("correlation_length_nm", "correlation length (nm)"),
    ]
    for name in names:
        sel = sorted((r for r in rows if r["integration"] == name), key=lambda r: (r["time"], r["frame"]))
        t = np.array([r["time"] - t0 for r in sel])
        for ax, (key, label) in zip(axes, panels):
            ax.plot(t, [r[key] for r in sel], ".-", ms=3, lw=0.8, label=name)
            ax.set_ylabel(label)
    axes[-1].set_xlabel("frame time (s since first frame)")
    axes[0].set_title(title)
    if len(names) > 1:
        axes[0].legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return str(path)


def plot_curves(q, curves, labels, path, title: str = "I(q)", sigma=None) -> str:
    """Log–log I(q) curves (q in nm⁻¹) with error bands when ``sigma`` is given."""
    from .io.atomic import atomic_path

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (curve, label) in enumerate(zip(curves, labels)):
        ok = np.isfinite(curve) & (curve > 0) & (q > 0)
        ax.plot(q[ok], curve[ok], lw=1, label=label)
        if sigma is not None:
            s = sigma[i][ok]
            ax.fill_between(q[ok], np.clip(curve[ok] - s, curve[ok] * 1e-3, None), curve[ok] + s, alpha=0.25, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("q (nm$^{-1}$)")
    ax.set_ylabel("intensity (counts/pixel)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return str(path)


def _save(fig, path) -> str:
    from .io.atomic import atomic_path

    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return str(path)


def plot_hit_rate(rows: list[dict], path, window: int = 50, title: str = "Serial crystallography run") -> str:
    """Peaks per frame (hits marked), rolling hit rate (%) over ``window`` frames and the
    per-frame resolution (Å) against frame number; ``rows`` as produced by photonflow.sfx."""
    plt = _pyplot()
    n_peaks = np.array([r["n_peaks"] for r in rows], dtype=float)
    hit = np.array([r["hit"] for r in rows], dtype=bool)
    res = np.array([r["resolution_A"] for r in rows], dtype=float)
    x = np.arange(len(rows))
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    axes[0].plot(x[~hit], n_peaks[~hit], ".", ms=3, color="0.6", label="not a hit")
    axes[0].plot(x[hit], n_peaks[hit], ".", ms=3, color="C3", label="hit")
    axes[0].set_ylabel("peaks per frame")
    axes[0].legend(fontsize="small", loc="upper right")
    w = max(1, min(window, len(rows)))
    rolling = np.convolve(hit.astype(float), np.ones(w) / w, mode="valid") * 100.0
    axes[1].plot(np.arange(len(rolling)) + (w - 1), rolling, "-", color="C0")
    axes[1].set_ylabel(f"hit rate (%), {w} frames")
    axes[1].set_ylim(0, 100)
    axes[2].plot(x[hit], res[hit], ".", ms=3, color="C2")
    axes[2].set_ylabel("resolution of hits (Å)")
    axes[2].set_xlabel("frame (processing order)")
    axes[0].set_title(
        f"{title}: {int(hit.sum())} hits in {len(rows)} frames ({100.0 * hit.mean() if len(rows) else 0:.1f} %)"
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_peak_overlay(frames, peak_lists, labels: list[str], path, title: str = "Peaks on hits") -> str:
    """Up to four frames (log colour scale) with their peaks circled."""
    plt = _pyplot()
    n = max(1, min(4, len(frames)))
    cols = 2 if n > 1 else 1
    rows = (n + 1) // 2
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 6 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(frames) or k >= n:
            ax.axis("off")
            continue
        img = np.asarray(frames[k], dtype=float)
        finite = img[np.isfinite(img)]
        lo, hi = np.percentile(finite, [1, 99.8]) if finite.size else (0.0, 1.0)
        ax.imshow(
            np.log1p(np.clip(img - lo, 0, None)),
            cmap="gray_r",
            vmin=0,
            vmax=np.log1p(max(hi - lo, 1.0)),
            origin="upper",
            interpolation="nearest",
        )
        peaks = peak_lists[k]
        ax.scatter(peaks.fs, peaks.ss, s=60, facecolors="none", edgecolors="C3", linewidths=0.8)
        ax.set_title(f"{labels[k]}: {len(peaks)} peaks", fontsize="small")
        ax.set_xlabel("fs (pixels)")
        ax.set_ylabel("ss (pixels)")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_mask(mask_fraction, path, title: str = "Artifact mask") -> str:
    """Fraction of frames in which each pixel was marked artifact."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(mask_fraction, cmap="magma", vmin=0, vmax=1, origin="upper", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="fraction of frames marked artifact")
    ax.set_title(title)
    ax.set_xlabel("fs (pixels)")
    ax.set_ylabel("ss (pixels)")
    fig.tight_layout()
    return _save(fig, path)


def plot_scan_map(
    values, path, title: str, label: str, extent=None, cmap: str = "viridis", vmin=None, vmax=None
) -> str:
    """One raster-scan map (rows = map rows, from the top); grey where there is no value.
    ``extent`` (x0, x1, y0, y1) in µm puts the axes in sample coordinates, else map indices."""
    plt = _pyplot()
    values = np.ma.masked_invalid(np.asarray(values, dtype=float))
    fig, ax = plt.subplots(figsize=(6.5, 5))
    colours = plt.get_cmap(cmap).with_extremes(bad="0.8")
    im = ax.imshow(
        values,
        cmap=colours,
        origin="upper",
        interpolation="nearest",
        vmin=vmin,
        vmax=vmax,
        extent=extent,
        aspect="auto" if extent is not None else "equal",
    )
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(title)
    ax.set_xlabel("x (µm)" if extent is not None else "map column")
    ax.set_ylabel("y (µm)" if extent is not None else "map row")
    if extent is None:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save(fig, path)
