"""The result types every operation shares: what a batch produced and what a run produced.

A batch processor (``SaxsReducer``, ``SfxProcessor``, ``LaueProcessor``, ``SortProcessor``) returns a
:class:`BatchResult` for each batch of items; the runner (``photonflow.flows.runner``, or the watch)
folds them into a :class:`RunSummary`. Both are plain data, small enough to return from a Prefect
task, and ``to_dict()``/``from_dict()`` round-trip through JSON.

Items are named by their :class:`~photonflow.io.FrameRef` label (``path`` or ``path //event``); a
failure is always ``"<item>: <reason>"``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["BatchResult", "RunSummary"]


@dataclass
class BatchResult:
    """What one batch of items produced.

    rows: the operation's table rows (one per item, or per item and integration); done, skipped:
    items processed, and items left alone because their outputs were already there; failed: item
    label -> reason; failures: every failure line (``"<item>: <reason>"``, also those of batch-level
    outputs that could not be written); outputs: item label -> its output files; files: the batch's
    own output files (a CXI peak list, a NeXus file); extra: operation-specific figures (hits,
    finder seconds, …); elapsed_s: the batch's work (s); peak_rss_mb: the worker's peak memory.
    """

    rows: list[dict] = field(default_factory=list)
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    outputs: dict[str, list[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    peak_rss_mb: float = 0.0

    def fail(self, item, reason: str, line: str | None = None) -> None:
        """Record one item as failed; its failure line is ``line`` or ``"<item>: <reason>"``."""
        self.failed[str(item)] = str(reason)
        self.failures.append(line or f"{item}: {reason}")

    @property
    def n_failed(self) -> int:
        return len(self.failed)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BatchResult":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class RunSummary:
    """What a run produced, the same keys for every operation.

    operation: the registry name ("saxs", "sfx", …); unit: what was counted ("frames", "images",
    "chunks"); done, skipped, failed: item counts; failures: the failure lines; elapsed_s: from the
    first batch submitted to the last finished (s); per_s: items done per second; peak_rss_mb:
    the largest peak memory of a worker (MB); outputs: name -> path of the run's main outputs (table,
    plots, lists); extra: operation-specific figures (hit rate, spots, models, …), kept at the top
    level of ``to_dict()``.
    """

    operation: str
    unit: str
    output_dir: str
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    preparation_s: float = 0.0
    peak_rss_mb: float = 0.0
    outputs: dict[str, str | None] = field(default_factory=dict)
    task_granularity: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        data["per_s"] = self.per_s
        for key, value in self.extra.items():
            if key in data:
                raise ValueError(f"extra figure {key!r} would hide the summary's own field")
            data[key] = value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RunSummary":
        names = {f.name for f in fields(cls)} - {"extra"}
        own = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names and k != "per_s"}
        return cls(**own, extra=extra)

    def line(self) -> str:
        """One line for a terminal: counts, time and rate."""
        rate = self.per_s
        skipped = f", {self.skipped} skipped (outputs already there)" if self.skipped else ""
        timing = f" in {self.elapsed_s:.1f} s ({rate:.1f} {self.unit}/s)" if math.isfinite(rate) else ""
        return f"{self.unit} done: {self.done}{skipped}, failed: {self.failed}{timing}"
