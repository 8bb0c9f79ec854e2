"""PNG plots a person would rather look at than read (matplotlib, no display needed)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_integral_parameters", "plot_curves"]


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
    panels = [("I0", "integral intensity I0"), ("I2", "invariant I2"), ("correlation_length_nm", "correlation length (nm)")]
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
