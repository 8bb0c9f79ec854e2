"""The serial-crystallography commands of ``photonflow``: ``sfx``, ``sfx-train`` and ``demo sfx``.

Registered by the operation registry's ``cli`` entry for sfx (:mod:`photonflow.deployments.cli.main`).
"""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path

from photonflow.config import ConfigError, validate_config
from photonflow.deployments.cli.options import add_schema_options, flow_kwargs, run_from_args

#: peakfinder8 parameters that suit the simulated detectors (10 ADU per photon, 75 µm pixels).
SIMULATED_DETECTOR_PF8 = {
    "adc_threshold": 100,
    "minimum_snr": 5,
    "min_pixel_count": 2,
    "max_pixel_count": 40,
    "local_bg_radius": 3,
    "min_res": 0,
    "max_res": 2000,
}


def add_parsers(sub) -> None:
    """Register ``sfx`` and ``sfx-train`` on the ``photonflow`` sub-command parser."""
    p = sub.add_parser(
        "sfx",
        usage="photonflow sfx GEOMETRY INPUT... --out DIR [options]\n"
        "       photonflow sfx --config RUN.json [options overriding the file]",
        description=textwrap.dedent(
            """\
            Bragg peak finding and hit finding for serial crystallography. Frames (multi-event
            CXI/HDF5 files, event ranges 'file.cxi:START-STOP', single images, directories) are
            peak-found in batches with peakfinder8 (Cheetah/OM/CrystFEL parameters) or the
            PeakNet-style network, against a CrystFEL geometry (.geom). A frame is a hit when
            min_peaks <= peaks <= max_peaks (inclusive). Writes peaks/*.cxi (every frame's
            peaks, CXI layout CrystFEL reads), hits/*.cxi (hit frames with their peaks),
            hits.lst (CrystFEL list, 'file //event'), frames.csv/.h5, hit_rate.png,
            peak_overlay.png and, for the network, artifact_mask.h5. The same fields can come
            from --config RUN.json (schema: config/schemas/sfx_run.schema.json)."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_sfx, option_specs=add_schema_options(p, "sfx_run"))

    p = sub.add_parser(
        "sfx-train",
        description=textwrap.dedent(
            """\
            Train the PeakNet-style network (a residual attention U-Net segmenting background /
            Bragg peak / artifact, categorical focal loss γ = 2, rotation/shift/masking
            augmentation) on frames simulated through a CrystFEL geometry, plus user-labelled
            frames when given (HDF5 with /images (n, ss, fs) and /labels (n, ss, fs): 0 background,
            1 peak, 2 artifact, 255 ignore). Saves the checkpoint with its metadata and prints the
            validation metrics on held-out simulated frames (peak precision/recall at 1.5 px,
            artifact-pixel recall)."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="MODEL.pt", help="checkpoint to write (metadata beside it as .json)")
    p.add_argument(
        "--geometry",
        action="append",
        metavar="GEOM",
        help="geometry to simulate through; repeat for several (default: config/geometry/sim256.geom "
        "and sim1920.geom, as the shipped model)",
    )
    p.add_argument("--frames", type=int, nargs="+", metavar="N", help="training frames per geometry (default 160 24)")
    p.add_argument("--val-frames", type=int, nargs="+", metavar="N", help="validation frames per geometry")
    p.add_argument("--test-frames", type=int, nargs="+", metavar="N", help="held-out test frames per geometry")
    p.add_argument("--epochs", type=int, default=25, metavar="N", help="epochs of --steps-per-epoch steps (default 25)")
    p.add_argument(
        "--steps-per-epoch", type=int, default=100, metavar="N", help="optimiser steps per epoch (default 100)"
    )
    p.add_argument("--crop", type=int, default=128, metavar="PX", help="training crop size, pixels (default 128)")
    p.add_argument("--base-channels", type=int, default=8, metavar="N", help="U-Net width (default 8)")
    p.add_argument("--depth", type=int, default=3, metavar="N", help="U-Net depth (default 3)")
    p.add_argument("--labelled", metavar="FILE.h5", help="user-labelled frames (/images, /labels) added to training")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    p.add_argument("--device", default="auto", metavar="DEV", help="torch device (default auto)")
    p.set_defaults(func=cmd_sfx_train)


# --------------------------------------------------------------------------- sfx


def prepare(run: dict, source: str) -> tuple[dict, dict]:
    """Validate a merged run (schema, files exist, geometry parses) -> (flow kwargs, profile)."""
    from photonflow.deployments.cli.common import expand_inputs
    from photonflow.deployments.clusters import load_cluster_profile
    from photonflow.io.geom import GeometryError, load_geometry

    run = validate_config(run, "sfx_run", source=source)
    geometry = Path(run["geometry"])
    if not geometry.is_file():
        raise FileNotFoundError(f"{geometry}: geometry file not found")
    try:
        load_geometry(geometry)
    except GeometryError as exc:
        raise ConfigError(source, [("geometry", str(exc))]) from None
    for path, field in (
        (run.get("mask"), "mask"),
        ((run.get("peaknet") or {}).get("checkpoint"), "peaknet.checkpoint"),
    ):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"{path}: {field} file not found")
    inputs = expand_inputs(run["inputs"])
    profile = load_cluster_profile(run["cluster"])
    from photonflow.operations import get as get_operation

    kwargs = flow_kwargs(
        get_operation("sfx"),
        run,
        geometry=str(geometry),
        inputs=inputs,
        peakfinder8=run.get("peakfinder8") or {},
        peaknet=run.get("peaknet") or {},
    )
    return kwargs, profile


def run_flow(kwargs: dict, profile: dict, title: str = "sfx") -> int:
    """Run the sfx flow on the profile's task runner and print the summary; returns the exit code."""
    from photonflow.deployments.cli.common import run_and_report
    from photonflow.flows.sfx import sfx_flow

    return run_and_report(
        sfx_flow, kwargs, profile, title, f", geometry {kwargs['geometry']}, finder {kwargs['finder']}"
    )


def cmd_sfx(args: argparse.Namespace) -> int:
    run, source = run_from_args("sfx", "sfx_run", args, args.option_specs)
    kwargs, profile = prepare(run, source)
    return run_flow(kwargs, profile)


# --------------------------------------------------------------------------- demo sfx


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate serial-crystallography frames through config/geometry/sim1920.geom and run the
    sfx flow on them (peakfinder8 with parameters for the simulated detector, or the network)."""
    from photonflow.config import CONFIG_DIR
    from photonflow.io.geom import load_geometry
    from photonflow.simulate.sfx import write_sfx_dataset

    out = Path(os.path.abspath(Path(args.out).expanduser()))
    n = args.frames or 60
    geometry = CONFIG_DIR / "geometry" / "sim1920.geom"
    print(f"demo sfx: simulating {n} frames of 1920 x 1920 through {geometry.name} in {out / 'demo-data'}", flush=True)
    dataset = write_sfx_dataset(out / "demo-data", load_geometry(geometry), n, frames_per_file=20, seed=2026)
    print(f"  {dataset.n_hits} of them hits (truth in {dataset.truth_path})")
    finder = getattr(args, "finder", None) or "peakfinder8"
    run = {
        "geometry": str(dataset.geometry_path),
        "inputs": [str(p) for p in dataset.cxi_files],
        "output_dir": str(out / "run"),
        "cluster": args.cluster or "local",
        "finder": finder,
        "peakfinder8": dict(SIMULATED_DETECTOR_PF8),
        "batch_size": args.batch_size or 20,
    }
    kwargs, profile = prepare(run, "demo sfx")
    code = run_flow(kwargs, profile, title="demo sfx")
    print(f"\ndemo sfx done: outputs in {out / 'run'}")
    return code


# --------------------------------------------------------------------------- sfx-train


def cmd_sfx_train(args: argparse.Namespace) -> int:
    from photonflow.config import resource_path
    from photonflow.deployments.cli.common import UsageError
    from photonflow.io.geom import load_geometry
    from photonflow.peaks.training import train_on_simulated

    geometries = None
    if args.geometry:
        geometries = []
        for name in args.geometry:
            path = resource_path(name)
            if not path.is_file():
                raise FileNotFoundError(f"{name}: geometry file not found")
            geometries.append(load_geometry(path))
    user_images = user_labels = None
    if args.labelled:
        import h5py

        with h5py.File(args.labelled, "r") as f:
            missing = [name for name in ("images", "labels") if name not in f]
            if missing:
                raise UsageError(f"{args.labelled}: no /{' or /'.join(missing)} dataset (expected /images and /labels)")
            user_images, user_labels = f["images"][()], f["labels"][()]
        if user_images.shape != user_labels.shape or user_images.ndim != 3:
            raise UsageError(
                f"{args.labelled}: /images {user_images.shape} and /labels {user_labels.shape} must both be (n, ss, fs)"
            )
    metadata = train_on_simulated(
        args.out,
        geometry=geometries,
        n_train=args.frames,
        n_val=args.val_frames,
        n_test=args.test_frames,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        seed=args.seed,
        user_images=user_images,
        user_labels=user_labels,
        crop=args.crop,
        base_channels=args.base_channels,
        depth=args.depth,
        device=args.device,
    )
    metrics = metadata.get("validation", {})
    print(f"\ncheckpoint: {args.out}")
    print("held-out simulated frames:")
    for key in (
        "peak_precision",
        "peak_recall",
        "peak_f1",
        "artifact_pixel_recall",
        "artifact_mask_recall",
        "peak_median_offset",
    ):
        if isinstance(metrics.get(key), float):
            print(f"  {key}: {metrics[key]:.4f}")
    return 0


cmd_demo_sfx = cmd_demo  # the older name
