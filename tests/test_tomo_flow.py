"""The tomography flow end to end (real Prefect runs on the thread pool), stitching, bad input,
failing chunks, and the command line."""

import json

import h5py
import numpy as np
import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from photonflow.deployments.cli import main
from photonflow.flows.tomo import TomoInputError, tomo_flow
from photonflow.simulate.tomo import overlapping_scans, phantom_volume, shepp_logan_ellipsoids, simulate_scan
from photonflow.tomo.dxchange import DxchangeError
from photonflow.tomo.preprocess import remove_all_stripes
from photonflow.tomo.recon import reconstruct


def _threads(flow):
    return flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))


def _write(path, s, flats_end=True, theta=None):
    nb = s.n_flats_before
    with h5py.File(path, "w") as f:
        ex = f.create_group("exchange")
        ex["data"] = s.data
        ex["data_white"] = s.flats[:nb] if flats_end else s.flats
        if flats_end:
            ex["data_white_end"] = s.flats[nb:]
        ex["data_dark"] = s.darks
        ex["theta"] = s.theta_deg if theta is None else theta
        ex["monitor"] = s.monitor
    return path


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    root = tmp_path_factory.mktemp("tomoflow")
    s = simulate_scan(
        n_rows=12,
        n_cols=128,
        n_angles=180,
        photons=20000,
        seed=1,
        dead_columns=(40,),
        hot_columns=(70,),
        zinger_probability=1e-4,
    )
    return root, _write(root / "scan.h5", s), s


RUN = {
    "preprocess": {"i0": {"monitor": "/exchange/monitor"}, "zingers": {"threshold": 0.3}},
    "sinogram": {"stripes": {"method": "all", "snr": 3, "la_size": 31, "sm_size": 21}},
}


@pytest.fixture(scope="module")
def run(scan):
    root, path, s = scan
    summary = _threads(tomo_flow)(
        inputs=[str(path)], output_dir=str(root / "out"), chunks={"projections": 64, "rows": 5}, **RUN
    )
    return root / "out", summary


def test_volume_centre_pyramid_report(run, scan):
    out, summary = run
    _, _, s = scan
    assert abs(summary["center_px"] - s.center_px) <= 0.5
    assert len(summary["pass1_chunk_s"]) > 1 and len(summary["pass2_chunk_s"]) > 1  # really chunked
    with h5py.File(out / "volume.h5", "r") as f:
        v = f["volume"]
        assert v.is_virtual and v.dtype == np.uint16 and v.shape == (12, 128, 128)
        lo, hi = v.attrs["vmin"], v.attrs["vmax"]
        vol = lo + v[()].astype(np.float64) * (hi - lo) / 65535
        assert f["pyramid/level_1"].shape == (6, 64, 64)
    truth = phantom_volume((12, 128, 128), s.ellipsoids, oversample=2)
    inside = np.hypot(*np.meshgrid(np.arange(128) - 63.5, np.arange(128) - 63.5)) < 58
    rmse = np.sqrt(np.mean((vol - truth)[:, inside] ** 2))
    # reference: the same counts normalised with the true flats and I0, the artefact pixels
    # replaced by their true values (a perfect pass 1), the same stripe removal, the true centre
    t = s.time[:, None, None]
    flat = (1 - t) * s.expected_flat_before + t * s.expected_flat_after
    ideal = (s.data.astype(np.float64) - s.dark_level) / (flat * s.i0_factor[:, None, None])
    exact = np.exp(-s.line_integrals)
    cols = list(s.dead_columns) + list(s.hot_columns)
    ideal[:, :, cols] = exact[:, :, cols]
    for k, r, c in s.zingers:
        ideal[k, r, c] = exact[k, r, c]
    sino = np.stack([remove_all_stripes(x, 3, 31, 21) for x in -np.log(np.clip(ideal, 1e-6, None)).transpose(1, 0, 2)])
    ref = reconstruct(sino, s.theta_deg, s.center_px)
    rmse_ref = np.sqrt(np.mean((ref - truth)[:, inside] ** 2))
    print(f"flow RMSE {rmse:.4g} 1/px; perfectly corrected counts {rmse_ref:.4g} (phantom max {truth.max():.3g})")
    assert rmse < 1.25 * rmse_ref
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 3
    assert not (out / "intermediate").exists()
    plan = json.loads((out / "plan.json").read_text())
    assert plan["pass1"]["overlap_rows"] == 1  # the zinger median's neighbour row
    assert json.loads((out / "summary.json").read_text())["outputs"]["volume"] == str(out / "volume.h5")


def test_stripe_removal_reduces_rings(scan, run):
    root, path, s = scan
    from photonflow.tomo.sino import ring_metric

    plain = _threads(tomo_flow)(
        inputs=[str(path)],
        output_dir=str(root / "plain"),
        output={"dtype": "float32"},
        preprocess=RUN["preprocess"],
        reconstruction={"center": s.center_px},
        report=False,
    )
    cleaned = _threads(tomo_flow)(
        inputs=[str(path)],
        output_dir=str(root / "cleaned"),
        output={"dtype": "float32"},
        reconstruction={"center": s.center_px},
        report=False,
        **RUN,
    )
    with h5py.File(plain["outputs"]["volume"], "r") as f, h5py.File(cleaned["outputs"]["volume"], "r") as g:
        before = np.mean([ring_metric(x) for x in f["volume"][()]])
        after = np.mean([ring_metric(x) for x in g["volume"][()]])
    print(f"ring metric: {before:.4g} -> {after:.4g}")
    assert after < 0.5 * before


