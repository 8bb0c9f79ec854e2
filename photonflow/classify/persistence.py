"""Saving and loading classifiers: one joblib file (the model and its metadata) plus a readable
JSON sidecar (:func:`metadata_path`). Loading runs pickle: load only classifier files you trust."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from photonflow.errors import InputError

from .compat import _shape
from .evaluation import Evaluation
from .training import FILE_FORMAT, FILE_FORMAT_VERSION, TrainedClassifier

__all__ = ["ClassifierFileError", "load_classifier", "metadata_path", "save_classifier"]


class ClassifierFileError(InputError, ValueError):
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
        raise ClassifierFileError(
            f"{path} is not a readable photonflow classifier file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ClassifierFileError(f"{path} is not a photonflow classifier file (saved by something else)")
    if int(payload.get("format_version", 0)) > FILE_FORMAT_VERSION:
        raise ClassifierFileError(
            f"{path} has classifier file format version {payload.get('format_version')}; "
            f"this photonflow reads up to {FILE_FORMAT_VERSION}"
        )
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
        warnings.warn(
            f"classifier {path} was saved with scikit-learn {saved}; running {sklearn.__version__} "
            "(predictions may differ; retrain if in doubt)",
            UserWarning,
            stacklevel=2,
        )
    return clf
