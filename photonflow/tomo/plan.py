"""The chunk plan of a tomography reconstruction: how a scan is cut so that every task fits in a
worker's memory and carries seconds of work.

Pass 1 cuts the projections into chunks of ``k`` consecutive projections (a task and an output
file each; reading whole projections is how the raw files are laid out). Inside a task the rows
are processed in subchunks of ``s`` rows, each read with ``overlap`` extra rows on both sides that
are dropped after processing (``k`` is lowered, down to 16, until the overlap is under a quarter of
``s``): the steps that look at neighbouring rows need them — Paganin's
filter (its real-space kernel falls to 1e-3 within ``paganin_pad`` px, see
:func:`photonflow.tomo.preprocess.paganin_pad`) and the 3 × 3 zinger median (1 row). With the
overlap, a subchunk's output rows equal those of the whole projection up to the kernel's 1e-3 tail.

Pass 2 cuts the rows (sinograms) into chunks of ``r`` rows: a task reads all projections of its
rows from the joined pass-1 output, reconstructs its slices and writes them to its own file.

Memory model (bytes, float32 = 4): pass 1 holds about ``PASS1_COPIES`` copies of a subchunk
(raw, normalised, padded FFT input and its complex spectrum); pass 2 holds the chunk's sinograms
(``n`` × ``r`` × width, twice when 360° scans are converted), its slices (``r`` × W²) and the
reconstruction's working set per slice. The plan uses at most ``memory_fraction`` of a worker's memory.
"""

from __future__ import annotations

import math

PASS1_COPIES = 6
MIN_PROJECTIONS_PER_CHUNK = 16
PASS2_SINO_COPIES = 3
FLOAT = 4


def plan_chunks(
    shape,
    worker_memory_bytes: int,
    *,
    overlap: int = 0,
    half_acquisition: bool = False,
    memory_fraction: float = 0.5,
    max_projections_per_chunk: int = 512,
    max_rows_per_chunk: int = 64,
    min_rows_per_chunk: int = 1,
) -> dict:
    """A JSON-able plan for a scan of ``shape`` = (projections, rows, cols).

    overlap: rows read on both sides of a pass-1 subchunk (0 when no step needs neighbours);
    half_acquisition: 360° half-acquisition (reconstructed width about twice the detector's);
    max_projections_per_chunk / max_rows_per_chunk: caps that keep tasks at seconds of work
    (and many enough to spread over the workers)."""
    n, rows, cols = (int(x) for x in shape)
    if min(n, rows, cols) < 1:
        raise ValueError(f"cannot plan a scan of shape {shape}")
    budget = int(worker_memory_bytes * memory_fraction)
    # pass 1: k projections per chunk, s rows per subchunk (+ 2 overlap)
    k = max(1, min(max_projections_per_chunk, n))
    per_row = PASS1_COPIES * FLOAT * cols * k
    s = (budget // per_row) - 2 * overlap
    while s < 1 and k > 1:
        k = max(1, k // 2)
        per_row = PASS1_COPIES * FLOAT * cols * k
        s = (budget // per_row) - 2 * overlap
    if s < 1:
        raise ValueError(
            f"a worker with {worker_memory_bytes / 2**30:.2f} GiB cannot hold one projection row block "
            f"of {1 + 2 * overlap} rows x {cols} columns in pass 1"
        )
    # fewer projections per chunk buy taller subchunks: keep the overlap rows (read and processed
    # twice) under a quarter of the rows kept, down to MIN_PROJECTIONS_PER_CHUNK
    while s < rows and 2 * overlap > 0.25 * s and k > MIN_PROJECTIONS_PER_CHUNK:
        k = max(MIN_PROJECTIONS_PER_CHUNK, k // 2)
        per_row = PASS1_COPIES * FLOAT * cols * k
        s = (budget // per_row) - 2 * overlap
    s = min(s, rows)
    pass1 = [(a, min(a + k, n)) for a in range(0, n, k)]
    # pass 2: r rows of sinograms per chunk
    width = 2 * cols if half_acquisition else cols
    sino_row = PASS2_SINO_COPIES * FLOAT * n * width
    slice_bytes = FLOAT * width * width
    recon_work = 8 * FLOAT * (2 * width) * max(n, width)  # padded spectra and the gridding grid, per slice
    r = (budget - recon_work) // (sino_row + slice_bytes)
    if r < 1:
        raise ValueError(
            f"a worker with {worker_memory_bytes / 2**30:.2f} GiB cannot hold one sinogram of "
            f"{n} x {width} and its slice in pass 2"
        )
    r = max(min_rows_per_chunk, min(r, max_rows_per_chunk, rows))
    pass2 = [(a, min(a + r, rows)) for a in range(0, rows, r)]
    return {
        "shape": [n, rows, cols],
        "worker_memory_gib": worker_memory_bytes / 2**30,
        "memory_fraction": memory_fraction,
        "pass1": {
            "projections_per_chunk": k,
            "rows_per_subchunk": int(s),
            "overlap_rows": int(overlap),
            "chunks": pass1,
            "peak_bytes_estimate": int(per_row * (s + 2 * overlap)),
        },
        "pass2": {
            "rows_per_chunk": int(r),
            "reconstructed_width": width,
            "chunks": pass2,
            "peak_bytes_estimate": int(r * (sino_row + slice_bytes) + recon_work),
        },
        "tasks": len(pass1) + len(pass2),
    }


def describe(plan: dict) -> str:
    """One paragraph a person can check."""
    p1, p2 = plan["pass1"], plan["pass2"]
    n, rows, cols = plan["shape"]
    return (
        f"{n} projections of {rows} x {cols}: pass 1 in {len(p1['chunks'])} chunks of {p1['projections_per_chunk']} "
        f"projections (subchunks of {p1['rows_per_subchunk']} rows + {p1['overlap_rows']} overlap rows each side, "
        f"~{p1['peak_bytes_estimate'] / 2**20:.0f} MiB), pass 2 in {len(p2['chunks'])} chunks of "
        f"{p2['rows_per_chunk']} slices of {p2['reconstructed_width']}² (~{p2['peak_bytes_estimate'] / 2**20:.0f} MiB); "
        f"worker memory {plan['worker_memory_gib']:.2f} GiB, {math.floor(plan['memory_fraction'] * 100)} % used"
    )
