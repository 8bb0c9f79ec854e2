"""The one Prefect task of every map-over-frames operation (saxs, sfx, laue, classify-sort).

A task carries a batch of items (hundreds of frames, or a few Laue images): references go in, the
batch's :class:`~photonflow.results.BatchResult` comes out as a small dict; the outputs are written
by the processor. The processor (integration matrices, peak finder, network, classifier) is built
once per worker process from the registry (:mod:`photonflow.operations`) and reused by the next
batches with the same options.
"""

from __future__ import annotations

import json
import os
import threading

from prefect import task
from prefect.cache_policies import NO_CACHE

from photonflow.io import FrameRef
from photonflow.operations import get as get_operation

_PROCESSORS: dict[str, object] = {}
_LOCK = threading.Lock()
#: Options naming files whose change must rebuild the processor.
_FILE_OPTIONS = ("calibration", "geometry", "model", "mask", "checkpoint")


def _key(operation: str, options: dict) -> str:
    mtimes = {
        k: os.path.getmtime(options[k])
        for k in _FILE_OPTIONS
        if isinstance(options.get(k), str) and os.path.exists(options[k])
    }
    return json.dumps([operation, options, mtimes], sort_keys=True, default=str)


def get_processor(operation: str, options: dict):
    """The operation's batch processor for these options, built once per process."""
    key = _key(operation, options)
    with _LOCK:
        processor = _PROCESSORS.get(key)
        if processor is None:
            processor = get_operation(operation).build_processor(options)
            if len(_PROCESSORS) > 4:
                _PROCESSORS.clear()
            _PROCESSORS[key] = processor
    return processor


@task(name="process-batch", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def process_batch(operation: str, options: dict, refs: list[tuple], batch_name: str) -> dict:
    """Process one batch of items with the operation's processor; return its BatchResult as a dict."""
    processor = get_processor(operation, options)
    return processor.process([FrameRef(*r) for r in refs], batch_name).to_dict()
