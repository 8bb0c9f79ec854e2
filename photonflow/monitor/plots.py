"""The monitor's plots: small PNGs (a JPEG for detector images) drawn on the server with matplotlib (object API, Agg canvas,
no pyplot state, so the web server's threads can draw), from what :class:`RunStore` reads.

``render(store, run_id, name, params)`` → image bytes (:func:`media_type` tells which); ``name`` is one of :data:`PLOTS`. Raises
:class:`MonitorError` (404) when the run has nothing to draw for that plot yet.
"""

from __future__ import annotations

import io
import math
import threading

import numpy as np

from .runs import MonitorError, RunStore

__all__ = ["PLOTS", "media_type", "render"]

PLOTS = {
    "progress": "frames arrived / done / failed over time and the processing rate",
    "saxs-curve": "the latest I(q) curve (log-log) and a selected earlier one (?sel=INDEX)",
    "saxs-params": "integral intensity, invariant and correlation length against frame time",
    "sfx-hits": "hit rate and peaks per frame over the run",
    "sfx-latest-hit": "the latest hit with its peaks circled",
    "laue-maps": "maps of good-spot count and mean Sim as the scan fills in",
    "tomo-slices": "three orthogonal slices through the reconstructed volume",
}
_LOCK = threading.Lock()  # matplotlib's font cache and text layout are not thread-safe
DPI = 80


def _figure(w: float = 6.0, h: float = 3.4):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=DPI)


def _png(fig, fmt: str = "png") -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    options = {"pil_kwargs": {"quality": 85}} if fmt == "jpeg" else {}
    fig.savefig(buf, format=fmt, dpi=DPI, **options)
    return buf.getvalue()


def media_type(data: bytes) -> str:
    """image/png, or image/jpeg for the detector images (noise makes PNGs of them ten times bigger)."""
    return "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png"


def render(store: RunStore, run_id: str, name: str, params: dict | None = None) -> bytes:
    """The PNG of plot ``name`` for run ``run_id``."""
    params = params or {}
    if name not in PLOTS:
        raise MonitorError(f"no plot {name!r}; plots: {', '.join(PLOTS)}", status=404)
    info = store.run(run_id)
    if name not in info["plots"]:
        raise MonitorError(f"run {info['name']!r} ({info['kind']}) has no {name!r} plot yet", status=404)
    draw = {"progress": _progress, "saxs-curve": _saxs_curve, "saxs-params": _saxs_params, "sfx-hits": _sfx_hits,
            "sfx-latest-hit": _sfx_latest_hit, "laue-maps": _laue_maps, "tomo-slices": _tomo_slices}[name]
    with _LOCK:
        fig = draw(store, run_id, info, params)
        fig.tight_layout()
        return _png(fig, "jpeg" if name == "sfx-latest-hit" else "png")


def _progress(store, run_id, info, params):
    h = np.asarray(info["history"], float).reshape(-1, 4)
    unit = info.get("unit") or "frames"
    if not len(h):  # an older run: its final counts only
        fig = _figure(6.0, 2.4)
        ax = fig.subplots()
        ax.barh(["failed", "skipped", "done"], [info["failed"], info["skipped"], info["done"]],
                color=["tab:red", "0.6", "tab:green"])
        ax.set_xlabel(unit)
        ax.set_title(f"{info['done']} {unit} done, {info['failed']} failed (final counts)", fontsize="medium")
        return fig
    fig = _figure(6.0, 3.6)
    ax, ax_rate = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    t = h[:, 0]
    ax.plot(t, h[:, 1], "-", color="0.5", label="arrived")
    ax.plot(t, h[:, 2], "-", color="tab:green", label="done")
    ax.plot(t, h[:, 3], "-", color="tab:red", label="failed")
    if len(h) > 1 and t[-1] > t[0]:  # the rate over bins of at least 1 s (batches finish in bursts)
        span = t[-1] - t[0]
        edges = np.arange(t[0], t[-1], max(span / 100, min(1.0, span)))
        edges = np.append(edges, t[-1])
        done = np.interp(edges, t, h[:, 2])
        ax_rate.stairs(np.diff(done) / np.diff(edges), edges, color="tab:blue", baseline=None)
    if info.get("total"):
        ax.axhline(info["total"], color="0.7", ls=":", lw=1)
    ax.set_ylabel(unit)
    ax.legend(fontsize="small", loc="upper left")
    ax.set_title(f"{info['done']} of {info['total'] if info['total'] is not None else '?'} {unit} done, "
                 f"{info['failed']} failed", fontsize="medium")
    ax_rate.set_ylim(bottom=0)
    ax_rate.set_ylabel(f"{unit}/s")
    ax_rate.set_xlabel("seconds since start")
    return fig


