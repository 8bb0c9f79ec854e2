"""Frame classification flows end to end: train from PADT lists, sort a folder, bad input, CLI."""

import json

import h5py
import numpy as np
import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from photonflow.classify.labels import read_label_list
from photonflow.classify.models import ModelMismatch
from photonflow.flows.classify import classify_sort_flow, classify_train_flow
from photonflow.io import read_table_csv
from photonflow.io.geom import load_geometry
from photonflow.simulate.padt import read_padt_truth, write_padt_dataset

GEOMETRY = "config/geometry/sim_epix.geom"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("padt")
    train = write_padt_dataset(root / "train", load_geometry(GEOMETRY), 300, frames_per_file=100, seed=1)
    test = write_padt_dataset(root / "test", load_geometry(GEOMETRY), 120, frames_per_file=60, seed=2)
    return {"root": root, "train": train, "test": test}


def threads(flow):
    return flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    summary = threads(classify_train_flow)(
        output_dir=str(out),
        good_lists=[str(data["train"].good_list)],
        bad_lists=[str(data["train"].bad_list)],
        geometry=GEOMETRY,
        panel="p0",
        binning=16,
        models=["random_forest", "logistic_regression"],
        batch_size=100,
    )
    return out, summary


def test_training_writes_models_and_evaluations(trained, data):
    out, summary = trained
    assert summary["events_with_features"] == 300 and not summary["failures"]
    assert summary["roi"] == {"ss0": 0, "ss1": 176, "fs0": 0, "fs1": 192, "panel": "p0"}
    rf = summary["models"]["random_forest"]
    assert rf["n_test"] == 90  # 70/30 of 300
    # 210 training frames only: the PADT-rate check is benchmarks/classify.py on 2600 frames
    assert rf["accuracy"] > 0.75 and rf["good_kept"] > 0.8 and rf["bad_rejected"] > 0.6
    for name in ("random_forest", "logistic_regression"):
        assert (out / f"model_{name}.joblib").is_file()
        assert (out / f"evaluation_{name}_confusion.png").is_file()
        numbers = json.loads((out / f"evaluation_{name}_evaluation.json").read_text())
        assert np.sum(numbers["confusion"]) == 90


def test_sorting_a_folder_gives_good_and_bad_lists(trained, data, tmp_path):
    out, _ = trained
    sort_out = tmp_path / "sorted"
    summary = threads(classify_sort_flow)(
        model=str(out / "model_random_forest.joblib"),
        inputs=[str(p) for p in data["test"].cxi_files],
        output_dir=str(sort_out),
        batch_size=50,
    )
    assert summary["done"] == 120 and summary["failed"] == 0
    good = read_label_list(sort_out / "good.lst")
    bad = read_label_list(sort_out / "bad.lst")
    assert len(good) + len(bad) == 120 and not set(good) & set(bad)
    truth = {(str(t.path), int(t.event)): t.label for t in read_padt_truth(data["test"].truth_path)}
    correct = sum(truth[(str(p), e)] == 1 for p, e in good) + sum(truth[(str(p), e)] == 0 for p, e in bad)
    assert correct / 120 > 0.75
    per_file = read_table_csv(sort_out / "per_file.csv")
    assert list(np.asarray(per_file["frames"]).astype(int)) == [60, 60]
    assert int(np.sum(np.asarray(per_file["good"]).astype(int))) == len(good)


def test_sorting_refuses_frames_of_another_shape_and_names_bad_files(trained, data, tmp_path):
    out, _ = trained
    model = str(out / "model_random_forest.joblib")
    with h5py.File(tmp_path / "other.cxi", "w") as f:
        f["/entry_1/data_1/data"] = np.zeros((3, 100, 100), np.float32)
    with pytest.raises(ModelMismatch, match="other.cxi"):
        threads(classify_sort_flow)(model=model, inputs=[str(tmp_path / "other.cxi")], output_dir=str(tmp_path / "o"))
    (tmp_path / "broken.cxi").write_bytes(b"not hdf5")
    summary = threads(classify_sort_flow)(
        model=model,
        inputs=[str(data["test"].cxi_files[0]), str(tmp_path / "other.cxi"), str(tmp_path / "broken.cxi")],
        output_dir=str(tmp_path / "o2"),
    )
    text = "\n".join(summary["failures"])
    assert summary["done"] == 60 and "other.cxi" in text and "broken.cxi" in text


