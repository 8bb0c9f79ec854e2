"""How well a classifier sorts held-out frames (:class:`Evaluation`, :func:`evaluate`): confusion
matrix, classification report, accuracy, misclassification rate and PADT's two rates (good frames
kept = recall of good, bad frames rejected = recall of bad); the evaluation's files (JSON, text
report, confusion-matrix PNG: :func:`write_evaluation`)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import numpy as np

from .labels import BAD, GOOD

__all__ = [
    "BAD",
    "GOOD",
    "LABEL_NAMES",
    "PADT_BAD_REJECTED",
    "PADT_GOOD_KEPT",
    "Evaluation",
    "evaluate",
    "plot_confusion_matrix",
    "write_evaluation",
]

LABEL_NAMES = {BAD: "bad", GOOD: "good"}
_LABELS = (BAD, GOOD)  # order of rows/columns in every confusion matrix and of predict_proba's columns

# PADT's published rates for its random forest on held-out frames.
PADT_GOOD_KEPT = 0.94
PADT_BAD_REJECTED = 0.98


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
            "report": {
                k: {m: (int(x) if m == "support" else _nan_to_none(x)) for m, x in v.items()}
                for k, v in self.report.items()
            },
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
        return cls(
            confusion=np.asarray(d["confusion"], dtype=np.int64).reshape(2, 2),
            report=report,
            accuracy=f(d["accuracy"]),
            misclassification_rate=f(d["misclassification_rate"]),
            good_kept=f(d["good_kept"]),
            bad_rejected=f(d["bad_rejected"]),
            n_test=int(d["n_test"]),
        )

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
            lines.append(
                f"| {key} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1-score']:.4f} | {row['support']} |"
            )
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
        report[LABEL_NAMES[label]] = {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1-score": float(f1[i]),
            "support": int(sup[i]),
        }
    for avg in ("macro", "weighted"):
        a_p, a_r, a_f, _ = precision_recall_fscore_support(t, p, labels=list(_LABELS), average=avg, zero_division=0.0)
        report[f"{avg} avg"] = {
            "precision": float(a_p),
            "recall": float(a_r),
            "f1-score": float(a_f),
            "support": int(len(t)),
        }
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
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{pct[i, j]:.1f} %",
                ha="center",
                va="center",
                fontsize=12,
                color="white" if pct[i, j] > 60 else "black",
            )

    def p(v):
        return "–" if not math.isfinite(v) else f"{100 * v:.1f} %"

    ax.set_title(
        f"{title}\n{evaluation.n_test} test frames, accuracy {p(evaluation.accuracy)}\n"
        f"good kept {p(evaluation.good_kept)}, bad rejected {p(evaluation.bad_rejected)}",
        fontsize="medium",
    )
    fig.tight_layout()
    return _save(fig, path)


def write_evaluation(
    evaluation: Evaluation, directory, stem: str, extra: Mapping | None = None, title: str | None = None
) -> dict[str, str]:
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
