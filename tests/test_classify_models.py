"""Frame classifiers (photonflow.classify.models): split parsing, evaluation numbers against
scikit-learn's metrics, training of all five models on a separable synthetic problem, grid
search, save/load, compatibility checks and the report files."""

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from photonflow.classify.models import (
    BAD,
    GOOD,
    MODELS,
    PARAM_GRIDS,
    ClassifierFileError,
    Evaluation,
    ModelMismatch,
    check_compatible,
    compare_models,
    comparison_markdown,
    evaluate,
    load_classifier,
    make_model,
    metadata_path,
    parse_split,
    plot_confusion_matrix,
    save_classifier,
    train_classifier,
    write_evaluation,
)

RECIPE = {"roi": {"ss0": 100, "ss1": 228, "fs0": 40, "fs1": 168, "panel": "p0"}, "binning": 4, "summary": "log1p"}
SHAPE = (512, 256)


def blobs(n=600, n_features=50, good_fraction=0.7, seed=1):
    """Two Gaussian blobs: good frames around 0, bad frames shifted; 70/30 good/bad."""
    rng = np.random.default_rng(seed)
    n_good = int(round(n * good_fraction))
    y = np.array([GOOD] * n_good + [BAD] * (n - n_good))
    X = rng.normal(size=(n, n_features))
    shift = np.full(n_features, 1.0)
    shift[:5] = 5.0  # a few strongly informative features (as hot/dead ROI pixels would be)
    X[y == BAD] += shift
    order = rng.permutation(n)
    return X[order], y[order]


@pytest.fixture(scope="module")
def data():
    return blobs()


@pytest.fixture(scope="module")
def forest(data):
    X, y = data
    refs = [f"run1/frame{i:04d}" for i in range(len(y))]
    return train_classifier(X, y, "random_forest", seed=3, recipe=RECIPE, frame_shape=SHAPE, refs=refs)


# ---------------------------------------------------------------------------------------------- split


@pytest.mark.parametrize(
    "split, expected",
    [
        (None, (70.0, 30.0)),
        ("70/30", (70.0, 30.0)),
        ("70,30", (70.0, 30.0)),
        ("80:20", (80.0, 20.0)),
        (" 75 / 25 ", (75.0, 25.0)),
        ("60%/40%", (60.0, 40.0)),
        ((70, 30), (70.0, 30.0)),
        ([90, 10], (90.0, 10.0)),
        ((0.7, 0.3), (70.0, 30.0)),
        ("0.8/0.2", (80.0, 20.0)),
        ("80", (80.0, 20.0)),
        (65, (65.0, 35.0)),
    ],
)
def test_parse_split_forms(split, expected):
    assert parse_split(split) == pytest.approx(expected)


def test_parse_split_must_add_up_to_100():
    with pytest.raises(ValueError) as err:
        parse_split("60/30")
    assert "train/test split 60/30 adds up to 90, not 100" in str(err.value)
    with pytest.raises(ValueError, match="adds up to 110, not 100"):
        parse_split((70, 40))
    with pytest.raises(ValueError, match="adds up to 0.9, not 1"):
        parse_split((0.6, 0.3))


@pytest.mark.parametrize("bad", ["0/100", (100, 0), "-10/110", "70/20/10", "seventy/thirty", "100", 0])
def test_parse_split_rejects(bad):
    with pytest.raises(ValueError, match="train/test split"):
        parse_split(bad)


# ---------------------------------------------------------------------------------------------- evaluation


