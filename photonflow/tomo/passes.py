"""The two passes of a chunked reconstruction, their files and how they are joined.

Pass 1 (:func:`pass1_chunk`): projections ``p0 .. p1-1`` of one or more side-by-side scans →
flat/dark normalised, I0-corrected, zingers removed, air-corrected, stitched (several scans) and
Paganin-filtered transmission, float32, written to the chunk's own file. Rows are processed in
subchunks with overlap rows (see :mod:`photonflow.tomo.plan`). The file's dataset is chunked as
(all projections of the chunk × 4 rows × all columns), so that pass 2 reads sinograms cheaply.

:func:`join` checks that every source file exists and is complete (a missing source would read
back silently as fill values through a virtual dataset) and joins them with an HDF5 virtual
dataset, without a copy.

Pass 2 (:func:`pass2_chunk`): sinograms of rows ``r0 .. r1-1`` → −log, stripe/ring removal, 360°
→ 180°, reconstruction (padding inside the backend), circular mask, conversion to the output
type with a fixed range, written to the chunk's own file; the chunks are joined into the volume
(virtual or copied) only when all exist. :func:`write_pyramid` adds 2× downsampled levels.

Files are written under a temporary name and renamed when complete; a ``complete`` attribute
marks them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np

from photonflow.saxs import peak_rss_mb, reset_peak_rss

from . import preprocess as pre
from .dxchange import open_scan, read_projections, read_references
from .stitch import blend, stitched_width

SINO_CHUNK_ROWS = 4


class ChunkError(RuntimeError):
    """A chunk file that is missing, incomplete or of the wrong shape."""


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _normalised_block(scan, refs, p0, p1, rows: slice, steps: dict, i0: np.ndarray | None) -> np.ndarray:
    """Flat/dark normalised (and I0-, zinger- and air-corrected) projections p0..p1-1, rows ``rows``."""
    proj = read_projections(scan, p0, p1, rows)
    sel = (slice(None), rows, slice(None))
    out = pre.flat_dark_normalise(
        proj,
        refs["flats"][sel],
        refs["darks"][sel],
        None if refs["flats_end"] is None else refs["flats_end"][sel],
        first_index=p0,
        n_total=scan.shape[0],
    )
    if i0 is not None:
        out = pre.apply_i0(out, i0)
    if steps.get("zingers"):
        out = pre.remove_zingers(out, **steps["zingers"])
    if steps.get("air"):
        out = pre.air_correction(out, tuple(steps["air"]["columns"]))
    return out


def chunk_i0(scan, refs, p0: int, p1: int, steps: dict) -> np.ndarray | None:
    """I0 factors of projections p0..p1-1: from the monitor, or from the air columns over all rows."""
    spec = steps.get("i0")
    if not spec:
        return None
    if spec.get("monitor"):
        return pre.i0_factors(monitor=refs["monitor"])[p0:p1]
    a, b = spec["air_columns"]
    proj = read_projections(scan, p0, p1)[:, :, a:b]
    norm = pre.flat_dark_normalise(
        proj,
        refs["flats"][:, :, a:b],
        refs["darks"][:, :, a:b],
        None if refs["flats_end"] is None else refs["flats_end"][:, :, a:b],
        first_index=p0,
        n_total=scan.shape[0],
    )
    return pre.i0_factors(norm, air_columns=(0, b - a))


def pass1_chunk(
    scan_paths: list[str],
    p0: int,
    p1: int,
    steps: dict,
    rows_per_subchunk: int,
    overlap: int,
    out_path,
    offsets: list[float] | None = None,
) -> dict:
    """Preprocess projections p0..p1-1 (see the module doc) into ``out_path``; returns a summary
    (file, projections, seconds per step). ``offsets``: stitching offsets (px) between the scans."""
    t0 = time.perf_counter()
    reset_peak_rss()
    scans = [open_scan(p, monitor=(steps.get("i0") or {}).get("monitor")) for p in scan_paths]
    refs = [read_references(s) for s in scans]
    i0 = [chunk_i0(s, r, p0, p1, steps) for s, r in zip(scans, refs)]
    n, rows, cols = scans[0].shape
    width = cols if len(scans) == 1 else stitched_width(offsets, scans[-1].shape[2])
    paganin = steps.get("paganin")
    out_path = Path(out_path)
    tmp = _tmp(out_path)
    timings = {"read_normalise": 0.0, "stitch": 0.0, "paganin": 0.0, "write": 0.0}
    with h5py.File(tmp, "w") as f:
        ds = f.create_dataset(
            "data", shape=(p1 - p0, rows, width), dtype=np.float32, chunks=(p1 - p0, min(SINO_CHUNK_ROWS, rows), width)
        )
        for r0 in range(0, rows, rows_per_subchunk):
            r1 = min(r0 + rows_per_subchunk, rows)
            a, b = max(0, r0 - overlap), min(rows, r1 + overlap)
            t = time.perf_counter()
            blocks = [_normalised_block(s, r, p0, p1, slice(a, b), steps, f0) for s, r, f0 in zip(scans, refs, i0)]
            timings["read_normalise"] += time.perf_counter() - t
            t = time.perf_counter()
            block = blocks[0] if len(blocks) == 1 else blend(blocks, offsets)
            timings["stitch"] += time.perf_counter() - t
            if paganin:
                t = time.perf_counter()
                block = pre.paganin_filter(block, **paganin)
                timings["paganin"] += time.perf_counter() - t
            t = time.perf_counter()
            ds[:, r0:r1, :] = block[:, r0 - a : r0 - a + (r1 - r0), :]
            timings["write"] += time.perf_counter() - t
        ds.attrs["first_projection"] = p0
        ds.attrs["complete"] = True
    os.replace(tmp, out_path)
    return {
        "file": str(out_path),
        "p0": p0,
        "p1": p1,
        "width": width,
        "seconds": time.perf_counter() - t0,
        "timings": timings,
        "peak_rss_mb": peak_rss_mb(),
    }


def check_sources(files: list[str], ranges: list[tuple[int, int]], axis: int, shape_rest: tuple) -> None:
    """Every chunk file exists, is marked complete and has the expected shape; else :class:`ChunkError`
    naming the file (before anything is joined)."""
    problems = []
    for path, (a, b) in zip(files, ranges):
        if not Path(path).is_file():
            problems.append(f"{path}: missing")
            continue
        try:
            with h5py.File(path, "r") as f:
                ds = f["data"]
                want = list(shape_rest)
                want.insert(axis, b - a)
                if list(ds.shape) != want:
                    problems.append(f"{path}: shape {ds.shape}, expected {tuple(want)}")
                elif not ds.attrs.get("complete", False):
                    problems.append(f"{path}: not complete")
        except (OSError, KeyError) as exc:
            problems.append(f"{path}: unreadable ({exc})")
    if problems:
        raise ChunkError("chunk files not ready: " + "; ".join(problems))


def join(
    files: list[str],
    ranges: list[tuple[int, int]],
    axis: int,
    out_path,
    dataset: str = "data",
    attrs: dict | None = None,
) -> Path:
    """Join chunk files (dataset ``data``) along ``axis`` into a virtual dataset in ``out_path``,
    after :func:`check_sources`. Source paths are stored relative to ``out_path`` when they sit
    beside it, so the set can be moved as a whole."""
    with h5py.File(files[0], "r") as f:
        first = f["data"]
        rest = tuple(s for i, s in enumerate(first.shape) if i != axis)
        dtype = first.dtype
    check_sources(files, ranges, axis, rest)
    total = max(b for _, b in ranges)
    shape = list(rest)
    shape.insert(axis, total)
    layout = h5py.VirtualLayout(shape=tuple(shape), dtype=dtype)
    out_path = Path(out_path)
    for path, (a, b) in zip(files, ranges):
        src_shape = list(rest)
        src_shape.insert(axis, b - a)
        rel = os.path.relpath(path, out_path.parent)
        source = h5py.VirtualSource(rel, "data", shape=tuple(src_shape))
        index = [slice(None)] * len(shape)
        index[axis] = slice(a, b)
        layout[tuple(index)] = source
    tmp = _tmp(out_path)
    with h5py.File(tmp, "w") as f:
        vds = f.create_virtual_dataset(dataset, layout, fillvalue=np.nan if dtype.kind == "f" else 0)
        for key, value in (attrs or {}).items():
            vds.attrs[key] = value
    os.replace(tmp, out_path)
    return out_path


def read_sinograms(joined_path, r0: int, r1: int, dataset: str = "data") -> np.ndarray:
    """Sinograms of rows r0..r1-1 as (rows, projections, cols) float32 from the joined pass-1 output."""
    with h5py.File(joined_path, "r") as f:
        block = np.asarray(f[dataset][:, r0:r1, :], dtype=np.float32)
    return np.ascontiguousarray(block.transpose(1, 0, 2))


def corrected_sinograms(sino, steps: dict) -> np.ndarray:
    """Transmission sinograms (rows, n, cols) → −log line integrals with the pass-2 stripe and ring
    removal applied (before any 360° → 180° conversion)."""
    from .sino import minus_log, remove_rings

    s = minus_log(sino)
    if steps.get("stripes"):
        opts = dict(steps["stripes"])
        method = opts.pop("method", "all")
        s = np.stack([pre.STRIPE_METHODS[method](x, **opts) for x in s])
    if steps.get("rings"):
        s = remove_rings(s, **steps["rings"])
    return s


def sinograms_to_slices(sino, theta_deg, center: float, steps: dict) -> tuple[np.ndarray, dict]:
    """Transmission sinograms (rows, n, cols) → float32 slices (rows, W, W) in 1/px, with the
    pass-2 steps: −log, stripes, rings, 360° → 180°, reconstruction, circular mask."""
    from .recon import reconstruct
    from .sino import apply_circle_mask, sino_360_to_180

    timings = {}
    t = time.perf_counter()
    s = corrected_sinograms(sino, steps)
    theta = np.asarray(theta_deg, dtype=np.float64)
    if steps.get("half_acquisition"):
        s, center = sino_360_to_180(s, center)
        theta = theta[: s.shape[1]]
    timings["sinogram"] = time.perf_counter() - t
    t = time.perf_counter()
    rec = reconstruct(
        s,
        theta,
        center,
        backend=steps.get("backend", "gridrec"),
        filter_name=steps.get("filter", "shepp"),
        circle_mask=False,
        device=steps.get("device", "auto"),
    )
    if steps.get("circle_mask", True):
        rec = apply_circle_mask(rec)
    timings["reconstruct"] = time.perf_counter() - t
    return rec.astype(np.float32), timings


def to_output(slices, output: dict) -> np.ndarray:
    """float32 slices → the output type (``output["dtype"]``: float32, uint16 or uint8) with the
    fixed range ``output["range"]`` = [vmin, vmax] (1/px), values outside clipped."""
    from .sino import to_uint

    dtype = np.dtype(output.get("dtype", "float32"))
    if dtype == np.float32:
        return slices
    vmin, vmax = output["range"]
    return to_uint(slices, vmin, vmax, dtype=dtype).data


def pass2_chunk(joined_path, r0: int, r1: int, theta_deg, center: float, steps: dict, output: dict, out_path) -> dict:
    """Reconstruct rows r0..r1-1 into ``out_path`` (dataset ``data``, (rows, W, W)); returns a summary."""
    t0 = time.perf_counter()
    reset_peak_rss()
    sino = read_sinograms(joined_path, r0, r1)
    t_read = time.perf_counter() - t0
    slices, timings = sinograms_to_slices(sino, theta_deg, center, steps)
    data = to_output(slices, output)
    out_path = Path(out_path)
    tmp = _tmp(out_path)
    t = time.perf_counter()
    with h5py.File(tmp, "w") as f:
        ds = f.create_dataset("data", data=data, chunks=(1,) + data.shape[1:])
        ds.attrs["first_row"] = r0
        ds.attrs["complete"] = True
    os.replace(tmp, out_path)
    timings.update(read=t_read, write=time.perf_counter() - t)
    return {
        "file": str(out_path),
        "r0": r0,
        "r1": r1,
        "shape": list(data.shape),
        "seconds": time.perf_counter() - t0,
        "timings": timings,
        "min": float(np.nanmin(slices)),
        "max": float(np.nanmax(slices)),
        "peak_rss_mb": peak_rss_mb(),
    }


def copy_volume(joined_path, out_path, dataset: str = "volume", slab: int = 16) -> Path:
    """A physical copy of a joined (virtual) volume, slab by slab, compressed (gzip 1)."""
    out_path = Path(out_path)
    tmp = _tmp(out_path)
    with h5py.File(joined_path, "r") as src, h5py.File(tmp, "w") as dst:
        v = src[dataset]
        d = dst.create_dataset(
            dataset, shape=v.shape, dtype=v.dtype, chunks=(1,) + v.shape[1:], compression="gzip", compression_opts=1
        )
        for key, value in v.attrs.items():
            d.attrs[key] = value
        for a in range(0, v.shape[0], slab):
            d[a : a + slab] = v[a : a + slab]
    os.replace(tmp, out_path)
    return out_path


def write_pyramid(volume_path, levels: int = 3, dataset: str = "volume") -> list[tuple[int, ...]]:
    """Add ``/pyramid/level_k`` (k = 1..levels): the volume downsampled 2^k × along each axis (mean
    of 2 × 2 × 2 blocks of the level below; odd edges dropped), for viewers. Returns their shapes."""
    shapes = []
    with h5py.File(volume_path, "a") as f:
        below = f[dataset]
        group = f.require_group("pyramid")
        for k in range(1, levels + 1):
            z, y, x = (s // 2 for s in below.shape)
            if min(z, y, x) < 1:
                break
            name = f"level_{k}"
            if name in group:
                del group[name]
            level = group.create_dataset(name, shape=(z, y, x), dtype=below.dtype)
            for a in range(0, z, 8):
                b = min(a + 8, z)
                block = np.asarray(below[2 * a : 2 * b], dtype=np.float64)[:, : 2 * y, : 2 * x]
                mean = block.reshape(b - a, 2, y, 2, x, 2).mean(axis=(1, 3, 5))
                level[a:b] = np.rint(mean).astype(below.dtype) if below.dtype.kind in "ui" else mean.astype(below.dtype)
            shapes.append((z, y, x))
            below = level
    return shapes


def scan_stitch_offsets(scans, stitch: dict) -> tuple[list[float], list[float]]:
    """Offsets (px) between consecutive side-by-side scans and the motor guesses, searched on every
    10th flat/dark-normalised projection (``stitch``: motor_positions_mm, pixel_size_um, window, method)."""
    from .stitch import offset_guesses, stitch_offsets

    n = scans[0].shape[0]
    pick = list(range(0, n, max(1, n // 10)))
    normalised = []
    for s in scans:
        refs = read_references(s)
        proj = np.stack([read_projections(s, p, p + 1)[0] for p in pick])
        normalised.append(pre.flat_dark_normalise(proj, refs["flats"], refs["darks"]))
    guesses = offset_guesses(stitch["motor_positions_mm"], stitch["pixel_size_um"])
    res = stitch_offsets(
        normalised, guesses, window=int(stitch.get("window", 20)), method=stitch.get("method", "difference")
    )
    return res.offsets, guesses


def rotation_centre(joined, rows: int, sinogram: dict, given: float | None) -> tuple[float, str]:
    """The centre of rotation (px) and how it was had: given, or found on the corrected middle-row
    sinogram (Vo's method; the overlap for 360° half acquisition)."""
    from .center import find_center_360, find_center_vo

    if given is not None:
        return float(given), "given"
    # on the corrected sinogram: uncorrected stripes bias the metric
    sino = corrected_sinograms(read_sinograms(joined, rows // 2, rows // 2 + 1), sinogram)[0]
    if sinogram.get("half_acquisition"):
        return find_center_360(sino), "found (360° half acquisition overlap)"
    return find_center_vo(sino), "found (Vo's method, middle row)"


def output_range(joined, theta, center, rows: int, sinogram: dict, output: dict) -> tuple[list[float] | None, str]:
    """The [vmin, vmax] (1/px) of the integer volume: given, or the 0.01–99.99 percentiles of three
    sample slices; None for float32 output."""
    if np.dtype(output.get("dtype", "uint16")) == np.float32:
        return None, "float32 (no conversion)"
    if output.get("range"):
        return [float(v) for v in output["range"]], "given"
    picks = sorted({rows // 4, rows // 2, (3 * rows) // 4})
    vals = []
    for r in picks:
        rec, _ = sinograms_to_slices(read_sinograms(joined, r, r + 1), theta, center, sinogram)
        inside = rec[0][rec[0] != 0]
        vals.append(inside[np.isfinite(inside)])
    lo, hi = np.percentile(np.concatenate(vals), [0.01, 99.99])
    return [float(lo), float(hi)], f"0.01–99.99 percentiles of rows {picks}"
