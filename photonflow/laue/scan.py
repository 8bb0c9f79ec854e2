"""A Laue raster scan: per image a spot table, per scan maps of spot counts and quality.

Pure science and files, no Prefect: :func:`process_image` reads one image, searches its spots,
describes them by the batched Gaussian fit (``method="fit"``) or the spot CNN (``"cnn"``) and
writes ``spots/<name>.h5`` and ``.csv``; :func:`scan_positions` places the images on the map
grid; :func:`scan_maps` turns the per-image rows into 2D maps.

Spot table columns (one row per seed; positions 0-based ``[row, col]`` px, pixel centres at
integers; LaueTools' X = col + 1, Y = row + 1): ``seed_row, seed_col, row, col`` (Pos),
``intensity`` (fit: 2π α σ1 σ2, the Gaussian's integral; cnn: background-subtracted sum of the
9 × 9 box, ADU), ``amplitude`` (α, ADU), ``background`` (β, ADU), ``sigma1`` (rows), ``sigma2``
(cols) px, ``Sim0, Sim, Asp``, ``Area`` px², ``quality`` (bool), ``status`` ("ok" or why not).
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from photonflow.io import FrameRef, write_table_csv, write_table_hdf5
from photonflow.operations import get as get_operation
from photonflow.results import BatchResult

from .fit import cutouts, fit_spots
from .spots import SearchParams, find_seeds, read_laue_image

METHODS = ("fit", "cnn")
SPOT_COLUMNS = [
    "seed_row",
    "seed_col",
    "row",
    "col",
    "intensity",
    "amplitude",
    "background",
    "sigma1",
    "sigma2",
    "Sim0",
    "Sim",
    "Asp",
    "Area",
    "quality",
    "status",
]
#: The scan table's columns (one row per image), as the operation registry declares them.
IMAGE_COLUMNS = list(get_operation("laue").table_columns)


@dataclass
class LaueSettings:
    """Everything one image needs: search parameters (LaueTools names), the method and its options.

    saturation: ADU at and above which pixels are excluded (default: the dtype's maximum);
    size: cutout side, px; quality_sim / quality_dist (px): the quality flag's thresholds;
    mask: mask file (nonzero = bad pixel); backend: the fit's, "numpy" or "torch"; device: torch's
    (the CNN's, and the fit's with backend "torch"); checkpoint: the CNN's."""

    search: SearchParams = field(default_factory=SearchParams)
    method: str = "fit"
    saturation: float | None = None
    size: int = 32
    rotated: bool = False
    pixel_integrated: bool = False
    quality_sim: float = 0.5
    quality_dist: float = 0.9
    mask: str | None = None
    checkpoint: str | None = None
    backend: str = "numpy"
    device: str = "auto"

    def __post_init__(self):
        if isinstance(self.search, dict):
            self.search = SearchParams(**self.search)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _box_intensity(stack, weights, half: int = 4) -> np.ndarray:
    """Background-subtracted sum over the central (2 half + 1)² box; background = median of the
    cutout's valid border pixels (ADU)."""
    n, R, C = stack.shape
    border = np.ones((R, C), bool)
    border[2:-2, 2:-2] = False
    edge = np.where((weights > 0) & border, stack, np.nan).reshape(n, -1)
    with np.errstate(all="ignore"):
        bg = np.nanmedian(edge, axis=1) if n else np.zeros(0)
    c = R // 2
    box = (stack - bg[:, None, None])[:, c - half : c + half + 1, c - half : c + half + 1]
    return (box * (weights[:, c - half : c + half + 1, c - half : c + half + 1] > 0)).sum(axis=(1, 2))


def spot_table(image, seeds, settings: LaueSettings, mask=None) -> dict:
    """The spot table (see module doc) of the given seeds, by the settings' method."""
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1, 2)
    n = len(seeds)
    if settings.method == "fit":
        t = fit_spots(
            image,
            seeds,
            size=settings.size,
            mask=mask,
            saturation=settings.saturation,
            rotated=settings.rotated,
            pixel_integrated=settings.pixel_integrated,
            quality_sim=settings.quality_sim,
            quality_dist=settings.quality_dist,
            backend=settings.backend,
            device=settings.device,
        )
        fitted = np.isfinite(t["alpha"])
        intensity = np.where(fitted, 2 * np.pi * t["alpha"] * t["sigma1"] * t["sigma2"], np.nan)
        return {
            "seed_row": seeds[:, 0],
            "seed_col": seeds[:, 1],
            "row": t["Pos"][:, 0],
            "col": t["Pos"][:, 1],
            "intensity": intensity,
            "amplitude": t["alpha"],
            "background": t["beta"],
            "sigma1": t["sigma1"],
            "sigma2": t["sigma2"],
            "Sim0": t["Sim0"],
            "Sim": t["Sim"],
            "Asp": t["Asp"],
            "Area": t["Area"],
            "quality": t["quality"],
            "status": np.asarray(t["status"], dtype=object),
        }
    from .cnn import predict_descriptors

    stack, weights, _origins, ok, reasons = cutouts(
        image, seeds, size=settings.size, mask=mask, saturation=settings.saturation
    )
    nan = np.full(n, np.nan)
    table = {
        "seed_row": seeds[:, 0],
        "seed_col": seeds[:, 1],
        "row": nan.copy(),
        "col": nan.copy(),
        "intensity": nan.copy(),
        "amplitude": nan.copy(),
        "background": nan.copy(),
        "sigma1": nan.copy(),
        "sigma2": nan.copy(),
        "Sim0": nan.copy(),
        "Sim": nan.copy(),
        "Asp": nan.copy(),
        "Area": nan.copy(),
        "quality": np.zeros(n, bool),
        "status": np.array([r or "ok" for r in reasons], dtype=object),
    }
    idx = np.flatnonzero(ok)
    if len(idx):
        pred = predict_descriptors(
            stack[idx],
            seeds[idx],
            checkpoint=settings.checkpoint,
            device=settings.device,
            valid=weights[idx] > 0,
            quality_sim=settings.quality_sim,
            quality_dist=settings.quality_dist,
        )
        table["row"][idx], table["col"][idx] = pred["Pos"][:, 0], pred["Pos"][:, 1]
        for key in ("Sim", "Asp", "Area"):
            table[key][idx] = pred[key]
        table["quality"][idx] = pred["quality"]
        table["intensity"][idx] = _box_intensity(stack[idx], weights[idx])
    return table


