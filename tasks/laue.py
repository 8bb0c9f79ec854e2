"""Prefect task of the Laue flow: a thin wrapper over photonflow.laue.scan.

A task carries a batch of images (a few, each holding hundreds to thousands of spots): image
references go in, one small row per image comes out; the spot tables are written by the task.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from photonflow.laue.scan import LaueSettings, process_image


def _mask(path, cache={}):  # noqa: B006 - per-process cache of the mask file
    if path is None:
        return None
    if path not in cache:
        from photonflow.io.masks import read_mask

        cache.clear()
        cache[path] = read_mask(path)
    return cache[path]


@task(name="laue-spots-batch", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def laue_spots_batch(settings: dict, refs: list[tuple], spots_dir: str) -> list[dict]:
    """Search and describe the spots of a batch of images; write their tables; one row per image."""
    laue = LaueSettings(**settings)
    mask = _mask(laue.mask)
    return [process_image(ref, laue, spots_dir, mask=mask) for ref in refs]
