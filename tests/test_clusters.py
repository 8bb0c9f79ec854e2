"""photonflow.deployments.clusters: profiles -> Prefect task runners, SLURM batch scripts."""

from __future__ import annotations

import json
import re

import pytest

from photonflow.config import ConfigError
from photonflow.deployments.clusters import (
    CLUSTERS_DIR,
    available_profiles,
    load_cluster_profile,
    prefect_api_for,
    slurm_job_script,
    task_runner_for,
    task_runner_spec,
)


def test_all_shipped_profiles_load():
    assert set(available_profiles()) >= {"local", "slurm", "address", "threads"}
    for name in available_profiles():
        profile = load_cluster_profile(name)
        assert profile["kind"] == name
        assert profile["_source"] == str(CLUSTERS_DIR / f"{name}.json")
        assert profile["description"]


def test_profile_by_path_and_unknown_name(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"kind": "threads", "max_workers": 2}))
    assert load_cluster_profile(path)["max_workers"] == 2
    assert load_cluster_profile(str(path))["kind"] == "threads"
    with pytest.raises(FileNotFoundError, match="no cluster profile named 'nope': available are address, local"):
        load_cluster_profile("nope")


def test_invalid_profile_names_the_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"kind": "slurm", "cores": 0, "memory": "lots", "jobs": 2, "walltme": "1:00:00"}))
    with pytest.raises(ConfigError) as info:
        load_cluster_profile(path)
    assert [p for p, _ in info.value.errors] == ["cores", "memory", "walltme"]
    assert str(info.value).startswith(f"{path}: cores: 0 is less than the minimum of 1")

    for profile, field in [
        ({"kind": "slurm", "cores": 4, "memory": "8GiB"}, "jobs"),  # neither jobs nor adaptive
        ({"kind": "slurm", "cores": 4, "memory": "8GiB", "jobs": 1, "adaptive": {"maximum_jobs": 2}}, "jobs"),
        (
            {"kind": "slurm", "cores": 4, "memory": "8GiB", "adaptive": {"minimum_jobs": 3, "maximum_jobs": 2}},
            "adaptive.minimum_jobs",
        ),
        ({"kind": "address", "address": "127.0.0.1:8786"}, "address"),
        ({"kind": "local", "n_workers": 0}, "n_workers"),
        ({"kind": "k8s"}, "kind"),
    ]:
        with pytest.raises(ConfigError) as info:
            task_runner_spec(profile)
        assert [p for p, _ in info.value.errors] == [field], profile


def test_local_profile_gives_a_dask_local_cluster_runner():
    from prefect_dask import DaskTaskRunner

    runner = task_runner_for(load_cluster_profile("local"))
    assert type(runner) is DaskTaskRunner
    assert runner.cluster_class == "distributed.LocalCluster"
    assert runner.cluster_kwargs == {
        "n_workers": None,
        "threads_per_worker": 1,
        "processes": True,
        "memory_limit": "auto",
    }
    assert runner.adapt_kwargs == {}
    assert runner.address is None
    assert runner == DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=runner.cluster_kwargs)


def test_local_cluster_kwargs_are_accepted_by_local_cluster():
    """The kwargs a profile produces are real LocalCluster arguments (in-process, 1 worker: fast)."""
    from distributed import LocalCluster

    _, spec = task_runner_spec(
        {"kind": "local", "n_workers": 1, "processes": False, "dashboard_address": ":0", "memory_limit": "1GiB"}
    )
    with LocalCluster(**spec["cluster_kwargs"]) as cluster:
        workers = cluster.scheduler_info["workers"]
        assert len(workers) == 1
        (info,) = workers.values()
        assert info["nthreads"] == 1
        assert info["memory_limit"] == 2**30


def test_slurm_profile_gives_a_slurm_cluster_runner_with_adaptive_scaling():
    from prefect_dask import DaskTaskRunner

    profile = load_cluster_profile("slurm")
    runner = task_runner_for(profile)
    assert type(runner) is DaskTaskRunner
    assert runner.cluster_class == "dask_jobqueue.SLURMCluster"
    kw = runner.cluster_kwargs
    assert kw["cores"] == profile["cores"] == 32
    assert kw["processes"] == 8
    assert kw["memory"] == "120GiB"
    assert kw["walltime"] == "02:00:00"
    assert kw["queue"] == "compute"
    assert kw["local_directory"] == "$TMPDIR"  # expanded on the compute node, not here
    assert "account" not in kw and "interface" not in kw and "python" not in kw  # null = dask-jobqueue's default
    assert "n_workers" not in kw
    assert runner.adapt_kwargs == {"minimum_jobs": 0, "maximum_jobs": 10}


def test_slurm_fixed_jobs_become_workers_and_extras_pass_through(tmp_path, monkeypatch):
    monkeypatch.setenv("PF_TEST_LOGS", str(tmp_path))
    profile = {
        "kind": "slurm",
        "cores": 16,
        "processes": 4,
        "memory": "64GiB",
        "jobs": 3,
        "account": "xray42",
        "log_directory": "$PF_TEST_LOGS/logs",
        "cluster_kwargs": {"death_timeout": 120},
    }
    name, spec = task_runner_spec(profile)
    assert name == "DaskTaskRunner"
    assert "adapt_kwargs" not in spec
    kw = spec["cluster_kwargs"]
    assert kw["n_workers"] == 12  # 3 jobs x 4 worker processes
    assert kw["account"] == "xray42"
    assert kw["log_directory"] == f"{tmp_path}/logs"
    assert kw["death_timeout"] == 120
    assert kw["walltime"] == "01:00:00"  # schema default


