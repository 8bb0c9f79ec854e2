"""What every ``photonflow`` subcommand shares: usage errors, run files and their paths, inputs,
running a flow on a cluster profile, and the one printer of a run's summary.

The subcommand modules (``cli_sfx``, ``cli_laue``, …) and :mod:`photonflow.deployments.cli` import
from here; nothing here imports them, so there is no import circle.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from photonflow.config import ConfigError, load_json
from photonflow.deployments.clusters import prefect_api_for, task_runner_for

__all__ = [
    "UsageError",
    "load_run_file",
    "expand_inputs",
    "run_on_profile",
    "describe_runner",
    "absolute",
    "absolute_input",
    "print_failures",
    "print_run_summary",
    "quiet_dask_logs",
]

_GLOB_CHARS = re.compile(r"[*?\[]")
_EVENT_RANGE = re.compile(r"^(?P<path>.+?):(?P<start>\d+)(?:-(?P<stop>\d+))?$")


class UsageError(ConfigError):
    """A command-line problem (reported like a configuration error, exit code 2)."""

    def __init__(self, message: str):
        super().__init__("photonflow", [("", message)])


def load_run_file(config: str | None, resolve) -> tuple[dict, str]:
    """A run file (--config RUN.json) as a dict with its paths resolved against the file's
    directory by ``resolve(data, base)``, and the source name; ({}, "command line") without one."""
    if not config:
        return {}, "command line"
    data = load_json(config)
    if not isinstance(data, dict):
        raise ConfigError(config, [("", f"must be a JSON object, not {type(data).__name__}")])
    return resolve(data, Path(os.path.abspath(config)).parent), config


def absolute(path: str, base: Path) -> Path:
    """Absolute and normalised, symlinks kept (outputs mirror the input tree as the user names it)."""
    return Path(os.path.normpath(base / Path(path).expanduser()))


def absolute_input(item: str, base: Path) -> str:
    """An input made absolute against ``base``, keeping a ``:START-STOP`` event range."""
    m = _EVENT_RANGE.match(item)
    if m and not Path(item).expanduser().exists() and not (base / item).exists():
        suffix = item[len(m.group("path")) :]
        return str(absolute(m.group("path"), base)) + suffix
    return str(absolute(item, base))


def expand_inputs(inputs: list[str]) -> list[str]:
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
                raise ConfigError(
                    "inputs", [(f"inputs[{i}]", f"{item}: event range {start}-{stop} is empty (STOP is excluded)")]
                )
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


def run_on_profile(flow_fn, kwargs: dict, profile: dict):
    """Run a flow with the cluster profile's task runner, inside the Prefect API the profile needs
    (one local API shared with the Dask workers by default); returns the flow's result."""
    quiet_dask_logs()
    if profile.get("kind") == "slurm":
        from photonflow.deployments.clusters import check_slurm_submission

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


def quiet_dask_logs() -> None:
    """Dask's scheduler/nanny INFO lines (cluster start-up and shutdown) drown the run's own
    progress lines on the terminal; keep its warnings and errors. PHOTONFLOW_DASK_LOGS=info
    (or debug) restores them."""
    level = os.environ.get("PHOTONFLOW_DASK_LOGS", "warning").upper()
    logging.getLogger("distributed").setLevel(getattr(logging, level, logging.WARNING))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"photonflow: warning: {message}", file=sys.stderr)


def describe_runner(profile: dict, name: str, kwargs: dict) -> str:
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


def print_run_summary(summary: Any) -> int:
    """The one printer of a run's summary (photonflow.results.RunSummary as a dict): counts, time
    and rate, the operation's highlights, failures and outputs. Returns the exit code: 1 when items
    failed, else 0."""
    from photonflow.operations import get as get_operation
    from photonflow.results import RunSummary

    if not isinstance(summary, dict):
        print(f"flow returned: {summary!r}")
        return 0
    s = RunSummary.from_dict(summary)
    print("\n" + s.line())
    for key, label in get_operation(s.operation).highlights:
        value = summary.get(key)
        if isinstance(value, dict):
            if value:
                print(f"{label}:")
                for reason, count in value.items():
                    print(f"  {count:6d}  {reason}")
        elif value is not None:
            print(f"{label}: {value:.3g}" if isinstance(value, float) else f"{label}: {value}")
    print_failures(s.failures, "summary.json in the output directory")
    print(f"outputs: {s.output_dir}")
    for name, path in s.outputs.items():
        if path:
            print(f"  {name}: {path}")
    return 1 if s.failed else 0


def run_and_report(flow_fn, kwargs: dict, profile: dict, title: str, detail: str = "") -> int:
    """Say what runs where, run the flow on the profile, print its summary; returns the exit code.

    title: the command ("sfx", "demo sfx"); detail: what the user would check first (", finder
    peaknet")."""
    from photonflow.deployments.clusters import task_runner_spec

    runner_name, runner_kwargs = task_runner_spec(profile)
    inputs = kwargs.get("inputs")
    print(
        f"photonflow {title}: {len(inputs) if inputs is not None else 0} input(s){detail}\n"
        f"  tasks run on: {describe_runner(profile, runner_name, runner_kwargs)}\n"
        f"  outputs go to: {kwargs['output_dir']}",
        flush=True,
    )
    return print_run_summary(run_on_profile(flow_fn, kwargs, profile))
