"""The tomography command of ``photonflow``: ``tomo`` (and its ``--dry-run`` chunk plan)."""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from pathlib import Path

from photonflow.config import ConfigError, validate_config

SECTIONS = ("preprocess", "sinogram", "reconstruction", "output", "stitch", "chunks")


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
            config/schemas/tomo_run.schema.json); --dry-run prints the chunk plan as JSON."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="SCAN.h5", help="DXchange files (several: side-by-side scans)")
    p.add_argument("--out", dest="output_dir", metavar="DIR", help="output directory")
    p.add_argument("--config", metavar="RUN.json", help="run configuration file (tomo_run schema)")
    p.add_argument("--center", type=float, metavar="PX", help="rotation axis column, px (default: found)")
    p.add_argument("--backend", metavar="NAME", help="reconstruction backend (default gridrec)")
    p.add_argument("--dtype", choices=["uint16", "uint8", "float32"], help="volume type (default uint16)")
    p.add_argument("--memory-per-worker-gib", "--memory-gib", dest="memory_per_worker_gib", type=float, metavar="GIB", help="memory per worker for the chunk plan (default 2)")
    p.add_argument("--keep-intermediate", action="store_true", default=None, help="keep pass-1/pass-2 chunk files")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=None,
                   help="write the PDF report (default yes)")
    p.add_argument("--dry-run", action="store_true", help="print the chunk plan (JSON) and stop")
    p.add_argument("--cluster", metavar="PROFILE", help="cluster profile (default local)")
    p.set_defaults(func=cmd_tomo)


def _resolve(data: dict, base: Path) -> dict:
    from photonflow.deployments.cli_common import _absolute, resolve_paths

    out = resolve_paths(data, base)
    if isinstance(out.get("output_dir"), str):
        out["output_dir"] = str(_absolute(out["output_dir"], base))
    return out


def run_from_args(args) -> tuple[dict, str]:
    from photonflow.deployments.cli_common import UsageError, load_run_file

    run, source = load_run_file(args.config, _resolve)
    cli = {"inputs": list(args.inputs) or None, "output_dir": args.output_dir, "cluster": args.cluster,
           "memory_per_worker_gib": args.memory_per_worker_gib, "report": args.report}
    overrides = {k: v for k, v in cli.items() if v is not None}
    run.update(_resolve(overrides, Path.cwd()))
    if args.center is not None or args.backend:
        run["reconstruction"] = {**run.get("reconstruction", {}),
                                 **({"center": args.center} if args.center is not None else {}),
                                 **({"backend": args.backend} if args.backend else {})}
    if args.dtype or args.keep_intermediate:
        run["output"] = {**run.get("output", {}), **({"dtype": args.dtype} if args.dtype else {}),
                         **({"keep_intermediate": True} if args.keep_intermediate else {})}
    if args.config and (overrides or args.center is not None or args.backend or args.dtype):
        source = f"{args.config} + command line"
    missing = [flag for key, flag in (("inputs", "SCAN.h5..."), ("output_dir", "--out DIR")) if not run.get(key)]
    if missing:
        raise UsageError(f"tomo needs {', '.join(missing)} (on the command line or in --config RUN.json); "
                         "see 'photonflow tomo --help'")
    return run, source


def cmd_tomo(args: argparse.Namespace) -> int:
    from photonflow.deployments.cli_common import describe_runner, run_on_profile
    from photonflow.deployments.clusters import load_cluster_profile, task_runner_spec
    from photonflow.flows.tomo import TomoInputError, tomo_flow
    from photonflow.tomo.dxchange import DxchangeError

    run, source = run_from_args(args)
    run = validate_config(run, "tomo_run", source=source)
    for path in run["inputs"]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: scan file not found")
    profile = load_cluster_profile(run["cluster"])
    kwargs = {"inputs": [os.path.abspath(p) for p in run["inputs"]], "output_dir": run["output_dir"],
              "memory_per_worker_gib": run["memory_per_worker_gib"], "dry_run": args.dry_run,
              "report": run["report"], **{k: run.get(k) for k in SECTIONS}}
    if args.dry_run:  # the plan needs no workers: run the flow in-process on the thread pool
        profile = load_cluster_profile("threads")
    runner_name, runner_kwargs = task_runner_spec(profile)
    print(f"photonflow tomo: {len(kwargs['inputs'])} scan(s)\n  tasks run on: "
          f"{describe_runner(profile, runner_name, runner_kwargs)}\n  outputs go to: {kwargs['output_dir']}", flush=True)
    try:
        summary = run_on_profile(tomo_flow, kwargs, profile)
    except (DxchangeError, TomoInputError) as exc:
        raise ConfigError(source, [("", str(exc))]) from None
    if args.dry_run:
        print(json.dumps(summary["plan"], indent=2))
        return 0
    print(f"\nvolume: {summary['outputs']['volume']} {summary['shape']} {summary['dtype']}, range "
          f"{summary['range_1_per_px']} 1/px")
    print(f"centre of rotation: {summary['center_px']:.2f} px ({summary['center_from']})")
    print("stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["timings_s"].items()))
    if summary["outputs"].get("report"):
        print(f"report: {summary['outputs']['report']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate a scan (Shepp–Logan ellipsoids, flats before and after, darks, top-up drops with a
    monitor, dead and hot columns, zingers) and reconstruct it with stripe removal and the centre found."""
    from photonflow.deployments.cli_common import describe_runner, run_on_profile
    from photonflow.deployments.clusters import load_cluster_profile, task_runner_spec
    from photonflow.flows.tomo import tomo_flow
    from photonflow.simulate.tomo import simulate_scan, write_tomo_scan

    out = Path(os.path.abspath(Path(args.out).expanduser()))
    rows = args.frames or 32
    print(f"demo tomo: simulating 360 projections of {rows} x 256 px in {out / 'demo-data'}", flush=True)
    scan = simulate_scan(n_rows=rows, n_cols=256, n_angles=360, photons=20000, dead_columns=(60,), hot_columns=(150,),
                         zinger_probability=1e-4, seed=2026)
    (out / "demo-data").mkdir(parents=True, exist_ok=True)
    path = write_tomo_scan(out / "demo-data" / "scan.h5", scan)
    profile = load_cluster_profile(args.cluster or "local")
    kwargs = {"inputs": [str(path)], "output_dir": str(out / "run"), "memory_per_worker_gib": 0.25,
              "preprocess": {"i0": {"monitor": "/exchange/monitor"}, "zingers": {"threshold": 0.3}},
              "sinogram": {"stripes": {"method": "all", "snr": 3, "la_size": 31, "sm_size": 21}},
              "chunks": {"projections": 120, "rows": 8}}
    runner_name, runner_kwargs = task_runner_spec(profile)
    print(f"  tasks run on: {describe_runner(profile, runner_name, runner_kwargs)}", flush=True)
    summary = run_on_profile(tomo_flow, kwargs, profile)
    print(f"\nvolume: {summary['outputs']['volume']} {summary['shape']} {summary['dtype']}")
    print(f"centre of rotation: {summary['center_px']:.2f} px ({summary['center_from']}; true {scan.center_px:.2f})")
    print("stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["timings_s"].items()))
    print(f"report: {summary['outputs'].get('report')}\n\ndemo tomo done: outputs in {out / 'run'}")
    return 0


cmd_demo_tomo = cmd_demo  # the older name
