"""Sort detector frames good/bad (after PADT, the Pixel Anomaly Detector Tool, J. Appl. Cryst. 2024).

* :mod:`.labels`: good/bad label lists as PADT writes them (CrystFEL ``file //event`` lists).
* :mod:`.features`: the region of interest (a geometry panel or a pixel box) and the features read
  from it straight out of the HDF5 files.
* :mod:`.autolabel`: automatic labels by fitting a polynomial to the ROI's column profile and
  fencing its inflection points (Tukey), assuming most frames are good.
* :mod:`.sheets`: PNG contact sheets for checking labels by eye.
* :mod:`.models`: scikit-learn classifiers, gathered from :mod:`.estimators` (the models),
  :mod:`.training`, :mod:`.evaluation`, :mod:`.persistence` (save/load) and :mod:`.compat`
  (refusing frames a classifier was not trained for).
"""

from __future__ import annotations

import importlib

# Every name is loaded from its submodule on first use (PEP 562), so importing the package is cheap
# and ``python -m photonflow.classify.labels`` runs without the package having imported it first.
_EXPORTS = {
    "autolabel": (
        "AutoLabels",
        "auto_label",
        "column_profile",
        "evaluate_fits",
        "fit_profiles",
        "inflection_points",
        "tukey_fences",
    ),
    "features": (
        "MAX_BUFFER_BYTES",
        "SUMMARY_NAMES",
        "FeatureError",
        "FeatureRecipe",
        "FeatureSet",
        "ReadFailures",
        "Roi",
        "extract_features",
        "features_from_roi",
        "iter_roi_batches",
        "read_roi",
        "roi_from_box",
        "roi_from_panel",
    ),
    "labels": (
        "EventRef",
        "LabelError",
        "LabelSet",
        "format_event",
        "labels_from_ids",
        "load_labels",
        "parse_event",
        "read_label_list",
        "write_label_list",
    ),
    "sheets": ("contact_sheet", "sheet_size"),
    # models.py belongs to the classifier work: add its public names here to re-export them, e.g.
    # "models": ("train_classifier", "load_classifier"),
    "models": (
        "MODELS",
        "ModelMismatch",
        "check_compatible",
        "compare_models",
        "load_classifier",
        "save_classifier",
        "train_classifier",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name in _EXPORTS:  # a submodule
        return importlib.import_module(f".{name}", __name__)
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE) | set(_EXPORTS))


__all__ = [
    "MAX_BUFFER_BYTES",
    "SUMMARY_NAMES",
    "AutoLabels",
    "EventRef",
    "FeatureError",
    "FeatureRecipe",
    "FeatureSet",
    "LabelError",
    "LabelSet",
    "ReadFailures",
    "Roi",
    "auto_label",
    "column_profile",
    "contact_sheet",
    "evaluate_fits",
    "extract_features",
    "features_from_roi",
    "fit_profiles",
    "format_event",
    "inflection_points",
    "iter_roi_batches",
    "labels_from_ids",
    "load_labels",
    "parse_event",
    "read_label_list",
    "read_roi",
    "roi_from_box",
    "roi_from_panel",
    "sheet_size",
    "tukey_fences",
    "write_label_list",
]
