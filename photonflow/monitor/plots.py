"""The monitor's plots: small PNGs (a JPEG for detector images) drawn on the server with matplotlib (object API, Agg canvas,
no pyplot state, so the web server's threads can draw), from what :class:`RunStore` reads.

``render(store, run_id, name, params)`` → image bytes (:func:`media_type` tells which); ``name`` is one of :data:`PLOTS`. Raises
:class:`MonitorError` (404) when the run has nothing to draw for that plot yet.

Each plot reads its data first (files, HDF5, the run's rows: outside the drawing lock, so a slow read
of one run does not hold up the plots of others) and returns a function that draws it (under the lock).
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
    "saxs-curve": "the latest I(q) curve (log-log) and a selected earlier one (?sel=INDEX&integration=NAME)",
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


def render(store: RunStore, run_id: str, name: str, params: dict | None = None, info: dict | None = None) -> bytes:
    """The PNG of plot ``name`` for run ``run_id`` (``info``: ``store.run(run_id)`` when the caller has it)."""
    params = params or {}
    if name not in PLOTS:
        raise MonitorError(f"no plot {name!r}; plots: {', '.join(PLOTS)}", status=404)
    info = info if info is not None else store.run(run_id)
    if name not in info["plots"]:
        raise MonitorError(f"run {info['name']!r} ({info['kind']}) has no {name!r} plot yet", status=404)
    draw = {
        "progress": _progress,
        "saxs-curve": _saxs_curve,
        "saxs-params": _saxs_params,
        "sfx-hits": _sfx_hits,
        "sfx-latest-hit": _sfx_latest_hit,
        "laue-maps": _laue_maps,
        "tomo-slices": _tomo_slices,
    }[name]
    paint = draw(store, run_id, info, params)  # reads the data, outside the lock
    with _LOCK:
        fig = paint()
        fig.tight_layout()
        return _png(fig, "jpeg" if name == "sfx-latest-hit" else "png")


def _progress(store, run_id, info, params):
    h = np.asarray(info["history"], float).reshape(-1, 4)
    unit = info.get("unit") or "frames"

    def draw_final():  # an older run: its final counts only
        fig = _figure(6.0, 2.4)
        ax = fig.subplots()
        ax.barh(
            ["failed", "skipped", "done"],
            [info["failed"], info["skipped"], info["done"]],
            color=["tab:red", "0.6", "tab:green"],
        )
        ax.set_xlabel(unit)
        ax.set_title(f"{info['done']} {unit} done, {info['failed']} failed (final counts)", fontsize="medium")
        return fig

    def draw():
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
        ax.set_title(
            f"{info['done']} of {info['total'] if info['total'] is not None else '?'} {unit} done, "
            f"{info['failed']} failed",
            fontsize="medium",
        )
        ax_rate.set_ylim(bottom=0)
        ax_rate.set_ylabel(f"{unit}/s")
        ax_rate.set_xlabel("seconds since start")
        return fig

    return draw if len(h) else draw_final


def _read_curve(path):
    from photonflow.io import read_chi

    q, intensity, sigma, _ = read_chi(path)
    return np.asarray(q, float), np.asarray(intensity, float)


def _saxs_curve(store, run_id, info, params):
    # ?integration=NAME: the curves of that integration (the page sends the one it numbered the slider
    # for); without it, the newest curve's integration
    integ, curves = store.curves(run_id, params.get("integration"))
    if not curves:
        raise MonitorError("no I(q) curve readable yet", status=404)
    n = len(curves)
    picks = [n - 1]
    sel = params.get("sel")
    if sel not in (None, ""):
        try:
            k = int(sel)
        except ValueError:
            raise MonitorError(f"sel={sel!r}: expected a curve index", status=400) from None
        if not -n <= k < n:
            raise MonitorError(
                f"sel={k}: the run has {n} curves (0 .. {n - 1})" + (f" of integration {integ!r}" if integ else ""),
                status=404,
            )
        k %= n
        if k != picks[0]:
            picks.insert(0, k)
    loaded = []  # only the one or two curves drawn are resolved and read
    for k in picks:
        label = curves[k]["label"]
        path = store.curve_file(run_id, curves[k]["chi"])
        try:
            if path is None:
                raise FileNotFoundError(curves[k]["chi"])
            loaded.append((k, label, *_read_curve(path), None))
        except Exception as exc:  # noqa: BLE001 - being written, vanished or corrupt: say so on the plot
            loaded.append((k, label, None, None, type(exc).__name__))
    if all(item[4] == "FileNotFoundError" for item in loaded):
        raise MonitorError("no I(q) curve readable yet", status=404)

    def draw():
        fig = _figure(6.0, 3.8)
        ax = fig.subplots()
        styles = [("tab:gray", 1.0), ("tab:blue", 1.4)] if len(loaded) == 2 else [("tab:blue", 1.4)]
        for (k, label, q, intensity, error), (color, lw) in zip(loaded, styles):
            if error is not None:
                ax.text(0.5, 0.5, f"{label}: unreadable ({error})", transform=ax.transAxes, ha="center")
                continue
            ok = np.isfinite(intensity) & (intensity > 0) & (q > 0)
            tag = "latest" if k == n - 1 else f"#{k}"
            ax.plot(q[ok], intensity[ok], color=color, lw=lw, label=f"{tag}: {label}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("q (nm$^{-1}$)")
        ax.set_ylabel("I (counts/pixel)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        ax.set_title(f"I(q), {n} curves" + (f" of {integ}" if integ else ""), fontsize="medium")
        return fig

    return draw


def _series(rows, key):
    return np.array(
        [
            v if isinstance(v, (int, float)) and v is not None and math.isfinite(v) else np.nan
            for v in (r.get(key) for r in rows)
        ],
        float,
    )


def _thin(rows, most: int = 3000):
    """At most about ``most`` rows (a list or an array), evenly spaced, the last one kept (a plot is ~500 px wide)."""
    if len(rows) <= most:
        return rows
    step = int(math.ceil(len(rows) / most))
    if isinstance(rows, np.ndarray):
        return np.concatenate([rows[::step], rows[-1:]]) if (len(rows) - 1) % step else rows[::step]
    return rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])


def _saxs_params(store, run_id, info, params):
    rows = store.rows(run_id)
    names = sorted({str(r.get("integration")) for r in rows})
    times = _series(rows, "time")
    use_time = bool(np.isfinite(times).any())
    t0 = np.nanmin(times) if use_time else 0.0
    panels = [("I0", "integral I0"), ("I2", "invariant I2"), ("correlation_length_nm", "corr. length (nm)")]
    lines = []
    for name in names[:6]:
        sel = _thin([r for r in rows if str(r.get("integration")) == name])
        x = _series(sel, "time") - t0 if use_time else np.arange(len(sel), dtype=float)
        order = np.argsort(x, kind="stable")
        lines.append((name, x[order], [_series(sel, key)[order] for key, _ in panels]))

    def draw():
        fig = _figure(6.0, 4.6)
        axes = fig.subplots(3, 1, sharex=True)
        for name, x, ys in lines:
            for ax, y, (key, label) in zip(axes, ys, panels):
                ax.plot(x, y, ".-", ms=3, lw=0.8, label=name)
                ax.set_ylabel(label, fontsize="small")
        axes[-1].set_xlabel("frame time (s since first frame)" if use_time else "frame (order of arrival)")
        if len(names) > 1:
            axes[0].legend(fontsize="x-small")
        axes[0].set_title("Integral parameters", fontsize="medium")
        return fig

    return draw


def _sfx_hits(store, run_id, info, params):
    rows = store.rows(run_id)
    idx = np.array(
        [
            r.get("index", k) if isinstance(r.get("index"), int) and r.get("index") >= 0 else k
            for k, r in enumerate(rows)
        ],
        float,
    )
    order = np.argsort(idx, kind="stable")
    idx = idx[order]
    peaks = _series(rows, "n_peaks")[order]
    hit = np.array([str(r.get("hit")).lower() in ("true", "1") for r in rows], bool)[order]
    window = max(1, min(50, len(hit) // 5 or 1))
    rate = 100.0 * np.convolve(hit.astype(float), np.ones(window) / window, mode="valid")
    # thinned like the SAXS parameters (a plot is ~500 px wide): misses and hits each, and the rate
    miss_k, hit_k = _thin(np.flatnonzero(~hit)), _thin(np.flatnonzero(hit))
    rate_k = _thin(np.arange(len(rate)))
    n_hits, n_rows = int(hit.sum()), len(rows)

    def draw():
        fig = _figure(6.0, 3.8)
        ax_peaks, ax_rate = fig.subplots(2, 1, sharex=True)
        ax_peaks.plot(idx[miss_k], peaks[miss_k], ".", ms=3, color="0.6", label="no hit")
        ax_peaks.plot(idx[hit_k], peaks[hit_k], ".", ms=4, color="tab:red", label="hit")
        ax_peaks.set_ylabel("peaks per frame", fontsize="small")
        ax_peaks.legend(fontsize="x-small", loc="upper left")
        ax_rate.plot(idx[window - 1 :][rate_k], rate[rate_k], color="tab:blue")
        ax_rate.set_ylim(0, 100)
        ax_rate.set_ylabel(f"hit rate % ({window} fr.)", fontsize="small")
        ax_rate.set_xlabel("frame")
        ax_peaks.set_title(f"{n_hits} hits in {n_rows} frames", fontsize="medium")
        return fig

    return draw


def _sfx_latest_hit(store, run_id, info, params):
    hit = store.latest_hit(run_id, read_frame=True)
    if not hit or hit.get("frame") is None:
        raise MonitorError("no hit frame readable yet", status=404)
    frame = np.asarray(hit["frame"], float)
    step = max(1, int(math.ceil(max(frame.shape) / 400)))  # about the PNG's own pixels: small and quick
    if step > 1:  # block means (the peaks are circled anyway)
        ny, nx = (frame.shape[0] // step) * step, (frame.shape[1] // step) * step
        shown = np.nanmean(frame[:ny, :nx].reshape(ny // step, step, nx // step, step), axis=(1, 3))
    else:
        shown = frame
    finite = shown[np.isfinite(shown)]
    vmin, vmax = np.percentile(finite, [5, 99.5]) if finite.size else (0, 1)

    def draw():
        fig = _figure(5.0, 5.0)
        ax = fig.subplots()
        ax.imshow(
            shown,
            cmap="gray_r",
            vmin=vmin,
            vmax=max(vmax, vmin + 1e-9),
            origin="upper",
            extent=(-0.5, shown.shape[1] * step - 0.5, shown.shape[0] * step - 0.5, -0.5),
            interpolation="nearest",
        )
        ax.scatter(hit["fs"], hit["ss"], s=40, facecolors="none", edgecolors="tab:red", linewidths=0.8)
        ax.set_title(f"latest hit: {hit['label']} ({hit['n_peaks']} peaks)", fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
        return fig

    return draw


def _laue_maps(store, run_id, info, params):
    from .runs import _map_cell

    rows = store.rows(run_id)
    cells = [(cell, r) for r in rows if r.get("status", "ok") == "ok" and (cell := _map_cell(r)) is not None]
    # the map covers the scan's shape (the record's, when known) and every row drawn: rows that came
    # in since the run was read cannot fall outside it
    shape = list(info["laue"].get("map_shape") or [0, 0])
    for (i, j), _ in cells:
        shape[0], shape[1] = max(shape[0], i + 1), max(shape[1], j + 1)
    maps = {k: np.full((max(shape[0], 1), max(shape[1], 1)), np.nan) for k in ("n_good", "mean_sim")}
    for (i, j), r in cells:
        for key in maps:
            v = r.get(key)
            maps[key][i, j] = v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan

    def draw():
        fig = _figure(7.0, 3.4)
        axes = fig.subplots(1, 2)
        for ax, (key, title, cmap, lim) in zip(
            axes, (("n_good", "good spots per image", "viridis", None), ("mean_sim", "mean Sim", "magma", (0, 1)))
        ):
            data = np.ma.masked_invalid(maps[key])
            im = ax.imshow(
                data,
                cmap=cmap,
                origin="upper",
                interpolation="nearest",
                vmin=None if lim is None else lim[0],
                vmax=None if lim is None else lim[1],
            )
            ax.set_title(title, fontsize="small")
            ax.set_xlabel("map column", fontsize="small")
            ax.set_ylabel("map row", fontsize="small")
            fig.colorbar(im, ax=ax, shrink=0.8)
        return fig

    return draw


def _tomo_slices(store, run_id, info, params):
    import h5py

    path = store.volume_path(run_id)
    with h5py.File(path, "r", locking=False) as f:
        dset = f["volume"]
        level = None
        if "pyramid" in f:  # the coarsest level still at least 128 px wide, to keep reads small
            for key in sorted(
                f["pyramid"], key=lambda k: int(k.rsplit("_", 1)[-1]) if k.rsplit("_", 1)[-1].isdigit() else 0
            ):
                if max(f["pyramid"][key].shape[1:]) >= 128:
                    level = key
        if level is not None:
            dset = f["pyramid"][level]
        z, y, x = dset.shape
        slices = {
            "xy": np.asarray(dset[z // 2], float),
            "xz": np.asarray(dset[:, y // 2, :], float),
            "yz": np.asarray(dset[:, :, x // 2], float),
        }

    def draw():
        fig = _figure(8.0, 3.2)
        axes = fig.subplots(1, 3)
        for ax, (key, img) in zip(axes, slices.items()):
            ax.imshow(img, cmap="gray", interpolation="nearest", aspect="auto" if key != "xy" else "equal")
            ax.set_title(f"{key} (middle)", fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
        return fig

    return draw
