"""The ``photonflow`` command line (entry point ``photonflow = "deployments.cli:main"``).

Flows and Prefect are imported inside the subcommands, so ``photonflow --help``,
``photonflow validate`` and ``photonflow cluster show`` start quickly.

Exit codes: 0 success; 1 the run finished but some frames failed (listed in the summary);
2 a configuration or usage error (one line per problem on stderr, no traceback);
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import inspect
import json
import logging
import os
import re
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Sequence

from photonflow.config import (
    ConfigError,
    available_schemas,
    guess_schema,
    load_json,
    load_json_config,
    validate_config,
)

from deployments.clusters import (
    available_profiles,
    load_cluster_profile,
    prefect_api_for,
    slurm_job_script,
    task_runner_for,
    task_runner_spec,
)

__all__ = ["main", "build_parser", "shared_data_dir", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Environment variable overriding where the real test/demo data live (default: ../shared/data
#: beside the checkout); the same variable as tests/conftest.py.
DATA_ENV = "PHOTONFLOW_DATA"

_GLOB_CHARS = re.compile(r"[*?\[]")
_EVENT_RANGE = re.compile(r"^(?P<path>.+?):(?P<start>\d+)(?:-(?P<stop>\d+))?$")


class UsageError(ConfigError):
    """A command-line problem (reported like a configuration error, exit code 2)."""

    def __init__(self, message: str):
        super().__init__("photonflow", [("", message)])


def shared_data_dir() -> Path:
    """Real detector data: ``$PHOTONFLOW_DATA`` if set, else ``../shared/data`` beside the checkout."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data"


# --------------------------------------------------------------------------- parser

_DESCRIPTION = """\
photonflow: X-ray data reduction as Prefect flows whose tasks run on Dask workers,
on this machine (the default: nothing to start) or on a SLURM cluster.

flows:
  saxs      Azimuthal integration of 2D SAXS/WAXS detector images into 1D I(q) ± σ
            curves with SAXSDOG's method, from a SAXSDOG calibration JSON or a pyFAI
            .poni file; frames are integrated in batches, one curve per frame is
            written, and the run ends with a summary and an I(q) plot.
  sfx       Serial crystallography: Bragg peak finding (peakfinder8, or the PeakNet-style
            network) and hit finding over multi-event CXI/HDF5 files and images with a
            CrystFEL geometry; writes CXI peak lists, a CrystFEL hit list, plots.
  sfx-train Train the PeakNet-style network on simulated (and user-labelled) frames.
  tomo      Chunked tomography of DXchange scans (DanMAX pipeline): preprocessing, stitching,
            Paganin, reconstruction by Fourier gridding, a volume with its pyramid, a PDF report.
  laue      Laue microdiffraction over a raster scan: LaueTools-style spot search, batched
            2D Gaussian fits (or the spot CNN) with the CNN Laue spot paper's descriptors
            (position, sigma, Sim, Asp, Area, quality); spot tables and scan maps.
  classify  Good/bad frame classification after PADT: label (lists, automatic profile
            fits, contact sheets), train and evaluate scikit-learn models on a ROI, and
            sort whole experiments into good/bad CrystFEL lists.
  demo      A flow end to end with nothing to configure. 'demo' (or 'demo saxs'): the
            real Pilatus 1M images in ../shared/data/saxs (CeO2 calibrant with its .poni,
            Fe3O4C map frames) when present, otherwise generated images with known ground
            truth. 'demo sfx': simulated 1920 x 1920 serial-crystallography frames.
            'demo laue': a simulated Laue raster scan (2018 x 2016 images).
            'demo tomo': a simulated tomography scan, reconstructed chunk by chunk.

real time:
  watch     Reduce frames as they arrive: watches directories (and/or listens to
            SAXSDOG's ZMQ detector feeder), hands over only complete files, batches
            arrivals, and records every item in a ledger so a restart misses nothing
            and does nothing twice; emits a Prefect event per interval.
  serve     Serve one deployment per flow against a running Prefect server, with cron
            schedules and triggers on photonflow's file events (runs from the UI).
  submit    Start a run of a served deployment; prints its run id ('status' follows it).

tools:
  monitor   A web page that shows what running flows are finding (progress, I(q) curves,
            hit rates, Laue maps, tomography chunks), read from their output directories.
  cluster   List the cluster profiles that choose where tasks run (local Dask cluster,
            threads, SLURM via dask-jobqueue, a running Dask scheduler) and show one;
            for SLURM, print the batch script without submitting anything.
  validate  Check a configuration file (SAXSDOG calibration, SAXS run, cluster profile)
            against its JSON Schema and name every wrong field.
"""

