"""photonflow: X-ray data reduction operations (science core, no Prefect or Dask imports).

`submit` and `status` start and follow runs of served deployments; they import Prefect only when
called (the issue asks for them here, so the science modules stay free of Prefect).
"""

__version__ = "0.1.0"


def submit(flow: str, parameters: dict | None = None, wait: bool = False, **kwargs) -> str:
    """Start a run of a served deployment ("saxs", "saxs-live", ...); return its flow run id."""
    from photonflow.deployments.submit import submit as _submit

    return _submit(flow, parameters, wait=wait, **kwargs)


def status(run_id: str) -> dict:
    """State of a flow run started with `submit`."""
    from photonflow.deployments.submit import status as _status

    return _status(run_id)
