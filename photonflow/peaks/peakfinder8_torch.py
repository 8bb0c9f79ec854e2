"""peakfinder8 with its dense work in torch, for GPUs.

The radial statistics (five passes over every pixel) and the threshold test run in torch on
``device`` ("auto": CUDA when present), a batch of frames at a time; the few pixels above
threshold then go through the same grouping and cuts as :class:`Peakfinder8`, so both give the
same peak lists (a test checks it on CPU torch).
"""

from __future__ import annotations

import numpy as np
import torch

from .peakfinder8 import FLT_MAX, FLT_MIN, RADIAL_ITERATIONS, Peakfinder8, RadialStats
from .peaklist import PeakList


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the first CUDA device when there is one, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TorchPeakfinder8(Peakfinder8):
    """:class:`Peakfinder8` whose radial statistics and threshold test run in torch."""

    def __init__(self, *args, device: str | torch.device = "auto", batch_size: int = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self._bins_t = torch.as_tensor(self._stat_bins, device=self.device)
        self._count_t = torch.as_tensor(self._good_count, device=self.device)

    def find(self, data: np.ndarray) -> PeakList:
        return self.find_batch(np.asarray(data)[None])[0]

    def find_batch(self, frames) -> list[PeakList]:
        """Peaks of each frame of a (n, ss, fs) stack (numpy or torch)."""
        out: list[PeakList] = []
        n = len(frames)
        for start in range(0, n, self.batch_size):
            chunk = frames[start : start + self.batch_size]
            if isinstance(chunk, torch.Tensor):
                host = chunk.detach().to("cpu", torch.float32).numpy()
                dev = chunk.to(self.device, torch.float32)
            else:
                host = np.ascontiguousarray(chunk, dtype=np.float32)
                dev = torch.as_tensor(host, device=self.device)
            if host.shape[1:] != self.shape:
                raise ValueError(f"frame shape {host.shape[1:]} differs from the detector's {self.shape}")
            stats, above = self._dense(dev.reshape(dev.shape[0], -1))
            above_idx = [np.flatnonzero(a) for a in above.cpu().numpy()]
            for k in range(host.shape[0]):
                out.append(self._peaks_from_candidates(host[k].ravel(), stats[k], above_idx[k]))
        return out

    def _dense(self, v: torch.Tensor):
        """Radial statistics (float64 sums, float32 thresholds, as the numpy path) and the
        above-threshold mask of a (batch, pixels) float32 tensor."""
        p = self.params
        nb = self.n_bins
        batch = v.shape[0]
        bins = self._bins_t.expand(batch, -1)
        v64 = v.to(torch.float64)
        finite_inside = (v < 1e9) & (v > -1e9)
        v_in = torch.where(finite_inside, v64, torch.zeros_like(v64))
        total = torch.zeros(batch, nb + 1, dtype=torch.float64, device=v.device).scatter_add_(1, bins, v_in)
        total_sq = torch.zeros_like(total).scatter_add_(1, bins, v_in * v_in)
        total_n = torch.zeros_like(total).scatter_add_(1, bins, finite_inside.to(torch.float64))
        snr = np.float32(p.minimum_snr)
        upper, lower, offset, sigma = self._thresholds_t(total, total_sq, total_n, snr)
        n = total_n
        for _ in range(RADIAL_ITERATIONS - 1):
            up_pix = torch.gather(upper, 1, bins)
            lo_pix = torch.gather(lower, 1, bins)
            out = ((v >= up_pix) | (v <= lo_pix)) & finite_inside
            w = torch.where(out, v64, torch.zeros_like(v64))
            s1 = total - torch.zeros_like(total).scatter_add_(1, bins, w)
            s2 = total_sq - torch.zeros_like(total).scatter_add_(1, bins, w * w)
            n = total_n - torch.zeros_like(total).scatter_add_(1, bins, out.to(torch.float64))
            upper, lower, offset, sigma = self._thresholds_t(s1, s2, n, snr)
        above = v > torch.gather(upper, 1, bins)
        stats = []
        up, lo, off, sg, cnt = (t.cpu().numpy() for t in (upper, lower, offset, sigma, n))
        for k in range(batch):
            stats.append(
                RadialStats(
                    offset=off[k, :nb],
                    sigma=sg[k, :nb],
                    upper=up[k, :nb],
                    lower=lo[k, :nb],
                    count=cnt[k, :nb].astype(np.int64),
                )
            )
        return stats, above

    def _thresholds_t(self, s1, s2, n, snr):
        """:meth:`Peakfinder8._thresholds` in torch (float32 results from float64 sums)."""
        empty = n == 0
        safe_n = torch.where(empty, torch.ones_like(n), n)
        offset = (s1 / safe_n).to(torch.float32)
        var = (s2 / safe_n - offset.to(torch.float64) ** 2).to(torch.float32)
        sigma = torch.where(var >= 0, torch.sqrt(torch.clamp(var, min=0)), var)
        snr_t = torch.tensor(snr, dtype=torch.float32, device=s1.device)
        upper = offset + snr_t * sigma
        upper = torch.clamp(upper, min=float(np.float32(self.params.adc_threshold)))
        lower = offset - snr_t * sigma
        zero = torch.zeros_like(offset)
        offset = torch.where(empty, zero, offset)
        sigma = torch.where(empty, zero, sigma)
        upper = torch.where(empty, torch.full_like(upper, float(FLT_MAX)), upper)
        lower = torch.where(empty, torch.full_like(lower, float(FLT_MIN)), lower)
        upper[:, -1] = float(FLT_MAX)
        lower[:, -1] = float(FLT_MIN)
        return upper, lower, offset, sigma
