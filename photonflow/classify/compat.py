"""Refusing frames a classifier was not trained for: :func:`check_compatible` compares the frame
shape and the feature recipe (ROI box and panel, binning, summary) a classifier recorded with
those of the frames and raises :class:`ModelMismatch` naming each difference."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from photonflow.errors import InputError

from .evaluation import _jsonable

if TYPE_CHECKING:
    from .training import TrainedClassifier

__all__ = ["ModelMismatch", "check_compatible"]


class ModelMismatch(InputError, ValueError):
    """A classifier asked to sort frames it was not trained for; ``differences`` lists what differs."""

    def __init__(self, message: str, differences: Sequence[str] = ()):
        super().__init__(message)
        self.differences = list(differences)


def _shape(shape) -> tuple[int, ...] | None:
    return None if shape is None else tuple(int(s) for s in shape)


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
