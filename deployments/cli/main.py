"""The ``photonflow`` command: its parser, ``main()`` and the tools (demo, cluster, validate, watch,
serve, submit, status); the operations' commands come from the registry.

Flows and Prefect are imported inside the subcommands, so ``photonflow --help``,
``photonflow validate`` and ``photonflow cluster show`` start quickly.

Exit codes: 0 success; 1 the run finished but some frames failed (listed in the summary);
2 a configuration or usage error (one line per problem on stderr, no traceback);
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from photonflow.config import (
    DATA_ENV,
    ConfigError,
    available_schemas,
    guess_schema,
    load_json,
    shared_data_dir,
    validate_config,
)
from photonflow.deployments.cli.common import (  # noqa: F401 - re-exported for the subcommand modules
    UsageError,
    describe_runner,
    expand_inputs,
    load_run_file,
    print_failures,
    print_run_summary,
    quiet_dask_logs,
    run_on_profile,
)
from photonflow.deployments.cli.options import add_operation_command
from photonflow.deployments.cli.saxs import add_run_options
from photonflow.deployments.clusters import (
    available_profiles,
    load_cluster_profile,
    slurm_job_script,
    task_runner_spec,
)
from photonflow.errors import InputError, exit_code_for
from photonflow.operations import OPERATIONS, live_names, load_object
from photonflow.operations import get as get_operation

__all__ = ["main", "build_parser", "shared_data_dir"]

# --------------------------------------------------------------------------- parser


def _operations_text() -> str:
    """The 'operations' section of ``photonflow --help``, from the registry."""
    lines = ["operations (each also a served deployment of the same name):"]
    for op in OPERATIONS.values():
        command = op.name.replace("classify-", "classify ")
        text = textwrap.wrap(op.summary, 70)
        lines.append(f"  {command:15s} {text[0]}")
        lines += [f"  {'':15s} {line}" for line in text[1:]]
    lines.append(
        "  demo NAME       An operation end to end with nothing to configure: "
        + ", ".join(op.name for op in OPERATIONS.values() if op.demo)
        + "."
    )
    return "\n".join(lines) + "\n\n"


_DESCRIPTION = (
    """\
photonflow: X-ray data reduction as Prefect flows whose tasks run on Dask workers,
on this machine (the default: nothing to start) or on a SLURM cluster.

"""
    + _operations_text()
    + """\
