"""Training frame classifiers: the stratified train/test split (:func:`parse_split`), the optional
cross-validated grid search, the operating point (a threshold on p(good) chosen for a target rate of
bad frames rejected), and the fitted :class:`TrainedClassifier` with everything needed to trust and
reuse it; :func:`compare_models` trains several on the same split."""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .compat import ModelMismatch, _shape
from .estimators import (
    MODELS,
    PARAM_GRIDS,
    _estimator_params,
    _final_estimator,
    _plain_params,
    _unknown_model,
    make_model,
)
from .evaluation import _LABELS, BAD, GOOD, LABEL_NAMES, Evaluation, _as_labels, _jsonable, evaluate

__all__ = [
    "TrainedClassifier",
    "compare_models",
    "comparison_markdown",
    "parse_split",
    "train_classifier",
]

# The format of a saved classifier (photonflow.classify.persistence) and of its metadata.
FILE_FORMAT = "photonflow-frame-classifier"
FILE_FORMAT_VERSION = 1


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
        raise ValueError(
            f"train/test split {shown}: both parts must be greater than 0 (frames are needed to train and to test)"
        )
    total = parts[0] + parts[1]
    if max(parts) <= 1.0:  # fractions
        if abs(total - 1.0) > 1e-9:
            raise ValueError(
                f"train/test split {shown} adds up to {_fmt_number(total)}, not 1 "
                "(give percentages adding up to 100, e.g. 70/30)"
            )
        return (parts[0] * 100.0, parts[1] * 100.0)
    if abs(total - 100.0) > 1e-6:
        raise ValueError(f"train/test split {shown} adds up to {_fmt_number(total)}, not 100")
    return (parts[0], parts[1])


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
            raise ModelMismatch(
                f"{self._what()} expects {n} features per frame, got {X.shape[1]}",
                differences=[f"number of features: model {n}, frames {X.shape[1]}"],
            )
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
            return [
                {"ref": r, "true": int(t), "predicted": int(p)}
                for r, t, p in zip(self.test_refs, self.test_labels, self.test_predictions)
                if t != p
            ]
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
            raise ValueError(
                f"training needs at least 2 {LABEL_NAMES[label]} frames (label {label}) for a "
                f"stratified train/test split; got {n} (of {len(y)} labelled frames)"
            )
    return X, y, refs, counts


def _cv_folds(y_train: np.ndarray, cv: int) -> int:
    smallest = min(int((y_train == label).sum()) for label in _LABELS)
    folds = min(int(cv), smallest)
    if folds < 2:
        raise ValueError(
            f"grid search needs at least 2 frames of each class in the training part; the smallest class has {smallest}"
        )
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
        raise ValueError(
            f"cannot split {len(y)} frames ({counts[GOOD]} good, {counts[BAD]} bad) "
            f"{_fmt_number(train_pct)}/{_fmt_number(test_pct)} stratified: {exc}"
        ) from exc
    i_train, i_test = np.sort(i_train), np.sort(i_test)
    X_train, y_train, X_test, y_test = X[i_train], y[i_train], X[i_test], y[i_test]

    params = dict(params or {})
    model = make_model(name, seed=seed, n_jobs=n_jobs, **params)
    search_info = None
    t0 = time.perf_counter()
    if grid_search:
        grid = dict(PARAM_GRIDS[name] if grid_search is True else grid_search)
        folds = _cv_folds(y_train, cv)
        search = GridSearchCV(
            model,
            _estimator_params(model, grid),
            scoring=scoring,
            refit=True,
            n_jobs=1,
            cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed),
        )
        search.fit(X_train, y_train)
        model = search.best_estimator_
        search_info = {
            "grid": grid,
            "best_params": _plain_params(search.best_params_),
            "cv_score": float(search.best_score_),
            "cv_folds": folds,
            "scoring": scoring,
            "n_candidates": int(len(search.cv_results_["params"])),
        }
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
        "operating_point": None
        if threshold is None
        else {
            "threshold_p_good": threshold,
            "bad_rejected_target": float(bad_rejected_target),
            "chosen_on": f"out-of-fold probabilities of the training part ({_cv_folds(y_train, cv)}-fold)",
        },
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    test_refs = None
    if refs is not None:
        test_refs = [refs[i] for i in i_test]
        summary["misclassified"] = [
            {"ref": _jsonable(r), "true": int(t), "predicted": int(p)}
            for r, t, p in zip(test_refs, y_test, y_pred)
            if t != p
        ]
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
    proba = cross_val_predict(
        clone(model),
        X_train,
        y_train,
        method="predict_proba",
        cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed),
    )
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
    return {
        name: train_classifier(
            X,
            y,
            name,
            split=split,
            seed=seed,
            grid_search=grid_search,
            recipe=recipe,
            frame_shape=frame_shape,
            refs=refs,
            n_jobs=n_jobs,
            bad_rejected_target=bad_rejected_target,
        )
        for name in names
    }


def comparison_markdown(results: Mapping[str, TrainedClassifier], title: str | None = "Classifier comparison") -> str:
    """One Markdown table row per model: accuracy, good kept, bad rejected, F1s, training time."""
    lines = [f"## {title}", ""] if title else []
    lines += [
        "| model | accuracy | misclassified | good kept | bad rejected | F1 good | F1 bad | PADT rates | "
        "training (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, clf in results.items():
        e = clf.evaluation
        lines.append(
            f"| {name} | {100 * e.accuracy:.2f} % | {100 * e.misclassification_rate:.2f} % | "
            f"{100 * e.good_kept:.2f} % | {100 * e.bad_rejected:.2f} % | {e.report['good']['f1-score']:.4f} | "
            f"{e.report['bad']['f1-score']:.4f} | {'yes' if e.meets_padt() else 'no'} | "
            f"{clf.training_summary.get('training_seconds', float('nan')):.2f} |"
        )
    return "\n".join(lines) + "\n"