def test_address_and_threads_profiles():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    runner = task_runner_for(load_cluster_profile("address"))
    assert type(runner) is DaskTaskRunner
    assert runner.address == "tcp://127.0.0.1:8786"
    assert runner.cluster_class is None and runner.cluster_kwargs == {}

    runner = task_runner_for(load_cluster_profile("threads"))
    assert type(runner) is ThreadPoolTaskRunner
    assert runner._max_workers == 4
    assert task_runner_spec({"kind": "threads"}) == ("ThreadPoolTaskRunner", {"max_workers": None})


def _directives(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def test_slurm_job_script_from_the_shipped_profile():
    script = slurm_job_script(load_cluster_profile("slurm"))
    directives = _directives(script)
    assert script.startswith("#!/usr/bin/env bash")
    assert "#SBATCH -J photonflow" in directives
    assert "#SBATCH -p compute" in directives
    assert "#SBATCH --cpus-per-task=32" in directives
    assert "#SBATCH --mem=120G" in directives
    assert "#SBATCH -t 02:00:00" in directives
    worker = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    assert len(worker) == 1
    assert "--nworkers 8" in worker[0] and "--nthreads 4" in worker[0]
    assert "--local-directory $TMPDIR" in worker[0]


def test_slurm_job_script_follows_the_profile(tmp_path):
    logs = tmp_path / "slurm-logs"
    profile = {
        "kind": "slurm",
        "cores": 8,
        "processes": 2,
        "memory": "30GiB",
        "walltime": "0-04:30:00",
        "queue": "gpu",
        "account": "xray42",
        "job_name": "saxs-run",
        "jobs": 1,
        "job_extra_directives": ["--gres=gpu:1", "--exclusive"],
        "job_script_prologue": ["module load hdf5"],
        "log_directory": str(logs),
        "python": "/opt/venv/bin/python",
    }
    script = slurm_job_script(profile)
    directives = _directives(script)
    for expected in [
        "#SBATCH -J saxs-run",
        "#SBATCH -p gpu",
        "#SBATCH -A xray42",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=30G",
        "#SBATCH -t 0-04:30:00",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --exclusive",
        f"#SBATCH -o {logs}/saxs-run-%J.out",
    ]:
        assert expected in directives, (expected, directives)
    assert "module load hdf5" in script
    assert re.search(r"^/opt/venv/bin/python -m distributed.cli.dask_worker tcp://\S+ .*--nworkers 2", script, re.M)
    assert logs.is_dir()  # dask-jobqueue creates the log directory on the submitting node


def test_slurm_job_script_rejects_other_kinds_and_absent_interfaces():
    with pytest.raises(ConfigError, match="only a 'slurm' profile has a batch script"):
        slurm_job_script(load_cluster_profile("local"))
    profile = {"kind": "slurm", "cores": 2, "memory": "4GiB", "jobs": 1, "interface": "no-such-if0"}
    with pytest.raises(ConfigError, match="cannot build SLURMCluster: .*no-such-if0"):
        slurm_job_script(profile)


class _FakeServer:
    """Stands in for prefect's SubprocessASGIServer (as used by photonflow.deployments.local_api)."""

    _instances: dict = {}
    events: list = []

    def __init__(self, port=None):
        self.port = port
        self.api_url = f"http://127.0.0.1:{port}/api"

    def start(self):
        type(self).events.append("start")

    def stop(self):
        type(self).events.append("stop")


@pytest.fixture
def fake_server(monkeypatch):
    import prefect.server.api.server as server_mod
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED, temporary_settings

    _FakeServer.events = []
    _FakeServer._instances = {}
    monkeypatch.setattr(server_mod, "SubprocessASGIServer", _FakeServer)
    # setenv first so that monkeypatch records the original state and restores it afterwards
    for name in ("PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_ENABLED: True}, restore_defaults={PREFECT_API_URL}):
        yield _FakeServer


def test_prefect_api_for_local_starts_one_server_shared_with_workers(fake_server):
    import os

    from prefect.settings import PREFECT_API_URL

    with prefect_api_for({"kind": "local"}) as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
        assert os.environ["PREFECT_API_URL"] == url  # inherited by the worker processes started inside
        assert PREFECT_API_URL.value() == url  # and used by the flow in this process
        assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
        with prefect_api_for({"kind": "local"}) as inner:  # already configured: nothing more
            assert inner == url
        assert fake_server.events == ["start"]
    assert fake_server.events == ["start", "stop"]
    assert "PREFECT_API_URL" not in os.environ
    assert "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ


def test_prefect_api_for_threads_and_remote_workers(fake_server):
    import os

    with prefect_api_for({"kind": "threads"}) as url:
        assert url is None
    with pytest.warns(UserWarning, match="PREFECT_API_URL is not set: the Dask workers of this 'slurm' profile"):
        with prefect_api_for({"kind": "slurm"}) as url:
            assert url is None
    assert fake_server.events == []
    assert "PREFECT_API_URL" not in os.environ


def test_prefect_api_for_respects_a_configured_server(fake_server, monkeypatch):
    import warnings

    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.example:4200/api")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either
        for kind in ("local", "slurm"):
            with prefect_api_for({"kind": kind}) as url:
                assert url == "http://prefect.example:4200/api"
    assert fake_server.events == []
