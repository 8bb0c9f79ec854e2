"""Frame classifiers: train, evaluate, save and load scikit-learn models that sort detector
frames into good (label 1) and bad (label 0) from ROI pixel features, after PADT (Pixel Anomaly
Detector Tool, J. Appl. Cryst. 2024).

The models are PADT's four — logistic regression, k-nearest neighbours, a decision tree and a
random forest — plus scikit-learn's histogram gradient boosting (:data:`MODELS`). Training splits
the labelled frames into a stratified train and test part (percentages, default 70/30, see
:func:`parse_split`), optionally grid-searches the model's parameters by stratified
cross-validation on the training part, and evaluates on the held-out part (:class:`Evaluation`:
confusion matrix, classification report, accuracy, misclassification rate, and PADT's two rates:
good frames kept = recall of good, bad frames rejected = recall of bad; PADT reports ≥ 94 % and
≥ 98 % for its random forest).

A saved classifier (:func:`save_classifier`, one joblib file plus a human-readable JSON sidecar)
carries its feature recipe (ROI box and panel, binning, summary — the opaque dict from
``FeatureRecipe.to_dict()``), the frame shape, the evaluation, a summary of its training data and
the library versions; :func:`check_compatible` refuses frames whose shape or recipe differ.

This module works on plain arrays: ``X`` (n frames × n features) and ``y`` (n labels, 0 or 1).
Loading runs pickle (joblib): load only classifier files you trust.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MODELS",
    "GOOD",
    "BAD",
    "LABEL_NAMES",
    "PADT_GOOD_KEPT",
    "PADT_BAD_REJECTED",
    "PARAM_GRIDS",
    "make_model",
    "parse_split",
    "Evaluation",
    "evaluate",
    "TrainedClassifier",
    "train_classifier",
    "compare_models",
    "comparison_markdown",
    "save_classifier",
    "load_classifier",
    "metadata_path",
    "ClassifierFileError",
    "ModelMismatch",
    "check_compatible",
    "plot_confusion_matrix",
    "write_evaluation",
]

MODELS = ("logistic_regression", "knn", "decision_tree", "random_forest", "hist_gradient_boosting")
GOOD, BAD = 1, 0
LABEL_NAMES = {BAD: "bad", GOOD: "good"}
_LABELS = (BAD, GOOD)  # order of rows/columns in every confusion matrix and of predict_proba's columns

# PADT's published rates for its random forest on held-out frames.
PADT_GOOD_KEPT = 0.94
PADT_BAD_REJECTED = 0.98

FILE_FORMAT = "photonflow-frame-classifier"
FILE_FORMAT_VERSION = 1

# Small grids for the optional cross-validated grid search, in the parameter names of the
# classifier itself (make_model's **params; the Pipeline prefix is added internally).
PARAM_GRIDS: dict[str, dict[str, list]] = {
    "logistic_regression": {"C": [0.01, 0.1, 1.0, 10.0, 100.0]},
    "knn": {"n_neighbors": [3, 5, 11, 21], "weights": ["uniform", "distance"]},
    "decision_tree": {"max_depth": [None, 5, 10, 20], "min_samples_leaf": [1, 2, 5]},
    "random_forest": {"n_estimators": [100, 300], "max_depth": [None, 10, 20], "max_features": ["sqrt", 0.3]},
    "hist_gradient_boosting": {"learning_rate": [0.05, 0.1, 0.2], "max_leaf_nodes": [15, 31, 63],
                               "l2_regularization": [0.0, 1.0]},
}

_PIPELINE_STEP = "clf"  # name of the classifier step in the scaled pipelines (LR, kNN)


# ----------------------------------------------------------------------------------------------
# models


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
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in params.items()}


def _final_estimator(model):
    from sklearn.pipeline import Pipeline

    return model.steps[-1][1] if isinstance(model, Pipeline) else model


# ----------------------------------------------------------------------------------------------
# train/test split


def _fmt_number(v: float) -> str:
    return f"{v:g}"


def parse_split(split: str | Sequence[float] | float | None) -> tuple[float, float]:
    """Train/test split as percentages ``(train, test)``; default ``(70.0, 30.0)``.

    Accepts ``"70/30"``, ``"70,30"``, ``"70:30"``, ``"70 30"``, ``"70%/30%"``, ``(70, 30)``,
    fractions ``(0.7, 0.3)`` / ``"0.7/0.3"`` (both parts ≤ 1: read as fractions and must add up
    to 1), or one number, the training percentage (``"80"``, ``80`` → 80/20). Each part must be
    > 0 and the two must add up to 100, else ``ValueError`` — e.g. "train/test split 60/30 adds
    up to 90, not 100".
    """
    if split is None:
        return (70.0, 30.0)
    original = split
    if isinstance(split, str):
        text = split.strip().replace("%", "")
        for sep in ("/", ",", ":", ";"):
            text = text.replace(sep, " ")
        tokens = text.split()
        try:
            parts = [float(t) for t in tokens]
        except ValueError:
            raise ValueError(f"train/test split {original!r} is not of the form 70/30") from None
        shown = split.strip()
    elif isinstance(split, (int, float, np.integer, np.floating)) and not isinstance(split, bool):
        parts = [float(split)]
        shown = _fmt_number(float(split))
    else:
        try:
            parts = [float(p) for p in split]
        except (TypeError, ValueError):
            raise ValueError(f"train/test split {original!r} is not of the form 70/30") from None
        shown = "/".join(_fmt_number(p) for p in parts)
    if len(parts) == 1:
        if not 0.0 < parts[0] < 100.0 or not math.isfinite(parts[0]):
            raise ValueError(f"train/test split {shown}: the training percentage must lie between 0 and 100")
        return (parts[0], 100.0 - parts[0])
    if len(parts) != 2:
        raise ValueError(f"train/test split {shown!r} must have two parts, train/test (e.g. 70/30)")
    if not all(math.isfinite(p) for p in parts):
        raise ValueError(f"train/test split {shown}: parts must be finite numbers")
    if any(p <= 0 for p in parts):
        raise ValueError(f"train/test split {shown}: both parts must be greater than 0 "
                         "(frames are needed to train and to test)")
    total = parts[0] + parts[1]
    if max(parts) <= 1.0:  # fractions
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train/test split {shown} adds up to {_fmt_number(total)}, not 1 "
                             "(give percentages adding up to 100, e.g. 70/30)")
        return (parts[0] * 100.0, parts[1] * 100.0)
    if abs(total - 100.0) > 1e-6:
        raise ValueError(f"train/test split {shown} adds up to {_fmt_number(total)}, not 100")
    return (parts[0], parts[1])


# ----------------------------------------------------------------------------------------------
# evaluation


def _nan_to_none(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


@dataclass(eq=False)
class Evaluation:
    """A classifier's performance on held-out frames.

    ``confusion`` is a 2×2 integer array: rows are the true class, columns the predicted class,
    both in the order ``[bad (0), good (1)]`` — ``confusion[0, 0]`` bad frames rejected,
    ``confusion[0, 1]`` bad frames kept, ``confusion[1, 0]`` good frames lost, ``confusion[1, 1]``
    good frames kept (scikit-learn's ``confusion_matrix(y_true, y_pred, labels=[0, 1])``).

    ``report`` has scikit-learn's ``classification_report(output_dict=True)`` layout without its
    ``"accuracy"`` entry: keys ``"bad"``, ``"good"``, ``"macro avg"``, ``"weighted avg"``, each a
    dict of ``precision``, ``recall``, ``f1-score`` and ``support``. ``good_kept`` is the recall of
    good, ``bad_rejected`` the recall of bad (NaN when the test set has no frame of that class).
    """

    confusion: np.ndarray
    report: dict
    accuracy: float
    misclassification_rate: float
    good_kept: float
    bad_rejected: float
    n_test: int

    @classmethod
    def from_predictions(cls, y_true, y_pred) -> Evaluation:
        return evaluate(y_true, y_pred)

    def meets_padt(self, good_kept: float = PADT_GOOD_KEPT, bad_rejected: float = PADT_BAD_REJECTED) -> bool:
        """Whether good kept and bad rejected reach PADT's published rates (94 %, 98 %)."""
        return bool(self.good_kept >= good_kept and self.bad_rejected >= bad_rejected)

    def to_dict(self) -> dict:
        """JSON-able numbers (NaN as null)."""
        return {
            "confusion": [[int(v) for v in row] for row in np.asarray(self.confusion)],
            "confusion_layout": "rows: true class [bad, good]; columns: predicted class [bad, good]",
            "report": {k: {m: (int(x) if m == "support" else _nan_to_none(x)) for m, x in v.items()}
                       for k, v in self.report.items()},
            "accuracy": _nan_to_none(self.accuracy),
            "misclassification_rate": _nan_to_none(self.misclassification_rate),
            "good_kept": _nan_to_none(self.good_kept),
            "bad_rejected": _nan_to_none(self.bad_rejected),
            "n_test": int(self.n_test),
            "meets_padt": self.meets_padt(),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Evaluation:
        def f(v):
            return float("nan") if v is None else float(v)

        report = {k: {m: (int(x) if m == "support" else f(x)) for m, x in v.items()} for k, v in d["report"].items()}
        return cls(confusion=np.asarray(d["confusion"], dtype=np.int64).reshape(2, 2), report=report,
                   accuracy=f(d["accuracy"]), misclassification_rate=f(d["misclassification_rate"]),
                   good_kept=f(d["good_kept"]), bad_rejected=f(d["bad_rejected"]), n_test=int(d["n_test"]))

    def to_markdown(self, title: str | None = None) -> str:
        """Markdown tables (rates, confusion matrix, classification report) for a Prefect
        markdown artifact."""
        cm = np.asarray(self.confusion)
        pct = _row_percent(cm)

        def p(v):
            return "–" if not math.isfinite(v) else f"{100.0 * v:.2f} %"

        lines = []
        if title:
            lines += [f"## {title}", ""]
        lines += [
            "| measure | value |",
            "|---|---|",
            f"| test frames | {self.n_test} |",
            f"| accuracy | {p(self.accuracy)} |",
            f"| misclassification rate | {p(self.misclassification_rate)} |",
            f"| good kept (recall of good) | {p(self.good_kept)} (PADT ≥ {100 * PADT_GOOD_KEPT:.0f} %) |",
            f"| bad rejected (recall of bad) | {p(self.bad_rejected)} (PADT ≥ {100 * PADT_BAD_REJECTED:.0f} %) |",
            f"| meets PADT's rates | {'yes' if self.meets_padt() else 'no'} |",
            "",
            "**Confusion matrix** (rows: true class, columns: predicted class)",
            "",
            "| true \\ predicted | bad | good |",
            "|---|---|---|",
        ]
        for i, label in enumerate(_LABELS):
            cells = " | ".join(f"{cm[i, j]} ({pct[i, j]:.1f} %)" for j in range(2))
            lines.append(f"| {LABEL_NAMES[label]} | {cells} |")
        lines += [
            "",
            "**Classification report**",
            "",
            "| class | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
        ]
        for key, row in self.report.items():
            lines.append(f"| {key} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1-score']:.4f} | "
                         f"{row['support']} |")
        return "\n".join(lines) + "\n"

    def to_text(self, digits: int = 4) -> str:
        """A scikit-learn-like classification report, then the confusion matrix and the rates."""
        width = max(len("weighted avg"), digits)
        head = ["precision", "recall", "f1-score", "support"]
        out = [f"{'':>{width}s} " + " ".join(f"{h:>9}" for h in head), ""]

        def row(key, r):
            vals = " ".join(f"{r[m]:>9.{digits}f}" for m in head[:3])
            return f"{key:>{width}s} {vals} {r['support']:>9d}"

        for key in ("bad", "good"):
            out.append(row(key, self.report[key]))
        out.append("")
        out.append(f"{'accuracy':>{width}s} {'':>9} {'':>9} {self.accuracy:>9.{digits}f} {self.n_test:>9d}")
        for key in ("macro avg", "weighted avg"):
            out.append(row(key, self.report[key]))
        cm = np.asarray(self.confusion)
        out += [
            "",
            "confusion matrix (rows: true class, columns: predicted class)",
            f"{'':>{width}s} {'pred bad':>10} {'pred good':>10}",
            f"{'true bad':>{width}s} {cm[0, 0]:>10d} {cm[0, 1]:>10d}",
            f"{'true good':>{width}s} {cm[1, 0]:>10d} {cm[1, 1]:>10d}",
            "",
            f"accuracy               {self.accuracy:.{digits}f}",
            f"misclassification rate {self.misclassification_rate:.{digits}f}",
            f"good kept (recall of good)   {self.good_kept:.{digits}f}  (PADT >= {PADT_GOOD_KEPT:.2f})",
            f"bad rejected (recall of bad) {self.bad_rejected:.{digits}f}  (PADT >= {PADT_BAD_REJECTED:.2f})",
        ]
        return "\n".join(out) + "\n"


def _row_percent(cm: np.ndarray) -> np.ndarray:
    rows = cm.sum(axis=1, keepdims=True).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, 100.0 * cm / np.where(rows > 0, rows, 1.0), 0.0)


def _as_labels(y, what: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    values = set(np.unique(arr).tolist())
    if not values <= {0, 1}:
        extra = sorted(values - {0, 1}, key=str)[:5]
        raise ValueError(f"{what} must be 0 (bad) or 1 (good); found {extra}")
    return arr.astype(np.int64)


def evaluate(y_true, y_pred) -> Evaluation:
    """The :class:`Evaluation` of predictions ``y_pred`` against the true labels ``y_true``."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    t = _as_labels(y_true, "true labels")
    p = _as_labels(y_pred, "predicted labels")
    if len(t) != len(p):
        raise ValueError(f"{len(t)} true labels but {len(p)} predictions")
    if len(t) == 0:
        raise ValueError("no frames to evaluate")
    cm = confusion_matrix(t, p, labels=list(_LABELS)).astype(np.int64)
    prec, rec, f1, sup = precision_recall_fscore_support(t, p, labels=list(_LABELS), zero_division=0.0)
    report = {}
    for i, label in enumerate(_LABELS):
        report[LABEL_NAMES[label]] = {"precision": float(prec[i]), "recall": float(rec[i]),
                                      "f1-score": float(f1[i]), "support": int(sup[i])}
    for avg in ("macro", "weighted"):
        a_p, a_r, a_f, _ = precision_recall_fscore_support(t, p, labels=list(_LABELS), average=avg, zero_division=0.0)
        report[f"{avg} avg"] = {"precision": float(a_p), "recall": float(a_r), "f1-score": float(a_f),
                                "support": int(len(t))}
    n = int(cm.sum())
    wrong = int(cm[0, 1] + cm[1, 0])
    n_bad, n_good = int(cm[0].sum()), int(cm[1].sum())
    return Evaluation(
        confusion=cm,
        report=report,
        accuracy=float((n - wrong) / n),
        misclassification_rate=float(wrong / n),
        good_kept=float(cm[1, 1] / n_good) if n_good else float("nan"),
        bad_rejected=float(cm[0, 0] / n_bad) if n_bad else float("nan"),
        n_test=n,
    )


# ----------------------------------------------------------------------------------------------
# trained classifier


def _jsonable(obj):
    """Best-effort conversion to JSON types (numpy scalars/arrays, tuples, paths, dataclasses)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _nan_to_none(float(obj))
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    if hasattr(obj, "to_dict"):
        try:
            return _jsonable(obj.to_dict())
        except Exception:  # noqa: BLE001 - fall back to the string
            pass
    return str(obj)


def _versions() -> dict[str, str]:
    import sklearn

    out = {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__}
    try:
        import joblib

        out["joblib"] = joblib.__version__
    except ImportError:  # pragma: no cover - joblib ships with scikit-learn
        pass
    try:
        from importlib.metadata import version

        out["photonflow"] = version("photonflow")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        try:
            from photonflow import __version__

            out["photonflow"] = __version__
        except ImportError:  # pragma: no cover
            pass
    return out


def _shape(shape) -> tuple[int, ...] | None:
    return None if shape is None else tuple(int(s) for s in shape)


@dataclass(eq=False)
class TrainedClassifier:
    """A fitted classifier with everything needed to trust and reuse it.

    ``classes`` is ``(0, 1)`` (bad, good): the order of :meth:`predict_proba`'s columns.
    ``training_summary`` holds the frame counts (``n_frames``, ``n_good``, ``n_bad``, ``n_train``,
    ``n_test``), ``n_features``, ``split`` (train/test percentages), ``seed``, ``params``,
    ``grid_search`` (None, or grid, best params, best CV score, folds and scoring),
    ``training_seconds`` and ``trained_at``, and, when refs were given, ``misclassified`` (test
    frames sorted wrongly). ``test_refs``/``test_labels``/``test_predictions`` (the held-out
    frames, in memory only, when refs were given) are not saved.
    """

    model: Any
    name: str
    recipe: dict | None
    frame_shape: tuple[int, ...] | None
    classes: tuple[int, ...]
    evaluation: Evaluation
    training_summary: dict
    versions: dict
    test_refs: list | None = field(default=None, repr=False)
    test_labels: np.ndarray | None = field(default=None, repr=False)
    test_predictions: np.ndarray | None = field(default=None, repr=False)
    source: str | None = None  # the file it was loaded from
    threshold: float | None = None  # a frame is good when p(good) >= threshold; None: the model's own rule

    @property
    def n_features(self) -> int | None:
        n = getattr(self.model, "n_features_in_", None)
        return None if n is None else int(n)

    def _check_X(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2:
            raise ModelMismatch(f"features must be a 2-D array (frames × features), got shape {X.shape}")
        n = self.n_features
        if n is not None and X.shape[1] != n:
            raise ModelMismatch(f"{self._what()} expects {n} features per frame, got {X.shape[1]}",
                                differences=[f"number of features: model {n}, frames {X.shape[1]}"])
        return X

    def _what(self) -> str:
        return f"classifier {self.name}" + (f" ({self.source})" if self.source else "")

    def predict(self, X) -> np.ndarray:
        """Labels, 1 good and 0 bad, one per row of ``X`` (at the operating point ``threshold``
        on p(good) when one was chosen, else the model's own rule)."""
        X = self._check_X(X)
        if self.threshold is None:
            return np.asarray(self.model.predict(X)).astype(np.int64)
        p_good = self.model.predict_proba(X)[:, list(self.model.classes_).index(GOOD)]
        return (p_good >= self.threshold).astype(np.int64)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in ``classes`` order: ``[:, 0]`` bad, ``[:, 1]`` good."""
        return np.asarray(self.model.predict_proba(self._check_X(X)), dtype=float)

    def misclassified(self) -> list[dict]:
        """Held-out frames sorted wrongly: ``{"ref", "true", "predicted"}`` each (refs as given in
        memory; as JSON after loading). Empty when no refs were given at training."""
        if self.test_refs is not None and self.test_labels is not None and self.test_predictions is not None:
            return [{"ref": r, "true": int(t), "predicted": int(p)}
                    for r, t, p in zip(self.test_refs, self.test_labels, self.test_predictions) if t != p]
        return list(self.training_summary.get("misclassified", []))

    def metadata(self) -> dict:
        """JSON-able metadata (everything but the model itself)."""
        return {
            "format": FILE_FORMAT,
            "format_version": FILE_FORMAT_VERSION,
            "name": self.name,
            "estimator": type(_final_estimator(self.model)).__name__,
            "model_params": _jsonable(_final_estimator(self.model).get_params(deep=False)),
            "classes": [int(c) for c in self.classes],
            "class_names": [LABEL_NAMES.get(int(c), str(c)) for c in self.classes],
            "n_features": self.n_features,
            "frame_shape": None if self.frame_shape is None else list(self.frame_shape),
            "recipe": _jsonable(self.recipe),
            "evaluation": self.evaluation.to_dict(),
            "training_summary": _jsonable(self.training_summary),
            "versions": dict(self.versions),
            "threshold": self.threshold,
        }


def _prepare(X, y, refs):
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"features X must be a 2-D array (frames × features), got shape {X.shape}")
    y = _as_labels(y, "labels y")
    if len(y) != X.shape[0]:
        raise ValueError(f"{X.shape[0]} feature rows but {len(y)} labels")
    if refs is not None:
        refs = list(refs)
        if len(refs) != len(y):
            raise ValueError(f"{len(refs)} refs but {len(y)} labels")
    counts = {label: int((y == label).sum()) for label in _LABELS}
    for label, n in counts.items():
        if n < 2:
            raise ValueError(f"training needs at least 2 {LABEL_NAMES[label]} frames (label {label}) for a "
                             f"stratified train/test split; got {n} (of {len(y)} labelled frames)")
    return X, y, refs, counts


def _cv_folds(y_train: np.ndarray, cv: int) -> int:
    smallest = min(int((y_train == label).sum()) for label in _LABELS)
    folds = min(int(cv), smallest)
    if folds < 2:
        raise ValueError(f"grid search needs at least 2 frames of each class in the training part; "
                         f"the smallest class has {smallest}")
    return folds


def train_classifier(
    X,
    y,
    name: str = "random_forest",
    *,
    split: str | Sequence[float] | None = "70/30",
    seed: int = 0,
    grid_search: bool | Mapping[str, Sequence] = False,
    recipe: Mapping | None = None,
    frame_shape: Sequence[int] | None = None,
    refs: Sequence | None = None,
    params: Mapping[str, Any] | None = None,
    cv: int = 5,
    scoring: str = "balanced_accuracy",
    n_jobs: int | None = -1,
    bad_rejected_target: float | None = None,
) -> TrainedClassifier:
    """Train classifier ``name`` on features ``X`` (frames × features) and labels ``y`` (1 good,
    0 bad) and evaluate it on held-out frames.

    ``bad_rejected_target`` (e.g. 0.98): choose the operating point (a threshold on p(good))
    from out-of-fold probabilities on the *training* part (``cv``-fold cross-validation), as the
    lowest threshold that rejects that fraction of the bad training frames; the held-out frames
    only measure it. None: the model's own rule (p(good) >= 0.5 for most models).

    The frames are split stratified (both parts keep the class proportions) by ``split``
    (percentages, :func:`parse_split`) with ``seed``. ``grid_search=True`` searches
    :data:`PARAM_GRIDS` ``[name]`` (a mapping: that grid) by stratified ``cv``-fold cross-validation
    (fewer folds when a class is small) on the training part, scoring ``balanced_accuracy``, and
    refits the best on the whole training part. ``params`` go to :func:`make_model`. ``recipe``
    (``FeatureRecipe.to_dict()``) and ``frame_shape`` are recorded for :func:`check_compatible`;
    with ``refs`` (one per frame) the held-out refs and the misclassified ones are kept.
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split

    if name not in MODELS:
        raise _unknown_model(name)
    X, y, refs, counts = _prepare(X, y, refs)
    train_pct, test_pct = parse_split(split)
    idx = np.arange(len(y))
    try:
        i_train, i_test = train_test_split(idx, test_size=test_pct / 100.0, stratify=y, random_state=seed)
    except ValueError as exc:
        raise ValueError(f"cannot split {len(y)} frames ({counts[GOOD]} good, {counts[BAD]} bad) "
                         f"{_fmt_number(train_pct)}/{_fmt_number(test_pct)} stratified: {exc}") from exc
    i_train, i_test = np.sort(i_train), np.sort(i_test)
    X_train, y_train, X_test, y_test = X[i_train], y[i_train], X[i_test], y[i_test]

    params = dict(params or {})
    model = make_model(name, seed=seed, n_jobs=n_jobs, **params)
    search_info = None
    t0 = time.perf_counter()
    if grid_search:
        grid = dict(PARAM_GRIDS[name] if grid_search is True else grid_search)
        folds = _cv_folds(y_train, cv)
        search = GridSearchCV(model, _estimator_params(model, grid), scoring=scoring, refit=True, n_jobs=1,
                              cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed))
        search.fit(X_train, y_train)
        model = search.best_estimator_
        search_info = {"grid": grid, "best_params": _plain_params(search.best_params_),
                       "cv_score": float(search.best_score_), "cv_folds": folds, "scoring": scoring,
                       "n_candidates": int(len(search.cv_results_["params"]))}
    else:
        model.fit(X_train, y_train)
    threshold = None
    if bad_rejected_target is not None:
        threshold = _operating_point(model, X_train, y_train, float(bad_rejected_target), cv, seed)
    seconds = time.perf_counter() - t0

    if threshold is None:
        y_pred = np.asarray(model.predict(X_test)).astype(np.int64)
    else:
        p_good = model.predict_proba(X_test)[:, list(model.classes_).index(GOOD)]
        y_pred = (p_good >= threshold).astype(np.int64)
    evaluation = evaluate(y_test, y_pred)
    summary = {
        "n_frames": int(len(y)),
        "n_good": counts[GOOD],
        "n_bad": counts[BAD],
        "n_train": int(len(i_train)),
        "n_test": int(len(i_test)),
        "n_train_good": int((y_train == GOOD).sum()),
        "n_train_bad": int((y_train == BAD).sum()),
        "n_test_good": int((y_test == GOOD).sum()),
        "n_test_bad": int((y_test == BAD).sum()),
        "n_features": int(X.shape[1]),
        "split": {"train": train_pct, "test": test_pct},
        "stratified": True,
        "seed": int(seed),
        "params": _jsonable(params),
        "grid_search": _jsonable(search_info),
        "training_seconds": round(float(seconds), 4),
        "operating_point": None if threshold is None else {
            "threshold_p_good": threshold, "bad_rejected_target": float(bad_rejected_target),
            "chosen_on": f"out-of-fold probabilities of the training part ({_cv_folds(y_train, cv)}-fold)"},
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    test_refs = None
    if refs is not None:
        test_refs = [refs[i] for i in i_test]
        summary["misclassified"] = [{"ref": _jsonable(r), "true": int(t), "predicted": int(p)}
                                    for r, t, p in zip(test_refs, y_test, y_pred) if t != p]
    return TrainedClassifier(
        model=model,
        name=name,
        recipe=None if recipe is None else _jsonable(dict(recipe)),
        frame_shape=_shape(frame_shape),
        classes=tuple(int(c) for c in model.classes_),
        evaluation=evaluation,
        training_summary=summary,
        versions=_versions(),
        test_refs=test_refs,
        test_labels=y_test if refs is not None else None,
        test_predictions=y_pred if refs is not None else None,
        threshold=threshold,
    )


def _operating_point(model, X_train, y_train, target: float, cv: int, seed: int) -> float:
    """The lowest threshold on p(good) that rejects ``target`` of the bad training frames, from
    out-of-fold probabilities (so the frames are scored by models that did not see them)."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if not 0.0 < target <= 1.0:
        raise ValueError(f"bad_rejected_target must be in (0, 1], got {target}")
    folds = _cv_folds(y_train, cv)
    proba = cross_val_predict(clone(model), X_train, y_train, method="predict_proba",
                              cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed))
    p_good = proba[:, list(np.unique(y_train)).index(GOOD)]
    bad = np.sort(p_good[y_train == BAD])
    k = int(np.ceil(target * bad.size))  # this many bad frames must fall below the threshold
    if k == 0:
        return 0.5
    return float(np.nextafter(bad[k - 1], np.inf))


def compare_models(
    X,
    y,
    names: Sequence[str] = MODELS,
    split: str | Sequence[float] | None = "70/30",
    seed: int = 0,
    grid_search: bool = False,
    recipe: Mapping | None = None,
    frame_shape: Sequence[int] | None = None,
    refs: Sequence | None = None,
    n_jobs: int | None = -1,
    bad_rejected_target: float | None = None,
) -> dict[str, TrainedClassifier]:
    """Train and evaluate each model in ``names`` on the same stratified split (same ``seed``);
    ``{name: TrainedClassifier}`` in the order given."""
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise _unknown_model(unknown[0])
    return {name: train_classifier(X, y, name, split=split, seed=seed, grid_search=grid_search, recipe=recipe,
                                   frame_shape=frame_shape, refs=refs, n_jobs=n_jobs,
                                   bad_rejected_target=bad_rejected_target)
            for name in names}


def comparison_markdown(results: Mapping[str, TrainedClassifier], title: str | None = "Classifier comparison") -> str:
    """One Markdown table row per model: accuracy, good kept, bad rejected, F1s, training time."""
    lines = [f"## {title}", ""] if title else []
    lines += ["| model | accuracy | misclassified | good kept | bad rejected | F1 good | F1 bad | PADT rates | "
              "training (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, clf in results.items():
        e = clf.evaluation
        lines.append(f"| {name} | {100 * e.accuracy:.2f} % | {100 * e.misclassification_rate:.2f} % | "
                     f"{100 * e.good_kept:.2f} % | {100 * e.bad_rejected:.2f} % | {e.report['good']['f1-score']:.4f} | "
                     f"{e.report['bad']['f1-score']:.4f} | {'yes' if e.meets_padt() else 'no'} | "
                     f"{clf.training_summary.get('training_seconds', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# persistence


class ClassifierFileError(ValueError):
    """A file that is not (or no longer) a readable photonflow frame classifier."""


def metadata_path(path: str | os.PathLike) -> Path:
    """The human-readable JSON sidecar beside a classifier file: ``rf.joblib`` → ``rf.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json") if p.suffix.lower() == ".json" or not p.suffix else p.with_suffix(".json")


def save_classifier(path: str | os.PathLike, clf: TrainedClassifier, compress: int = 3) -> Path:
    """Save ``clf`` to ``path`` (one joblib file: the model and its JSON-able metadata), then its
    metadata as readable JSON beside it (:func:`metadata_path`). Both writes are atomic. Returns
    the classifier file's path."""
    import joblib

    from ..io.atomic import atomic_path, atomic_write_text

    path = Path(path)
    if path.suffix.lower() == ".json":
        raise ValueError(f"{path}: a classifier file must not end in .json (that name is for its metadata)")
    meta = clf.metadata()
    payload = {"format": FILE_FORMAT, "format_version": FILE_FORMAT_VERSION, "model": clf.model, "metadata": meta}
    with atomic_path(path) as tmp:
        joblib.dump(payload, tmp, compress=compress)
    sidecar = dict(meta, model_file=path.name)
    atomic_write_text(metadata_path(path), json.dumps(sidecar, indent=2, allow_nan=False) + "\n")
    return path


def load_classifier(path: str | os.PathLike) -> TrainedClassifier:
    """Load a classifier saved by :func:`save_classifier` (runs pickle: trusted files only).

    ``FileNotFoundError`` when absent; :class:`ClassifierFileError` naming the file when it is
    corrupt or not a photonflow classifier. Warns when saved with another scikit-learn version.
    """
    import joblib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier file {path} not found")
    try:
        payload = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - pickle/zlib/joblib raise many kinds
        raise ClassifierFileError(f"{path} is not a readable photonflow classifier file "
                                  f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ClassifierFileError(f"{path} is not a photonflow classifier file (saved by something else)")
    if int(payload.get("format_version", 0)) > FILE_FORMAT_VERSION:
        raise ClassifierFileError(f"{path} has classifier file format version {payload.get('format_version')}; "
                                  f"this photonflow reads up to {FILE_FORMAT_VERSION}")
    try:
        meta = payload["metadata"]
        model = payload["model"]
        versions = dict(meta.get("versions", {}))
        clf = TrainedClassifier(
            model=model,
            name=meta["name"],
            recipe=meta.get("recipe"),
            frame_shape=_shape(meta.get("frame_shape")),
            classes=tuple(int(c) for c in meta["classes"]),
            evaluation=Evaluation.from_dict(meta["evaluation"]),
            training_summary=dict(meta.get("training_summary", {})),
            versions=versions,
            source=str(path),
            threshold=meta.get("threshold"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ClassifierFileError(f"{path}: damaged classifier metadata ({type(exc).__name__}: {exc})") from exc
    import sklearn

    saved = versions.get("scikit-learn")
    if saved and saved != sklearn.__version__:
        warnings.warn(f"classifier {path} was saved with scikit-learn {saved}; running {sklearn.__version__} "
                      "(predictions may differ; retrain if in doubt)", UserWarning, stacklevel=2)
    return clf


# ----------------------------------------------------------------------------------------------
# compatibility


class ModelMismatch(ValueError):
    """A classifier asked to sort frames it was not trained for; ``differences`` lists what differs."""

    def __init__(self, message: str, differences: Sequence[str] = ()):
        super().__init__(message)
        self.differences = list(differences)


def _fmt_roi(roi: Mapping) -> str:
    box = f"ss {roi.get('ss0')}:{roi.get('ss1')}, fs {roi.get('fs0')}:{roi.get('fs1')}"
    return box


def _norm(v):
    return json.loads(json.dumps(_jsonable(v), sort_keys=True))


def check_compatible(clf: TrainedClassifier, recipe: Mapping | None, frame_shape: Sequence[int] | None) -> None:
    """Refuse frames the classifier was not trained for: raise :class:`ModelMismatch` naming each
    difference — frame shape, ROI box, ROI panel, binning, summary and any other recipe entry.

    Whatever the model recorded must match (a recorded frame shape or recipe against ``None``
    is a mismatch); what the model did not record (``None``) is not checked.
    """
    diffs: list[str] = []
    if clf.frame_shape is not None:
        shape = _shape(frame_shape)
        if shape is None:
            diffs.append(f"frame shape: model {clf.frame_shape}, frames not given")
        elif shape != tuple(clf.frame_shape):
            diffs.append(f"frame shape: model {tuple(clf.frame_shape)}, frames {shape}")
    if clf.recipe is not None:
        if recipe is None:
            diffs.append("feature recipe: model has one, frames none given")
        else:
            mine, theirs = _norm(clf.recipe), _norm(dict(recipe))
            roi_m, roi_t = mine.get("roi"), theirs.get("roi")
            if isinstance(roi_m, dict) and isinstance(roi_t, dict):
                box = ("ss0", "ss1", "fs0", "fs1")
                if any(roi_m.get(k) != roi_t.get(k) for k in box):
                    diffs.append(f"ROI box: model {_fmt_roi(roi_m)}, frames {_fmt_roi(roi_t)}")
                if roi_m.get("panel") != roi_t.get("panel"):
                    diffs.append(f"ROI panel: model {roi_m.get('panel')!r}, frames {roi_t.get('panel')!r}")
                for k in sorted(set(roi_m) | set(roi_t)):
                    if k not in box and k != "panel" and roi_m.get(k) != roi_t.get(k):
                        diffs.append(f"ROI {k}: model {roi_m.get(k)!r}, frames {roi_t.get(k)!r}")
            elif roi_m != roi_t:
                diffs.append(f"ROI: model {roi_m!r}, frames {roi_t!r}")
            for k in ["binning", "summary"] + sorted((set(mine) | set(theirs)) - {"roi", "binning", "summary"}):
                if mine.get(k) != theirs.get(k):
                    label = k if k in ("binning", "summary") else f"feature recipe {k}"
                    diffs.append(f"{label}: model {mine.get(k)!r}, frames {theirs.get(k)!r}")
    if diffs:
        raise ModelMismatch(f"{clf._what()} refuses these frames — " + "; ".join(diffs), differences=diffs)


# ----------------------------------------------------------------------------------------------
# files: plot, report


def plot_confusion_matrix(evaluation: Evaluation, path, title: str = "Confusion matrix") -> str:
    """PNG of the confusion matrix: each cell its count and its row-normalised percentage
    (share of the true class), coloured by the percentage; rates in the subtitle. Atomic."""
    from ..plots import _pyplot, _save

    plt = _pyplot()
    cm = np.asarray(evaluation.confusion)
    pct = _row_percent(cm)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, label="% of true class")
    names = [f"{LABEL_NAMES[label]} ({label})" for label in _LABELS]
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{cm[i, j]}\n{pct[i, j]:.1f} %", ha="center", va="center", fontsize=12,
                    color="white" if pct[i, j] > 60 else "black")

    def p(v):
        return "–" if not math.isfinite(v) else f"{100 * v:.1f} %"

    ax.set_title(f"{title}\n{evaluation.n_test} test frames, accuracy {p(evaluation.accuracy)}\n"
                 f"good kept {p(evaluation.good_kept)}, bad rejected {p(evaluation.bad_rejected)}", fontsize="medium")
    fig.tight_layout()
    return _save(fig, path)


def write_evaluation(evaluation: Evaluation, directory, stem: str, extra: Mapping | None = None,
                     title: str | None = None) -> dict[str, str]:
    """Write ``{stem}_evaluation.json`` (the numbers, plus ``extra`` when given),
    ``{stem}_report.txt`` (:meth:`Evaluation.to_text`) and ``{stem}_confusion.png`` in
    ``directory``, atomically; ``{"json", "txt", "png"}`` → path."""
    from ..io.atomic import atomic_write_text

    directory = Path(directory)
    data = evaluation.to_dict()
    if extra:
        data = {**_jsonable(dict(extra)), **data}
    json_path = directory / f"{stem}_evaluation.json"
    txt_path = directory / f"{stem}_report.txt"
    png_path = directory / f"{stem}_confusion.png"
    atomic_write_text(json_path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    header = f"{title}\n\n" if title else ""
    atomic_write_text(txt_path, header + evaluation.to_text())
    plot_confusion_matrix(evaluation, png_path, title=title or f"Confusion matrix: {stem}")
    return {"json": str(json_path), "txt": str(txt_path), "png": str(png_path)}
