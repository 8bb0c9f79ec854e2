"""The Laue microdiffraction commands of ``photonflow``: ``laue`` and ``demo laue``.

Registered by the operation registry's ``cli`` entry for laue (:mod:`photonflow.deployments.cli.main`).
"""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path

from photonflow.config import validate_config
from photonflow.deployments.cli.options import add_schema_options, flow_kwargs, run_from_args


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
    p.set_defaults(func=cmd_laue, option_specs=add_schema_options(p, "laue_run"))


def prepare(run: dict, source: str) -> tuple[dict, dict]:
    """Validate a merged run (schema, files exist) -> (flow kwargs, cluster profile)."""
    from photonflow.deployments.cli.common import expand_inputs
    from photonflow.deployments.clusters import load_cluster_profile

    run = validate_config(run, "laue_run", source=source)
    for key in ("positions", "mask", "checkpoint"):
        if run.get(key) and not Path(run[key]).is_file():
            raise FileNotFoundError(f"{run[key]}: {key} file not found")
    inputs = expand_inputs(run["inputs"])
    profile = load_cluster_profile(run["cluster"])
    from photonflow.operations import get as get_operation

    return flow_kwargs(get_operation("laue"), run, inputs=inputs, search=run.get("search") or {}), profile


def run_flow(kwargs: dict, profile: dict, title: str = "laue") -> int:
    """Run the laue flow on the profile's task runner and print the summary; returns the exit code."""
    from photonflow.deployments.cli.common import run_and_report
    from photonflow.flows.laue import laue_flow

    return run_and_report(laue_flow, kwargs, profile, title, f", method {kwargs['method']}")


def cmd_laue(args: argparse.Namespace) -> int:
    run, source = run_from_args("laue", "laue_run", args, args.option_specs)
    kwargs, profile = prepare(run, source)
    return run_flow(kwargs, profile)


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate a small Laue raster scan (2018 × 2016 sCMOS-like images with known spots) and run
    the laue flow on it; the real BM32 images in ../shared/data/laue are added when present."""
    from photonflow.simulate.laue import write_laue_scan

    out = Path(os.path.abspath(Path(args.out).expanduser()))
    n = args.frames or 12
    rows = max(1, int(round(n**0.5)))
    cols = -(-n // rows)
    print(f"demo laue: simulating a {rows} x {cols} raster of 2018 x 2016 images in {out / 'demo-data'}", flush=True)
    scan = write_laue_scan(out / "demo-data", rows, cols, n_images=n, seed=2026)
    run = {
        "inputs": [str(p) for p in scan["images"]],
        "output_dir": str(out / "run"),
        "positions": str(scan["positions"]),
        "cluster": args.cluster or "local",
        "method": getattr(args, "method", None) or "fit",
        "batch_size": args.batch_size or 4,
    }
    kwargs, profile = prepare(run, "demo laue")
    code = run_flow(kwargs, profile, title="demo laue")
    print(f"\ndemo laue done: outputs in {out / 'run'} (truth: {scan['truth']})")
    return code


cmd_demo_laue = cmd_demo  # the older name