_EPILOG = """\
examples:
  photonflow demo --out demo-output
  photonflow saxs calib.json data/*.tif --out results --cluster local
  photonflow saxs CeO2.poni scan.h5:0-1000 --out results --npt 1000 --q-range 0.1 30
  photonflow saxs --config run.json --cluster slurm
  photonflow demo sfx --out demo-output/sfx
  photonflow sfx det.geom run7/*.cxi --out peaks --min-snr 5 --adc-threshold 100
  photonflow sfx det.geom run7/ --out peaks --finder peaknet
  photonflow demo laue --out demo-output/laue
  photonflow laue scan/ --out spots --threshold 400 --scan-shape 20 30
  photonflow demo tomo --out demo-output/tomo
  photonflow tomo scan.h5 --out recon --config tomo.json --dry-run
  photonflow watch watch.json /data/run42 --idle-timeout 600
  photonflow serve serve.json
  photonflow submit saxs --param inputs='["/data/run42"]' --wait
  photonflow cluster show slurm
  photonflow monitor results/ demo-output/ --port 8765
  photonflow validate calib.json

exit codes: 0 done; 1 done but some frames (images) failed; 2 configuration error; 130 interrupted.
Run 'photonflow COMMAND --help' for a command's options.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``photonflow`` command (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="photonflow",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="one of the flows or tools above")

    # -- saxs
    p = sub.add_parser(
        "saxs",
        usage="photonflow saxs CALIBRATION INPUT... --out DIR [options]\n"
        "       photonflow saxs --config RUN.json [options overriding the file]",
        description=textwrap.dedent(
            """\
            Integrate 2D detector images into 1D I(q) ± σ curves (q in nm⁻¹).
            CALIBRATION is a SAXSDOG calibration JSON (checked against its schema
            before anything runs) or a pyFAI .poni file. INPUT is an image file, a
            directory, or a multi-frame HDF5 file with an event range FILE.h5:START-STOP
            (0-based, STOP excluded) or FILE.h5:N. Options given here override the
            same fields of --config RUN.json (schema: config/schemas/saxs_run.schema.json),
            whose relative paths are relative to the file itself."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("calibration", nargs="?", metavar="CALIBRATION", help="SAXSDOG calibration .json or pyFAI .poni")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, directories, FILE.h5:START-STOP")
    p.add_argument("--out", dest="output_dir", metavar="DIR", help="output directory (created if absent)")
    _add_run_options(p)
    p.add_argument("--npt", type=int, metavar="N", help="number of radial bins (with a .poni calibration)")
    p.add_argument("--q-range", type=float, nargs=2, metavar=("MIN", "MAX"), help="q range of the bins in nm⁻¹")
    p.add_argument("--oversampling", type=int, metavar="N", help="sub-pixel splitting per axis (overrides the calibration)")
    p.add_argument("--mask", metavar="FILE", help="mask file (overrides the calibration's MaskFile)")
    p.add_argument(
        "--polarization-factor", type=float, metavar="P",
        help="pyFAI polarization factor, -1..1 (overrides the calibration)",
    )
    p.add_argument("--config", metavar="RUN.json", help="run configuration file (saxs_run schema)")
    p.set_defaults(func=_cmd_saxs)

    # -- sfx, sfx-train
    from deployments.cli_sfx import add_parsers as add_sfx_parsers

    add_sfx_parsers(sub)

    # -- classify
    from deployments.cli_classify import add_parsers as add_classify_parsers

    add_classify_parsers(sub)

    # -- laue
    from deployments.cli_laue import add_parsers as add_laue_parsers

    add_laue_parsers(sub)

    # -- tomo
    from deployments.cli_tomo import add_parsers as add_tomo_parsers

    add_tomo_parsers(sub)

    # -- monitor
    from deployments.cli_monitor import add_parsers as add_monitor_parsers

    add_monitor_parsers(sub)

    # -- demo
    p = sub.add_parser(
        "demo",
        description=textwrap.dedent(
            f"""\
            Run the SAXS flow end to end on the embedded default (Prefect's local
            ephemeral API, a Dask LocalCluster): on the real Pilatus 1M images in
            ../shared/data/saxs (override with ${DATA_ENV}) when present (CeO2 calibrant
            with CeO2_Pilatus1M.poni, plus the Fe3O4C map frames), otherwise on images
            generated by photonflow.simulate. Prints where the outputs and the plot are."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("which", nargs="?", choices=["saxs", "sfx", "laue", "tomo"], default="saxs",
                   help="which flow: saxs (default), sfx (serial crystallography on simulated frames), laue "
                   "(a simulated Laue raster scan) or tomo (a simulated tomography scan)")
    p.add_argument("--out", default="demo-output", metavar="DIR", help="output directory (default: demo-output)")
    p.add_argument(
        "--frames", type=int, metavar="N",
        help="frames to process: at most N of the real frames, or N generated frames (default 100; sfx: 60; "
        "laue: 12 images; tomo: detector rows, 32)",
    )
    p.add_argument("--finder", choices=["peakfinder8", "peaknet"], help="demo sfx: the peak finder (default peakfinder8)")
    p.add_argument("--method", choices=["fit", "cnn"], help="demo laue: spot descriptors (default fit)")
    p.add_argument("--synthetic", action="store_true", help="use generated data even where the real images are present")
    _add_run_options(p, overwrite_default=True)
    p.set_defaults(func=_cmd_demo)

    # -- cluster
    p = sub.add_parser(
        "cluster",
        description="Cluster profiles (config/clusters/*.json, schema config/schemas/cluster_profile.schema.json) "
        "choose where a flow's tasks run. Give a profile by name or as the path of a JSON file.",
    )
    csub = p.add_subparsers(dest="cluster_command", metavar="ACTION", title="actions")
    cp = csub.add_parser("show", help="print a profile, the task runner it makes and, for slurm, the batch script")
    cp.add_argument("profile", metavar="PROFILE", help="profile name (local, threads, slurm, address) or path")
    cp.set_defaults(func=_cmd_cluster_show)
    cp = csub.add_parser("list", help="list the profiles in config/clusters")
    cp.set_defaults(func=_cmd_cluster_list)
    p.set_defaults(func=_cmd_cluster_help, cluster_parser=p)

    # -- watch
    p = sub.add_parser(
        "watch",
        description="Reduce frames as they arrive in DIR... (recursively; patterns, settle time, micro-batching, "
        "the ZMQ feeder and the stop conditions come from the watch config, config/schemas/watch.schema.json). "
        "The ledger (OUTPUT_DIR/ledger.sqlite) makes a restart resume: items that arrived meanwhile are "
        "caught up, items done are not redone, items in flight are retried. Stop with Ctrl-C.",
    )
    p.add_argument("config", metavar="CONFIG", help="watch config (JSON)")
    p.add_argument("directories", nargs="*", metavar="DIR", help="directories to watch (added to the config's)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--idle-timeout", type=float, metavar="S", help="stop after S seconds without arrivals")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.set_defaults(func=_cmd_watch)

    # -- serve
    p = sub.add_parser(
        "serve",
        description="Serve the deployments 'saxs/saxs', 'saxs-live/saxs-live', 'sfx/sfx', 'classify-sort/classify-sort' "
        "and 'laue/laue' "
        "against the Prefect server in "
        "PREFECT_API_URL (start one with 'prefect server start'), with the default parameters, cron schedules "
        "and file-event triggers of CONFIG (config/schemas/serve.schema.json). Runs until interrupted.",
    )
    p.add_argument("config", nargs="?", metavar="CONFIG", help="serve config (JSON); without it, on demand only")
    p.set_defaults(func=_cmd_serve)

    # -- submit / status
    p = sub.add_parser("submit", description="Start a run of a served deployment and print its flow run id.")
    p.add_argument("flow", metavar="FLOW", help="saxs, saxs-live, sfx, classify-sort, laue, or FLOW/DEPLOYMENT")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a flow parameter; VALUE is read as JSON when it parses, else as a string")
    p.add_argument("--wait", action="store_true", help="wait until the run is final and exit 0 only if it completed")
    p.set_defaults(func=_cmd_submit)
    p = sub.add_parser("status", description="Print the state of a flow run.")
    p.add_argument("run_id", metavar="RUN_ID")
    p.set_defaults(func=_cmd_status)

    # -- validate
    p = sub.add_parser(
        "validate",
        description="Check a JSON configuration file against its schema in config/schemas. Prints OK, or every "
        "wrong field (file: field: reason) and exits with code 2. Without --schema the schema is "
        "taken from the file's \"$schema\" or guessed from its keys.",
    )
    p.add_argument("config", metavar="CONFIG", help="the JSON file to check")
    p.add_argument("--schema", choices=available_schemas(), metavar="NAME",
                   help=f"schema to check against: {', '.join(available_schemas())}")
    p.set_defaults(func=_cmd_validate)
    return parser


def _add_run_options(p: argparse.ArgumentParser, overwrite_default: bool | None = None) -> None:
    p.add_argument("--batch-size", type=int, metavar="N", help="frames per task (default 200)")
    p.add_argument(
        "--cluster", metavar="PROFILE",
        help=f"cluster profile: {', '.join(available_profiles())} or a profile JSON path (default local)",
    )
    p.add_argument(
        "--overwrite", action=argparse.BooleanOptionalAction, default=overwrite_default,
        help="recompute existing outputs (default: the calibration's OverwriteFiles)"
        if overwrite_default is None else "recompute existing outputs (default: yes)",
    )


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("photonflow")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``photonflow`` command; returns the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"photonflow: error: {line}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"photonflow: error: {_file_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("photonflow: interrupted", file=sys.stderr)
        return 130


def _file_error(exc: FileNotFoundError) -> str:
    if exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc.args[0]) if len(exc.args) == 1 else str(exc)


# --------------------------------------------------------------------------- saxs

_PATH_FIELDS = ("calibration", "output_dir", "mask")


def _cmd_saxs(args: argparse.Namespace) -> int:
    run, source = _saxs_run_from_args(args)
    kwargs, profile = _prepare_saxs(run, source)
    return _run_saxs(kwargs, profile)


def load_run_file(config: str | None, resolve) -> tuple[dict, str]:
    """A run file (--config RUN.json) as a dict with its paths resolved against the file's
    directory by ``resolve(data, base)``, and the source name; ({}, "command line") without one."""
    if not config:
        return {}, "command line"
    data = load_json(config)
    if not isinstance(data, dict):
        raise ConfigError(config, [("", f"must be a JSON object, not {type(data).__name__}")])
    return resolve(data, Path(os.path.abspath(config)).parent), config


def _saxs_run_from_args(args: argparse.Namespace) -> tuple[dict, str]:
    """Merge --config RUN.json (paths relative to the file) with the command line (paths
    relative to the working directory; takes precedence). Returns (run dict, source name)."""
    run, source = load_run_file(args.config, _resolve_paths)
    cli: dict[str, Any] = {
        "calibration": args.calibration,
        "inputs": list(args.inputs) or None,
        "output_dir": args.output_dir,
        "batch_size": args.batch_size,
        "cluster": args.cluster,
        "overwrite": args.overwrite,
        "npt": args.npt,
        "q_range": list(args.q_range) if args.q_range else None,
        "oversampling": args.oversampling,
        "mask": args.mask,
        "polarization_factor": args.polarization_factor,
    }
    overrides = {k: v for k, v in cli.items() if v is not None}
    if args.config and overrides:
        source = f"{args.config} + command line"
    run.update(_resolve_paths(overrides, Path.cwd()))
    missing = [
        flag for key, flag in (("calibration", "CALIBRATION"), ("inputs", "INPUT..."), ("output_dir", "--out DIR"))
        if not run.get(key)
    ]
    if missing:
        raise UsageError(
            f"saxs needs {', '.join(missing)} (on the command line or in --config RUN.json); "
            "see 'photonflow saxs --help'"
        )
    return run, source


def _resolve_paths(data: dict, base: Path) -> dict:
    """Relative paths in a run dict made absolute against ``base`` (inputs keep their
    ``:START-STOP`` event range; a cluster given by name stays a name)."""
    out = dict(data)
    for key in _PATH_FIELDS:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = str(_absolute(out[key], base))
    cluster = out.get("cluster")
    if isinstance(cluster, str) and (cluster.endswith(".json") or "/" in cluster):
        out["cluster"] = str(_absolute(cluster, base))
    if isinstance(out.get("inputs"), list):
        out["inputs"] = [_absolute_input(i, base) if isinstance(i, str) and i else i for i in out["inputs"]]
    return out


def _absolute(path: str, base: Path) -> Path:
    """Absolute and normalised, symlinks kept (outputs mirror the input tree as the user names it)."""
    return Path(os.path.normpath(base / Path(path).expanduser()))


def _absolute_input(item: str, base: Path) -> str:
    m = _EVENT_RANGE.match(item)
    if m and not Path(item).expanduser().exists() and not (base / item).exists():
        suffix = item[len(m.group("path")):]
        return str(_absolute(m.group("path"), base)) + suffix
    return str(_absolute(item, base))


def _expand_inputs(inputs: list[str]) -> list[str]:
    """Check every input exists (globs expanded, event ranges checked)."""
    out: list[str] = []
    for i, item in enumerate(inputs):
        if Path(item).exists():
            out.append(item)
            continue
        m = _EVENT_RANGE.match(item)
        if m and Path(m.group("path")).is_file():
            start, stop = int(m.group("start")), m.group("stop")
            if stop is not None and int(stop) <= start:
                raise ConfigError("inputs", [(f"inputs[{i}]", f"{item}: event range {start}-{stop} is empty (STOP is excluded)")])
            out.append(item)
            continue
        if _GLOB_CHARS.search(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise FileNotFoundError(f"{item}: no file matches this pattern")
            out.extend(matches)
            continue
        raise FileNotFoundError(f"{m.group('path') if m else item}: input not found")
    return out


def _prepare_saxs(run: dict, source: str) -> tuple[dict, dict]:
    """Validate a merged run (schema + files exist + calibration schema) -> (flow kwargs, profile)."""
    run = validate_config(run, "saxs_run", source=source)
    calibration = Path(run["calibration"])
    if not calibration.is_file():
        raise FileNotFoundError(f"{calibration}: calibration file not found")
    suffix = calibration.suffix.lower()
    if suffix == ".json":
        cal = load_json_config(calibration, "saxsdog_calibration")
        calibration_overwrite = bool(cal["OverwriteFiles"])
    elif suffix == ".poni":
        calibration_overwrite = False  # a .poni has no such setting; parsed by photonflow.calibration
    else:
        raise ConfigError(source, [("calibration", f"{calibration.name}: expected a SAXSDOG calibration .json or a pyFAI .poni file")])
    if run.get("mask") and not Path(run["mask"]).is_file():
        raise FileNotFoundError(f"{run['mask']}: mask file not found")
    inputs = _expand_inputs(run["inputs"])
    profile = load_cluster_profile(run["cluster"])
    kwargs = {
        "calibration": str(calibration),
        "inputs": inputs,
        "output_dir": str(Path(run["output_dir"])),
        "batch_size": run["batch_size"],
        "overwrite": calibration_overwrite if run["overwrite"] is None else bool(run["overwrite"]),
        "npt": run.get("npt"),
        "q_range": list(run["q_range"]) if run.get("q_range") else None,
        "oversampling": run.get("oversampling"),
        "mask": run.get("mask"),
    }
    if run.get("polarization_factor") is not None:
        kwargs["polarization_factor"] = run["polarization_factor"]
    return kwargs, profile


def _load_saxs_flow():
    try:
        from flows.saxs import saxs_flow  # lazy: imports Prefect and the science stack
    except ModuleNotFoundError as exc:
        if exc.name in ("flows", "flows.saxs"):
            raise UsageError("the SAXS flow (flows/saxs.py) is not available in this installation") from None
        raise
    return saxs_flow


def _run_saxs(kwargs: dict, profile: dict, title: str = "saxs") -> int:
    saxs_flow = _load_saxs_flow()
    fn = getattr(saxs_flow, "fn", saxs_flow)
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unsupported = [] if takes_any else [k for k in kwargs if k not in params]
    if unsupported:
        raise UsageError(f"this version of flows.saxs does not accept {', '.join(unsupported)}")
    runner_name, runner_kwargs = task_runner_spec(profile)
    print(
        f"photonflow {title}: {len(kwargs['inputs'])} input(s), calibration {kwargs['calibration']}\n"
        f"  tasks run on: {_describe_runner(profile, runner_name, runner_kwargs)}\n"
        f"  outputs go to: {kwargs['output_dir']}",
        flush=True,
    )
    return _print_summary(run_on_profile(saxs_flow, kwargs, profile))


def run_on_profile(flow_fn, kwargs: dict, profile: dict):
    """Run a flow with the cluster profile's task runner, inside the Prefect API the profile needs
    (one local API shared with the Dask workers by default); returns the flow's result."""
    _quiet_dask_logs()
    if profile.get("kind") == "slurm":
        from deployments.clusters import check_slurm_submission

        check_slurm_submission(profile)  # a job SLURM refuses fails here, not as a run waiting for workers
    flow = flow_fn.with_options(task_runner=task_runner_for(profile))
    with contextlib.ExitStack() as stack:
        with warnings.catch_warnings():  # a missing shared Prefect API is one line on stderr
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning
            stack.enter_context(prefect_api_for(profile))
        return flow(**kwargs)


def print_failures(failures, where: str = "the run summary in the output directory") -> None:
    """The first 20 failures, one per line, and how many more there are."""
    failures = list(failures or [])
    if failures:
        print("failures:")
        for line in failures[:20]:
            print(f"  - {line}")
        if len(failures) > 20:
            print(f"  ... and {len(failures) - 20} more (see {where})")


def _quiet_dask_logs() -> None:
    """Dask's scheduler/nanny INFO lines (cluster start-up and shutdown) drown the run's own
    progress lines on the terminal; keep its warnings and errors. PHOTONFLOW_DASK_LOGS=info
    (or debug) restores them."""
    level = os.environ.get("PHOTONFLOW_DASK_LOGS", "warning").upper()
    logging.getLogger("distributed").setLevel(getattr(logging, level, logging.WARNING))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"photonflow: warning: {message}", file=sys.stderr)


def _describe_runner(profile: dict, name: str, kwargs: dict) -> str:
    where = f"profile {Path(profile.get('_source', '?')).stem!r}"
    if name == "ThreadPoolTaskRunner":
        return f"{where}: Prefect thread pool (max_workers={kwargs['max_workers']})"
    if "address" in kwargs:
        return f"{where}: Dask scheduler at {kwargs['address']}"
    ck = kwargs["cluster_kwargs"]
    if kwargs["cluster_class"].endswith("LocalCluster"):
        n = ck.get("n_workers") or f"{os.cpu_count()} (one per CPU)"
        return f"{where}: Dask LocalCluster, {n} workers × {ck.get('threads_per_worker')} thread(s)"
    scale = kwargs.get("adapt_kwargs") or {"jobs": profile.get("jobs")}
    return f"{where}: SLURM via dask-jobqueue, {ck.get('cores')} cores/{ck.get('memory')} per job, {scale}"


def _print_summary(summary: Any) -> int:
    if not isinstance(summary, dict):
        print(f"flow returned: {summary!r}")
        return 0
    done = summary.get("frames_done", 0)
    failed = summary.get("frames_failed", 0)
    skipped = summary.get("frames_skipped")
    elapsed = summary.get("elapsed_s")
    rate = summary.get("frames_per_s")
    timing = ""
    if elapsed is not None:
        timing = f" in {elapsed:.1f} s"
    if rate is not None:
        timing += f" ({rate:.1f} frames/s)"
    skip = f", skipped (outputs already there): {skipped}" if skipped else ""
    print(f"\nframes integrated: {done}{skip}, failed: {failed}{timing}")
    print_failures(summary.get("failures"))
    print(f"outputs: {summary.get('output_dir', '?')}")
    for key, label in (("plot", "plot:   "), ("curves_plot", "curves: "), ("table", "table:  ")):
        if summary.get(key):
            print(f"{label} {summary[key]}")
    return 1 if failed else 0


# --------------------------------------------------------------------------- demo

_REAL_CALIBRATION = "CeO2_Pilatus1M.poni"
_REAL_FRAMES = ("CeO2_Pilatus1M.tif",)
_REAL_SERIES = "Fe3O4C_M1_map_*_P1_E1_001.tif"


def _real_demo_data() -> tuple[Path, list[Path]] | None:
    saxs = shared_data_dir() / "saxs"
    poni = saxs / _REAL_CALIBRATION
    frames = [saxs / f for f in _REAL_FRAMES] + sorted(saxs.glob(_REAL_SERIES))
    if poni.is_file() and all(f.is_file() for f in frames) and len(frames) > len(_REAL_FRAMES):
        return poni, frames
    return None


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.frames is not None and args.frames < 1:
        raise UsageError("--frames must be at least 1")
    if args.which == "tomo":
        from deployments.cli_tomo import cmd_demo_tomo

        return cmd_demo_tomo(args)
    if args.which == "laue":
        from deployments.cli_laue import cmd_demo_laue

        return cmd_demo_laue(args)
    if args.which == "sfx":
        from deployments.cli_sfx import cmd_demo_sfx

        return cmd_demo_sfx(args)
    out = Path(os.path.abspath(Path(args.out).expanduser()))
    real = None if args.synthetic else _real_demo_data()
    if real is not None:
        calibration, frames = real
        if args.frames is not None:
            frames = frames[: args.frames]
        print(f"demo: {len(frames)} real Pilatus 1M frame(s) from {calibration.parent}")
    else:
        n = args.frames or 100
        # ---- CONTRACT with photonflow.simulate.saxs (written by the simulate owner) ----------------
        # write_demo_dataset(directory, n_frames=N) writes N synthetic frames and their calibration
        # into `directory` and returns a mapping {"calibration": path, "inputs": [paths]}.
        try:
            from photonflow.simulate.saxs import write_demo_dataset
        except ImportError as exc:
            raise UsageError(
                f"no real data in {shared_data_dir() / 'saxs'} (set ${DATA_ENV}) and the synthetic data "
                f"generator photonflow.simulate.saxs is not available ({exc})"
            ) from None
        print(f"demo: generating {n} synthetic frame(s) in {out / 'demo-data'}")
        dataset = write_demo_dataset(out / "demo-data", n_frames=n)
        # -------------------------------------------------------------------------------------------
        calibration, frames = Path(dataset["calibration"]), [Path(p) for p in dataset["inputs"]]
    run = {
        "calibration": str(calibration),
        "inputs": [str(f) for f in frames],
        "output_dir": str(out),
        "cluster": args.cluster or "local",
        "overwrite": True if args.overwrite is None else args.overwrite,
    }
    if args.batch_size is not None:
        run["batch_size"] = args.batch_size
    kwargs, profile = _prepare_saxs(run, "demo")
    code = _run_saxs(kwargs, profile, title="demo")
    print(f"\ndemo done: outputs in {out}")
    return code


# --------------------------------------------------------------------------- cluster


def _cmd_cluster_help(args: argparse.Namespace) -> int:
    args.cluster_parser.print_help()
    return 2


def _cmd_cluster_list(args: argparse.Namespace) -> int:
    for name in available_profiles():
        try:
            profile = load_cluster_profile(name)
            print(f"{name:10s} {profile['kind']:8s} {profile.get('description', '')}")
        except ConfigError as exc:
            print(f"{name:10s} INVALID  {str(exc).splitlines()[0]}")
    return 0


def _cmd_cluster_show(args: argparse.Namespace) -> int:
    profile = load_cluster_profile(args.profile)
    shown = {k: v for k, v in profile.items() if k != "_source"}
    name, kwargs = task_runner_spec(profile)
    print(f"# cluster profile {args.profile!r} ({profile['_source']}), defaults filled in")
    print(json.dumps(shown, indent=2))
    call = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    print(f"\n# task runner\n{name}({call})")
    if profile["kind"] == "slurm":
        script = slurm_job_script(profile)
        print("\n# batch script of each SLURM job (nothing was submitted; the scheduler address is "
              "that of a throw-away scheduler, a real run uses its own)")
        print(script)
    return 0


# --------------------------------------------------------------------------- validate


def _cmd_validate(args: argparse.Namespace) -> int:
    path = Path(args.config)
    if path.suffix.lower() == ".poni":
        raise UsageError(f"{path}: a .poni file is not JSON; it is checked when photonflow.calibration reads it")
    data = load_json(path)
    schema = args.schema or guess_schema(data)
    if schema is None:
        raise ConfigError(
            str(path),
            [("", f"cannot tell which schema applies; give --schema ({', '.join(available_schemas())})")],
        )
    validate_config(data, schema, source=str(path))
    print(f"{path}: OK ({schema})")
    return 0



# --------------------------------------------------------------------------- real time


def _cmd_watch(args: argparse.Namespace) -> int:
    from flows.live import load_watch_config, saxs_live_flow

    from deployments.local_api import local_api

    cfg = load_watch_config(args.config)  # validate first: a wrong field is one line, exit 2
    if not (cfg["directories"] or args.directories or cfg.get("feeder")):
        raise UsageError(f"{args.config}: nothing to watch: give directories (in the config or on the command "
                         "line) or a 'feeder'")
    for d in args.directories:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"{d}: directory to watch not found")
    _quiet_dask_logs()
    with local_api():  # its server survives the Ctrl-C that ends the watch, to record the final state
        summary = saxs_live_flow(config=str(Path(args.config).resolve()),
                                 directories=[str(Path(d).resolve()) for d in args.directories],
                                 duration_s=args.duration, idle_timeout_s=args.idle_timeout,
                                 max_frames=args.max_frames)
    print(f"\nframes arrived: {summary['arrived']}, done: {summary['done']}, failed: {summary['failed']} "
          f"in {summary['elapsed_s']:.1f} s ({summary['frames_per_s']:.1f} frames/s)")
    print(f"outputs and ledger: {summary['output_dir']}")
    return 1 if summary["failed"] else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from deployments.serve import load_serve_config, serve

    from prefect.settings import PREFECT_API_URL

    if not (os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()):
        raise UsageError("photonflow serve needs a running Prefect server: start 'prefect server start' and set "
                         "PREFECT_API_URL=http://127.0.0.1:4200/api")
    cfg = load_serve_config(args.config) if args.config else {}
    serve(cfg)
    return 0


def _parse_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {item!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _need_api(command: str) -> None:
    from prefect.settings import PREFECT_API_URL

    if not (os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()):
        raise UsageError(f"photonflow {command} talks to the Prefect server that serves the deployments: set "
                         "PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")


def _cmd_submit(args: argparse.Namespace) -> int:
    from deployments.submit import status, submit

    _need_api("submit")
    params = _parse_params(args.param)
    try:
        run_id = submit(args.flow, params, wait=args.wait)
    except Exception as exc:  # unknown deployment, server down, bad parameters: one line
        raise UsageError(f"cannot start a run of {args.flow!r}: {type(exc).__name__}: {exc}") from None
    print(run_id)
    if args.wait:
        state = status(run_id)
        print(f"{state['name']}: {state['state']}")
        return 0 if state["state"] == "COMPLETED" else 1
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from deployments.submit import status

    _need_api("status")
    try:
        state = status(args.run_id)
    except Exception as exc:  # not a run id, unknown run, server down: one line
        raise UsageError(f"cannot read flow run {args.run_id!r}: {type(exc).__name__}: {exc}") from None
    print(json.dumps(state, indent=2))
    return 0


if __name__ == "__main__":  # python -m deployments.cli
    sys.exit(main())
