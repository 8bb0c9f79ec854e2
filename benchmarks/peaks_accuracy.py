"""Accuracy of the peak finders on simulated frames held out from training and tuning.

    python benchmarks/peaks_accuracy.py                   # sim256 and sim1920 test sets
    python benchmarks/peaks_accuracy.py --frames 20 --skip-1920

Frames come from photonflow.simulate.sfx (exact truth: every spot's centre, its SNR, per-pixel
labels background / peak / artifact). Seeds: training of the shipped network used seeds 0-2
(photonflow/peaks/models/peaknet_default.json); tuning here uses seed 501; the test frames use
seed 901, so neither finder has seen them.

For each finder: peak **precision** (found peaks within 1.5 px of a true spot, one-to-one),
**recall** of the spots with SNR >= 5 (the ones a finder should find) and of all labelled spots
(SNR >= 3), the F1 of the two first, and the fraction of found peaks that sit on artifact pixels
(rings, streaks, hot pixels). For the network also the **artifact-pixel recall** (true artifact
pixels classified artifact) and the fraction of other pixels it calls artifact.

* peakfinder8 with CrystFEL's default parameters (adc_threshold 800 ADU, min_snr 5, 2-200 px,
  local_bg_radius 3) — what a user gets without tuning;
* peakfinder8 tuned: a grid over adc_threshold, minimum_snr and min_pixel_count on the tuning
  frames, best F1;
* the PeakNet-style network, shipped default model, no tuning.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MATCH_RADIUS = 1.5
REQUIRED_SNR = 5.0
LABELLED_SNR = 3.0


def simulate(geometry, n, seed):
    from photonflow.simulate.sfx import simulate_sfx_frames

    return simulate_sfx_frames(geometry, n, seed=seed)


def score(found_lists, frames) -> dict:
    """Precision, recalls and artifact hits of peak lists against the frames' truth."""
    from photonflow.peaks import match_peaks
    from photonflow.simulate.sfx import LABEL_ARTIFACT

    tp = n_found = 0
    req_tp = req_n = lab_tp = lab_n = on_artifact = 0
    for peaks, frame in zip(found_lists, frames):
        t = frame.truth
        pos = peaks.positions()
        everything = match_peaks(pos, t.positions(), MATCH_RADIUS)
        tp += everything.true_positives
        n_found += len(pos)
        required = match_peaks(pos, t.positions()[t.snr >= REQUIRED_SNR], MATCH_RADIUS)
        req_tp += required.true_positives
        req_n += int((t.snr >= REQUIRED_SNR).sum())
        labelled = match_peaks(pos, t.positions()[t.snr >= LABELLED_SNR], MATCH_RADIUS)
        lab_tp += labelled.true_positives
        lab_n += int((t.snr >= LABELLED_SNR).sum())
        if len(pos):
            ss = np.clip(np.rint(peaks.ss).astype(int), 0, frame.labels.shape[0] - 1)
            fs = np.clip(np.rint(peaks.fs).astype(int), 0, frame.labels.shape[1] - 1)
            on_artifact += int((frame.labels[ss, fs] == LABEL_ARTIFACT).sum())
    precision = tp / n_found if n_found else 1.0
    recall = req_tp / req_n if req_n else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall_snr5": recall,
        "recall_snr3": lab_tp / lab_n if lab_n else 1.0,
        "f1": f1,
        "found": n_found,
        "required": req_n,
        "on_artifact": on_artifact / n_found if n_found else 0.0,
    }


def peakfinder8_lists(geometry, frames, params):
    from photonflow.peaks.peakfinder8 import AsicGrid, Peakfinder8

    finder = Peakfinder8(
        geometry.radius_map(), AsicGrid.from_layout(geometry.asic_layout()), geometry.good_pixel_mask(), params
    )
    return [finder.find(f.image) for f in frames]