def test_evaluation_matches_sklearn_metrics():
    y_true = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1])
    y_pred = np.array([1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1])
    e = evaluate(y_true, y_pred)
    cm = confusion_matrix(y_true, y_pred, labels=[0, 1])
    np.testing.assert_array_equal(e.confusion, cm)
    # by hand: 6 bad (5 rejected, 1 kept), 14 good (12 kept, 2 lost)
    np.testing.assert_array_equal(e.confusion, [[5, 1], [2, 12]])
    assert e.n_test == 20
    assert e.accuracy == pytest.approx(accuracy_score(y_true, y_pred)) == pytest.approx(17 / 20)
    assert e.misclassification_rate == pytest.approx(3 / 20)
    assert e.good_kept == pytest.approx(12 / 14)
    assert e.bad_rejected == pytest.approx(5 / 6)
    ref = classification_report(y_true, y_pred, labels=[0, 1], target_names=["bad", "good"], output_dict=True)
    assert set(e.report) == {"bad", "good", "macro avg", "weighted avg"}
    for key, row in e.report.items():
        for metric in ("precision", "recall", "f1-score", "support"):
            assert row[metric] == pytest.approx(ref[key][metric]), (key, metric)
    assert e.report["good"]["recall"] == pytest.approx(e.good_kept)
    assert e.report["bad"]["recall"] == pytest.approx(e.bad_rejected)
    assert e.report["bad"]["precision"] == pytest.approx(5 / 7)
    assert not e.meets_padt()

    d = json.loads(json.dumps(e.to_dict()))
    assert d["confusion"] == [[5, 1], [2, 12]]
    back = Evaluation.from_dict(d)
    np.testing.assert_array_equal(back.confusion, e.confusion)
    assert back.report == e.report and back.good_kept == e.good_kept

    md = e.to_markdown(title="random_forest")
    assert "| bad | 5 (83.3 %) | 1 (16.7 %) |" in md
    assert "| good | 2 (14.3 %) | 12 (85.7 %) |" in md
    assert "| accuracy | 85.00 % |" in md
    text = e.to_text()
    assert "weighted avg" in text and "0.8500" in text and "good kept" in text


def test_evaluation_rejects_other_labels():
    with pytest.raises(ValueError, match="0 \\(bad\\) or 1 \\(good\\)"):
        evaluate([0, 1, 2], [0, 1, 1])


# ---------------------------------------------------------------------------------------------- training


def test_make_model_defaults_and_unknown_name():
    lr = make_model("logistic_regression", C=3.0)
    assert lr.named_steps["clf"].C == 3.0 and lr.named_steps["clf"].class_weight == "balanced"
    assert type(lr.named_steps["scale"]).__name__ == "StandardScaler"
    rf = make_model("random_forest", seed=7, n_jobs=1, n_estimators=50)
    assert rf.random_state == 7 and rf.n_estimators == 50 and rf.n_jobs == 1 and rf.class_weight == "balanced"
    with pytest.raises(ValueError, match="logistic_regression, knn, decision_tree, random_forest, hist_gradient"):
        make_model("svm")
    assert set(PARAM_GRIDS) == set(MODELS)
    for name, grid in PARAM_GRIDS.items():  # every grid names real parameters of its model
        make_model(name, **{k: v[0] for k, v in grid.items()})


def test_all_models_separate_blobs_with_stratified_split(data):
    X, y = data
    results = compare_models(X, y, seed=0, recipe=RECIPE, frame_shape=SHAPE)
    assert list(results) == list(MODELS)
    n_test = 180  # 30 % of 600
    bad_share = float(np.mean(y == BAD))
    for name, clf in results.items():
        e = clf.evaluation
        assert e.accuracy > 0.95, (name, e.accuracy)
        assert e.n_test == n_test == clf.training_summary["n_test"]
        # stratified: the test part keeps the data's class proportions (within one frame)
        assert abs(e.confusion[0].sum() - bad_share * n_test) <= 1
        assert abs(e.confusion[1].sum() - (1 - bad_share) * n_test) <= 1
        s = clf.training_summary
        assert (s["n_frames"], s["n_good"], s["n_bad"], s["n_train"]) == (600, 420, 180, 420)
        assert s["split"] == {"train": 70.0, "test": 30.0}
        assert clf.classes == (BAD, GOOD)
    md = comparison_markdown(results)
    assert md.count("\n| ") == len(MODELS) + 1


