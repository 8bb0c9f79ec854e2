"""photonflow.deployments.cli: the ``photonflow`` command.

The SAXS flow itself is replaced here by a recording stand-in (``photonflow.flows.saxs`` in sys.modules),
so these tests check what the command line hands to the flow, not the integration.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from photonflow.config import CONFIG_DIR
from photonflow.deployments import cli
from photonflow.deployments.cli import main

EXAMPLE_CAL = CONFIG_DIR / "examples" / "saxsdog_calibration_CeO2.json"


class FakeSaxsFlow:
    """Stands in for photonflow.flows.saxs.saxs_flow: records the task runner and the call."""

    def __init__(self, summary=None):
        self.task_runner = None
        self.calls: list[dict] = []
        self.summary = summary or {
            "operation": "saxs",
            "unit": "frames",
            "done": 4,
            "failed": 0,
            "failures": [],
            "output_dir": "OUT",
            "elapsed_s": 2.0,
            "per_s": 2.0,
            "outputs": {"plot": "OUT/iq.png"},
        }

    def fn(
        self,
        calibration,
        inputs,
        output_dir,
        batch_size=200,
        overwrite=False,
        npt=None,
        q_range=None,
        oversampling=None,
        mask=None,
    ):
        raise AssertionError("not called directly")

    def with_options(self, task_runner=None, **_):
        self.task_runner = task_runner
        return self

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.summary


@pytest.fixture(autouse=True)
def no_prefect_server(monkeypatch):
    """The CLI runs the flow inside photonflow.deployments.clusters.prefect_api_for (one Prefect API shared
    with the Dask workers, tested in test_clusters.py); here no server is started: the profile
    kinds are recorded, with 'exit' once the run is over."""
    import contextlib

    calls = []

    @contextlib.contextmanager
    def fake_api(profile):
        calls.append(profile["kind"])
        yield None
        calls.append("exit")

    from photonflow.deployments.cli import common as cli_common

    monkeypatch.setattr(cli_common, "prefect_api_for", fake_api)
    return calls


@pytest.fixture
def fake_flow(monkeypatch):
    flow = FakeSaxsFlow()
    monkeypatch.setitem(sys.modules, "photonflow.flows.saxs", types.SimpleNamespace(saxs_flow=flow))
    return flow


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    paths = []
    for i in range(3):
        p = d / f"frame_{i}.tif"
        p.write_bytes(b"II*\x00")
        paths.append(p)
    (d / "scan.h5").write_bytes(b"\x89HDF")
    (d / "geometry.poni").write_text("Distance: 0.2\n")
    return d


def _calibration(tmp_path, **changes) -> Path:
    cal = json.loads(EXAMPLE_CAL.read_text())
    cal.update(changes)
    path = tmp_path / "calib.json"
    path.write_text(json.dumps(cal))
    return path


# --------------------------------------------------------------------------- help


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("saxs", "demo", "cluster", "validate"):
        assert f"\n  {command} " in out, command
    assert "I(q)" in out and "SLURM" in out


def test_help_is_fast_and_imports_no_prefect():
    code = (
        "import sys; from photonflow.deployments.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('prefect', 'prefect_dask', 'dask_jobqueue', 'flows')]\n"
        "sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_subcommand_help_shows_the_saxs_usage(capsys):
    with pytest.raises(SystemExit):
        main(["saxs", "--help"])
    out = capsys.readouterr().out
    assert "photonflow saxs CALIBRATION INPUT... --out DIR" in out
    for option in (
        "--batch-size",
        "--cluster",
        "--no-overwrite",
        "--npt",
        "--q-range",
        "--oversampling",
        "--mask",
        "--config",
    ):
        assert option in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: photonflow" in capsys.readouterr().err


# --------------------------------------------------------------------------- validate


def test_validate_ok(capsys):
    assert main(["validate", str(EXAMPLE_CAL)]) == 0
    assert capsys.readouterr().out.strip() == f"{EXAMPLE_CAL}: OK (saxsdog_calibration)"
    assert main(["validate", str(CONFIG_DIR / "clusters" / "slurm.json")]) == 0
    assert "OK (cluster_profile)" in capsys.readouterr().out


def test_validate_reports_every_field_error(tmp_path, capsys):
    cal = json.loads(EXAMPLE_CAL.read_text())
    cal["Geometry"]["Tilt"]["TiltAngleDeg"] = "abc"
    cal["Masks"][0]["Oversampling"] = 0
    path = tmp_path / "calib.json"
    path.write_text(json.dumps(cal))
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"photonflow: error: {path}: Geometry.Tilt.TiltAngleDeg: 'abc' is not of type 'number'",
        f"photonflow: error: {path}: Masks[0].Oversampling: 0 is less than the minimum of 1",
    ]
    assert "Traceback" not in captured.err


def test_validate_syntax_error_missing_file_and_schema_choice(tmp_path, capsys):
    bad = tmp_path / "run.json"
    bad.write_text('{"calibration": "c.poni",\n "inputs": [}')
    assert main(["validate", str(bad)]) == 2
    assert f"{bad}: line 2, column 13: invalid JSON" in capsys.readouterr().err

    assert main(["validate", str(tmp_path / "absent.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "absent.json" in err and "not found" in err

    unknown = tmp_path / "thing.json"
    unknown.write_text('{"foo": 1}')
    assert main(["validate", str(unknown)]) == 2
    assert "give --schema" in capsys.readouterr().err
    # forced schema: a cluster profile is not a SAXS run
    assert main(["validate", str(CONFIG_DIR / "clusters" / "local.json"), "--schema", "saxs_run"]) == 2
    assert "calibration: required field is missing" in capsys.readouterr().err


def test_validate_via_console_script_exit_code(tmp_path):
    exe = Path(sys.executable).with_name("photonflow")
    if not exe.exists():
        pytest.skip("photonflow console script not installed in this environment")
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"kind": "slurm", "cores": "many", "memory": "4GiB", "jobs": 1}))
    proc = subprocess.run([str(exe), "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"photonflow: error: {bad}: cores: 'many' is not of type 'integer'"


# --------------------------------------------------------------------------- cluster


def test_cluster_show_slurm_prints_profile_runner_and_script(capsys):
    assert main(["cluster", "show", "slurm"]) == 0
    out = capsys.readouterr().out
    profile_json = out.split("\n# task runner")[0].split("\n", 1)[1]
    assert json.loads(profile_json)["kind"] == "slurm"
    assert "DaskTaskRunner(cluster_class='dask_jobqueue.SLURMCluster'" in out
    assert "#!/usr/bin/env bash" in out
    assert "#SBATCH --cpus-per-task=32" in out and "#SBATCH --mem=120G" in out and "#SBATCH -t 02:00:00" in out


def test_cluster_show_local_has_no_script_and_unknown_fails(capsys):
    assert main(["cluster", "show", "local"]) == 0
    out = capsys.readouterr().out
    assert "distributed.LocalCluster" in out and "#SBATCH" not in out
    assert main(["cluster", "show", "nope"]) == 2
    assert "no cluster profile named 'nope'" in capsys.readouterr().err
    assert main(["cluster", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("local", "slurm", "address", "threads"))


# --------------------------------------------------------------------------- saxs


def test_saxs_calls_the_flow_with_the_validated_run(tmp_path, images, fake_flow, capsys, monkeypatch):
    from prefect.task_runners import ThreadPoolTaskRunner

    cal = _calibration(tmp_path, OverwriteFiles=True)
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "saxs",
            str(cal),
            "data/frame_0.tif",
            "data/frame_1.tif",
            "data/scan.h5:10-20",
            "--out",
            "results",
            "--batch-size",
            "50",
            "--cluster",
            "threads",
            "--q-range",
            "0.5",
            "30",
            "--oversampling",
            "2",
        ]
    )
    assert code == 0
    (call,) = fake_flow.calls
    assert call == {
        "calibration": str(cal),
        "inputs": [str(images / "frame_0.tif"), str(images / "frame_1.tif"), f"{images / 'scan.h5'}:10-20"],
        "output_dir": str(tmp_path / "results"),
        "batch_size": 50,
        "overwrite": True,  # from the calibration's OverwriteFiles
        "npt": None,
        "q_range": [0.5, 30.0],
        "oversampling": 2,
        "mask": None,
    }
    assert isinstance(fake_flow.task_runner, ThreadPoolTaskRunner)
    out = capsys.readouterr().out
    assert "frames done: 4, failed: 0 in 2.0 s (2.0 frames/s)" in out
    assert "outputs: OUT" in out and "  plot: OUT/iq.png" in out


def test_saxs_default_cluster_is_local_and_overwrite_flag_wins(tmp_path, images, fake_flow, no_prefect_server):
    from prefect_dask import DaskTaskRunner

    cal = _calibration(tmp_path, OverwriteFiles=True)
    assert main(["saxs", str(cal), str(images), "--out", str(tmp_path / "o"), "--no-overwrite"]) == 0
    call = fake_flow.calls[-1]
    assert call["overwrite"] is False
    assert call["batch_size"] == 200
    assert call["inputs"] == [str(images)]  # a directory is passed as it is
    assert isinstance(fake_flow.task_runner, DaskTaskRunner)
    assert fake_flow.task_runner.cluster_class == "distributed.LocalCluster"
    assert no_prefect_server == ["local", "exit"]  # one Prefect API shared with the workers, around the run

    # a .poni has no OverwriteFiles: default no
    assert main(["saxs", str(images / "geometry.poni"), str(images / "frame_2.tif"), "--out", "o", "--npt", "500"]) == 0
    assert fake_flow.calls[-1]["overwrite"] is False
    assert fake_flow.calls[-1]["npt"] == 500


def test_saxs_config_file_paths_relative_to_it_and_command_line_overrides(tmp_path, images, fake_flow):
    cal = _calibration(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "run.json").write_text(
        json.dumps(
            {
                "calibration": "../calib.json",
                "inputs": ["../data/frame_*.tif"],
                "output_dir": "out",
                "batch_size": 10,
                "cluster": "threads",
                "overwrite": True,
                "npt": 300,
            }
        )
    )
    assert main(["saxs", "--config", str(runs / "run.json"), "--batch-size", "25"]) == 0
    call = fake_flow.calls[-1]
    assert call["calibration"] == str(cal)
    assert call["inputs"] == [str(images / f"frame_{i}.tif") for i in range(3)]  # glob expanded, sorted
    assert call["output_dir"] == str(runs / "out")
    assert call["batch_size"] == 25
    assert call["overwrite"] is True
    assert call["npt"] == 300


def test_saxs_exit_code_1_and_failures_listed_when_frames_fail(tmp_path, images, monkeypatch, capsys):
    flow = FakeSaxsFlow(
        {
            "operation": "saxs",
            "unit": "frames",
            "done": 2,
            "failed": 1,
            "output_dir": "O",
            "failures": ["frame_2.tif: truncated TIFF"],
            "elapsed_s": 1.0,
            "outputs": {"plot": "O/p.png"},
        }
    )
    monkeypatch.setitem(sys.modules, "photonflow.flows.saxs", types.SimpleNamespace(saxs_flow=flow))
    assert (
        main(["saxs", str(images / "geometry.poni"), str(images), "--out", str(tmp_path / "o"), "--cluster", "threads"])
        == 1
    )
    out = capsys.readouterr().out
    assert "failed: 1" in out and "  - frame_2.tif: truncated TIFF" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{cal}", "{img}"], "saxs needs --out DIR"),
        ([], "saxs needs CALIBRATION, INPUT..., --out DIR"),
        (["{cal}", "{data}/missing.tif", "--out", "o"], "missing.tif: input not found"),
        (["{cal}", "{data}/nothing_*.tif", "--out", "o"], "nothing_*.tif: no file matches"),
        (["{cal}", "{data}/scan.h5:20-10", "--out", "o"], "event range 20-10 is empty"),
        (["{cal}", "{img}", "--out", "o", "--q-range", "3", "1"], "command line: q_range: minimum 3.0 must be below"),
        (
            ["{cal}", "{img}", "--out", "o", "--batch-size", "0"],
            "command line: batch_size: 0 is less than the minimum of 1",
        ),
        (["{cal}", "{img}", "--out", "o", "--cluster", "nope"], "no cluster profile named 'nope'"),
        (["{data}/frame_0.tif", "{img}", "--out", "o"], "expected a SAXSDOG calibration .json or a pyFAI .poni"),
        (["{tmp}/absent.poni", "{img}", "--out", "o"], "absent.poni: calibration file not found"),
        (["{cal}", "{img}", "--out", "o", "--mask", "{tmp}/nomask.msk"], "nomask.msk: mask file not found"),
        (
            ["{cal}", "{img}", "--out", "o", "--polarization-factor", "0.9"],
            "this version of photonflow.flows.saxs does not accept polarization_factor",
        ),
    ],
)
def test_saxs_usage_and_config_errors_exit_2_with_one_line(tmp_path, images, fake_flow, capsys, argv, message):
    cal = _calibration(tmp_path)
    subst = {"cal": str(cal), "img": str(images / "frame_0.tif"), "data": str(images), "tmp": str(tmp_path)}
    argv = [a.format(**subst) for a in argv]
    assert main(["saxs", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("photonflow: error: ")
    assert fake_flow.calls == []


def test_saxs_invalid_calibration_names_file_and_field(tmp_path, images, fake_flow, capsys):
    cal = json.loads(EXAMPLE_CAL.read_text())
    cal["Geometry"]["DedectorDistanceMM"] = -5
    path = tmp_path / "calib.json"
    path.write_text(json.dumps(cal))
    assert main(["saxs", str(path), str(images), "--out", "o"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"photonflow: error: {path}: Geometry.DedectorDistanceMM: -5 is less than or equal to the minimum of 0"
    )
    assert fake_flow.calls == []


def test_saxs_without_the_flow_module_is_a_clear_error(tmp_path, images, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "photonflow.flows.saxs", None)  # import fails as if flows/saxs.py were absent
    assert main(["saxs", str(images / "geometry.poni"), str(images), "--out", "o"]) == 2
    assert "the SAXS flow (flows/saxs.py) is not available" in capsys.readouterr().err


# --------------------------------------------------------------------------- demo


def _fake_shared_data(root: Path) -> Path:
    saxs = root / "saxs"
    saxs.mkdir(parents=True)
    for name in ["CeO2_Pilatus1M.poni", "CeO2_Pilatus1M.tif"] + [f"Fe3O4C_M1_map_{i}_P1_E1_001.tif" for i in (1, 2, 3)]:
        (saxs / name).write_bytes(b"x")
    return saxs


def test_demo_uses_the_real_pilatus_images_when_present(tmp_path, fake_flow, monkeypatch, capsys):
    saxs = _fake_shared_data(tmp_path / "shared")
    monkeypatch.setenv(cli.DATA_ENV, str(tmp_path / "shared"))
    assert main(["demo", "--out", str(tmp_path / "demo-output")]) == 0
    call = fake_flow.calls[-1]
    assert call["calibration"] == str(saxs / "CeO2_Pilatus1M.poni")
    assert call["inputs"] == [str(saxs / "CeO2_Pilatus1M.tif")] + [
        str(saxs / f"Fe3O4C_M1_map_{i}_P1_E1_001.tif") for i in (1, 2, 3)
    ]
    assert call["output_dir"] == str(tmp_path / "demo-output")
    assert call["overwrite"] is True
    out = capsys.readouterr().out
    assert "demo: 4 real Pilatus 1M frame(s)" in out
    assert "  plot: OUT/iq.png" in out and f"outputs in {tmp_path / 'demo-output'}" in out

    assert main(["demo", "--out", str(tmp_path / "d2"), "--frames", "2"]) == 0
    assert len(fake_flow.calls[-1]["inputs"]) == 2


def test_demo_falls_back_to_generated_data(tmp_path, fake_flow, monkeypatch):
    monkeypatch.setenv(cli.DATA_ENV, str(tmp_path / "no-data-here"))
    made = {}

    def write_demo_dataset(directory, n_frames):
        directory = Path(directory)
        directory.mkdir(parents=True)
        made.update(directory=directory, n_frames=n_frames)
        (directory / "sim.poni").write_text("Distance: 1\n")
        frames = []
        for i in range(n_frames):
            (directory / f"sim_{i}.tif").write_bytes(b"x")
            frames.append(directory / f"sim_{i}.tif")
        return {"calibration": directory / "sim.poni", "inputs": frames}

    monkeypatch.setitem(
        sys.modules, "photonflow.simulate.saxs", types.SimpleNamespace(write_demo_dataset=write_demo_dataset)
    )
    assert main(["demo", "--out", str(tmp_path / "out"), "--frames", "5", "--cluster", "threads"]) == 0
    assert made == {"directory": tmp_path / "out" / "demo-data", "n_frames": 5}
    call = fake_flow.calls[-1]
    assert call["calibration"] == str(tmp_path / "out" / "demo-data" / "sim.poni")
    assert len(call["inputs"]) == 5


def test_demo_without_data_or_simulator_is_a_clear_error(tmp_path, fake_flow, monkeypatch, capsys):
    monkeypatch.setenv(cli.DATA_ENV, str(tmp_path / "no-data-here"))
    monkeypatch.setitem(sys.modules, "photonflow.simulate.saxs", None)
    assert main(["demo", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no real data in" in err and "photonflow.simulate.saxs is not available" in err
    assert fake_flow.calls == []
