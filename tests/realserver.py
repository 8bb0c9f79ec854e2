"""A real ``prefect server start`` for integration tests (a helper module, not a test file).

    from realserver import running_prefect_server

    with running_prefect_server(tmp_path) as api_url:      # "http://127.0.0.1:PORT/api"
        httpx.get(f"{api_url}/health")

The server runs in its own process group with an isolated ``PREFECT_HOME`` (its SQLite database and
``server.log`` are there), no analytics, no UI; every ``PREFECT_*`` variable of the calling process
(``PREFECT_API_URL`` above all) is kept away from it, so it never talks to another server or
database. It takes about 10 s to start on this machine.

`prefect_server_fixture` makes a pytest fixture from it; conftest.py (or a test module) decides the
name and scope::

    prefect_server = prefect_server_fixture(scope="session")
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect_command() -> list[str]:
    script = Path(sys.executable).with_name("prefect")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "prefect"]


def server_env(home: Path, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the server process: the caller's, without any PREFECT_* setting, plus an
    isolated home, no telemetry and no UI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    return env


def _log_tail(log: Path, chars: int = 4000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group: uvicorn and anything it started
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


@contextmanager
def running_prefect_server(
    home: Path,
    port: int | None = None,
    timeout: float = 90,
    *,
    extra_env: Mapping[str, str] | None = None,
    stop_timeout: float = 15,
) -> Iterator[str]:
    """Start ``prefect server start --host 127.0.0.1 --port PORT`` with ``PREFECT_HOME=home``, wait
    until ``GET {api_url}/health`` answers, yield the API URL, and stop the server's process group at
    exit (SIGTERM, then SIGKILL after `stop_timeout` s). The server's output goes to
    ``home/server.log``. With no `port` a free one is picked (and another tried if it was taken in
    the meantime). `extra_env` adds settings, e.g. a short event-persister flush interval."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "server.log"
    env = server_env(home, extra_env)
    attempts = 3 if port is None else 1
    deadline = time.monotonic() + timeout
    with open(log_path, "ab") as log:
        for attempt in range(attempts):
            p = port if port is not None else free_port()
            api_url = f"http://127.0.0.1:{p}/api"
            log.write(f"--- photonflow tests: prefect server start on port {p}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [*_prefect_command(), "server", "start", "--host", "127.0.0.1", "--port", str(p)],
                env=env,
                cwd=str(home),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group, so that stopping reaches every child
            )
            try:
                ready = False
                with httpx.Client(timeout=2.0, trust_env=False) as client:
                    while time.monotonic() < deadline and proc.poll() is None:
                        try:
                            if client.get(f"{api_url}/health").status_code == 200:
                                ready = True
                                break
                        except httpx.HTTPError:
                            pass
                        time.sleep(0.2)
                if not ready:
                    exited = proc.poll() is not None
                    if exited and attempt + 1 < attempts and "already in use" in _log_tail(log_path):
                        continue  # the free port was taken meanwhile: try another
                    why = f"exited with {proc.returncode}" if exited else f"not healthy after {timeout} s"
                    raise RuntimeError(f"prefect server on port {p} {why}; log {log_path}:\n{_log_tail(log_path)}")
                yield api_url
                return
            finally:
                _stop(proc, stop_timeout)


def prefect_server_fixture(scope: str = "session", name: str | None = None, **kwargs):
    """A pytest fixture yielding the API URL of a real server (see `running_prefect_server`) in a
    fresh temporary PREFECT_HOME; `kwargs` go to `running_prefect_server`."""
    import pytest

    @pytest.fixture(scope=scope, name=name)
    def _prefect_server(tmp_path_factory):
        with running_prefect_server(tmp_path_factory.mktemp("prefect-server"), **kwargs) as url:
            yield url

    return _prefect_server