def _read_curve(path):
    from photonflow.io import read_chi

    q, intensity, sigma, _ = read_chi(path)
    return np.asarray(q, float), np.asarray(intensity, float)


def _saxs_curve(store, run_id, info, params):
    curves = store.curve_paths(run_id)
    if not curves:
        raise MonitorError("no I(q) curve readable yet", status=404)
    picks = [len(curves) - 1]
    sel = params.get("sel")
    if sel not in (None, ""):
        try:
            k = int(sel)
        except ValueError:
            raise MonitorError(f"sel={sel!r}: expected a curve index", status=400) from None
        if not -len(curves) <= k < len(curves):
            raise MonitorError(f"sel={k}: the run has {len(curves)} curves (0 .. {len(curves) - 1})", status=404)
        k %= len(curves)
        if k != picks[0]:
            picks.insert(0, k)
    fig = _figure(6.0, 3.8)
    ax = fig.subplots()
    styles = [("tab:gray", 1.0), ("tab:blue", 1.4)] if len(picks) == 2 else [("tab:blue", 1.4)]
    for (label, path), (color, lw), k in zip((curves[i] for i in picks), styles, picks):
        try:
            q, intensity = _read_curve(path)
        except Exception as exc:  # noqa: BLE001 - being written or corrupt: say so on the plot
            ax.text(0.5, 0.5, f"{label}: unreadable ({type(exc).__name__})", transform=ax.transAxes, ha="center")
            continue
        ok = np.isfinite(intensity) & (intensity > 0) & (q > 0)
        tag = "latest" if k == len(curves) - 1 else f"#{k}"
        ax.plot(q[ok], intensity[ok], color=color, lw=lw, label=f"{tag}: {label}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("q (nm$^{-1}$)")
    ax.set_ylabel("I (counts/pixel)")
    ax.legend(fontsize="small")
    ax.set_title(f"I(q), {len(curves)} curves", fontsize="medium")
    return fig


def _series(rows, key):
    return np.array([v if isinstance(v, (int, float)) and v is not None and math.isfinite(v) else np.nan
                     for v in (r.get(key) for r in rows)], float)


def _thin(rows: list, most: int = 3000) -> list:
    """At most about ``most`` rows, evenly spaced, the last one kept (a plot is ~500 px wide)."""
    if len(rows) <= most:
        return rows
    step = int(math.ceil(len(rows) / most))
    return rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])


def _saxs_params(store, run_id, info, params):
    rows = store.rows(run_id)
    fig = _figure(6.0, 4.6)
    axes = fig.subplots(3, 1, sharex=True)
    names = sorted({str(r.get("integration")) for r in rows})
    times = _series(rows, "time")
    use_time = np.isfinite(times).any()
    t0 = np.nanmin(times) if use_time else 0.0
    panels = [("I0", "integral I0"), ("I2", "invariant I2"), ("correlation_length_nm", "corr. length (nm)")]
    for name in names[:6]:
        sel = _thin([r for r in rows if str(r.get("integration")) == name])
        x = _series(sel, "time") - t0 if use_time else np.arange(len(sel), dtype=float)
        order = np.argsort(x, kind="stable")
        for ax, (key, label) in zip(axes, panels):
            ax.plot(x[order], _series(sel, key)[order], ".-", ms=3, lw=0.8, label=name)
            ax.set_ylabel(label, fontsize="small")
    axes[-1].set_xlabel("frame time (s since first frame)" if use_time else "frame (order of arrival)")
    if len(names) > 1:
        axes[0].legend(fontsize="x-small")
    axes[0].set_title("Integral parameters", fontsize="medium")
    return fig


