"""The operation registry: every operation photonflow runs, declared once.

An :class:`Operation` names what the rest of photonflow needs to know about one kind of run:

- ``name``: the command (``photonflow saxs``), the served deployment (``saxs/saxs``), the
  ``kind`` in ``run.json`` and the key of its section in a serve config (``-`` read as ``_``);
- ``schema``: its run-file JSON Schema in ``config/schemas``, the single source of the parameters'
  names, types, units, defaults and help (properties marked ``"x-path": true`` are file paths,
  resolved against the file that names them);
- ``flow``: the Prefect flow (``module:function``, imported only when a run starts, so this module
  stays free of Prefect and Dask);
- ``processor``: the batch processor (``module:Class``), a plain object of ``photonflow`` that runs
  and tests without Prefect: ``Class.from_options(options)`` builds it once per worker, and
  ``process(refs, batch_name) -> BatchResult`` does one batch. Operations without one
  (tomography's two-pass plan, classifier training) keep their own flow on the same result types;
- ``unit`` (what is counted), ``table`` (its output table and columns), ``panel`` (the live
  monitor's panel), ``live`` (``photonflow watch`` can drive it), ``demo`` (``photonflow demo NAME``).

The command line, ``photonflow validate``, ``photonflow serve``/``submit``, the monitor and the watch
read :data:`OPERATIONS`; no other list of operations exists.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError

__all__ = ["Operation", "OPERATIONS", "get", "names", "live_names", "UnknownOperation", "load_object"]


class UnknownOperation(InputError):
    """A name that is not an operation of the registry."""


def load_object(spec: str) -> Any:
    """``"package.module:attr.sub"`` -> the object."""
    module, _, attr = spec.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Operation:
    name: str
    title: str
    summary: str
    flow: str
    schema: str
    unit: str
    panel: str
    table: str | None = None
    table_columns: tuple[str, ...] = ()
    processor: str | None = None
    live: bool = False
    demo: bool = False
    demo_help: str = ""
    deployment_description: str = ""
    extra_tables: tuple[str, ...] = field(default=())
    #: The module of the command line that registers the operation's command (``add_parsers``)
    #: and, for one with a demo, runs it (``cmd_demo``); empty: the command is made from the schema
    #: alone (photonflow.deployments.cli.options.add_operation_command).
    cli: str = ""
    #: (summary key, label) of the figures the command line prints after a run.
    highlights: tuple[tuple[str, str], ...] = ()

    @property
    def serve_key(self) -> str:
        """The section of a serve config for this operation's deployment."""
        return self.name.replace("-", "_")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The ``kind`` values of ``run.json`` this operation's runs write."""
        return (self.name, f"{self.name}-live") if self.live else (self.name,)

    @property
    def tables(self) -> tuple[str, ...]:
        """The table files (CSV) the monitor may read, the live rows first."""
        own = (f"{self.table}.csv",) if self.table else ()
        return own + tuple(self.extra_tables)

    def load_flow(self):
        """The Prefect flow object (imports Prefect and the science stack)."""
        return load_object(self.flow)

    def processor_class(self):
        if self.processor is None:
            raise InputError(f"operation {self.name!r} has no batch processor")
        return load_object(self.processor)

    def build_processor(self, options: dict):
        """The batch processor for the JSON-able ``options`` (validated parameters and paths)."""
        return self.processor_class().from_options(options)


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            name="saxs",
            cli="photonflow.deployments.cli.saxs",
            title="SAXS/WAXS azimuthal integration",
            summary="Azimuthal integration of 2D SAXS/WAXS images into 1D I(q) ± σ curves (SAXSDOG's method) from "
            "a SAXSDOG calibration JSON or a pyFAI .poni; .chi per frame, NeXus, integral parameters, plots.",
            flow="photonflow.flows.saxs:saxs_flow",
            schema="saxs_run",
            unit="frames",
            panel="saxs",
            table="integral_parameters",
            table_columns=("frame", "integration", "time", "I0", "I1", "I2", "correlation_length_nm"),
            processor="photonflow.saxs:SaxsReducer",
            live=True,
            demo=True,
            demo_help="the real Pilatus 1M images in ../shared/data/saxs when present, otherwise generated ones",
            extra_tables=("live_integral_parameters.csv",),
            deployment_description="Integrate SAXS/WAXS frames (photonflow saxs).",
        ),
        Operation(
            name="sfx",
            cli="photonflow.deployments.cli.sfx",
            title="Serial crystallography: peaks and hits",
            summary="Bragg peak finding (peakfinder8 or the PeakNet-style network) and hit finding over CXI/HDF5 "
            "events with a CrystFEL geometry; CXI peak lists, a CrystFEL hit list, plots.",
            flow="photonflow.flows.sfx:sfx_flow",
            schema="sfx_run",
            unit="frames",
            panel="sfx",
            table="frames",
            table_columns=("index", "path", "event", "n_peaks", "hit", "resolution_A", "total_intensity"),
            processor="photonflow.sfx:SfxProcessor",
            live=True,
            demo=True,
            demo_help="simulated 1920 x 1920 serial-crystallography frames",
            deployment_description="Find Bragg peaks and hits (photonflow sfx).",
            highlights=(
                ("hits", "hits"),
                ("hit_rate_percent", "hit rate (%)"),
                ("median_peaks_per_hit", "peaks per hit (median)"),
                ("median_resolution_A_of_hits", "resolution of hits (median, Å)"),
            ),
        ),
        Operation(
            name="laue",
            cli="photonflow.deployments.cli.laue",
            title="Laue microdiffraction spots",
            summary="Laue raster scans: LaueTools-style spot search, batched 2D Gaussian fits or the spot CNN "
            "(position, sigma, Sim, Asp, Area, quality); spot tables and scan maps.",
            flow="photonflow.flows.laue:laue_flow",
            schema="laue_run",
            unit="images",
            panel="laue",
            table="images",
            table_columns=(
                "index",
                "path",
                "event",
                "map_row",
                "map_col",
                "x_um",
                "y_um",
                "n_spots",
                "n_good",
                "mean_sim",
                "n_not_fitted",
                "status",
                "spots_file",
                "seconds",
            ),
            processor="photonflow.laue.scan:LaueProcessor",
            live=True,
            demo=True,
            demo_help="a simulated Laue raster scan (2018 x 2016 images)",
            deployment_description="Laue spot tables and scan maps (photonflow laue).",
            highlights=(
                ("spots", "spots"),
                ("good_spots", "good spots"),
                ("spots_not_fitted", "not described"),
                ("spots_not_fitted_by_reason", "not described, by reason"),
                ("mean_sim", "mean Sim"),
            ),
        ),
        Operation(
            name="tomo",
            cli="photonflow.deployments.cli.tomo",
            title="Chunked tomography",
            summary="Chunked tomography of DXchange scans (DanMAX pipeline): preprocessing, stitching, Paganin, "
            "reconstruction, a volume with its pyramid, a PDF report.",
            flow="photonflow.flows.tomo:tomo_flow",
            schema="tomo_run",
            unit="chunks",
            panel="tomo",
            demo=True,
            demo_help="a simulated tomography scan, reconstructed chunk by chunk",
            deployment_description="Reconstruct DXchange scans chunk by chunk (photonflow tomo).",
        ),
        Operation(
            name="classify-train",
            cli="photonflow.deployments.cli.classify",
            title="Frame classifier training (PADT)",
            summary="Train and evaluate good/bad frame classifiers (scikit-learn) on a ROI from PADT/CrystFEL "
            "label lists or automatic labels.",
            flow="photonflow.flows.classify:classify_train_flow",
            schema="classify_train_run",
            unit="frames",
            panel="progress",
            deployment_description="Train good/bad frame classifiers (photonflow classify train).",
        ),
        Operation(
            name="classify-sort",
            cli="photonflow.deployments.cli.classify",
            title="Frame sorting (PADT)",
            summary="Sort frames with a trained classifier into good and bad CrystFEL event lists.",
            flow="photonflow.flows.classify:classify_sort_flow",
            schema="classify_sort_run",
            unit="frames",
            panel="progress",
            table="frames",
            table_columns=("path", "event", "label", "p_good"),
            processor="photonflow.classify.sorting:SortProcessor",
            deployment_description="Sort frames into good/bad lists (photonflow classify sort).",
            highlights=(("good", "good"), ("bad", "bad")),
        ),
    )
}


def names() -> list[str]:
    """The operations' names, in the registry's order."""
    return list(OPERATIONS)


def live_names() -> list[str]:
    """The operations ``photonflow watch`` can drive."""
    return [op.name for op in OPERATIONS.values() if op.live]


def get(name: str) -> Operation:
    """The operation ``name`` (``classify_sort`` and ``classify-sort`` alike); UnknownOperation else."""
    op = OPERATIONS.get(str(name).replace("_", "-"))
    if op is None:
        raise UnknownOperation(f"unknown operation {name!r}; choose from {', '.join(OPERATIONS)}")
    return op


def kind_of(run_kind: str) -> Operation | None:
    """The operation that writes run.json ``kind`` (``saxs``, ``sfx-live`` …), or None."""
    for op in OPERATIONS.values():
        if run_kind in op.kinds:
            return op
    return None