real time:
  watch     Reduce frames as they arrive ("""
    + ", ".join(live_names())
    + """): watches directories (and/or listens to
            SAXSDOG's ZMQ detector feeder), hands over only complete files, batches
            arrivals, and records every item in a ledger so a restart misses nothing
            and does nothing twice; emits a Prefect event per interval.
  serve     Serve one deployment per operation (and 'live' for the watch) against a running Prefect server, with cron
            schedules and triggers on photonflow's file events (runs from the UI).
  submit    Start a run of a served deployment; prints its run id ('status' follows it).

tools:
  sfx-train Train the PeakNet-style network on simulated (and user-labelled) frames.
  monitor   A web page that shows what running flows are finding (progress, I(q) curves,
            hit rates, Laue maps, tomography chunks), read from their output directories.
  cluster   List the cluster profiles that choose where tasks run (local Dask cluster,
            threads, SLURM via dask-jobqueue, a running Dask scheduler) and show one;
            for SLURM, print the batch script without submitting anything.
  validate  Check a configuration file (SAXSDOG calibration, SAXS run, cluster profile)
            against its JSON Schema and name every wrong field.
"""
)

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

exit codes: 0 done; 1 done but some items failed; 2 input or configuration error; 130 interrupted.
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

    # -- the operations, in the registry's order (each module registers its commands once)
    for module in dict.fromkeys(op.cli for op in OPERATIONS.values() if op.cli):
        load_object(f"{module}:add_parsers")(sub)
    for op in OPERATIONS.values():  # an operation without a module of its own: options from its schema
        if not op.cli:
            add_operation_command(sub, op)

    # -- monitor
    from photonflow.deployments.cli.monitor import add_parsers as add_monitor_parsers

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
    demos = [op for op in OPERATIONS.values() if op.demo]
    p.add_argument(
        "which",
        nargs="?",
        choices=[op.name for op in demos],
        default="saxs",
        help="which operation: " + "; ".join(f"{op.name}: {op.demo_help}" for op in demos),
    )
    p.add_argument("--out", default="demo-output", metavar="DIR", help="output directory (default: demo-output)")
    p.add_argument(
        "--frames",
        type=int,
        metavar="N",
        help="frames to process: at most N of the real frames, or N generated frames (default 100; sfx: 60; "
        "laue: 12 images; tomo: detector rows, 32)",
    )
    p.add_argument(
        "--finder", choices=["peakfinder8", "peaknet"], help="demo sfx: the peak finder (default peakfinder8)"
    )
    p.add_argument("--method", choices=["fit", "cnn"], help="demo laue: spot descriptors (default fit)")
    p.add_argument("--synthetic", action="store_true", help="use generated data even where the real images are present")
    add_run_options(p, overwrite_default=True)
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
        description="Serve the deployments "
        + ", ".join(f"'{op.name}/{op.name}'" for op in OPERATIONS.values())
        + " and 'live/live' (the watch) against the Prefect server in PREFECT_API_URL (start one with 'prefect "
        "server start'), with the default parameters, cron schedules and file-event triggers of CONFIG "
        "(config/schemas/serve.schema.json: a section per operation with its run-file fields). Runs until "
        "interrupted.",
    )
    p.add_argument("config", nargs="?", metavar="CONFIG", help="serve config (JSON); without it, on demand only")
    p.set_defaults(func=_cmd_serve)

    # -- submit / status
    p = sub.add_parser("submit", description="Start a run of a served deployment and print its flow run id.")
    p.add_argument("flow", metavar="FLOW", help=", ".join(OPERATIONS) + ", live, or FLOW/DEPLOYMENT")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a flow parameter; VALUE is read as JSON when it parses, else as a string",
    )
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
        'taken from the file\'s "$schema" or guessed from its keys.',
    )
    p.add_argument("config", metavar="CONFIG", help="the JSON file to check")
    p.add_argument(
        "--schema",
        choices=available_schemas(),
        metavar="NAME",
        help=f"schema to check against: {', '.join(available_schemas())}",
    )
    p.set_defaults(func=_cmd_validate)
    return parser


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
    except KeyboardInterrupt:
        print("photonflow: interrupted", file=sys.stderr)
        return exit_code_for(KeyboardInterrupt())
    except (InputError, FileNotFoundError) as exc:  # named input problems: one line each, no traceback
        text = _file_error(exc) if isinstance(exc, FileNotFoundError) else str(exc)
        for line in text.splitlines() or [type(exc).__name__]:
            print(f"photonflow: error: {line}", file=sys.stderr)
        return exit_code_for(exc)


def _file_error(exc: FileNotFoundError) -> str:
    if exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc.args[0]) if len(exc.args) == 1 else str(exc)


# --------------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.frames is not None and args.frames < 1:
        raise UsageError("--frames must be at least 1")
    op = get_operation(args.which)
    return load_object(f"{op.cli}:cmd_demo")(args)


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
        print(
            "\n# batch script of each SLURM job (nothing was submitted; the scheduler address is "
            "that of a throw-away scheduler, a real run uses its own)"
        )
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
    from photonflow.deployments.local_api import local_api
    from photonflow.flows.live import live_flow, load_watch_config

    cfg = load_watch_config(args.config)  # validate first: a wrong field is one line, exit 2
    if not (cfg["directories"] or args.directories or cfg.get("feeder")):
        raise UsageError(
            f"{args.config}: nothing to watch: give directories (in the config or on the command line) or a 'feeder'"
        )
    for d in args.directories:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"{d}: directory to watch not found")
    quiet_dask_logs()
    with local_api():  # its server survives the Ctrl-C that ends the watch, to record the final state
        summary = live_flow(
            config=str(Path(args.config).resolve()),
            directories=[str(Path(d).resolve()) for d in args.directories],
            duration_s=args.duration,
            idle_timeout_s=args.idle_timeout,
            max_frames=args.max_frames,
        )
    print(
        f"\nframes arrived: {summary['arrived']}, done: {summary['done']}, failed: {summary['failed']} "
        f"in {summary['elapsed_s']:.1f} s ({summary['frames_per_s']:.1f} frames/s)"
    )
    print(f"outputs and ledger: {summary['output_dir']}")
    return 1 if summary["failed"] else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from prefect.settings import PREFECT_API_URL

    from photonflow.deployments.serve import load_serve_config, serve

    if not (os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()):
        raise UsageError(
            "photonflow serve needs a running Prefect server: start 'prefect server start' and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
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
        raise UsageError(
            f"photonflow {command} talks to the Prefect server that serves the deployments: set "
            "PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
        )


def _cmd_submit(args: argparse.Namespace) -> int:
    from photonflow.deployments.submit import status, submit

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
    from photonflow.deployments.submit import status

    _need_api("status")
    try:
        state = status(args.run_id)
    except Exception as exc:  # not a run id, unknown run, server down: one line
        raise UsageError(f"cannot read flow run {args.run_id!r}: {type(exc).__name__}: {exc}") from None
    print(json.dumps(state, indent=2))
    return 0