def tune_peakfinder8(geometry, frames):
    """Grid search on the tuning frames; the parameters of the best F1."""
    from photonflow.peaks.peakfinder8 import Peakfinder8Params

    best = None
    for adc, snr, min_pix in itertools.product((30, 60, 100, 200, 400), (3.5, 4.0, 5.0, 6.0), (1, 2, 3)):
        params = Peakfinder8Params(
            adc_threshold=adc,
            minimum_snr=snr,
            min_pixel_count=min_pix,
            max_pixel_count=40,
            local_bg_radius=3,
            max_res=4000,
        )
        s = score(peakfinder8_lists(geometry, frames, params), frames)
        if best is None or s["f1"] > best[0]["f1"]:
            best = (s, params)
    return best[1]


def network_scores(geometry, frames, batch_size=2):
    from photonflow.peaks.peaknet import PeakNetFinder
    from photonflow.simulate.sfx import LABEL_ARTIFACT

    finder = PeakNetFinder(batch_size=batch_size, panel_map=geometry.panel_map())
    good = geometry.good_pixel_mask()
    stack = np.stack([f.image for f in frames])
    t0 = time.perf_counter()
    peaks, labels = finder.find_with_labels(stack, mask=~good)  # True = masked
    elapsed = time.perf_counter() - t0
    s = score(peaks, frames)
    truth = np.stack([f.labels for f in frames])
    art = truth == LABEL_ARTIFACT
    called = labels == LABEL_ARTIFACT
    s["artifact_pixel_recall"] = float(called[art].mean()) if art.any() else float("nan")
    s["artifact_false_fraction"] = float(called[~art].mean())
    s["ms_per_frame"] = 1e3 * elapsed / len(frames)
    return s


def report(name, s):
    extra = ""
    if "artifact_pixel_recall" in s:
        extra = (
            f"  artifact-pixel recall {s['artifact_pixel_recall']:.3f} "
            f"(other pixels called artifact {100 * s['artifact_false_fraction']:.3f} %)"
        )
    print(
        f"  {name:34s} precision {s['precision']:.3f}  recall(SNR>=5) {s['recall_snr5']:.3f}  "
        f"recall(SNR>=3) {s['recall_snr3']:.3f}  F1 {s['f1']:.3f}  on artifacts {100 * s['on_artifact']:.1f} %"
        f"  ({s['found']} found, {s['required']} spots SNR>=5){extra}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40, help="test frames per detector (default 40)")
    parser.add_argument("--tune-frames", type=int, default=20, help="tuning frames for peakfinder8 (default 20)")
    parser.add_argument("--skip-1920", action="store_true", help="only the 256 x 256 detector")
    parser.add_argument("--skip-network", action="store_true", help="leave out the network")
    args = parser.parse_args()

    from photonflow.io.geom import load_geometry
    from photonflow.peaks.peakfinder8 import Peakfinder8Params

    detectors = ["sim256"] + ([] if args.skip_1920 else ["sim1920"])
    for name in detectors:
        geometry = load_geometry(REPO / "config" / "geometry" / f"{name}.geom")
        n_test = args.frames if name == "sim256" else max(4, args.frames // 4)
        test = simulate(geometry, n_test, seed=901)
        tune = simulate(geometry, args.tune_frames if name == "sim256" else max(4, args.tune_frames // 4), seed=501)
        hits = sum(f.truth.is_hit for f in test)
        print(
            f"\n{name}: {n_test} test frames ({hits} hits), {len(tune)} tuning frames, match radius {MATCH_RADIUS} px"
        )
        report("peakfinder8, CrystFEL defaults", score(peakfinder8_lists(geometry, test, Peakfinder8Params()), test))
        tuned = tune_peakfinder8(geometry, tune)
        report("peakfinder8, tuned", score(peakfinder8_lists(geometry, test, tuned), test))
        print(
            f"    tuned: adc_threshold {tuned.adc_threshold:g}, minimum_snr {tuned.minimum_snr:g}, "
            f"min_pixel_count {tuned.min_pixel_count}"
        )
        if not args.skip_network:
            s = network_scores(geometry, test)
            report("PeakNet-style network, default", s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
