"""Prefect tasks of the tomography flow: thin wrappers over photonflow.tomo.

A task is a chunk (seconds to minutes of work): paths and small settings go in, a small summary
comes out; the arrays go to the chunk's own file.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from photonflow.tomo import passes


@task(name="tomo-pass1-chunk", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def pass1_task(
    scan_paths: list[str],
    p0: int,
    p1: int,
    steps: dict,
    rows_per_subchunk: int,
    overlap: int,
    out_path: str,
    offsets: list[float] | None = None,
) -> dict:
    """Preprocess projections p0..p1-1 into their own file."""
    return passes.pass1_chunk(scan_paths, p0, p1, steps, rows_per_subchunk, overlap, out_path, offsets)


@task(name="tomo-pass2-chunk", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def pass2_task(
    joined_path: str, r0: int, r1: int, theta_deg: list[float], center: float, steps: dict, output: dict, out_path: str
) -> dict:
    """Reconstruct sinogram rows r0..r1-1 into their own file."""
    return passes.pass2_chunk(joined_path, r0, r1, theta_deg, center, steps, output, out_path)


@task(name="tomo-pyramid", cache_policy=NO_CACHE, retries=1)
def pyramid_task(volume_path: str, levels: int) -> list:
    """2× downsampled levels of the volume, for viewers."""
    return passes.write_pyramid(volume_path, levels)
