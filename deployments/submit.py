"""Start and follow runs of served deployments from Python: `photonflow.submit`, `photonflow.status`."""

from __future__ import annotations


def deployment_name(flow: str, deployment: str | None = None) -> str:
    """Prefect's "<flow>/<deployment>" name; photonflow serves each flow under its own name."""
    return flow if "/" in flow else f"{flow}/{deployment or flow}"


def submit(
    flow: str,
    parameters: dict | None = None,
    wait: bool = False,
    deployment: str | None = None,
    timeout: float | None = None,
) -> str:
    """Start a run of a served deployment (``photonflow serve``); return the flow run id.

    flow: "saxs", "saxs-live" or "<flow>/<deployment>"; parameters: the flow's parameters (merged with
    the deployment's defaults); wait: block until the run is final (``timeout`` seconds at most).
    """
    from prefect.deployments import run_deployment

    run = run_deployment(
        name=deployment_name(flow, deployment), parameters=parameters or {}, timeout=(timeout if wait else 0)
    )
    return str(run.id)


def status(run_id: str) -> dict:
    """State of a flow run: {"id", "name", "state" (e.g. COMPLETED), "state_name", "start_time", "end_time"}."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    state = run.state
    return {
        "id": str(run.id),
        "name": run.name,
        "state": state.type.value if state else None,
        "state_name": state.name if state else None,
        "start_time": run.start_time.isoformat() if run.start_time else None,
        "end_time": run.end_time.isoformat() if run.end_time else None,
        "final": bool(state and state.is_final()),
    }
