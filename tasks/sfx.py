"""Prefect task of the serial-crystallography flow: a thin wrapper over photonflow.sfx.

A task carries a batch of frames (a few hundred, or one multi-event file's worth): references go
in, a small summary comes out. The processor (geometry maps, the peak finder or the network) is
kept per worker process, so consecutive batches on a worker reuse it.
"""

from __future__ import annotations

import json
import os
import threading

from prefect import task
from prefect.cache_policies import NO_CACHE

from photonflow.io import FrameRef
from photonflow.sfx import HitCriteria, SfxProcessor

_PROCESSORS: dict[str, SfxProcessor] = {}
_LOCK = threading.Lock()


def get_processor(options: dict) -> SfxProcessor:
    """The processor for these options, built once per process (keyed by the options and the
    geometry file's modification time)."""
    geometry = options["geometry"]
    key = json.dumps({**options, "_mtime": os.path.getmtime(geometry)}, sort_keys=True, default=str)
    with _LOCK:
        processor = _PROCESSORS.get(key)
        if processor is None:
            processor = build_processor(options)
            if len(_PROCESSORS) > 2:
                _PROCESSORS.clear()
            _PROCESSORS[key] = processor
    return processor


def build_processor(options: dict) -> SfxProcessor:
    """An SfxProcessor from the flow's JSON-able options."""
    return SfxProcessor(
        options["geometry"], options["output_dir"], finder=options["finder"],
        peakfinder8=options.get("peakfinder8"), peaknet=options.get("peaknet"),
        hits=HitCriteria(**options.get("hits", {})), mask=options.get("mask"),
        backend=options.get("backend", "numpy"), device=options.get("device", "auto"),
        save_hit_frames=options.get("save_hit_frames", True),
    )


@task(name="sfx-find-peaks-batch", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def find_peaks_batch(options: dict, refs: list[tuple], batch_name: str) -> dict:
    """Find peaks and hits in a batch of frames; write its CXI files; return a summary."""
    processor = get_processor(options)
    return processor.process([FrameRef(*r) for r in refs], batch_name).to_dict()
