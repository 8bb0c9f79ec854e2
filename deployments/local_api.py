"""One Prefect API for a run and all its Dask workers.

With no ``PREFECT_API_URL`` configured, Prefect starts a temporary local server in each process
that needs one, so every Dask worker process would start its own (about 10 s of CPU each, and then
serve the run's state updates from inside the worker). `local_api()` starts one temporary server
on loopback, exports its URL in the environment (Dask workers inherit it) and stops it at the end.
With a running ``prefect server start`` (PREFECT_API_URL set) it does nothing.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_api():
    """Context manager yielding the API URL the runs inside it use."""
    import prefect.settings
    from prefect.server.api.server import SubprocessASGIServer

    configured = os.environ.get("PREFECT_API_URL") or prefect.settings.PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    server = SubprocessASGIServer(port=_free_port())
    previous_default = SubprocessASGIServer._instances.get(None)
    SubprocessASGIServer._instances[None] = server  # flows in this process use this one
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with prefect.settings.temporary_settings(updates={prefect.settings.PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        try:
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)
        except Exception:
            pass
        server.stop()
        if previous_default is not None:
            SubprocessASGIServer._instances[None] = previous_default
        else:
            SubprocessASGIServer._instances.pop(None, None)
