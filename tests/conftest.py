"""Shared pytest fixtures."""

import os
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Prefect in tests: no telemetry (no internet here), an isolated home and database per session.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="photonflow-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


def _shared_data_dir() -> Path:
    env = os.environ.get("PHOTONFLOW_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real detector data (``../shared/data`` beside the checkout, or $PHOTONFLOW_DATA).

    Skips the test when absent, except under CI (CI=true), where absence fails it.
    """
    path = _shared_data_dir()
    if not path.is_dir():
        reason = f"real test data not found at {path} (set PHOTONFLOW_DATA or place shared/data beside the repo)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    """One temporary Prefect API for the whole session, shared by flows and their Dask workers
    (instead of a new temporary server per flow call and per worker process)."""
    from photonflow.deployments.local_api import local_api

    with local_api() as url:
        yield url