def test_stitched_scans_reconstruct_like_one_wide_scan(tmp_path):
    theta = np.linspace(0, 180, 120, endpoint=False)
    ells = shepp_logan_ellipsoids()
    offsets = [0.0, 70.0]
    parts = overlapping_scans((6, 160), theta, ells, 96, offsets)
    paths = []
    for k, li in enumerate(parts):
        flat = np.full((3,) + li.shape[1:], 1e4 + 100.0)  # float counts without noise: the geometry shows
        dark = np.full((2,) + li.shape[1:], 100.0)
        data = 1e4 * np.exp(-li) + 100.0
        with h5py.File(tmp_path / f"part{k}.h5", "w") as f:
            ex = f.create_group("exchange")
            ex["data"] = data.astype(np.float32)
            ex["data_white"] = flat.astype(np.float32)
            ex["data_dark"] = dark.astype(np.float32)
            ex["theta"] = theta
        paths.append(str(tmp_path / f"part{k}.h5"))
    summary = _threads(tomo_flow)(
        inputs=paths,
        output_dir=str(tmp_path / "out"),
        output={"dtype": "float32"},
        stitch={"motor_positions_mm": [0.0, 0.4], "pixel_size_um": 6.5},  # guess 61.5 px
        reconstruction={"center": 79.5},
        report=False,
    )
    assert summary["stitch_offsets_px"] == [70.0]
    with h5py.File(summary["outputs"]["volume"], "r") as f:
        vol = f["volume"][()]
    assert vol.shape == (6, 166, 166)
    truth = phantom_volume((6, 160, 160), ells)
    inside = np.hypot(*np.meshgrid(np.arange(160) - 79.5, np.arange(160) - 79.5)) < 70
    rmse = np.sqrt(np.mean((vol[:, 3:163, 3:163] - truth)[:, inside] ** 2))  # the axis sits at the slice centre
    print(f"stitched RMSE {rmse:.3g} (phantom max {truth.max():.3g})")
    assert rmse < 0.1 * truth.max()


def test_bad_input_stops_before_work(scan, tmp_path):
    root, path, s = scan
    bad = _write(tmp_path / "short_theta.h5", s, theta=s.theta_deg[:-3])
    with pytest.raises(DxchangeError, match="177 angles for 180 projections"):
        _threads(tomo_flow)(inputs=[str(bad)], output_dir=str(tmp_path / "o1"))
    with h5py.File(bad, "a") as f:
        del f["exchange/theta"]
        f["exchange/theta"] = s.theta_deg
        del f["exchange/data_dark"]
    with pytest.raises(DxchangeError, match="data_dark: not found"):
        _threads(tomo_flow)(inputs=[str(bad)], output_dir=str(tmp_path / "o2"))
    with pytest.raises(TomoInputError, match="outside the detector"):
        _threads(tomo_flow)(inputs=[str(path)], output_dir=str(tmp_path / "o3"), reconstruction={"center": 500})
    (tmp_path / "file").write_text("")
    with pytest.raises(TomoInputError, match="not writable"):
        _threads(tomo_flow)(inputs=[str(path)], output_dir=str(tmp_path / "file" / "sub"))
    assert not (tmp_path / "o1" / "volume.h5").exists() and not (tmp_path / "o3" / "plan.json").exists()


def test_a_failing_chunk_is_retried_then_reported_without_a_volume(scan, tmp_path, monkeypatch):
    root, path, s = scan
    import photonflow.tomo.passes as passes

    real = passes.pass2_chunk
    calls = []

    def flaky(joined, r0, r1, *args, **kwargs):
        calls.append(r0)
        if r0 == 0:
            raise OSError("disk went away")
        return real(joined, r0, r1, *args, **kwargs)

    monkeypatch.setattr(passes, "pass2_chunk", flaky)
    with pytest.raises(RuntimeError, match="pass 2 failed, no volume written.*disk went away"):
        _threads(tomo_flow)(
            inputs=[str(path)],
            output_dir=str(tmp_path / "o"),
            chunks={"rows": 5},
            reconstruction={"center": s.center_px},
            report=False,
        )
    assert calls.count(0) == 3  # the first try and two retries
    assert not (tmp_path / "o" / "volume.h5").exists()


def test_cli_dry_run_and_config_errors(scan, tmp_path, capsys):
    root, path, _ = scan
    assert main(["tomo", str(path), "--out", str(tmp_path / "d"), "--dry-run", "--memory-gib", "0.01"]) == 0
    plan = json.loads(capsys.readouterr().out.split("outputs go to:")[1].split("\n", 1)[1])
    assert plan["shape"] == [180, 12, 128] and plan["pass1"]["chunks"][-1][1] == 180
    cfg = tmp_path / "run.json"
    cfg.write_text(
        json.dumps(
            {
                "inputs": [str(path)],
                "output_dir": "o",
                "output": {"dtype": "int7"},
                "preprocess": {"paganin": {"delta_beta": 100}},
            }
        )
    )
    assert main(["tomo", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "output.dtype" in err and "paganin" in err and "energy_kev" in err
    assert main(["tomo", str(tmp_path / "absent.h5"), "--out", "o"]) == 2