def write_spot_table(spots_dir, name: str, table: dict) -> Path:
    """``spots_dir/name.h5`` (group ``spots``) and ``name.csv``, both written atomically; returns the .h5."""
    spots_dir = Path(spots_dir)
    spots_dir.mkdir(parents=True, exist_ok=True)
    cols = {c: table[c] for c in SPOT_COLUMNS}
    write_table_csv(spots_dir / f"{name}.csv", cols)
    return write_table_hdf5(spots_dir / f"{name}.h5", cols, group="spots")


def table_name(ref: FrameRef) -> str:
    """File stem, with the event for multi-frame files: ``scan_0007`` or ``scan_0007_e12``."""
    stem = Path(ref.path).stem
    return stem if ref.event is None else f"{stem}_e{int(ref.event)}"


def process_image(ref, settings: LaueSettings, spots_dir, mask=None) -> dict:
    """Read, search, describe and write one image; returns its row (IMAGE_COLUMNS without the map
    ones).  An unreadable image or one without seeds gives a row whose status says why; nothing
    is raised, so the rest of a scan goes on."""
    ref = FrameRef(*ref)
    t0 = time.perf_counter()
    row = {
        "path": ref.path,
        "event": -1 if ref.event is None else int(ref.event),
        "n_spots": 0,
        "n_good": 0,
        "mean_sim": math.nan,
        "n_not_fitted": 0,
        "status": "ok",
        "spots_file": "",
        "spot_status": {},
    }
    try:
        image = read_laue_image(ref.path, settings.saturation, event=ref.event)
        if mask is not None and mask.shape != image.data.shape:
            raise ValueError(f"mask shape {mask.shape} does not match the image {image.data.shape}")
        seeds = find_seeds(image, settings.search, mask=mask)
        table = spot_table(image, seeds, settings, mask=mask)
        row["spots_file"] = str(write_spot_table(spots_dir, table_name(ref), table))
    except Exception as exc:  # noqa: BLE001 - recorded per image, the scan goes on
        row["status"] = f"{ref}: {type(exc).__name__}: {exc}" if str(ref) not in str(exc) else str(exc)
        row["seconds"] = time.perf_counter() - t0
        return row
    ok = np.asarray(table["status"] == "ok")
    row["n_spots"] = len(seeds)
    row["n_good"] = int(np.count_nonzero(table["quality"]))
    row["mean_sim"] = float(np.nanmean(table["Sim"][ok])) if ok.any() else math.nan
    row["n_not_fitted"] = int(len(seeds) - ok.sum())
    row["spot_status"] = _reason_counts(table["status"][~ok])
    row["seconds"] = time.perf_counter() - t0
    return row


