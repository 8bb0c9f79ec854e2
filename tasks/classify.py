"""Prefect tasks of the frame-classification flows: thin wrappers over photonflow.classify.

A task carries a batch of events (hundreds to thousands): references go in, and out comes a path to
the batch's feature matrix. (Sorting runs on the generic batch task, photonflow.tasks.batch, with
photonflow.classify.sorting.SortProcessor.)
"""

from __future__ import annotations

import time

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from photonflow.classify.features import FeatureRecipe, extract_features
from photonflow.io.atomic import atomic_path


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
    return {
        "path": out_path,
        "refs": [list(r) for r in features.refs],
        "failures": list(features.failures),
        "elapsed_s": time.perf_counter() - t0,
    }
