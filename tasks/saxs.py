"""Prefect tasks of the SAXS flow: thin wrappers over photonflow.saxs.

A task carries a batch of frames (hundreds): paths go in, a small summary comes out. The reducer
(the CSR matrices) is kept per worker process, so consecutive batches on a worker reuse it.
"""

from __future__ import annotations

import os
import threading

from prefect import task
from prefect.cache_policies import NO_CACHE

from photonflow.calibration import load_calibration
from photonflow.io import FrameRef
from photonflow.saxs import SaxsReducer

_REDUCERS: dict[tuple, SaxsReducer] = {}
_LOCK = threading.Lock()


def get_reducer(calibration: str, calibration_options: dict, output_dir: str, input_root: str | None) -> SaxsReducer:
    """The reducer for a calibration, built (or loaded from the on-disk cache) once per process."""
    key = (os.path.abspath(calibration), os.path.getmtime(calibration), repr(sorted(calibration_options.items())),
           os.path.abspath(output_dir), input_root)
    with _LOCK:
        reducer = _REDUCERS.get(key)
        if reducer is None:
            cal = load_calibration(calibration, **calibration_options)
            reducer = SaxsReducer(cal, output_dir, input_root=input_root)
            if len(_REDUCERS) > 4:
                _REDUCERS.clear()
            _REDUCERS[key] = reducer
    return reducer


@task(name="saxs-integrate-batch", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def integrate_batch(
    calibration: str,
    calibration_options: dict,
    refs: list[tuple],
    output_dir: str,
    input_root: str | None,
    overwrite: bool | None,
) -> dict:
    """Integrate (and slice) a batch of frames; write .chi and NeXus files; return a summary."""
    reducer = get_reducer(calibration, calibration_options, output_dir, input_root)
    report = reducer.reduce([FrameRef(*r) for r in refs], overwrite=overwrite)
    return report.to_dict()
