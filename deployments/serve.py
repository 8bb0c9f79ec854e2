"""`photonflow serve`: one deployment per flow against a running Prefect server.

Each flow is served under its own name ("saxs/saxs", "saxs-live/saxs-live", "sfx/sfx",
"classify-sort/classify-sort", "laue/laue") with the
default parameters of the serve config, an optional cron schedule, and — for the SAXS and SFX flows —
an optional event trigger (SAXS, SFX, frame sorting and Laue): every ``photonflow.files.arrived`` event (emitted by ``photonflow watch``, or posted
by any writer over HTTP, see docs/realtime.md) starts a run on the event's paths.
"""

from __future__ import annotations

from pathlib import Path

FILES_ARRIVED = "photonflow.files.arrived"


def load_serve_config(path) -> dict:
    from photonflow.config import load_json_config

    path = Path(path)
    cfg = load_json_config(path, "serve")
    base = path.resolve().parent

    def resolve(p):
        return str((Path(p) if Path(p).is_absolute() else base / p).resolve())  # as the watch names it

    saxs = cfg.get("saxs")
    if saxs:
        for key in ("calibration", "output_dir", "watch_output_dir"):
            if saxs.get(key):
                saxs[key] = resolve(saxs[key])
        saxs["inputs"] = [resolve(p) for p in saxs.get("inputs", [])]
    sfx = cfg.get("sfx")
    if sfx:
        for key in ("geometry", "output_dir", "watch_output_dir", "mask"):
            if sfx.get(key):
                sfx[key] = resolve(sfx[key])
        sfx["inputs"] = [resolve(p) for p in sfx.get("inputs", [])]
    sort = cfg.get("classify_sort")
    if sort:
        for key in ("model", "output_dir", "watch_output_dir"):
            if sort.get(key):
                sort[key] = resolve(sort[key])
        sort["inputs"] = [resolve(p) for p in sort.get("inputs", [])]
    laue = cfg.get("laue")
    if laue:
        for key in ("output_dir", "watch_output_dir", "mask", "checkpoint"):
            if laue.get(key):
                laue[key] = resolve(laue[key])
        laue["inputs"] = [resolve(p) for p in laue.get("inputs", [])]
    live = cfg.get("saxs_live")
    if live:
        if live.get("config"):
            live["config"] = resolve(live["config"])
        live["directories"] = [resolve(p) for p in live.get("directories", [])]
    return cfg


def files_arrived_trigger(watch_output_dir: str | None = None):
    """A deployment trigger on photonflow's file events; the event's paths become the run's inputs."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    match = {"prefect.resource.id": f"photonflow.watch.{watch_output_dir}"} if watch_output_dir else {
        "prefect.resource.id": "photonflow.watch.*"}
    return DeploymentEventTrigger(
        name="photonflow-files-arrived",
        expect={FILES_ARRIVED},
        match=match,
        parameters={"inputs": "{{ event.payload.paths }}"},
    )


def build_deployments(cfg: dict) -> list:
    """RunnerDeployments for the flows named in the serve config (all flows when it is empty)."""
    from deployments.clusters import load_cluster_profile, task_runner_for
    from flows.live import saxs_live_flow
    from flows.saxs import saxs_flow

    deployments = []
    saxs = cfg.get("saxs", {}) if cfg else {}
    if saxs is not None:
        params = {k: saxs[k] for k in ("calibration", "output_dir", "inputs", "batch_size") if saxs.get(k) is not None}
        flow = saxs_flow.with_options(task_runner=task_runner_for(load_cluster_profile(saxs.get("cluster", "local"))))
        triggers = [files_arrived_trigger(saxs.get("watch_output_dir"))] if saxs.get("on_files_arrived") else []
        deployments.append(flow.to_deployment(name="saxs", parameters=params, cron=saxs.get("cron"), triggers=triggers,
                                              description="Integrate SAXS/WAXS frames (photonflow saxs)."))
    sfx = cfg.get("sfx", {}) if cfg else {}
    if sfx is not None:
        from flows.sfx import sfx_flow

        keys = ("geometry", "output_dir", "inputs", "finder", "batch_size", "min_peaks", "max_peaks", "peakfinder8",
                "peaknet", "mask", "backend", "device", "save_hit_frames")
        params = {k: sfx[k] for k in keys if sfx.get(k) is not None}
        flow = sfx_flow.with_options(task_runner=task_runner_for(load_cluster_profile(sfx.get("cluster", "local"))))
        triggers = [files_arrived_trigger(sfx.get("watch_output_dir"))] if sfx.get("on_files_arrived") else []
        deployments.append(flow.to_deployment(name="sfx", parameters=params, cron=sfx.get("cron"), triggers=triggers,
                                              description="Find Bragg peaks and hits (photonflow sfx)."))
    sort = cfg.get("classify_sort", {}) if cfg else {}
    if sort is not None:
        from flows.classify import classify_sort_flow

        params = {k: sort[k] for k in ("model", "output_dir", "inputs", "batch_size", "dataset") if sort.get(k) is not None}
        flow = classify_sort_flow.with_options(
            task_runner=task_runner_for(load_cluster_profile(sort.get("cluster", "local"))))
        triggers = [files_arrived_trigger(sort.get("watch_output_dir"))] if sort.get("on_files_arrived") else []
        deployments.append(flow.to_deployment(name="classify-sort", parameters=params, cron=sort.get("cron"),
                                              triggers=triggers,
                                              description="Sort frames into good/bad lists (photonflow classify sort)."))
    laue = cfg.get("laue", {}) if cfg else {}
    if laue is not None:
        from flows.laue import laue_flow

        keys = ("output_dir", "inputs", "method", "search", "saturation", "batch_size", "checkpoint", "mask")
        params = {k: laue[k] for k in keys if laue.get(k) is not None}
        flow = laue_flow.with_options(task_runner=task_runner_for(load_cluster_profile(laue.get("cluster", "local"))))
        triggers = [files_arrived_trigger(laue.get("watch_output_dir"))] if laue.get("on_files_arrived") else []
        deployments.append(flow.to_deployment(name="laue", parameters=params, cron=laue.get("cron"), triggers=triggers,
                                              description="Laue spot tables and scan maps (photonflow laue)."))
    live = cfg.get("saxs_live", {}) if cfg else {}
    if live is not None:
        params = {k: live[k] for k in ("config", "directories") if live.get(k)}
        deployments.append(saxs_live_flow.to_deployment(name="saxs-live", parameters=params, cron=live.get("cron"),
                                                        description="Reduce frames as they arrive (photonflow watch)."))
    return deployments


def serve(cfg: dict) -> None:
    """Serve the deployments until interrupted (needs PREFECT_API_URL of a running server)."""
    from prefect import serve as prefect_serve

    prefect_serve(*build_deployments(cfg))