class LaueProcessor:
    """The scan's batch processor (the operation registry's interface): spot tables of a batch of
    images, one row per image. ``settings``: :class:`LaueSettings`; ``spots_dir``: where the
    tables go; the mask file (nonzero = bad) is read once."""

    def __init__(self, settings: LaueSettings, spots_dir):
        self.settings = settings
        self.spots_dir = str(spots_dir)
        self.mask = None
        if settings.mask is not None:
            from photonflow.io.masks import read_mask

            self.mask = read_mask(settings.mask)

    @classmethod
    def from_options(cls, options: dict) -> "LaueProcessor":
        """``options``: the LaueSettings fields and ``output_dir`` (spot tables in its ``spots/``)."""
        settings = {k: v for k, v in options.items() if k in LaueSettings.__dataclass_fields__}
        return cls(LaueSettings(**settings), Path(options["output_dir"]) / "spots")

    def process(self, refs, batch_name: str | None = None) -> BatchResult:
        """Search and describe the spots of each image; an image that fails is named with its reason."""
        t0 = time.perf_counter()
        result = BatchResult()
        for ref in refs:
            row = process_image(ref, self.settings, self.spots_dir, mask=self.mask)
            result.rows.append(row)
            key = str(FrameRef(*ref))
            if row["status"] == "ok":
                result.done += 1
                result.outputs[key] = [row["spots_file"], row["spots_file"][: -len(".h5")] + ".csv"]
            else:
                result.failed[key] = row["status"]
                result.failures.append(row["status"])
        result.elapsed_s = time.perf_counter() - t0
        result.peak_rss_mb = _peak_rss_mb()
        return result


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reason_counts(statuses) -> dict[str, int]:
    """How many spots were not described, by reason ('not converged in N iterations' counted together)."""
    import re

    counts: dict[str, int] = {}
    for s in statuses:
        key = re.sub(r"in \d+ iterations", "in N iterations", str(s))
        counts[key] = counts.get(key, 0) + 1
    return counts


# --------------------------------------------------------------------------- positions and maps
def read_positions_csv(path) -> dict[str, tuple[float, float]]:
    """A positions file: CSV with columns ``image`` (file name or path), ``x`` and ``y`` (µm) →
    {file name: (x, y)}."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"image", "x", "y"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs the columns image, x, y (µm); found {reader.fieldnames}")
        out = {}
        for line, rec in enumerate(reader, start=2):
            try:
                out[os.path.basename(rec["image"])] = (float(rec["x"]), float(rec["y"]))
            except ValueError:
                raise ValueError(
                    f"{path} line {line}: x and y must be numbers, got {rec['x']!r}, {rec['y']!r}"
                ) from None
    return out


def scan_positions(refs, positions=None, scan_shape=None, snake: bool = False) -> list[dict]:
    """Map place of every image: ``map_row``, ``map_col`` and ``x_um``, ``y_um``.

    positions: {file name: (x, y) µm} (:func:`read_positions_csv`): the grid is the sorted unique
    x (columns) and y (rows); scan_shape (rows, cols): raster order, image k at (k // cols,
    k % cols), ``snake`` reversing every other row; neither: one row of images in input order."""
    refs = [FrameRef(*r) for r in refs]
    n = len(refs)
    if positions is not None:
        missing = [r.path for r in refs if os.path.basename(r.path) not in positions]
        if missing:
            raise ValueError(f"no map position for {len(missing)} image(s), e.g. {missing[0]}")
        xy = [positions[os.path.basename(r.path)] for r in refs]
        xs = sorted({x for x, _ in xy})
        ys = sorted({y for _, y in xy})
        return [{"map_row": ys.index(y), "map_col": xs.index(x), "x_um": x, "y_um": y} for x, y in xy]
    rows, cols = (1, n) if scan_shape is None else (int(scan_shape[0]), int(scan_shape[1]))
    if rows * cols < n:
        raise ValueError(f"scan shape {rows} x {cols} holds {rows * cols} images, but there are {n}")
    out = []
    for k in range(n):
        r, c = divmod(k, cols)
        if snake and r % 2:
            c = cols - 1 - c
        out.append({"map_row": r, "map_col": c, "x_um": math.nan, "y_um": math.nan})
    return out


def scan_maps(rows: list[dict]) -> dict[str, np.ndarray]:
    """2D maps (NaN where no image or it failed): ``n_good`` (spots with the quality flag),
    ``n_spots`` and ``mean_sim``."""
    if not rows:
        return {}
    shape = (max(r["map_row"] for r in rows) + 1, max(r["map_col"] for r in rows) + 1)
    maps = {key: np.full(shape, np.nan) for key in ("n_good", "n_spots", "mean_sim")}
    for r in rows:
        if r["status"] == "ok":
            for key in maps:
                maps[key][r["map_row"], r["map_col"]] = r[key]
    return maps
