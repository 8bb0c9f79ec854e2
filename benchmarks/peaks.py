"""Benchmark of Bragg peak finding on 1920 x 1920 frames: photonflow against OM's compiled peakfinder8.

    python benchmarks/peaks.py                 # 20 simulated frames, every finder
    python benchmarks/peaks.py --frames 50
    python benchmarks/peaks.py --skip-network

All finders run in one process on the same frames (simulated through config/geometry/sim1920.geom:
8 x 8 ASICs of 240 x 240 pixels; hits and non-hits with water ring, artifact rings and streaks,
hot and dead pixels), one CPU thread each unless --threads says otherwise:

(a) peakfinder8, numpy (photonflow.peaks.peakfinder8), next to OM's compiled peakfinder8
    (ondamonitor 23.8.3, the peer): ms/frame of each, the ratio, and whether their peak lists agree
    (same count, positions within 1e-3 px). Target: no slower than OM's C++ (PeakNet's paper:
    psocake 175 ms/frame on a CPU).
(b) peakfinder8 with the torch backend (dense passes in torch) on the CPU, and on CUDA when present.
(c) The PeakNet-style network (the shipped default model) on the CPU, and on CUDA when present
    (PeakNet's paper: 90 ms/frame on a GTX 1080 Ti).

Times are the best of ``--repeats`` passes over all frames (mean ms/frame of that pass), after a
warm-up frame (per-detector tables, model load, JIT of oneDNN kernels).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _threads  # noqa: E402, F401 - sets the thread counts before numpy loads
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: peakfinder8 parameters for the simulated detector (10 ADU per photon).
PF8 = dict(
    adc_threshold=100.0,
    minimum_snr=5.0,
    min_pixel_count=2,
    max_pixel_count=40,
    local_bg_radius=3,
    min_res=0.0,
    max_res=2000.0,
)


def per_frame_ms(fn, frames, repeats: int) -> float:
    """Best over ``repeats`` of the mean ms per frame of ``fn`` over all frames."""
    fn(frames[:1])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(frames)
        best = min(best, (time.perf_counter() - t0) / len(frames))
    return best * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20, help="simulated frames (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is kept (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for numpy/torch (default 1)")
    parser.add_argument("--skip-network", action="store_true", help="leave out the network")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from om.algorithms._crystallography import peakfinder_8 as om_peakfinder_8

    from photonflow.io.geom import load_geometry
    from photonflow.peaks.peakfinder8 import AsicGrid, Peakfinder8, Peakfinder8Params
    from photonflow.simulate.sfx import simulate_sfx_frames

    geometry = load_geometry(REPO / "config" / "geometry" / "sim1920.geom")
    t0 = time.perf_counter()
    frames = np.stack([f.image for f in simulate_sfx_frames(geometry, args.frames, seed=2024)]).astype(np.float32)
    print(
        f"{len(frames)} simulated frames of {frames.shape[1]} x {frames.shape[2]} "
        f"({time.perf_counter() - t0:.1f} s to simulate); {args.threads} CPU thread(s); "
        f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}\n"
    )

    radius = geometry.radius_map()
    layout = geometry.asic_layout()
    asics = AsicGrid.from_layout(layout)
    mask = geometry.good_pixel_mask().astype(np.int8)
    params = Peakfinder8Params(**PF8)
    om_mask = mask.copy()
    om_mask[radius < params.min_res] = 0
    om_mask[radius > params.max_res] = 0

    def om(stack):
        return [
            om_peakfinder_8(
                params.max_num_peaks,
                f,
                om_mask,
                radius,
                0,
                None,
                None,
                0,
                asics.asic_nx,
                asics.asic_ny,
                asics.nasics_x,
                asics.nasics_y,
                params.adc_threshold,
                params.minimum_snr,
                params.min_pixel_count,
                params.max_pixel_count,
                params.local_bg_radius,
            )
            for f in stack
        ]

    finder = Peakfinder8(radius, asics, mask, params)
    rows = []
    t_om = per_frame_ms(om, frames, args.repeats)
    t_np = per_frame_ms(finder.find_batch, frames, args.repeats)
    agree = all(
        len(a[0]) == len(b)
        and (len(b) == 0 or max(np.max(np.abs(np.array(a[0]) - b.fs)), np.max(np.abs(np.array(a[1]) - b.ss))) < 1e-3)
        for a, b in zip(om(frames), finder.find_batch(frames))
    )
    n_peaks = [len(p) for p in finder.find_batch(frames)]
    rows.append(("OM peakfinder8 (compiled C++, peer)", "cpu", t_om, ""))
    rows.append(("photonflow peakfinder8, numpy", "cpu", t_np, f"{t_om / t_np:.2f}x OM; same peaks as OM: {agree}"))

    from photonflow.peaks.peakfinder8_torch import TorchPeakfinder8

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        tf = TorchPeakfinder8(radius, asics, mask, params, device=device, batch_size=8)
        rows.append(
            ("photonflow peakfinder8, torch backend", device, per_frame_ms(tf.find_batch, frames, args.repeats), "")
        )
        rows[-1] = (*rows[-1][:3], f"{t_om / rows[-1][2]:.2f}x OM")

    if not args.skip_network:
        from photonflow.peaks.peaknet import PeakNetFinder

        for device in devices:
            net = PeakNetFinder(device=device, batch_size=2, panel_map=geometry.panel_map())
            good = geometry.good_pixel_mask()
            t = per_frame_ms(lambda s: net.find(s, mask=~good), frames, max(1, args.repeats - 1))
            peer = "PeakNet paper: 90 ms on a GTX 1080 Ti" if device == "cuda" else "psocake (paper): 175 ms on a CPU"
            rows.append(("photonflow PeakNet-style network (default model)", device, t, peer))

    print(f"{'finder':52s} {'device':7s} {'ms/frame':>9s}  notes")
    for name, device, ms, note in rows:
        print(f"{name:52s} {device:7s} {ms:9.1f}  {note}")
    print(f"\npeaks per frame (peakfinder8): median {np.median(n_peaks):.0f}, max {max(n_peaks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