def test_label_list_naming_a_missing_file_is_named_and_the_rest_trains(data, tmp_path):
    from photonflow.classify.labels import write_label_list

    good = tmp_path / "good.lst"
    write_label_list(good, read_label_list(data["train"].good_list) + [("/no/such/file.cxi", 3)])
    summary = threads(classify_train_flow)(
        output_dir=str(tmp_path / "t"),
        good_lists=[str(good)],
        bad_lists=[str(data["train"].bad_list)],
        box=[0, 176, 0, 192],
        binning=8,
        batch_size=300,
    )
    assert any("/no/such/file.cxi" in f for f in summary["failures"])
    assert summary["events_with_features"] == 300


def test_split_that_does_not_add_up_is_refused(data, tmp_path):
    with pytest.raises(ValueError, match="adds up to 90, not 100"):
        threads(classify_train_flow)(
            output_dir=str(tmp_path),
            good_lists=[str(data["train"].good_list)],
            bad_lists=[str(data["train"].bad_list)],
            box=[0, 176, 0, 192],
            split="60/30",
        )


def test_command_line_train_sort_sheet_and_ids(data, tmp_path, capsys):
    from photonflow.deployments.cli import main

    code = main(
        [
            "classify",
            "train",
            "--good",
            str(data["train"].good_list),
            "--bad",
            str(data["train"].bad_list),
            "--geometry",
            GEOMETRY,
            "--panel",
            "p0",
            "--binning",
            "8",
            "--model",
            "decision_tree",
            "--out",
            str(tmp_path / "m"),
            "--cluster",
            "threads",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "decision_tree" in printed and "good kept" in printed
    code = main(
        [
            "classify",
            "sort",
            str(tmp_path / "m" / "model_decision_tree.joblib"),
            str(data["test"].cxi_files[1]),
            "--out",
            str(tmp_path / "s"),
            "--cluster",
            "threads",
        ]
    )
    assert code == 0 and "good_list:" in capsys.readouterr().out
    code = main(
        [
            "classify",
            "sheet",
            f"{data['test'].cxi_files[0]}:0-16",
            "--geometry",
            GEOMETRY,
            "--panel",
            "p0",
            "--out",
            str(tmp_path / "sheet"),
        ]
    )
    assert code == 0
    assert list((tmp_path / "sheet").glob("sheet*.png"))
    ids = read_label_list(tmp_path / "sheet" / "ids.lst")
    code = main(
        [
            "classify",
            "ids",
            "3",
            "5-6",
            "--from",
            str(tmp_path / "sheet" / "ids.lst"),
            "--out",
            str(tmp_path / "bad.lst"),
        ]
    )
    assert code == 0
    assert read_label_list(tmp_path / "bad.lst") == [ids[3], ids[5], ids[6]]
    assert (
        main(
            [
                "classify",
                "train",
                "--good",
                "x.lst",
                "--bad",
                "y.lst",
                "--box",
                "0",
                "10",
                "0",
                "10",
                "--out",
                str(tmp_path / "z"),
                "--split",
                "60/30",
            ]
        )
        == 2
    )


def test_training_from_automatic_labels(data, tmp_path):
    """--auto: labels by profile fitting (most frames good), written as lists, then a model."""
    from photonflow.classify.autolabel import auto_label
    from photonflow.classify.features import roi_from_panel

    summary = threads(classify_train_flow)(
        output_dir=str(tmp_path),
        auto_label_inputs=[str(p) for p in data["train"].cxi_files],
        geometry=GEOMETRY,
        panel="p0",
        binning=16,
        batch_size=150,
    )
    good = read_label_list(tmp_path / "auto_good.lst")
    bad = read_label_list(tmp_path / "auto_bad.lst")
    auto = auto_label([(str(p), e) for p, e in data["train"].refs], roi_from_panel(GEOMETRY, "p0"))
    assert len(good) == int(np.sum(auto.good & auto.decided)) and len(bad) == int(np.sum(~auto.good & auto.decided))
    assert len(good) > len(bad) > 0  # most frames good, some not
    assert summary["events_with_features"] == len(good) + len(bad)
    assert (tmp_path / "model_random_forest.joblib").is_file()