def test_training_is_deterministic_and_keeps_test_refs(data, forest):
    X, y = data
    refs = [f"run1/frame{i:04d}" for i in range(len(y))]
    again = train_classifier(X, y, "random_forest", seed=3, refs=refs)
    assert again.test_refs == forest.test_refs
    np.testing.assert_array_equal(again.evaluation.confusion, forest.evaluation.confusion)
    np.testing.assert_array_equal(again.predict(X), forest.predict(X))
    np.testing.assert_allclose(again.predict_proba(X), forest.predict_proba(X))
    assert len(forest.test_refs) == 180 and len(set(forest.test_refs)) == 180
    index = {r: i for i, r in enumerate(refs)}
    test_idx = np.array([index[r] for r in forest.test_refs])
    np.testing.assert_array_equal(forest.test_labels, y[test_idx])
    wrong = forest.misclassified()
    assert len(wrong) == forest.evaluation.confusion[0, 1] + forest.evaluation.confusion[1, 0]
    assert forest.training_summary["misclassified"] == wrong
    other = train_classifier(X, y, "random_forest", seed=4, refs=refs)
    assert other.test_refs != forest.test_refs


def test_random_forest_reaches_padt_rates(forest):
    assert forest.evaluation.good_kept >= 0.94
    assert forest.evaluation.bad_rejected >= 0.98
    assert forest.evaluation.meets_padt()


def test_training_input_errors(data):
    X, y = data
    with pytest.raises(ValueError, match="adds up to 90, not 100"):
        train_classifier(X, y, split="60/30")
    with pytest.raises(ValueError, match="at least 2 bad frames"):
        train_classifier(X[:10], np.ones(10, dtype=int))
    with pytest.raises(ValueError, match="unknown classifier model"):
        train_classifier(X, y, "svm")
    with pytest.raises(ValueError, match="600 feature rows but 599 labels"):
        train_classifier(X, y[:-1])


def test_grid_search_records_best_params(data):
    X, y = data
    clf = train_classifier(X, y, "knn", seed=0, grid_search={"n_neighbors": [1, 15]}, n_jobs=1)
    gs = clf.training_summary["grid_search"]
    assert gs["grid"] == {"n_neighbors": [1, 15]}
    assert gs["best_params"]["n_neighbors"] in (1, 15)
    assert gs["best_params"]["n_neighbors"] == clf.model.named_steps["clf"].n_neighbors
    assert gs["n_candidates"] == 2 and gs["cv_folds"] == 5 and gs["scoring"] == "balanced_accuracy"
    assert 0.9 < gs["cv_score"] <= 1.0
    assert clf.evaluation.accuracy > 0.95
    tree = train_classifier(X, y, "decision_tree", grid_search=True)
    assert set(tree.training_summary["grid_search"]["best_params"]) == set(PARAM_GRIDS["decision_tree"])


# ---------------------------------------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path, data, forest):
    X, _ = data
    path = save_classifier(tmp_path / "models" / "rf.joblib", forest)
    assert path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["rf.joblib", "rf.json"]  # no temporary left over
    loaded = load_classifier(path)
    np.testing.assert_array_equal(loaded.predict(X), forest.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), forest.predict_proba(X))
    assert loaded.name == "random_forest" and loaded.frame_shape == SHAPE and loaded.recipe == RECIPE
    np.testing.assert_array_equal(loaded.evaluation.confusion, forest.evaluation.confusion)
    assert loaded.training_summary["n_frames"] == 600
    assert loaded.misclassified() == forest.training_summary["misclassified"]

    meta = json.loads(metadata_path(path).read_text())
    assert meta["name"] == "random_forest" and meta["model_file"] == "rf.joblib"
    assert meta["recipe"]["roi"] == RECIPE["roi"] and meta["recipe"]["binning"] == 4
    assert meta["frame_shape"] == list(SHAPE) and meta["n_features"] == 50
    assert meta["class_names"] == ["bad", "good"]
    assert meta["training_summary"]["n_good"] == 420 and meta["training_summary"]["n_bad"] == 180
    assert {"scikit-learn", "numpy", "python"} <= set(meta["versions"])
    assert meta["evaluation"]["confusion"] == forest.evaluation.to_dict()["confusion"]


