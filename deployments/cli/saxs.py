"""The SAXS/WAXS commands of ``photonflow``: ``saxs`` and ``demo saxs`` (registered by the
operation registry's ``cli`` entry for saxs)."""

from __future__ import annotations

import argparse
import inspect
import os
import textwrap
from pathlib import Path

from photonflow.config import DATA_ENV, ConfigError, load_json_config, shared_data_dir, validate_config
from photonflow.deployments.cli.common import (
    UsageError,
    expand_inputs,
    run_and_report,
)
from photonflow.deployments.cli.options import add_schema_options, run_from_args
from photonflow.deployments.clusters import available_profiles, load_cluster_profile


def add_parsers(sub) -> None:
    """Register ``saxs`` on the ``photonflow`` sub-command parser."""
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
            (0-based, STOP excluded) or FILE.h5:N. Every option is a field of the run
            file (config/schemas/saxs_run.schema.json); given here, it overrides the
            same field of --config RUN.json, whose relative paths are relative to the
            file itself."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_saxs, option_specs=add_schema_options(p, "saxs_run"))


def add_run_options(p: argparse.ArgumentParser, overwrite_default: bool | None = None) -> None:
    p.add_argument("--batch-size", type=int, metavar="N", help="frames per task (default 200)")
    p.add_argument(
        "--cluster",
        metavar="PROFILE",
        help=f"cluster profile: {', '.join(available_profiles())} or a profile JSON path (default local)",
    )
    p.add_argument(
        "--overwrite",
        action=argparse.BooleanOptionalAction,
        default=overwrite_default,
        help="recompute existing outputs (default: the calibration's OverwriteFiles)"
        if overwrite_default is None
        else "recompute existing outputs (default: yes)",
    )


# --------------------------------------------------------------------------- saxs


def cmd_saxs(args: argparse.Namespace) -> int:
    run, source = run_from_args("saxs", "saxs_run", args, args.option_specs)
    kwargs, profile = _prepare_saxs(run, source)
    return _run_saxs(kwargs, profile)


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
        raise ConfigError(
            source, [("calibration", f"{calibration.name}: expected a SAXSDOG calibration .json or a pyFAI .poni file")]
        )
    if run.get("mask") and not Path(run["mask"]).is_file():
        raise FileNotFoundError(f"{run['mask']}: mask file not found")
    inputs = expand_inputs(run["inputs"])
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
        from photonflow.flows.saxs import saxs_flow  # lazy: imports Prefect and the science stack
    except ModuleNotFoundError as exc:
        if exc.name in ("flows", "photonflow.flows.saxs"):
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
        raise UsageError(f"this version of photonflow.flows.saxs does not accept {', '.join(unsupported)}")
    return run_and_report(saxs_flow, kwargs, profile, title, f", calibration {kwargs['calibration']}")


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


def cmd_demo(args: argparse.Namespace) -> int:
    """``photonflow demo saxs``: the real Pilatus 1M frames when present, else generated ones."""
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
