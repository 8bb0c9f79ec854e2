"""The tomography command of ``photonflow``: ``tomo`` (and its ``--dry-run`` chunk plan)."""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from pathlib import Path

from photonflow.config import ConfigError, validate_config
from photonflow.deployments.cli.options import add_schema_options, flow_kwargs, run_from_args


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "tomo",
        usage="photonflow tomo SCAN.h5... --out DIR [options]\n"
        "       photonflow tomo --config RUN.json [options overriding the file]",
        description=textwrap.dedent(
            """\
            Chunked parallel-beam tomography of DXchange scans (the MAX IV DanMAX pipeline):
            pass 1 preprocesses projection chunks (flat/dark with flats before and after, I0,
            zingers, air correction, stitching of side-by-side scans, Paganin phase retrieval),
            each into its own file, joined by an HDF5 virtual dataset; pass 2 reconstructs
            sinogram chunks (−log, Vo stripe removal, rings, 360° → 180°, FBP by Fourier gridding
            'gridrec' or another backend, circular mask, uint16/uint8 with a stated range).
            Writes volume.h5 (/volume and a 2× pyramid), report.pdf, plan.json, summary.json.
            The steps and their parameters come from --config RUN.json (schema:
            config/schemas/tomo_run.schema.json; every option below is one of its fields);
            --dry-run prints the chunk plan as JSON. --algorithm chooses the reconstruction
            (reconstruction.algorithm: gridrec, fbp, torch, algotom, tomopy)."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dry-run", action="store_true", help="print the chunk plan (JSON) and stop")
    p.set_defaults(func=cmd_tomo, option_specs=add_schema_options(p, "tomo_run"))


def cmd_tomo(args: argparse.Namespace) -> int:
    from photonflow.deployments.cli.common import describe_runner, run_on_profile
    from photonflow.deployments.clusters import load_cluster_profile, task_runner_spec
    from photonflow.flows.tomo import TomoInputError, tomo_flow
    from photonflow.tomo.dxchange import DxchangeError

    run, source = run_from_args("tomo", "tomo_run", args, args.option_specs)
    run = validate_config(run, "tomo_run", source=source)
    for path in run["inputs"]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: scan file not found")
    profile = load_cluster_profile(run["cluster"])
    from photonflow.operations import get as get_operation

    kwargs = flow_kwargs(
        get_operation("tomo"), run, inputs=[os.path.abspath(p) for p in run["inputs"]], dry_run=args.dry_run
    )
    if args.dry_run:  # the plan needs no workers: run the flow in-process on the thread pool
        profile = load_cluster_profile("threads")
    runner_name, runner_kwargs = task_runner_spec(profile)
    print(
        f"photonflow tomo: {len(kwargs['inputs'])} scan(s)\n  tasks run on: "
        f"{describe_runner(profile, runner_name, runner_kwargs)}\n  outputs go to: {kwargs['output_dir']}",
        flush=True,
    )
    try:
        summary = run_on_profile(tomo_flow, kwargs, profile)
    except (DxchangeError, TomoInputError) as exc:
        raise ConfigError(source, [("", str(exc))]) from None
    if args.dry_run:
        print(json.dumps(summary["plan"], indent=2))
        return 0
    print(
        f"\nvolume: {summary['outputs']['volume']} {summary['shape']} {summary['dtype']}, range "
        f"{summary['range_1_per_px']} 1/px"
    )
    print(f"centre of rotation: {summary['center_px']:.2f} px ({summary['center_from']})")
    print("stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["timings_s"].items()))
    if summary["outputs"].get("report"):
        print(f"report: {summary['outputs']['report']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate a scan (Shepp–Logan ellipsoids, flats before and after, darks, top-up drops with a
    monitor, dead and hot columns, zingers) and reconstruct it with stripe removal and the centre found."""
    from photonflow.deployments.cli.common import describe_runner, run_on_profile
    from photonflow.deployments.clusters import load_cluster_profile, task_runner_spec
    from photonflow.flows.tomo import tomo_flow
    from photonflow.simulate.tomo import simulate_scan, write_tomo_scan

    out = Path(os.path.abspath(Path(args.out).expanduser()))
    rows = args.frames or 32
    print(f"demo tomo: simulating 360 projections of {rows} x 256 px in {out / 'demo-data'}", flush=True)
    scan = simulate_scan(
        n_rows=rows,
        n_cols=256,
        n_angles=360,
        photons=20000,
        dead_columns=(60,),
        hot_columns=(150,),
        zinger_probability=1e-4,
        seed=2026,
    )
    (out / "demo-data").mkdir(parents=True, exist_ok=True)
    path = write_tomo_scan(out / "demo-data" / "scan.h5", scan)
    profile = load_cluster_profile(args.cluster or "local")
    kwargs = {
        "inputs": [str(path)],
        "output_dir": str(out / "run"),
        "memory_per_worker_gib": 0.25,
        "preprocess": {"i0": {"monitor": "/exchange/monitor"}, "zingers": {"threshold": 0.3}},
        "sinogram": {"stripes": {"method": "all", "snr": 3, "la_size": 31, "sm_size": 21}},
        "chunks": {"projections": 120, "rows": 8},
    }
    runner_name, runner_kwargs = task_runner_spec(profile)
    print(f"  tasks run on: {describe_runner(profile, runner_name, runner_kwargs)}", flush=True)
    summary = run_on_profile(tomo_flow, kwargs, profile)
    print(f"\nvolume: {summary['outputs']['volume']} {summary['shape']} {summary['dtype']}")
    print(f"centre of rotation: {summary['center_px']:.2f} px ({summary['center_from']}; true {scan.center_px:.2f})")
    print("stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["timings_s"].items()))
    print(f"report: {summary['outputs'].get('report')}\n\ndemo tomo done: outputs in {out / 'run'}")
    return 0


cmd_demo_tomo = cmd_demo  # the older name
