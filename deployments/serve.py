"""`photonflow serve`: one deployment per operation of the registry against a running Prefect server.

Every operation in :data:`photonflow.operations.OPERATIONS` is served under its own name
("saxs/saxs", "sfx/sfx", "laue/laue", "tomo/tomo", "classify-train/classify-train",
"classify-sort/classify-sort"), and the watch as "live/live", with the default parameters of the
serve config's section for it (the operation's run-file fields), an optional cron schedule and an
optional event trigger: every ``photonflow.files.arrived`` event (emitted by ``photonflow watch``,
or posted by any writer over HTTP, see docs/realtime.md) starts a run on the event's paths.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from photonflow.config import load_json_config, resolve_path_fields
from photonflow.operations import OPERATIONS

FILES_ARRIVED = "photonflow.files.arrived"
#: Fields of a serve section that configure the deployment rather than the flow's parameters.
DEPLOYMENT_FIELDS = ("cluster", "cron", "on_files_arrived", "watch_output_dir")


def load_serve_config(path) -> dict:
    """The serve config, validated, with the sections' paths resolved against its directory."""
    path = Path(path)
    cfg = load_json_config(path, "serve")
    base = path.resolve().parent

    def resolve(p):
        return str((Path(p) if Path(p).is_absolute() else base / p).resolve())  # as the watch names it

    for op in OPERATIONS.values():
        section = cfg.get(op.serve_key)
        if not section:
            continue
        section = cfg[op.serve_key] = resolve_path_fields(section, op.schema, resolve)
        if section.get("watch_output_dir"):
            section["watch_output_dir"] = resolve(section["watch_output_dir"])
        if "inputs" in section:
            section["inputs"] = [resolve(p) for p in section.get("inputs") or []]
    live = cfg.get("live")
    if live:
        if live.get("config"):
            live["config"] = resolve(live["config"])
        live["directories"] = [resolve(p) for p in live.get("directories", [])]
    return cfg


def files_arrived_trigger(watch_output_dir: str | None = None):
    """A deployment trigger on photonflow's file events; the event's paths become the run's inputs."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    match = (
        {"prefect.resource.id": f"photonflow.watch.{watch_output_dir}"}
        if watch_output_dir
        else {"prefect.resource.id": "photonflow.watch.*"}
    )
    return DeploymentEventTrigger(
        name="photonflow-files-arrived",
        expect={FILES_ARRIVED},
        match=match,
        parameters={"inputs": "{{ event.payload.paths }}"},
    )


def flow_parameters(flow, section: dict) -> dict:
    """The section's fields that are parameters of the flow (set, not None)."""
    names = inspect.signature(getattr(flow, "fn", flow)).parameters
    return {k: v for k, v in section.items() if k in names and k not in DEPLOYMENT_FIELDS and v is not None}


def build_deployments(cfg: dict) -> list:
    """RunnerDeployments for every operation (and the watch), except sections set to null."""
    from photonflow.deployments.clusters import load_cluster_profile, task_runner_for

    cfg = cfg or {}
    deployments = []
    for op in OPERATIONS.values():
        section = cfg.get(op.serve_key, {})
        if section is None:
            continue
        flow = op.load_flow()
        flow = flow.with_options(task_runner=task_runner_for(load_cluster_profile(section.get("cluster", "local"))))
        triggers = [files_arrived_trigger(section.get("watch_output_dir"))] if section.get("on_files_arrived") else []
        deployments.append(
            flow.to_deployment(
                name=op.name,
                parameters=flow_parameters(flow, section),
                cron=section.get("cron"),
                triggers=triggers,
                description=op.deployment_description,
            )
        )
    live = cfg.get("live", {})
    if live is not None:
        from photonflow.flows.live import live_flow

        params = {k: live[k] for k in ("config", "directories") if live.get(k)}
        deployments.append(
            live_flow.to_deployment(
                name="live",
                parameters=params,
                cron=live.get("cron"),
                description="Reduce frames as they arrive (photonflow watch).",
            )
        )
    return deployments


def serve(cfg: dict) -> None:
    """Serve the deployments until interrupted (needs PREFECT_API_URL of a running server)."""
    from prefect import serve as prefect_serve

    prefect_serve(*build_deployments(cfg))
