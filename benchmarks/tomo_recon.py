"""Benchmark of tomographic reconstruction: photonflow's FINUFFT gridrec against algotom's FBP.

    python benchmarks/tomo_recon.py                   # 2048-wide sinograms, 1500 angles, 1 thread
    python benchmarks/tomo_recon.py --width 1024 --angles 900 --slices 4 --skip-fbp

One process, one CPU thread (OMP/BLAS/numba/FINUFFT threads = 1; algotom's numba FBP has a data
race when threaded, so one thread is also the only reproducible setting). The data: analytic
projections of the 3D modified Shepp–Logan phantom (2×2 sub-pixel rays, μ scaled so the largest
line integral is 2) and the voxelised phantom (2³ sub-voxels) for the RMSE, inside 95 % of the
inscribed circle. Prints, for each backend: seconds per slice, slices/s per core, RMSE (1/px) and
the ratio of gridrec's speed to algotom's (target ≥ 10×). Times are the best of ``--repeats``.
Backends: gridrec (photonflow, FINUFFT), algotom (fbp_reconstruction, gpu=False, ncore=1), fbp
(photonflow's numba reference, linear interpolation), tomopy (gridrec) when installed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from photonflow.simulate.tomo import phantom_projections, phantom_volume, scale_ellipsoids, shepp_logan_ellipsoids  # noqa: E402
from photonflow.tomo.recon import available_backends, inscribed_circle, reconstruct  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--angles", type=int, default=1500)
    ap.add_argument("--slices", type=int, default=4, help="slices per gridrec call (FINUFFT n_trans)")
    ap.add_argument("--filter", default="hann", help="a filter all backends have (ramp, hann, hamming, parzen)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-fbp", action="store_true", help="skip photonflow's slow numba reference")
    ap.add_argument("--skip-algotom", action="store_true")
    args = ap.parse_args(argv)

    n, na = args.width, args.angles
    theta = np.arange(na) * 180.0 / na
    t0 = time.perf_counter()
    ells = shepp_logan_ellipsoids()
    probe = phantom_projections((1, n), theta[:: max(na // 60, 1)], ells, oversample=1)
    ells = scale_ellipsoids(ells, 2.0 / float(probe.max()))
    sino = np.moveaxis(phantom_projections((1, n), theta, ells, oversample=2), 1, 0)  # (1, na, n)
    vol = phantom_volume((1, n, n), ells, oversample=2)[0]
    mask = inscribed_circle(n, 0.95)
    print(f"data: {n}-wide sinogram, {na} angles over 180°, filter {args.filter!r}; "
          f"phantom + projections in {time.perf_counter() - t0:.1f} s; backends installed: {available_backends()}")

    def rmse(rec):
        return float(np.sqrt(np.mean((rec - vol)[mask] ** 2)))

    def run(backend, n_slices, **kw):
        stack = np.repeat(sino, n_slices, axis=0)
        best = np.inf
        rec = None
        for _ in range(args.repeats):
            t = time.perf_counter()
            rec = reconstruct(stack, theta, (n - 1) / 2, backend=backend, filter_name=args.filter, **kw)
            best = min(best, time.perf_counter() - t)
        return best / n_slices, rmse(rec[0])

    results = {}
    results["gridrec"] = run("gridrec", args.slices, batch=args.slices)
    if not args.skip_algotom and "algotom" in available_backends():
        import numba

        numba.set_num_threads(1)
        run_alg = args.repeats
        args.repeats = 1  # 5–6 s per slice: one timed pass after numba's compilation
        reconstruct(sino[:, :, :], theta, (n - 1) / 2, backend="algotom", filter_name=args.filter)  # compile
        results["algotom"] = run("algotom", 1)
        args.repeats = run_alg
    if not args.skip_fbp:
        reps = args.repeats
        args.repeats = 1
        reconstruct(sino[:, :8], theta[:8], (n - 1) / 2, backend="fbp", filter_name=args.filter)  # compile
        results["fbp"] = run("fbp", 1)
        args.repeats = reps
    if "tomopy" in available_backends():
        results["tomopy"] = run("tomopy", args.slices)

    print(f"{'backend':10s} {'s/slice':>9s} {'slices/s/core':>14s} {'RMSE (1/px)':>12s}")
    for name, (sec, err) in results.items():
        print(f"{name:10s} {sec:9.3f} {1.0 / sec:14.3f} {err:12.4e}")
    print(f"(phantom μ: skull {ells[0].mu:.3e}, brain {ells[0].mu + ells[1].mu:.3e} 1/px)")
    if "algotom" in results:
        ratio = results["algotom"][0] / results["gridrec"][0]
        print(f"gridrec / algotom speed: {ratio:.1f}x (target >= 10x); "
              f"RMSE ratio gridrec/algotom: {results['gridrec'][1] / results['algotom'][1]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
