"""Prefect tasks of the frame-classification flows: thin wrappers over photonflow.classify.

A task carries a batch of events (hundreds to thousands): references go in, and out come a path to
the batch's feature matrix (training) or a small table of labels (sorting). A trained model is
loaded once per worker process.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from photonflow.classify.features import FeatureRecipe, extract_features
from photonflow.classify.models import GOOD, load_classifier
from photonflow.io.atomic import atomic_path

_MODELS: dict[tuple, object] = {}
_LOCK = threading.Lock()


def get_classifier(path: str):
    """The saved classifier at ``path``, loaded once per process (keyed by path and mtime)."""
    key = (os.path.abspath(path), os.path.getmtime(path))
    with _LOCK:
        clf = _MODELS.get(key)
        if clf is None:
            clf = load_classifier(path)
            _MODELS.clear()
            _MODELS[key] = clf
    return clf


def _refs(refs) -> list[tuple[str, int | None]]:
    return [(str(p), None if e is None else int(e)) for p, e in refs]


@task(name="classify-features-batch", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def features_batch(recipe: dict, refs: list[tuple], out_path: str, dataset: str | None = None) -> dict:
    """Features of a batch of events, saved to ``out_path`` (.npy); returns the path, the events
    that have features (in row order) and the failures (named)."""
    t0 = time.perf_counter()
    features = extract_features(_refs(refs), FeatureRecipe.from_dict(recipe), dataset=dataset)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(features.X, dtype=np.float32))
    return {"path": out_path, "refs": [list(r) for r in features.refs], "failures": list(features.failures),
            "elapsed_s": time.perf_counter() - t0}


@task(name="classify-sort-batch", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def sort_batch(model_path: str, refs: list[tuple], dataset: str | None = None) -> dict:
    """Label a batch of events with a saved classifier: rows (path, event, label, p_good)."""
    t0 = time.perf_counter()
    clf = get_classifier(model_path)
    features = extract_features(_refs(refs), FeatureRecipe.from_dict(clf.recipe), dataset=dataset)
    rows = []
    if len(features.refs):
        labels = clf.predict(features.X)
        proba = clf.predict_proba(features.X)
        good_col = list(clf.classes).index(GOOD) if GOOD in list(clf.classes) else -1
        p_good = proba[:, good_col] if good_col >= 0 else np.zeros(len(labels))
        rows = [[p, -1 if e is None else int(e), int(lab), float(pg)]
                for (p, e), lab, pg in zip(features.refs, labels, p_good)]
    return {"rows": rows, "failures": list(features.failures), "elapsed_s": time.perf_counter() - t0}