def _sfx_hits(store, run_id, info, params):
    rows = store.rows(run_id)
    fig = _figure(6.0, 3.8)
    ax_peaks, ax_rate = fig.subplots(2, 1, sharex=True)
    idx = np.array([r.get("index", k) if isinstance(r.get("index"), int) and r.get("index") >= 0 else k
                    for k, r in enumerate(rows)], float)
    order = np.argsort(idx, kind="stable")
    idx = idx[order]
    peaks = _series(rows, "n_peaks")[order]
    hit = np.array([str(r.get("hit")).lower() in ("true", "1") for r in rows], bool)[order]
    ax_peaks.plot(idx[~hit], peaks[~hit], ".", ms=3, color="0.6", label="no hit")
    ax_peaks.plot(idx[hit], peaks[hit], ".", ms=4, color="tab:red", label="hit")
    ax_peaks.set_ylabel("peaks per frame", fontsize="small")
    ax_peaks.legend(fontsize="x-small", loc="upper left")
    window = max(1, min(50, len(hit) // 5 or 1))
    rate = 100.0 * np.convolve(hit.astype(float), np.ones(window) / window, mode="valid")
    ax_rate.plot(idx[window - 1:], rate, color="tab:blue")
    ax_rate.set_ylim(0, 100)
    ax_rate.set_ylabel(f"hit rate % ({window} fr.)", fontsize="small")
    ax_rate.set_xlabel("frame")
    ax_peaks.set_title(f"{int(hit.sum())} hits in {len(rows)} frames", fontsize="medium")
    return fig


def _sfx_latest_hit(store, run_id, info, params):
    hit = store.latest_hit(run_id, read_frame=True)
    if not hit or hit.get("frame") is None:
        raise MonitorError("no hit frame readable yet", status=404)
    frame = np.asarray(hit["frame"], float)
    fig = _figure(5.0, 5.0)
    ax = fig.subplots()
    step = max(1, int(math.ceil(max(frame.shape) / 400)))  # about the PNG's own pixels: small and quick
    if step > 1:  # block means (the peaks are circled anyway)
        ny, nx = (frame.shape[0] // step) * step, (frame.shape[1] // step) * step
        shown = np.nanmean(frame[:ny, :nx].reshape(ny // step, step, nx // step, step), axis=(1, 3))
    else:
        shown = frame
    finite = shown[np.isfinite(shown)]
    vmin, vmax = (np.percentile(finite, [5, 99.5]) if finite.size else (0, 1))
    ax.imshow(shown, cmap="gray_r", vmin=vmin, vmax=max(vmax, vmin + 1e-9), origin="upper",
              extent=(-0.5, shown.shape[1] * step - 0.5, shown.shape[0] * step - 0.5, -0.5), interpolation="nearest")
    ax.scatter(hit["fs"], hit["ss"], s=40, facecolors="none", edgecolors="tab:red", linewidths=0.8)
    ax.set_title(f"latest hit: {hit['label']} ({hit['n_peaks']} peaks)", fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _laue_maps(store, run_id, info, params):
    rows = store.rows(run_id)
    shape = info["laue"]["map_shape"]
    maps = {k: np.full(shape, np.nan) for k in ("n_good", "mean_sim")}
    for r in rows:
        if r.get("status", "ok") == "ok" and isinstance(r.get("map_row"), int) and isinstance(r.get("map_col"), int):
            for key in maps:
                v = r.get(key)
                maps[key][r["map_row"], r["map_col"]] = v if isinstance(v, (int, float)) and v is not None else np.nan
    fig = _figure(7.0, 3.4)
    axes = fig.subplots(1, 2)
    for ax, (key, title, cmap, lim) in zip(axes, (("n_good", "good spots per image", "viridis", None),
                                                  ("mean_sim", "mean Sim", "magma", (0, 1)))):
        data = np.ma.masked_invalid(maps[key])
        im = ax.imshow(data, cmap=cmap, origin="upper", interpolation="nearest",
                       vmin=None if lim is None else lim[0], vmax=None if lim is None else lim[1])
        ax.set_title(title, fontsize="small")
        ax.set_xlabel("map column", fontsize="small")
        ax.set_ylabel("map row", fontsize="small")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def _tomo_slices(store, run_id, info, params):
    import h5py

    path = store.volume_path(run_id)
    with h5py.File(path, "r") as f:
        dset = f["volume"]
        level = None
        if "pyramid" in f:  # the coarsest level still at least 128 px wide, to keep reads small
            for key in sorted(f["pyramid"], key=lambda k: int(k.rsplit("_", 1)[-1]) if k.rsplit("_", 1)[-1].isdigit() else 0):
                if max(f["pyramid"][key].shape[1:]) >= 128:
                    level = key
        if level is not None:
            dset = f["pyramid"][level]
        z, y, x = dset.shape
        slices = {"xy": np.asarray(dset[z // 2], float), "xz": np.asarray(dset[:, y // 2, :], float),
                  "yz": np.asarray(dset[:, :, x // 2], float)}
    fig = _figure(8.0, 3.2)
    axes = fig.subplots(1, 3)
    for ax, (key, img) in zip(axes, slices.items()):
        ax.imshow(img, cmap="gray", interpolation="nearest", aspect="auto" if key != "xy" else "equal")
        ax.set_title(f"{key} (middle)", fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
