"""The Laue microdiffraction commands of ``photonflow``: ``laue`` and ``demo laue``.

Kept apart from :mod:`photonflow.deployments.cli` (which registers them) so each file stays readable.
"""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path
from typing import Any

from photonflow.config import ConfigError, validate_config

SEARCH_FLAGS = (
    ("IntensityThreshold", "--threshold", float, "ADU", "spot pixels: this far above the minimum-filter background (default 400)"),
    ("PixelNearRadius", "--pixel-near-radius", float, "PX", "seeds closer than this are merged (default 5)"),
    ("boxsize", "--boxsize", int, "PX", "minimum-filter box for the background (default 15)"),
    ("min_pixels", "--min-pixels", int, "N", "fewest pixels in a spot's blob (default 1)"),
)
PATH_KEYS = ("output_dir", "positions", "mask", "checkpoint")

from photonflow.deployments.cli_common import print_run_summary


def add_parsers(sub) -> None:
    """Register ``laue`` on the ``photonflow`` sub-command parser."""
    p = sub.add_parser(
        "laue",
        usage="photonflow laue INPUT... --out DIR [options]\n"
        "       photonflow laue --config RUN.json [options overriding the file]",
        description=textwrap.dedent(
            """\
            Laue microdiffraction spots over a raster scan. For every image (sCMOS TIFF,
            MarCCD, any fabio format, HDF5 events; directories are walked) the spots are
            searched as LaueTools does (minimum-filter background, threshold, blobs, brightest
            pixel, close seeds merged) and described by a batched 2D Gaussian fit on 32 x 32
            cutouts ('fit') or by the spot CNN ('cnn'): position, intensity, sigma1, sigma2,
            Sim, Asp, Area and a quality flag (Kirstein et al., Materials 2023). Writes
            spots/<image>.h5 and .csv, images.csv/.h5 (one row per image with its map place),
            map_good_spots.png and map_mean_sim.png. Map places come from --positions CSV
            (image, x, y in µm) or --scan-shape ROWS COLS (raster in input order). The same
            fields can come from --config RUN.json (schema: config/schemas/laue_run.schema.json)."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or directories")
    p.add_argument("--out", dest="output_dir", metavar="DIR", help="output directory")
    p.add_argument("--config", metavar="RUN.json", help="run configuration file (laue_run schema)")
    p.add_argument("--method", choices=["fit", "cnn"], help="spot descriptors: fit (default) or cnn")
    for _key, flag, kind, metavar, text in SEARCH_FLAGS:
        p.add_argument(flag, type=kind, metavar=metavar, help=f"search: {text}")
    p.add_argument("--saturation", type=float, metavar="ADU", help="detector saturation (default: the dtype's maximum)")
    p.add_argument("--positions", metavar="CSV", help="map positions: CSV with columns image, x, y (µm)")
    p.add_argument("--scan-shape", type=int, nargs=2, metavar=("ROWS", "COLS"), help="raster of images in input order")
    p.add_argument("--snake", action=argparse.BooleanOptionalAction, default=None,
                   help="with --scan-shape: every other row runs backwards")
    p.add_argument("--rotated", action=argparse.BooleanOptionalAction, default=None, help="fit: rotated Gaussian")
    p.add_argument("--pixel-integrated", action=argparse.BooleanOptionalAction, default=None,
                   help="fit: pixel-integrated Gaussian (spots sharper than a pixel)")
    p.add_argument("--quality-sim", type=float, metavar="S", help="quality flag: Sim above S (default 0.5)")
    p.add_argument("--quality-dist", type=float, metavar="PX", help="quality flag: |Pos - seed| at most PX (default 0.9)")
    p.add_argument("--mask", metavar="FILE", help="bad-pixel mask (nonzero = bad)")
    p.add_argument("--checkpoint", metavar="MODEL.pt", help="cnn: model checkpoint (default: shipped)")
    p.add_argument("--backend", choices=["numpy", "torch"], help="fit: numpy (default) or torch (GPU)")
    p.add_argument("--device", metavar="DEV", help="torch device (cnn, fit --backend torch): auto (default), cpu, cuda")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per task (default 4)")
    p.add_argument("--cluster", metavar="PROFILE",
                   help="cluster profile: local (default), threads, slurm, address, or a profile JSON path")
    p.set_defaults(func=cmd_laue)


def run_from_args(args: argparse.Namespace) -> tuple[dict, str]:
    """Merge --config RUN.json (paths relative to the file) with the command line (which wins)."""
    from photonflow.deployments.cli_common import UsageError, load_run_file

    run, source = load_run_file(args.config, _resolve_laue_paths)
    search = {key: getattr(args, flag[2:].replace("-", "_")) for key, flag, *_ in SEARCH_FLAGS}
    search = {k: v for k, v in search.items() if v is not None}
    cli: dict[str, Any] = {
        "inputs": list(args.inputs) or None, "output_dir": args.output_dir, "method": args.method,
        "saturation": args.saturation, "positions": args.positions,
        "scan_shape": list(args.scan_shape) if args.scan_shape else None, "snake": args.snake,
        "rotated": args.rotated, "pixel_integrated": args.pixel_integrated, "quality_sim": args.quality_sim,
        "quality_dist": args.quality_dist, "mask": args.mask, "checkpoint": args.checkpoint, "backend": args.backend,
        "device": args.device,
        "batch_size": args.batch_size, "cluster": args.cluster,
    }
    overrides = {k: v for k, v in cli.items() if v is not None}
    if args.config and (overrides or search):
        source = f"{args.config} + command line"
    run.update(_resolve_laue_paths(overrides, Path.cwd()))
    if search:
        run["search"] = {**run.get("search", {}), **search}
    missing = [flag for key, flag in (("inputs", "INPUT..."), ("output_dir", "--out DIR")) if not run.get(key)]
    if missing:
        raise UsageError(f"laue needs {', '.join(missing)} (on the command line or in --config RUN.json); "
                         "see 'photonflow laue --help'")
    return run, source


def _resolve_laue_paths(data: dict, base: Path) -> dict:
    from photonflow.deployments.cli_common import _absolute, resolve_paths

    out = resolve_paths(data, base)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = str(_absolute(out[key], base))
    return out


def prepare(run: dict, source: str) -> tuple[dict, dict]:
    """Validate a merged run (schema, files exist) -> (flow kwargs, cluster profile)."""
    from photonflow.deployments.cli_common import expand_inputs
    from photonflow.deployments.clusters import load_cluster_profile

    run = validate_config(run, "laue_run", source=source)
    for key in ("positions", "mask", "checkpoint"):
        if run.get(key) and not Path(run[key]).is_file():
            raise FileNotFoundError(f"{run[key]}: {key} file not found")
    if run["rotated"] and run["pixel_integrated"]:
        raise ConfigError(source, [("pixel_integrated", "the pixel-integrated model is axis-aligned only; "
                                                        "it cannot be combined with rotated")])
    if run["rotated"] and run["backend"] == "torch":
        raise ConfigError(source, [("backend", "the torch fit is axis-aligned only; it cannot be combined with rotated")])
    inputs = expand_inputs(run["inputs"])
    profile = load_cluster_profile(run["cluster"])
    keys = ("output_dir", "method", "search", "saturation", "positions", "scan_shape", "snake", "batch_size",
            "rotated", "pixel_integrated", "quality_sim", "quality_dist", "mask", "checkpoint", "backend", "device")
    kwargs = {"inputs": inputs, **{k: run.get(k) for k in keys}}
    kwargs["search"] = kwargs["search"] or {}
    return kwargs, profile


def run_flow(kwargs: dict, profile: dict, title: str = "laue") -> int:
    """Run the laue flow on the profile's task runner and print the summary; returns the exit code."""
    from photonflow.deployments.cli_common import describe_runner, run_on_profile
    from photonflow.deployments.clusters import task_runner_spec
    from photonflow.flows.laue import laue_flow

    runner_name, runner_kwargs = task_runner_spec(profile)
    print(
        f"photonflow {title}: {len(kwargs['inputs'])} input(s), method {kwargs['method']}\n"
        f"  tasks run on: {describe_runner(profile, runner_name, runner_kwargs)}\n"
        f"  outputs go to: {kwargs['output_dir']}",
        flush=True,
    )
    return print_run_summary(run_on_profile(laue_flow, kwargs, profile))


def cmd_laue(args: argparse.Namespace) -> int:
    run, source = run_from_args(args)
    kwargs, profile = prepare(run, source)
    return run_flow(kwargs, profile)


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate a small Laue raster scan (2018 × 2016 sCMOS-like images with known spots) and run
    the laue flow on it; the real BM32 images in ../shared/data/laue are added when present."""
    from photonflow.simulate.laue import write_laue_scan

    out = Path(os.path.abspath(Path(args.out).expanduser()))
    n = args.frames or 12
    rows = max(1, int(round(n ** 0.5)))
    cols = -(-n // rows)
    print(f"demo laue: simulating a {rows} x {cols} raster of 2018 x 2016 images in {out / 'demo-data'}", flush=True)
    scan = write_laue_scan(out / "demo-data", rows, cols, n_images=n, seed=2026)
    run = {"inputs": [str(p) for p in scan["images"]], "output_dir": str(out / "run"), "positions": str(scan["positions"]),
           "cluster": args.cluster or "local", "method": getattr(args, "method", None) or "fit",
           "batch_size": args.batch_size or 4}
    kwargs, profile = prepare(run, "demo laue")
    code = run_flow(kwargs, profile, title="demo laue")
    print(f"\ndemo laue done: outputs in {out / 'run'} (truth: {scan['truth']})")
    return code


cmd_demo_laue = cmd_demo  # the older name
