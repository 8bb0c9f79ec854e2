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

Where it lives (this module gathers the names):

* :mod:`.estimators` — the models (:data:`MODELS`, :func:`make_model`, :data:`PARAM_GRIDS`);
* :mod:`.training` — split, grid search, operating point, :class:`TrainedClassifier`,
  :func:`train_classifier`, :func:`compare_models`;
* :mod:`.evaluation` — :class:`Evaluation`, :func:`evaluate`, the report files;
* :mod:`.persistence` — :func:`save_classifier`, :func:`load_classifier`;
* :mod:`.compat` — :func:`check_compatible`, :class:`ModelMismatch`.

This module works on plain arrays: ``X`` (n frames × n features) and ``y`` (n labels, 0 or 1).
Loading runs pickle (joblib): load only classifier files you trust.
"""

from __future__ import annotations

from .compat import ModelMismatch, check_compatible
from .estimators import MODELS, PARAM_GRIDS, make_model
from .evaluation import (
    BAD,
    GOOD,
    LABEL_NAMES,
    PADT_BAD_REJECTED,
    PADT_GOOD_KEPT,
    Evaluation,
    evaluate,
    plot_confusion_matrix,
    write_evaluation,
)
from .persistence import ClassifierFileError, load_classifier, metadata_path, save_classifier
from .training import (  # noqa: F401 - FILE_FORMAT*: the saved file's format, importable from here as before
    FILE_FORMAT,
    FILE_FORMAT_VERSION,
    TrainedClassifier,
    compare_models,
    comparison_markdown,
    parse_split,
    train_classifier,
)

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