def test_check_compatible(forest):
    check_compatible(forest, dict(RECIPE, roi=dict(RECIPE["roi"])), SHAPE)  # equal: passes
    check_compatible(forest, json.loads(json.dumps(RECIPE)), [512, 256])
    with pytest.raises(ModelMismatch, match=r"frame shape: model \(512, 256\), frames \(1024, 256\)"):
        check_compatible(forest, RECIPE, (1024, 256))
    moved = dict(RECIPE, roi=dict(RECIPE["roi"], ss0=110))
    with pytest.raises(ModelMismatch, match="ROI box: model ss 100:228, fs 40:168, frames ss 110:228") as err:
        check_compatible(forest, moved, SHAPE)
    assert len(err.value.differences) == 1
    with pytest.raises(ModelMismatch, match="ROI panel: model 'p0', frames 'p1'"):
        check_compatible(forest, dict(RECIPE, roi=dict(RECIPE["roi"], panel="p1")), SHAPE)
    with pytest.raises(ModelMismatch) as err:
        check_compatible(forest, dict(RECIPE, binning=2, summary="raw"), (10, 10))
    assert len(err.value.differences) == 3
    assert "binning: model 4, frames 2" in str(err.value) and "summary" in str(err.value)
    with pytest.raises(ModelMismatch, match="expects 50 features per frame, got 49"):
        forest.predict(np.zeros((3, 49)))
    assert isinstance(ModelMismatch("x"), ValueError)


def test_load_garbage_names_the_file(tmp_path):
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"this is not a classifier\x00\x01\x02")
    with pytest.raises(ClassifierFileError, match="junk.joblib"):
        load_classifier(junk)
    import joblib

    other = tmp_path / "other.joblib"
    joblib.dump({"some": "dict"}, other)
    with pytest.raises(ClassifierFileError, match="other.joblib is not a photonflow classifier"):
        load_classifier(other)
    with pytest.raises(FileNotFoundError, match="missing.joblib"):
        load_classifier(tmp_path / "missing.joblib")


def test_confusion_png_and_evaluation_files(tmp_path, forest):
    png = plot_confusion_matrix(forest.evaluation, tmp_path / "cm.png", title="random forest")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    paths = write_evaluation(forest.evaluation, tmp_path / "out", "random_forest", extra={"model": "random_forest"})
    assert set(paths) == {"json", "txt", "png"}
    numbers = json.loads(open(paths["json"]).read())
    assert numbers["model"] == "random_forest"
    assert numbers["confusion"] == forest.evaluation.to_dict()["confusion"]
    assert numbers["n_test"] == 180
    assert "precision" in open(paths["txt"]).read()
    assert open(paths["png"], "rb").read(4) == b"\x89PNG"


def test_operating_point_rejects_the_target_fraction_of_bad_frames(tmp_path):
    """bad_rejected_target: a threshold on p(good) from out-of-fold training probabilities; it is
    saved with the model and used by predict."""
    from photonflow.classify.models import load_classifier, save_classifier, train_classifier

    rng = np.random.default_rng(3)
    n = 1200
    y = (rng.random(n) < 0.65).astype(int)
    X = rng.normal(0, 1, (n, 20))
    X[:, 0] += 1.6 * y  # overlapping classes: the 0.5 rule rejects too few bad frames
    default = train_classifier(X, y, "logistic_regression", seed=1)
    tuned = train_classifier(X, y, "logistic_regression", seed=1, bad_rejected_target=0.98)
    assert default.threshold is None and 0.5 < tuned.threshold < 1.0
    assert tuned.training_summary["operating_point"]["bad_rejected_target"] == 0.98
    assert tuned.evaluation.bad_rejected > default.evaluation.bad_rejected
    assert tuned.evaluation.bad_rejected >= 0.93  # held out: near the 0.98 chosen on training folds
    p_good = tuned.predict_proba(X)[:, 1]
    np.testing.assert_array_equal(tuned.predict(X), (p_good >= tuned.threshold).astype(int))
    path = save_classifier(tmp_path / "lr.joblib", tuned)
    loaded = load_classifier(path)
    assert loaded.threshold == tuned.threshold
    np.testing.assert_array_equal(loaded.predict(X), tuned.predict(X))
