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
import subprocess
import sys
from contextlib import contextmanager


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _detached_server_class():
    """Prefect's subprocess API server, started in a session of its own: a Ctrl-C (SIGINT to the
    terminal's process group) then stops the photonflow run gracefully while the API it reports its
    final state to is still up; local_api() stops the server afterwards."""
    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class DetachedASGIServer(SubprocessASGIServer):
        def _run_uvicorn_command(self):
            app_dir = str(prefect.__module_path__.parent)
            env = {
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            }
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                app_dir,
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ]
            return subprocess.Popen(command, env=env, start_new_session=True)

    return DetachedASGIServer


def drain_prefect_workers(timeout: float = 10.0) -> None:
    """Send the logs and events still queued to the API now, while it is up: a queue left for a
    server that has gone would block the interpreter's exit."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout)
        except Exception:  # noqa: BLE001  (best effort at shutdown)
            pass


@contextmanager
def local_api():
    """Context manager yielding the API URL the runs inside it use."""
    import prefect.settings
    from prefect.server.api.server import SubprocessASGIServer

    configured = os.environ.get("PREFECT_API_URL") or prefect.settings.PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    server = _detached_server_class()(port=_free_port())
    previous_default = SubprocessASGIServer._instances.get(None)
    SubprocessASGIServer._instances[None] = server  # flows in this process use this one
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with prefect.settings.temporary_settings(updates={prefect.settings.PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        drain_prefect_workers()
        server.stop()
        if previous_default is not None:
            SubprocessASGIServer._instances[None] = previous_default
        else:
            SubprocessASGIServer._instances.pop(None, None)
