"""Frame classification flows (after PADT): train good/bad classifiers and sort experiments.

``classify_train_flow``: labels from PADT/CrystFEL label lists (or automatic labels by profile
fitting), ROI features extracted in batches on the workers, one or several scikit-learn models trained
and evaluated on a stratified held-out split (confusion matrix, classification report, accuracy), and
each model saved with its metadata.

``classify_sort_flow``: a saved model sorts a folder or list of multi-event files into good and bad
event lists (CrystFEL list files), with a per-file summary table; frames whose shape or ROI does not
match the model are refused, naming the file.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect_dask import DaskTaskRunner

from photonflow.classify.features import FeatureRecipe, roi_from_box, roi_from_panel
from photonflow.classify.labels import load_labels, write_label_list
from photonflow.classify.models import (
    BAD,
    GOOD,
    ModelMismatch,
    check_compatible,
    compare_models,
    load_classifier,
    save_classifier,
    write_evaluation,
)
from photonflow.flows._runrecord import RunRecord, record_failure
from photonflow.flows.runner import finish_run, run_batches, write_run_table
from photonflow.io import FrameRef, atomic_write_text, iter_frame_refs, write_table_csv
from photonflow.operations import get as get_operation
from photonflow.results import RunSummary
from photonflow.tasks.classify import features_batch


def frame_shape(path: str, dataset: str | None = None) -> tuple[int, int]:
    """(ss, fs) of a file's frames, from the HDF5 dataset's shape (no data read) or one image."""
    from photonflow.io import read_frame
    from photonflow.io.images import find_image_dataset, open_hdf5

    if str(path).lower().endswith((".h5", ".hdf5", ".cxi", ".nxs")):
        with open_hdf5(path) as f:
            return tuple(int(n) for n in find_image_dataset(f, dataset, path=path).shape[-2:])
    return tuple(int(n) for n in read_frame(path).shape)


def make_recipe(
    geometry: str | None, panel: str | None, box: list[int] | None, binning: int, summary: bool, log: bool = False
) -> FeatureRecipe:
    """The feature recipe: ROI from a geometry panel or a pixel box [ss0, ss1, fs0, fs1] (half-open)."""
    if (panel is None) == (box is None):
        raise ValueError("give the ROI as a geometry panel (geometry + panel) or as a pixel box, not both")
    if panel is not None:
        if geometry is None:
            raise ValueError(f"ROI panel {panel!r} needs the geometry file (.geom) that names it")
        roi = roi_from_panel(geometry, panel)
    else:
        if len(box) != 4:
            raise ValueError(f"ROI box must be [ss0, ss1, fs0, fs1], got {box}")
        roi = roi_from_box(*[int(v) for v in box])
    return FeatureRecipe(roi=roi, binning=int(binning), summary=bool(summary), log=bool(log))


def _batches(refs, size):
    return [refs[i : i + size] for i in range(0, len(refs), size)]


@flow(
    name="classify-train",
    task_runner=DaskTaskRunner(),
    log_prints=True,
    on_failure=[record_failure],
    on_crashed=[record_failure],
)
def classify_train_flow(
    output_dir: str,
    good_lists: list[str] | None = None,
    bad_lists: list[str] | None = None,
    auto_label_inputs: list[str] | None = None,
    geometry: str | None = None,
    panel: str | None = None,
    box: list[int] | None = None,
    binning: int = 1,
    summary: bool = False,
    log: bool = True,
    models: list[str] | None = None,
    split: str = "70/30",
    grid_search: bool = False,
    seed: int = 0,
    batch_size: int = 1000,
    autolabel_order: int = 4,
    dataset: str | None = None,
    bad_rejected_target: float | None = None,
) -> dict:
    """Train good/bad frame classifiers.

    Labels: ``good_lists``/``bad_lists`` (PADT/CrystFEL lists, ``path //event``; several concatenate)
    or ``auto_label_inputs`` (files labelled by profile fitting, assuming most frames are good).
    ROI: ``geometry`` + ``panel`` (a panel of the CrystFEL .geom) or ``box`` [ss0, ss1, fs0, fs1]
    (slab pixels, half-open); ``binning``: square bin factor; ``summary``: add summary features;
    ``log``: log-scale the pixel values (frames whose intensity spans decades).
    ``models``: any of logistic_regression, knn, decision_tree, random_forest,
    hist_gradient_boosting (default random_forest; "all" for the five); ``split``: train/test
    percentages ("70/30", stratified); ``grid_search``: cross-validated grid search;
    ``bad_rejected_target`` (e.g. 0.98): set each model's operating point (threshold on p(good))
    from out-of-fold probabilities of the training part so it rejects that fraction of bad frames.
    """
    from photonflow.classify.models import MODELS

    logger = get_run_logger()
    t0 = time.perf_counter()
    out = Path(output_dir)
    if models is None:
        names = ["random_forest"]
    elif models == "all" or list(models) == ["all"]:
        names = list(MODELS)
    else:
        names = list(models)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    recipe = make_recipe(geometry, panel, box, binning, summary, log)
    from photonflow.classify.models import parse_split

    parse_split(split)  # a split that does not add up to 100 stops the run here
    out.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []

    if auto_label_inputs:
        if good_lists or bad_lists:
            raise ValueError("give label lists or auto_label_inputs, not both")
        from photonflow.classify.autolabel import auto_label

        auto_refs = list(iter_frame_refs(list(auto_label_inputs)))
        auto = auto_label([(r.path, r.event) for r in auto_refs], recipe.roi, order=autolabel_order, dataset=dataset)
        # undecided frames (files too short for a distribution) are left out of both lists
        good = [r for r, g, d in zip(auto.refs, auto.good, auto.decided) if d and g]
        bad = [r for r, g, d in zip(auto.refs, auto.good, auto.decided) if d and not g]
        good_lists = [str(write_label_list(out / "auto_good.lst", good))]
        bad_lists = [str(write_label_list(out / "auto_bad.lst", bad))]
        failures += list(getattr(auto, "failures", []))
        logger.info(
            "automatic labels (polynomial order %d, Tukey fences per file): %d good, %d bad",
            autolabel_order,
            len(good),
            len(bad),
        )
    if not good_lists or not bad_lists:
        raise ValueError("training needs good and bad labels: good_lists and bad_lists, or auto_label_inputs")
    labels = load_labels(list(good_lists), list(bad_lists))
    failures += list(labels.missing)
    refs = list(labels.refs)
    y_of = {(p, e): int(lab) for (p, e), lab in zip(refs, labels.labels)}
    if not refs:
        raise ValueError("no labelled events left to train on (see the failures)")
    shape = frame_shape(refs[0][0], dataset)
    logger.info(
        "%d labelled events (%d good, %d bad), ROI %s, frame %s",
        len(refs),
        int(np.sum(labels.labels == GOOD)),
        int(np.sum(labels.labels == BAD)),
        recipe.roi,
        shape,
    )

    feature_dir = out / "features"
    batches = _batches(refs, int(batch_size))
    record = RunRecord(out, "classify-train", unit="frames", total=len(refs))
    futures = [
        features_batch.submit(recipe.to_dict(), [list(r) for r in b], str(feature_dir / f"batch_{k:05d}.npy"), dataset)
        for k, b in enumerate(batches)
    ]
    X_parts, y_parts, used = [], [], []
    for fut, batch in zip(futures, batches):
        result = fut.result(raise_on_failure=False)
        if not isinstance(result, dict):
            failures += [f"{p} //{e}: feature batch failed: {result}" for p, e in batch]
            record.progress(failed=len(batch))
            continue
        failures += result["failures"]
        record.progress(done=len(result["refs"]), failed=len(batch) - len(result["refs"]), task_s=result["elapsed_s"])
        X = np.load(result["path"])
        rows = [(p, None if e is None else int(e)) for p, e in result["refs"]]
        X_parts.append(X)
        y_parts.append(np.array([y_of[r] for r in rows], dtype=int))
        used += rows
    if not used:
        raise ValueError("no features could be read (see the failures): " + "; ".join(failures[:5]))
    X = np.concatenate(X_parts)
    y = np.concatenate(y_parts)
    t_features = time.perf_counter()

    trained = compare_models(
        X,
        y,
        names=names,
        split=split,
        seed=seed,
        grid_search=grid_search,
        recipe=recipe.to_dict(),
        frame_shape=shape,
        refs=used,
        bad_rejected_target=bad_rejected_target,
    )
    results = {}
    for name, clf in trained.items():
        model_path = save_classifier(out / f"model_{name}.joblib", clf)
        files = write_evaluation(clf.evaluation, out, f"evaluation_{name}")
        results[name] = {
            "model": str(model_path),
            **{k: str(v) for k, v in files.items()},
            **{
                k: clf.evaluation.to_dict()[k]
                for k in ("accuracy", "misclassification_rate", "good_kept", "bad_rejected", "n_test")
            },
            "training_s": clf.training_summary.get("training_seconds"),
            "threshold": clf.threshold,
        }
    elapsed = time.perf_counter() - t0
    summary_out = RunSummary(
        "classify-train",
        "frames",
        str(out),
        done=len(used),
        failed=len(refs) - len(used),
        failures=failures,
        elapsed_s=elapsed,
        preparation_s=t_features - t0,
        task_granularity=record.granularity(),
        extra={
            "labelled_events": len(refs),
            "events_with_features": len(used),
            "good": int(np.sum(y == GOOD)),
            "bad": int(np.sum(y == BAD)),
            "roi": recipe.roi.to_dict(),
            "recipe": recipe.to_dict(),
            "frame_shape": shape,
            "split": split,
            "models": results,
            "feature_s": t_features - t0,
        },
    ).to_dict()
    table = [
        {
            "model": n,
            "accuracy": r["accuracy"],
            "good kept": r["good_kept"],
            "bad rejected": r["bad_rejected"],
            "misclassification": r["misclassification_rate"],
            "test frames": r["n_test"],
        }
        for n, r in results.items()
    ]
    create_table_artifact(table=table, key="classify-models", description="Held-out evaluation of each model")
    lines = [
        f"# Frame classifier training: {len(used)} frames ({summary_out['good']} good, {summary_out['bad']} bad), "
        f"split {split}",
        "",
    ]
    for name, clf in trained.items():
        lines += [f"## {name}", "", clf.evaluation.to_markdown(), ""]
    if failures:
        lines += ["## Failures", ""] + [f"- {f}" for f in failures[:100]]
    create_markdown_artifact("\n".join(lines), key="classify-training", description="Classifier evaluation")
    atomic_write_text(out / "training_summary.json", json.dumps(summary_out, indent=2, default=str))
    record.finish()
    for name, r in results.items():
        logger.info(
            "%-24s accuracy %.3f, good kept %.3f, bad rejected %.3f (%d test frames) -> %s",
            name,
            r["accuracy"],
            r["good_kept"],
            r["bad_rejected"],
            r["n_test"],
            r["model"],
        )
    for f in failures[:20]:
        logger.warning("failed: %s", f)
    return summary_out


@flow(
    name="classify-sort",
    task_runner=DaskTaskRunner(),
    log_prints=True,
    on_failure=[record_failure],
    on_crashed=[record_failure],
)
def classify_sort_flow(
    model: str, inputs: list[str], output_dir: str, batch_size: int = 2000, dataset: str | None = None
) -> dict:
    """Sort frames with a saved classifier into good and bad event lists.

    model: a model saved by the training flow; inputs: files, directories or ``file.cxi:START-STOP``;
    writes ``good.lst`` and ``bad.lst`` (CrystFEL lists, ``path //event``), ``frames.csv`` (label
    and probability of good per event), ``per_file.csv`` (good/bad/failed counts per file).
    """
    t0 = time.perf_counter()
    clf = load_classifier(model)
    out = Path(output_dir)
    refs = [(r.path, r.event) for r in iter_frame_refs(list(inputs))]
    if not refs:
        raise ValueError(f"no frames found in {list(inputs)}")
    # Refuse files whose frames do not match the model (shape, ROI); the first file decides the
    # run, the others are named as failures.
    failures: list[str] = []
    by_file: dict[str, list] = defaultdict(list)
    for r in refs:
        by_file[r[0]].append(r)
    accepted = []
    for k, (path, events) in enumerate(by_file.items()):
        try:
            shape = frame_shape(path, dataset)
            check_compatible(clf, clf.recipe, shape)
        except ModelMismatch as exc:
            if k == 0:
                raise ModelMismatch(f"{path}: {exc}") from None
            failures += [f"{path}: model {model} does not fit this file: {exc}"]
            continue
        except Exception as exc:  # unreadable file: named, the rest goes on
            failures += [f"{path}: {type(exc).__name__}: {exc}"]
            continue
        accepted += events
    out.mkdir(parents=True, exist_ok=True)
    op = get_operation("classify-sort")
    record = RunRecord(out, op.name, unit=op.unit, total=len(refs))
    if len(refs) > len(accepted):
        record.progress(failed=len(refs) - len(accepted))
    rows: list[dict] = []
    run = None
    if accepted:
        run = run_batches(
            op,
            [FrameRef(*r) for r in accepted],
            {"model": str(model), "dataset": dataset},
            out,
            int(batch_size),
            record=record,
        )
        rows, failures = run.rows, failures + run.failures
    order = {(p, -1 if e is None else int(e)): k for k, (p, e) in enumerate(refs)}
    rows.sort(key=lambda r: order.get((r["path"], r["event"]), 0))
    good = [(r["path"], None if r["event"] < 0 else r["event"]) for r in rows if r["label"] == "good"]
    bad = [(r["path"], None if r["event"] < 0 else r["event"]) for r in rows if r["label"] != "good"]
    write_label_list(out / "good.lst", good)
    write_label_list(out / "bad.lst", bad)
    table = write_run_table(op, out, rows)
    n_good, n_bad = Counter(p for p, _ in good), Counter(p for p, _ in bad)
    per_file = [
        {"file": p, "frames": len(ev), "good": n_good[p], "bad": n_bad[p], "failed": len(ev) - n_good[p] - n_bad[p]}
        for p, ev in by_file.items()
    ]
    write_table_csv(
        out / "per_file.csv", {k: [r[k] for r in per_file] for k in ("file", "frames", "good", "bad", "failed")}
    )
    create_table_artifact(table=per_file[:500], key="classify-per-file", description="Good and bad frames per file")
    outputs = {
        "table": table,
        "good_list": str(out / "good.lst"),
        "bad_list": str(out / "bad.lst"),
        "per_file": str(out / "per_file.csv"),
    }
    summary = RunSummary(
        op.name,
        op.unit,
        str(out),
        done=len(rows),
        failed=len(refs) - len(rows),
        failures=failures,
        elapsed_s=run.elapsed_s if run else time.perf_counter() - t0,
        peak_rss_mb=run.peak_rss_mb if run else 0.0,
        outputs=outputs,
        extra={"frames": len(refs), "good": len(good), "bad": len(bad), "model": str(model)},
    )
    notes = [f"Model `{model}`. Lists for CrystFEL: `{out / 'good.lst'}`, `{out / 'bad.lst'}`."]
    return finish_run(op, summary, {"good": str(len(good)), "bad": str(len(bad))}, notes, record)
