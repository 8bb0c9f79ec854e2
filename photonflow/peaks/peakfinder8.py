"""peakfinder8 (Cheetah / OM / CrystFEL) vectorised over numpy and scipy.

The algorithm, as in OM's compiled implementation (``ondamonitor`` 23.8.3, the test oracle):

1. **Radial statistics.** Pixels are binned by ``rint(radius)`` (radius in pixels from the beam).
   Five passes compute, per bin, the mean and standard deviation of the pixels that lie strictly
   between the previous pass's lower and upper thresholds (±1e9 at first): the upper threshold is
   ``max(mean + minimum_snr·sigma, adc_threshold)``, the lower one ``mean − minimum_snr·sigma``.
   Peaks are positive outliers, so they drop out of the statistics pass by pass.
2. **Candidates.** Pixels above their bin's upper threshold (and not masked) form 8-connected
   groups inside each ASIC (groups never cross ASIC edges). A group is looked at only if it has a
   pixel off the ASIC's outermost rows and columns (the scan starts one pixel in).
3. **Cuts.** A group with fewer than ``min_pixel_count`` or more than ``max_pixel_count`` pixels is
   dropped. Its first centre of mass (weights: value − bin mean) places a disk of radius
   ``2·local_bg_radius`` (square window ``[−2r, 2r)``) whose unmasked pixels below their bin's upper
   threshold give the local background mean and sigma (and the brightest background pixel).
   The peak is re-integrated against that local mean: total intensity, SNR = total / local sigma
   (kept if ≥ ``minimum_snr``), brightest pixel above background (kept if ≥ brightest background
   pixel − local mean), and the centre of mass of the raw values (kept if inside the ASIC).
4. Peaks are listed in the order of their first pixel in the scan (ASIC by ASIC, row by row),
   at most ``max_num_peaks``.

Resolution limits ``min_res``/``max_res`` (radius in pixels) mask the pixels outside them,
for the statistics and for the peaks, as OM does. Positions are slab pixels, the centre of
``data[ss, fs]`` at ``(fs, ss)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ._om_flood import merge_like_om, om_append_order, om_first_centre
from .peaklist import PeakList

FLT_MAX = np.float32(np.finfo(np.float32).max)
FLT_MIN = np.float32(np.finfo(np.float32).tiny)
RADIAL_ITERATIONS = 5


@dataclass(frozen=True)
class Peakfinder8Params:
    """peakfinder8 parameters, named as in OM and CrystFEL (defaults: CrystFEL's indexamajig).

    adc_threshold: minimum pixel value of a peak pixel, ADU; minimum_snr: signal-to-noise cut
    (radial threshold and peak SNR); min_pixel_count / max_pixel_count: pixels per peak;
    local_bg_radius: pixels (the background disk has radius 2×this); min_res / max_res: radius
    limits in pixels from the beam; max_num_peaks: peaks kept per frame.
    """

    adc_threshold: float = 800.0
    minimum_snr: float = 5.0
    min_pixel_count: int = 2
    max_pixel_count: int = 200
    local_bg_radius: int = 3
    min_res: float = 0.0
    max_res: float = 1200.0
    max_num_peaks: int = 2048

    @classmethod
    def from_dict(cls, values: dict) -> "Peakfinder8Params":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown peakfinder8 parameter(s): {', '.join(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AsicGrid:
    """The slab as a grid of equal ASICs: ``nasics_y × nasics_x`` ASICs of ``asic_ny × asic_nx`` pixels."""

    asic_nx: int
    asic_ny: int
    nasics_x: int
    nasics_y: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.asic_ny * self.nasics_y, self.asic_nx * self.nasics_x)

    @classmethod
    def whole(cls, shape: tuple[int, int]) -> "AsicGrid":
        """One ASIC covering the whole frame."""
        return cls(asic_nx=shape[1], asic_ny=shape[0], nasics_x=1, nasics_y=1)

    @classmethod
    def from_layout(cls, layout) -> "AsicGrid":
        """From any object with ``asic_nx, asic_ny, nasics_x, nasics_y`` (e.g. a geometry's layout)."""
        return cls(int(layout.asic_nx), int(layout.asic_ny), int(layout.nasics_x), int(layout.nasics_y))


@dataclass
class RadialStats:
    """Per radius bin (``rint(radius)``, pixels): background mean and sigma, upper/lower thresholds."""

    offset: np.ndarray
    sigma: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    count: np.ndarray


def _disk_offsets(local_bg_radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(dfs, dss) of the background disk: the window [-2r, 2r) on both axes, distance <= 2r."""
    width = 2 * int(local_bg_radius)
    d = np.arange(-width, width)
    dss, dfs = np.meshgrid(d, d, indexing="ij")
    keep = np.sqrt((dfs * dfs + dss * dss).astype(np.float64)) <= width
    return dfs[keep].astype(np.int64), dss[keep].astype(np.int64)


class Peakfinder8:
    """peakfinder8 for one detector: radius map, ASIC grid and mask fixed, frames varying.

    radius_map: (ss, fs) radius of each pixel from the beam, pixels; asics: the ASIC grid (the
    whole frame when None); mask: nonzero = good pixel (None: all good); params: the cuts.
    om_compatible: reproduce OM's flood fill exactly, including its reads of coordinates left by
    a peak on another ASIC, which now and then merge two unrelated pixel groups
    (:mod:`photonflow.peaks._om_flood`); False gives plain 8-connected groups.
    What depends only on the detector (radius bins, masks, per-bin pixel counts) is computed once.
    """

    def __init__(
        self,
        radius_map: np.ndarray,
        asics: AsicGrid | None = None,
        mask=None,
        params: Peakfinder8Params | None = None,
        om_compatible: bool = True,
    ):
        self.params = params or Peakfinder8Params()
        self.om_compatible = om_compatible
        radius = np.asarray(radius_map, dtype=np.float32)
        if radius.ndim != 2:
            raise ValueError(f"radius map must be 2-D, got shape {radius.shape}")
        self.shape = radius.shape
        self.asics = asics or AsicGrid.whole(self.shape)
        if self.asics.shape != self.shape:
            raise ValueError(f"ASIC grid {self.asics} covers {self.asics.shape}, radius map is {self.shape}")
        good = np.ones(self.shape, bool) if mask is None else np.asarray(mask) != 0
        if good.shape != self.shape:
            raise ValueError(f"mask shape {good.shape} differs from radius map shape {self.shape}")
        p = self.params
        good = good & ~(radius < p.min_res) & ~(radius > p.max_res)
        self.radius = radius
        self.good = good
        self.n_bins = int(np.ceil(radius.max())) + 1
        self.bins = np.rint(radius).astype(np.intp).ravel()
        # Masked pixels go to an extra bin (index n_bins) that never takes part.
        self._stat_bins = np.where(good.ravel(), self.bins, self.n_bins)
        self._good_count = np.bincount(self._stat_bins, minlength=self.n_bins + 1).astype(np.float64)
        self._bin_order = None  # pixels sorted by bin, built on first need
        self._band_hint = None  # (upper, lower) band from the last frame's statistics
        ny, nx = self.shape
        fs = np.arange(nx)
        ss = np.arange(ny)
        self._asic_fs = fs // self.asics.asic_nx
        self._asic_ss = ss // self.asics.asic_ny
        local_fs = fs % self.asics.asic_nx
        local_ss = ss % self.asics.asic_ny
        # Seeds of the scan: not on an ASIC's outermost rows or columns.
        self._inner_fs = (local_fs >= 1) & (local_fs < self.asics.asic_nx - 1)
        self._inner_ss = (local_ss >= 1) & (local_ss < self.asics.asic_ny - 1)
        self._disk_fs, self._disk_ss = _disk_offsets(p.local_bg_radius)

    # ---------------------------------------------------------------- radial statistics
    def radial_stats(self, data: np.ndarray) -> RadialStats:
        """Iterated per-radius mean/sigma and thresholds of one frame (float32 values)."""
        v = np.ascontiguousarray(data, dtype=np.float32).ravel()
        stats, _ = self._radial_stats(v)
        return stats

    def _radial_stats(self, v: np.ndarray) -> tuple[RadialStats, np.ndarray | None]:
        """Radial statistics of the flat float32 frame ``v``, and (when it could be proven) the
        sorted indices of every pixel that can be above its final threshold (else None).

        Each pass needs the sums over the pixels strictly inside the previous thresholds: that is
        all pixels less the outliers. The outliers of any pass lie outside a band around the first
        pass's mean (half its threshold distance), so only the few pixels outside that band are
        followed through the passes; the result is used only when every later threshold is
        checked to lie outside the band, otherwise every pixel is compared at every pass.
        """
        p = self.params
        nb = self.n_bins
        b = self._stat_bins
        snr = np.float32(p.minimum_snr)
        finite_inside = None
        if not (v.min() > -1e9 and v.max() < 1e9):
            # NaN, inf or |value| >= 1e9 somewhere: the first pass takes only values inside ±1e9.
            finite_inside = (v < np.float32(1e9)) & (v > np.float32(-1e9))
            keep = np.flatnonzero(finite_inside)
            vk = v[keep].astype(np.float64)
            total = np.bincount(b[keep], weights=vk, minlength=nb + 1)
            total_sq = np.bincount(b[keep], weights=vk * vk, minlength=nb + 1)
            total_n = np.bincount(b[keep], minlength=nb + 1).astype(np.float64)
        else:
            v64 = v.astype(np.float64)
            total = np.bincount(b, weights=v64, minlength=nb + 1)
            total_sq = np.bincount(b, weights=np.square(v64, out=v64), minlength=nb + 1)
            total_n = self._good_count
        first = self._thresholds(total, total_sq, total_n, snr)

        def passes(candidates: np.ndarray | None, start, count: int):
            """``count`` passes from the thresholds ``start``, comparing only ``candidates``
            (None: every pixel)."""
            upper, lower = start[0], start[1]
            history = []
            result = start
            for _ in range(count):
                bc = b if candidates is None else b[candidates]
                vc = v if candidates is None else v[candidates]
                out = (vc >= np.take(upper, bc)) | (vc <= np.take(lower, bc))
                if finite_inside is not None:
                    out &= finite_inside if candidates is None else finite_inside[candidates]
                where = np.flatnonzero(out)  # few: cheaper than boolean indexing twice
                bo = bc[where]
                vo = vc[where].astype(np.float64)
                s1 = total - np.bincount(bo, weights=vo, minlength=nb + 1)
                s2 = total_sq - np.bincount(bo, weights=vo * vo, minlength=nb + 1)
                n = total_n - np.bincount(bo, minlength=nb + 1)
                result = (*self._thresholds(s1, s2, n, snr), n)
                upper, lower = result[0], result[1]
                history.append((upper, lower))
            return result, history

        # Passes after the first follow only the pixels outside a band around the background
        # mean (half the threshold distance), plus every pixel of any bin where a pass's threshold
        # falls inside the band: the outliers of every pass are then among the pixels followed,
        # and the sums are exact. The band comes from the previous frame's final statistics
        # (frames of a run look alike); for the first frame, from a second pass over every pixel
        # (the first pass's sigma can be inflated a hundredfold by a hot pixel or a bright peak).
        hint = self._band_hint
        if hint is not None and hint[0].shape == total.shape:
            start, count = (*first, total_n), RADIAL_ITERATIONS - 1
            band_upper, band_lower = hint
        else:
            start, _ = passes(None, (*first, total_n), 1)
            count = RADIAL_ITERATIONS - 2
            band_upper, band_lower = self._band(start[:4], snr)
        outside = np.flatnonzero((v >= np.take(band_upper, b)) | (v <= np.take(band_lower, b)))
        checked = total_n > 0  # bins without pixels cannot hold outliers
        checked[nb] = False
        while True:
            result, history = passes(outside, start, count)
            inside_band = np.zeros(nb + 1, bool)
            for up, lo in [start[:2], *history]:
                inside_band |= (up < band_upper) | (lo > band_lower)
            inside_band &= checked
            if not inside_band.any():
                break
            checked &= ~inside_band
            merged = np.concatenate([outside, self._pixels_of_bins(np.flatnonzero(inside_band))])
            merged.sort()
            outside = merged[np.concatenate([[True], merged[1:] != merged[:-1]])]
        self._band_hint = self._band(result[:4], snr)
        upper, lower, offset, sigma, n = result
        stats = RadialStats(
            offset=offset[:nb], sigma=sigma[:nb], upper=upper[:nb], lower=lower[:nb], count=n[:nb].astype(np.int64)
        )
        return stats, outside

    def _pixels_of_bins(self, bins: np.ndarray) -> np.ndarray:
        """Flat indices of every pixel in the given radius bins."""
        if self._bin_order is None:
            self._bin_order = np.argsort(self._stat_bins, kind="stable")
            self._bin_start = np.concatenate([[0], np.cumsum(self._good_count.astype(np.int64))])
        starts = self._bin_start[bins]
        lengths = self._bin_start[bins + 1] - starts
        offsets = np.repeat(starts - np.cumsum(np.concatenate([[0], lengths[:-1]])), lengths)
        return self._bin_order[np.arange(lengths.sum()) + offsets]

    @staticmethod
    def _band(first, snr):
        """Half the first pass's threshold distance around its mean (per bin, float32)."""
        upper, lower, offset, sigma = first
        half = np.float32(0.5) * snr * np.abs(sigma)
        band_upper = np.where(upper == FLT_MAX, FLT_MAX, offset + half).astype(np.float32)
        band_lower = np.where(upper == FLT_MAX, -FLT_MAX, offset - half).astype(np.float32)
        band_upper[-1] = FLT_MAX
        band_lower[-1] = -FLT_MAX
        return band_upper, band_lower

    def _thresholds(self, s1, s2, n, snr):
        """Per-bin mean, sigma and thresholds in float32, as the C implementation computes them."""
        empty = n == 0
        safe_n = np.where(empty, 1.0, n)
        offset = (s1 / safe_n).astype(np.float32)
        var = (s2 / safe_n - offset.astype(np.float64) ** 2).astype(np.float32)
        # A negative variance (rounding) is kept as is, as in the C code.
        sigma = np.where(var >= 0, np.sqrt(np.maximum(var, 0)), var).astype(np.float32)
        upper = (offset + snr * sigma).astype(np.float32)
        upper = np.maximum(upper, np.float32(self.params.adc_threshold))
        lower = (offset - snr * sigma).astype(np.float32)
        offset = np.where(empty, np.float32(0), offset)
        sigma = np.where(empty, np.float32(0), sigma)
        upper = np.where(empty, FLT_MAX, upper)
        lower = np.where(empty, FLT_MIN, lower)
        # The masked-pixel bin never has pixels above threshold.
        upper[-1] = FLT_MAX
        lower[-1] = FLT_MIN
        return upper, lower, offset, sigma

    # ---------------------------------------------------------------- peaks
    def find(self, data: np.ndarray) -> PeakList:
        """The peaks of one frame (any numeric dtype; computed on float32 values)."""
        data = np.asarray(data)
        if data.shape != self.shape:
            raise ValueError(f"frame shape {data.shape} differs from the detector's {self.shape}")
        v = np.ascontiguousarray(data, dtype=np.float32).ravel()
        stats, outside = self._radial_stats(v)
        upper_full = np.append(stats.upper, FLT_MAX)  # masked pixels: never above
        if outside is None:
            idx = np.flatnonzero(v > upper_full[self._stat_bins])
        else:
            idx = outside[v[outside] > upper_full[self._stat_bins[outside]]]
        return self._peaks_from_candidates(v, stats, idx)

    def _peaks_from_candidates(self, v: np.ndarray, stats: RadialStats, idx: np.ndarray) -> PeakList:
        """Steps 2-4 on the flat float32 frame ``v``, given its radial statistics and the sorted
        flat indices ``idx`` of its pixels above threshold."""
        p = self.params
        if idx.size == 0:
            return PeakList.empty()
        upper_full = np.append(stats.upper, FLT_MAX)
        lab, n_groups = self._label_within_asics(idx)
        ny, nx = self.shape
        pss, pfs = np.divmod(idx, nx)
        npix = np.bincount(lab, minlength=n_groups)
        # The scan visits a group at its first inner pixel (row-major within its ASIC).
        inner = self._inner_ss[pss] & self._inner_fs[pfs]
        big = np.iinfo(np.int64).max
        asic_id = self._asic_ss[pss] * self.asics.nasics_x + self._asic_fs[pfs]
        local_key = (pss % self.asics.asic_ny) * self.asics.asic_nx + (pfs % self.asics.asic_nx)
        scan_key = np.where(inner, asic_id.astype(np.int64) * (ny * nx) + local_key, big)
        first = np.full(n_groups, big, dtype=np.int64)
        np.minimum.at(first, lab, scan_key)
        merged_orders = {}
        if self.om_compatible:
            merged, merged_orders = merge_like_om(idx, lab, n_groups, first, big, self.shape, self.asics)
            if merged_orders:
                lab = merged
                npix = np.bincount(lab, minlength=n_groups)
                first = np.full(n_groups, big, dtype=np.int64)
                np.minimum.at(first, lab, scan_key)

        candidate = (first != big) & (npix >= p.min_pixel_count) & (npix <= p.max_pixel_count)
        # First centre of mass: weights value - radial mean of the pixel's bin.
        offset_full = np.append(stats.offset, np.float32(0))
        vi = v[idx].astype(np.float64)
        w = vi - offset_full[self._stat_bins[idx]].astype(np.float64)
        sum_i = np.bincount(lab, weights=w, minlength=n_groups)
        candidate &= np.abs(sum_i) >= 1e-10
        safe = np.where(candidate, np.abs(sum_i), 1.0)
        com_fs = np.bincount(lab, weights=w * pfs, minlength=n_groups) / safe
        com_ss = np.bincount(lab, weights=w * pss, minlength=n_groups) / safe
        groups = np.flatnonzero(candidate)
        if groups.size == 0:
            return PeakList.empty()

        # The group's ASIC: the one it was seeded in.
        g_asic = first[groups] // (ny * nx)
        a_ss, a_fs = np.divmod(g_asic, self.asics.nasics_x)
        self._round_half_like_om(com_fs, com_ss, groups, first, lab, idx, vi, offset_full, merged_orders)
        rfs = np.rint(com_fs[groups]).astype(np.int64)
        rss = np.rint(com_ss[groups]).astype(np.int64)
        bg_offset, bg_sigma, bg_max = self._local_background(v, upper_full, rfs, rss, a_fs, a_ss, stats.offset)

        # Re-integrate against the local background.
        pos = np.full(n_groups, -1, dtype=np.int64)
        pos[groups] = np.arange(groups.size)
        sel = pos[lab] >= 0
        gl = pos[lab[sel]]
        vr = vi[sel]
        k = groups.size
        tot_raw = np.bincount(gl, weights=vr, minlength=k)
        tot = np.bincount(gl, weights=vr - bg_offset[gl], minlength=k)
        peak_max = np.zeros(k)
        np.maximum.at(peak_max, gl, vr - bg_offset[gl])
        ok = np.abs(tot_raw) >= 1e-10
        safe_raw = np.where(ok, np.abs(tot_raw), 1.0)
        fs_c = np.bincount(gl, weights=vr * pfs[sel], minlength=k) / safe_raw
        ss_c = np.bincount(gl, weights=vr * pss[sel], minlength=k) / safe_raw
        snr = np.where(np.abs(bg_sigma) > 1e-10, tot / np.where(bg_sigma == 0, 1.0, bg_sigma), 0.0)
        ok &= snr >= np.float32(p.minimum_snr)
        ok &= ~(peak_max < bg_max - bg_offset)
        anx, any_ = self.asics.asic_nx, self.asics.asic_ny
        ok &= (fs_c >= a_fs * anx) & (fs_c <= (a_fs + 1) * anx - 1)
        ok &= (ss_c >= a_ss * any_) & (ss_c <= (a_ss + 1) * any_ - 1)

        keep = np.flatnonzero(ok)
        keep = keep[np.argsort(first[groups][keep], kind="stable")][: p.max_num_peaks]
        return PeakList(
            fs=fs_c[keep],
            ss=ss_c[keep],
            intensity=tot[keep],
            npix=npix[groups][keep],
            max_intensity=peak_max[keep],
            snr=snr[keep],
        )

    def _round_half_like_om(self, com_fs, com_ss, groups, first, lab, idx, vi, offset_full, merged_orders):
        """Where a first centre of mass is within 1e-3 px of a half pixel, its rounding (which
        places the background disk) depends on arithmetic: redo it as OM does (float32 sums in
        OM's pixel order) for those few peaks."""
        if not self.om_compatible:
            return
        near = np.abs(np.abs(com_fs[groups] % 1.0 - 0.5)) < 1e-3
        near |= np.abs(np.abs(com_ss[groups] % 1.0 - 0.5)) < 1e-3
        if not near.any():
            return
        ny, nx = self.shape
        for g in groups[near]:
            members = np.flatnonzero(lab == g)
            local = int(first[g] % (ny * nx))
            a_ss, a_fs = divmod(int(first[g] // (ny * nx)), self.asics.nasics_x)
            lss, lfs = divmod(local, self.asics.asic_nx)
            seed = (lss + a_ss * self.asics.asic_ny) * nx + lfs + a_fs * self.asics.asic_nx
            order = merged_orders.get(int(g))
            if order is None:
                order = om_append_order(idx[members], seed, self.shape, self.asics)
            pos = np.searchsorted(idx, order)
            centre = om_first_centre(vi[pos], offset_full[self._stat_bins[order]], order % nx, order // nx)
            if centre is not None:
                com_fs[g], com_ss[g] = centre

    def find_batch(self, frames) -> list[PeakList]:
        """Peaks of each frame of a (n, ss, fs) stack."""
        return [self.find(frame) for frame in frames]

    def _label_within_asics(self, idx: np.ndarray) -> tuple[np.ndarray, int]:
        """Group labels (0..n-1) of the sorted flat pixel indices ``idx``: 8-connected groups
        that never cross an ASIC edge."""
        ny, nx = self.shape
        ss, fs = np.divmod(idx, nx)
        a_fs = self._asic_fs[fs]
        a_ss = self._asic_ss[ss]
        rows, cols = [], []
        for dss, dfs in ((0, 1), (1, -1), (1, 0), (1, 1)):
            nfs = fs + dfs
            nss = ss + dss
            ok = (nfs >= 0) & (nfs < nx) & (nss < ny)
            nfs_c = np.clip(nfs, 0, nx - 1)
            nss_c = np.clip(nss, 0, ny - 1)
            ok &= (self._asic_fs[nfs_c] == a_fs) & (self._asic_ss[nss_c] == a_ss)
            target = nss_c * nx + nfs_c
            pos = np.searchsorted(idx, target)
            pos_c = np.minimum(pos, idx.size - 1)
            ok &= idx[pos_c] == target
            rows.append(np.flatnonzero(ok))
            cols.append(pos_c[ok])
        rows = np.concatenate(rows)
        cols = np.concatenate(cols)
        graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(idx.size, idx.size))
        n, labels = connected_components(graph, directed=False)
        return labels, n

    def _local_background(self, v, upper_full, rfs, rss, a_fs, a_ss, radial_offset):
        """Mean, sigma and brightest value of the background disk around each peak centre."""
        g = self.asics
        ny, nx = self.shape
        fs = rfs[:, None] + self._disk_fs[None, :]
        ss = rss[:, None] + self._disk_ss[None, :]
        lo_fs = (a_fs * g.asic_nx)[:, None]
        lo_ss = (a_ss * g.asic_ny)[:, None]
        inside = (fs >= lo_fs) & (fs < lo_fs + g.asic_nx) & (ss >= lo_ss) & (ss < lo_ss + g.asic_ny)
        flat = np.where(inside, ss * nx + fs, 0)
        vals = v[flat]
        use = inside & (vals < upper_full[self._stat_bins[flat]]) & self.good.ravel()[flat]
        n = use.sum(axis=1)
        vals64 = np.where(use, vals, 0).astype(np.float64)
        s1 = vals64.sum(axis=1)
        s2 = (vals64 * vals64).sum(axis=1)
        safe_n = np.maximum(n, 1)
        offset = (s1 / safe_n).astype(np.float32)
        var = (s2 / safe_n - offset.astype(np.float64) ** 2).astype(np.float32)
        sigma = np.where(var >= 0, np.sqrt(np.maximum(var, 0)), np.float32(0.01)).astype(np.float32)
        bg_max = np.maximum(np.where(use, vals, -np.inf).max(axis=1, initial=-np.inf), 0.0)
        none = n == 0
        if none.any():
            # No background pixel: the radial mean at the centre, sigma 0.01 (as the C code).
            centre = np.clip(rss * nx + rfs, 0, ny * nx - 1)
            offset = np.where(none, radial_offset[self.bins[centre]], offset)
            sigma = np.where(none, np.float32(0.01), sigma)
        return offset.astype(np.float64), sigma.astype(np.float64), bg_max.astype(np.float64)


def peakfinder8(
    data, radius_map, asics: AsicGrid | None = None, mask=None, params: Peakfinder8Params | None = None, **overrides
) -> PeakList:
    """One-call peakfinder8 on one frame (builds the detector tables each call; use
    :class:`Peakfinder8` for a series)."""
    params = params or Peakfinder8Params()
    if overrides:
        params = Peakfinder8Params.from_dict({**params.to_dict(), **overrides})
    return Peakfinder8(radius_map, asics, mask, params).find(data)
