"""Sorting frames with a saved classifier: the batch processor of the ``classify-sort`` operation."""

from __future__ import annotations

import time

import numpy as np

from photonflow.io import FrameRef
from photonflow.results import BatchResult

from .features import FeatureRecipe, extract_features
from .models import GOOD, load_classifier

__all__ = ["SortProcessor"]


class SortProcessor:
    """Label batches of events good or bad with one saved classifier (loaded once).

    model: the ``.joblib`` written by the training flow; dataset: the HDF5 dataset of the frames
    (default: found). Rows: path, event (-1 for a single image), label ("good"/"bad"), p_good."""

    def __init__(self, model: str, dataset: str | None = None):
        self.model = str(model)
        self.dataset = dataset
        self.classifier = load_classifier(model)
        self.recipe = FeatureRecipe.from_dict(self.classifier.recipe)

    @classmethod
    def from_options(cls, options: dict) -> "SortProcessor":
        return cls(options["model"], options.get("dataset"))

    def process(self, refs, batch_name: str | None = None) -> BatchResult:
        t0 = time.perf_counter()
        result = BatchResult()
        items = [(str(r[0]), None if r[1] is None else int(r[1])) for r in refs]
        features = extract_features(items, self.recipe, dataset=self.dataset)
        result.failures.extend(features.failures)
        if len(features.refs):
            clf = self.classifier
            labels = clf.predict(features.X)
            proba = clf.predict_proba(features.X)
            classes = list(clf.classes)
            p_good = proba[:, classes.index(GOOD)] if GOOD in classes else np.zeros(len(labels))
            for (path, event), label, pg in zip(features.refs, labels, p_good):
                result.rows.append(
                    {
                        "path": path,
                        "event": -1 if event is None else int(event),
                        "label": "good" if int(label) == GOOD else "bad",
                        "p_good": float(pg),
                    }
                )
        sorted_keys = {str(FrameRef(p, e)) for p, e in features.refs}
        for path, event in items:
            key = str(FrameRef(path, event))
            if key not in sorted_keys:
                result.failed[key] = "no features (see the failures)"
        result.done = len(result.rows)
        result.elapsed_s = time.perf_counter() - t0
        return result
