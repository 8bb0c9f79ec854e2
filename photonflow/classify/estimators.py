"""The frame classifiers: PADT's four scikit-learn models (logistic regression, k-nearest
neighbours, a decision tree, a random forest) plus histogram gradient boosting (:data:`MODELS`),
their defaults (:func:`make_model`) and the small grids of the optional grid search
(:data:`PARAM_GRIDS`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MODELS", "PARAM_GRIDS", "make_model"]

MODELS = ("logistic_regression", "knn", "decision_tree", "random_forest", "hist_gradient_boosting")

# Small grids for the optional cross-validated grid search, in the parameter names of the
# classifier itself (make_model's **params; the Pipeline prefix is added internally).
PARAM_GRIDS: dict[str, dict[str, list]] = {
    "logistic_regression": {"C": [0.01, 0.1, 1.0, 10.0, 100.0]},
    "knn": {"n_neighbors": [3, 5, 11, 21], "weights": ["uniform", "distance"]},
    "decision_tree": {"max_depth": [None, 5, 10, 20], "min_samples_leaf": [1, 2, 5]},
    "random_forest": {"n_estimators": [100, 300], "max_depth": [None, 10, 20], "max_features": ["sqrt", 0.3]},
    "hist_gradient_boosting": {
        "learning_rate": [0.05, 0.1, 0.2],
        "max_leaf_nodes": [15, 31, 63],
        "l2_regularization": [0.0, 1.0],
    },
}

_PIPELINE_STEP = "clf"  # name of the classifier step in the scaled pipelines (LR, kNN)


def _unknown_model(name) -> ValueError:
    return ValueError(f"unknown classifier model {name!r}; choose one of: {', '.join(MODELS)}")


def make_model(name: str, seed: int = 0, n_jobs: int | None = -1, **params):
    """A fresh, unfitted scikit-learn classifier ``name`` (one of :data:`MODELS`).

    Defaults: logistic regression and kNN standardise the features first (a ``Pipeline`` of
    ``StandardScaler`` and the classifier, step names ``"scale"`` and ``"clf"``); logistic
    regression, the tree, the forest and gradient boosting weight the classes ``"balanced"``
    (bad frames are usually the minority); the forest (300 trees) and kNN use ``n_jobs`` cores;
    ``seed`` fixes every random state. ``params`` set the classifier's parameters (e.g.
    ``C=10``, ``n_estimators=500``); names with ``__`` address the pipeline directly.
    Unknown parameter names raise scikit-learn's ``ValueError``.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    if name == "logistic_regression":
        clf = LogisticRegression(max_iter=5000, class_weight="balanced", random_state=seed)
        model = Pipeline([("scale", StandardScaler()), (_PIPELINE_STEP, clf)])
    elif name == "knn":
        clf = KNeighborsClassifier(n_neighbors=5, weights="distance", n_jobs=n_jobs)
        model = Pipeline([("scale", StandardScaler()), (_PIPELINE_STEP, clf)])
    elif name == "decision_tree":
        model = DecisionTreeClassifier(class_weight="balanced", random_state=seed)
    elif name == "random_forest":
        model = RandomForestClassifier(n_estimators=300, class_weight="balanced", n_jobs=n_jobs, random_state=seed)
    elif name == "hist_gradient_boosting":
        model = HistGradientBoostingClassifier(class_weight="balanced", random_state=seed)
    else:
        raise _unknown_model(name)
    if params:
        model.set_params(**_estimator_params(model, params))
    return model


def _estimator_params(model, params: Mapping[str, Any]) -> dict[str, Any]:
    """Classifier parameter names → names for ``model.set_params`` (prefixed inside a Pipeline)."""
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline):
        return dict(params)
    return {(k if "__" in k else f"{_PIPELINE_STEP}__{k}"): v for k, v in params.items()}


def _plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    prefix = f"{_PIPELINE_STEP}__"
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in params.items()}


def _final_estimator(model):
    from sklearn.pipeline import Pipeline

    return model.steps[-1][1] if isinstance(model, Pipeline) else model
