"""Cluster profiles (``config/clusters/*.json``) -> Prefect task runners.

A profile names where the tasks of a flow run (see ``config/schemas/cluster_profile.schema.json``):

========  =====================================================================================
kind      task runner
========  =====================================================================================
local     ``DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=...)``
threads   ``ThreadPoolTaskRunner(max_workers=...)``
slurm     ``DaskTaskRunner(cluster_class="dask_jobqueue.SLURMCluster", cluster_kwargs=..., adapt_kwargs=...)``
address   ``DaskTaskRunner(address=...)``
========  =====================================================================================

Usage::

    profile = load_cluster_profile("slurm")           # or a path to a profile JSON
    with prefect_api_for(profile):                    # one Prefect API for the run and its workers
        saxs_flow.with_options(task_runner=task_runner_for(profile))(...)
    print(slurm_job_script(profile))                  # the sbatch script, nothing submitted

Prefect, prefect-dask and dask-jobqueue are imported only inside the functions that need
them, so loading and checking profiles stays fast.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from photonflow.config import CONFIG_DIR, ConfigError, load_json_config, validate_config

__all__ = [
    "CLUSTERS_DIR",
    "available_profiles",
    "load_cluster_profile",
    "prefect_api_for",
    "slurm_job_script",
    "task_runner_for",
    "task_runner_spec",
]

CLUSTERS_DIR: Path = CONFIG_DIR / "clusters"

_LOCAL_CLUSTER = "distributed.LocalCluster"
_SLURM_CLUSTER = "dask_jobqueue.SLURMCluster"


def available_profiles() -> list[str]:
    """Names of the profiles in ``config/clusters`` (``address``, ``local``, ``slurm``, ``threads``)."""
    return sorted(p.stem for p in CLUSTERS_DIR.glob("*.json"))


def load_cluster_profile(name_or_path: str | os.PathLike) -> dict:
    """Load and validate a cluster profile; return it with the schema defaults filled in.

    ``name_or_path`` is a profile name (``"local"`` -> ``config/clusters/local.json``) or the
    path of a profile JSON (anything ending in ``.json`` or containing a path separator).
    Raises FileNotFoundError (no such profile; the message lists the available names) or
    ConfigError (naming the file and the field).
    """
    text = os.fspath(name_or_path)
    looks_like_path = text.endswith(".json") or os.sep in text or "/" in text
    if looks_like_path:
        path = Path(text).expanduser()
    else:
        path = CLUSTERS_DIR / f"{text}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"no cluster profile named {text!r}: available are {', '.join(available_profiles())}, "
                "or give the path of a profile JSON"
            )
    profile = load_json_config(path, "cluster_profile")
    profile["_source"] = str(path)
    return profile


def _checked(profile: dict) -> dict:
    """Validate a profile given as a dict (e.g. built in Python); fills defaults."""
    source = profile.get("_source", "<cluster profile>")
    clean = {k: v for k, v in profile.items() if k != "_source"}
    out = validate_config(clean, "cluster_profile", source=source)
    out["_source"] = source
    return out


def _local_kwargs(profile: dict) -> dict:
    kwargs: dict[str, Any] = {
        "n_workers": profile["n_workers"],
        "threads_per_worker": profile["threads_per_worker"],
        "processes": profile["processes"],
        "memory_limit": profile["memory_limit"],
    }
    for key in ("dashboard_address", "local_directory"):
        if key in profile:
            kwargs[key] = profile[key]
    kwargs.update(profile.get("cluster_kwargs", {}))
    return kwargs


def _slurm_kwargs(profile: dict) -> dict:
    """SLURMCluster keyword arguments. A fixed ``jobs: N`` becomes ``n_workers = N * processes``
    (SLURMCluster scales to that many workers at start-up); ``adaptive`` is left to adapt_kwargs."""
    kwargs: dict[str, Any] = {
        "cores": profile["cores"],
        "processes": profile["processes"],
        "memory": profile["memory"],
        "walltime": profile["walltime"],
        "job_name": profile["job_name"],
        "job_extra_directives": list(profile["job_extra_directives"]),
        "job_script_prologue": list(profile["job_script_prologue"]),
    }
    for key in ("queue", "account", "interface", "local_directory", "python"):
        if profile.get(key) is not None:
            kwargs[key] = profile[key]
    if profile.get("log_directory") is not None:
        # Used in '#SBATCH -o/-e' (not shell-expanded) and created on this node by dask-jobqueue.
        kwargs["log_directory"] = os.path.expanduser(os.path.expandvars(profile["log_directory"]))
    if "jobs" in profile:
        kwargs["n_workers"] = profile["jobs"] * profile["processes"]
    kwargs.update(profile.get("cluster_kwargs", {}))
    return kwargs


def task_runner_spec(profile: dict) -> tuple[str, dict]:
    """``(runner class name, constructor kwargs)`` for a profile, without importing Prefect:
    ``("DaskTaskRunner", {...})`` or ``("ThreadPoolTaskRunner", {...})``. Used by
    :func:`task_runner_for` and by ``photonflow cluster show``."""
    profile = _checked(profile)
    kind = profile["kind"]
    if kind == "local":
        return "DaskTaskRunner", {"cluster_class": _LOCAL_CLUSTER, "cluster_kwargs": _local_kwargs(profile)}
    if kind == "slurm":
        spec: dict[str, Any] = {"cluster_class": _SLURM_CLUSTER, "cluster_kwargs": _slurm_kwargs(profile)}
        if "adaptive" in profile:
            spec["adapt_kwargs"] = {
                "minimum_jobs": profile["adaptive"]["minimum_jobs"],
                "maximum_jobs": profile["adaptive"]["maximum_jobs"],
            }
        return "DaskTaskRunner", spec
    if kind == "address":
        return "DaskTaskRunner", {"address": profile["address"]}
    if kind == "threads":
        return "ThreadPoolTaskRunner", {"max_workers": profile["max_workers"]}
    raise ConfigError(profile.get("_source", "<cluster profile>"), [("kind", f"unsupported kind {kind!r}")])


def task_runner_for(profile: dict):
    """A fresh Prefect task runner for a profile (as returned by :func:`load_cluster_profile`,
    or a plain dict, which is validated here):

    - local   -> ``prefect_dask.DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=...)``
    - slurm   -> ``DaskTaskRunner(cluster_class="dask_jobqueue.SLURMCluster", cluster_kwargs=..., adapt_kwargs=...)``
    - address -> ``DaskTaskRunner(address=...)``
    - threads -> ``prefect.task_runners.ThreadPoolTaskRunner(max_workers=...)``

    Nothing is started here: a Dask cluster starts when the flow run enters its task runner
    and is closed when the run ends (an ``address`` cluster is only connected to).
    """
    name, kwargs = task_runner_spec(profile)
    if name == "ThreadPoolTaskRunner":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(**kwargs)
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(**kwargs)


def slurm_job_script(profile: dict) -> str:
    """The batch script SLURM jobs of this profile would run, without submitting anything.

    Builds ``dask_jobqueue.SLURMCluster(**cluster_kwargs)`` exactly as :func:`task_runner_for`
    would have it built, with no workers, reads ``cluster.job_script()`` and closes the cluster.
    This needs no SLURM installation (``sbatch`` is only called when jobs are started) but it
    does start a Dask scheduler for a moment on this machine (on ``interface`` if given, which
    must therefore exist here), and dask-jobqueue creates ``log_directory`` if it is set.
    The worker command line names that short-lived scheduler's address; a real run gets its own.
    """
    profile = _checked(profile)
    if profile["kind"] != "slurm":
        raise ConfigError(
            profile.get("_source", "<cluster profile>"),
            [("kind", f"is {profile['kind']!r}: only a 'slurm' profile has a batch script")],
        )
    from dask_jobqueue import SLURMCluster

    kwargs = _slurm_kwargs(profile)
    kwargs["n_workers"] = 0  # never submit anything
    scheduler_options = dict(kwargs.get("scheduler_options") or {})
    # Any free port for the throw-away scheduler's HTTP server (its dashboard is never used).
    scheduler_options.setdefault("dashboard_address", ":0")
    kwargs["scheduler_options"] = scheduler_options
    try:
        cluster = SLURMCluster(**kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ConfigError(
            profile.get("_source", "<cluster profile>"), [("", f"cannot build SLURMCluster: {exc}")]
        ) from None
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def check_slurm_submission(profile: dict) -> None:
    """Ask SLURM whether it would accept this profile's job (``sbatch --test-only``, nothing is
    submitted): a wrong partition, account, time limit or a request no node can satisfy fails here
    with SLURM's reason, as a :class:`ConfigError`, instead of leaving the run waiting for workers
    that never come. Raises too when ``sbatch`` is not on this machine."""
    import shutil
    import subprocess
    import tempfile

    source = profile.get("_source", "<cluster profile>")
    if shutil.which("sbatch") is None:
        raise ConfigError(
            source, [("kind", "is 'slurm', but there is no sbatch on this machine (run from a SLURM login node)")]
        )
    script = slurm_job_script(profile)
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(["sbatch", "--test-only", f.name], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise ConfigError(source, [("", "sbatch --test-only did not answer within 60 s: is slurmctld up?")]) from None
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        reason = (out.stderr or out.stdout).strip().replace("\n", " ")
        raise ConfigError(source, [("", f"SLURM would not accept the job: {reason}")])


@contextmanager
def prefect_api_for(profile: dict):
    """Context manager: the flow run inside it and its Dask workers report to one Prefect API.

    With no ``PREFECT_API_URL`` configured, Prefect starts a temporary ("ephemeral") API server
    in every *process* that needs one, so each Dask worker process of a ``local`` profile would
    start its own server (seconds each) on the same SQLite database. For a ``local`` profile this
    starts one temporary server for the block (``photonflow.deployments.local_api.local_api``: its URL is
    exported in ``PREFECT_API_URL``, which the worker processes started inside inherit; stopped
    on exit), with server telemetry off unless set otherwise. Yields the API URL in use, or None
    (``threads``: everything runs in this process, Prefect's own default applies).

    ``slurm`` and ``address`` workers run elsewhere and cannot reach a server on this machine's
    loopback: they need ``PREFECT_API_URL`` set to a Prefect server they can reach
    (``prefect server start --host 0.0.0.0``); a warning says so when it is not.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    configured = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    kind = profile.get("kind")
    if configured or kind == "threads" or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        yield configured or None
        return
    if kind != "local":
        warnings.warn(
            f"PREFECT_API_URL is not set: the Dask workers of this {kind!r} profile will each start their own "
            "temporary Prefect server. Start a shared one ('prefect server start --host 0.0.0.0') and set "
            "PREFECT_API_URL=http://<this host>:4200/api before running.",
            stacklevel=3,
        )
        yield None
        return
    from photonflow.deployments.local_api import local_api

    # The server's telemetry heartbeat can race the first writes to a fresh SQLite database
    # ("database is locked" tracebacks); a temporary server does not need it.
    added = "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ
    if added:
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    try:
        with local_api() as url:
            yield url
    finally:
        if added:
            os.environ.pop("PREFECT_SERVER_ANALYTICS_ENABLED", None)
