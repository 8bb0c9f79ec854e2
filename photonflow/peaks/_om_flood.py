"""OM's flood fill, where it differs from plain connected components.

OM's compiled peakfinder8 grows a peak from its first pixel with a list of ASIC-local pixel
coordinates. Each sweep over the list also reads the entry one past its end, which still holds a
coordinate written by an earlier peak (or zero at the start of a frame). When that stale
coordinate came from another ASIC, it points somewhere unrelated in the current ASIC, and any
above-threshold pixel next to it that no peak has claimed yet joins the current peak, which can
then fail the pixel-count cut or move. The effect is rare on sparse frames and common on crowded
ones.

:func:`merge_like_om` reproduces that exactly on top of the connected components, so that
``Peakfinder8(..., om_compatible=True)`` gives OM's peak list; most groups are settled by a
vectorised test and only groups whose stale entry comes from another ASIC are followed one by one.
"""

from __future__ import annotations

import numpy as np

# OM's search pattern around a pixel: (dfs, dss) in this order.
SEARCH = ((0, 0), (-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1))


def _previous_larger(sizes: np.ndarray) -> np.ndarray:
    """For each i, the largest j < i with sizes[j] > sizes[i], or -1."""
    m = sizes.size
    out = np.full(m, -1, dtype=np.int64)
    if m < 2:
        return out
    positions = np.arange(m)
    for t in np.unique(sizes):
        at = np.flatnonzero(sizes == t)
        at = at[at > 0]
        if at.size == 0:
            continue
        last = np.maximum.accumulate(np.where(sizes > t, positions, -1))
        out[at] = last[at - 1]
    return out


class _Frame:
    """The above-threshold pixels of one frame, their groups and the ASIC grid."""

    def __init__(self, idx, lab, shape, asics):
        self.idx = idx
        self.lab = lab.copy()
        self.nx = shape[1]
        self.asics = asics
        self.index_of = {int(p): k for k, p in enumerate(idx.tolist())}
        self.members: dict[int, list[int]] = {}
        for k, g in enumerate(self.lab.tolist()):
            self.members.setdefault(g, []).append(k)

    def flat(self, fs_local, ss_local, asic):
        a_ss, a_fs = asic
        return (ss_local + a_ss * self.asics.asic_ny) * self.nx + fs_local + a_fs * self.asics.asic_nx


def _sweep(frame: _Frame, seed_k: int, asic, claimed, infs, inss, taken: set):
    """OM's grow loop for one peak, literally: returns the list of pixel positions (into idx) in the
    order OM appends them. ``infs``/``inss`` are OM's coordinate lists (updated in place);
    ``claimed(k)`` says whether pixel k belongs to an earlier peak; ``taken`` collects this peak's."""
    anx, any_ = frame.asics.asic_nx, frame.asics.asic_ny
    seed = int(frame.idx[seed_k])
    ss, fs = divmod(seed, frame.nx)
    _grow_extend(infs, inss, 0)
    infs[0] = fs - asic[1] * anx
    inss[0] = ss - asic[0] * any_
    order: list[int] = []
    num = 0
    while True:
        before = num
        p = 0
        while p <= num:
            _grow_extend(infs, inss, p)
            for dfs, dss in SEARCH:
                f = infs[p] + dfs
                s = inss[p] + dss
                if f < 0 or f >= anx or s < 0 or s >= any_:
                    continue
                k = frame.index_of.get(frame.flat(f, s, asic))
                if k is None or k in taken or claimed(k):
                    continue
                _grow_extend(infs, inss, num)
                infs[num] = f
                inss[num] = s
                taken.add(k)
                order.append(k)
                num += 1
            p += 1
        if before == num:
            return order


def _grow_extend(infs, inss, n):
    while len(infs) <= n:
        infs.append(0)
        inss.append(0)


def merge_like_om(
    idx: np.ndarray, lab: np.ndarray, n_groups: int, first: np.ndarray, big: int, shape, asics
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Group labels after OM's flood fill: ``lab`` with the groups OM merges relabelled into
    the group that absorbed them, and OM's pixel order (flat indices) of each merged group. ``idx``: sorted flat indices of the above-threshold pixels,
    ``lab``: their connected-component labels, ``first``: each group's scan key
    (``asic * n_pixels + local row-major index`` of its first inner pixel; ``big``: never a seed)."""
    seeded = np.flatnonzero(first != big)
    if seeded.size == 0:
        return lab, {}
    seeded = seeded[np.argsort(first[seeded], kind="stable")]
    n_pixels = shape[0] * shape[1]
    asic_of = np.where(first != big, first // n_pixels, -1)
    final_size = np.bincount(lab, minlength=n_groups).astype(np.int64)
    frame = _Frame(idx, lab, shape, asics)
    done = np.zeros(n_groups, bool)  # processed or absorbed: claimed by an earlier peak
    merged_orders: dict[int, np.ndarray] = {}
    orders: dict[int, list[int]] = {}  # group -> positions into idx in OM's append order
    processed: list[int] = []

    def seed_of(g):
        return _seed(frame, g, first[g], n_pixels)

    def order_of(g):
        if g not in orders:
            members = set(frame.members[g])
            orders[g] = _sweep(
                frame, seed_of(g), _asic_pair(asic_of[g], asics), lambda k: k not in members, [], [], set()
            )
        return orders[g]

    pending = seeded
    prev = _previous_larger(final_size[pending])
    i = 0
    while i < pending.size:
        g = int(pending[i])
        h = int(pending[prev[i]]) if prev[i] >= 0 else -1
        if h >= 0 and asic_of[h] == asic_of[g]:
            # The stale entry is a pixel of an earlier peak of this ASIC: nothing free next to it.
            done[g] = True
            processed.append(g)
            i += 1
            continue
        s = int(final_size[g])
        if h < 0:
            stale = (0, 0)  # never written in this frame
        else:
            ss, fs = divmod(int(idx[order_of(h)[s]]), shape[1])
            stale = (fs % asics.asic_nx, ss % asics.asic_ny)
        asic = _asic_pair(asic_of[g], asics)
        if not _free_neighbour(frame, stale, asic, g, done):
            done[g] = True
            processed.append(g)
            i += 1
            continue
        # OM reaches out from the stale entry: follow its loop literally for this peak.
        infs, inss = _stale_lists(frame, processed, order_of, final_size, asics, shape)
        order = _sweep(
            frame,
            seed_of(g),
            asic,
            lambda k: int(frame.lab[k]) != g and bool(done[int(frame.lab[k])]),
            infs,
            inss,
            set(),
        )
        orders[g] = order
        members = np.array(order, dtype=np.int64)
        merged_orders[g] = idx[members]
        for other in set(frame.lab[members].tolist()) - {g}:
            done[other] = True
        frame.lab[members] = g
        frame.members[g] = order
        final_size[g] = members.size
        done[g] = True
        processed.append(g)
        # Sizes changed: redo the stale-entry bookkeeping for the peaks still to come.
        rest = [x for x in pending[i + 1 :].tolist() if not done[x]]
        pending = np.array(processed + rest, dtype=np.int64)
        prev = _previous_larger(final_size[pending])
        i = len(processed)
    return frame.lab, merged_orders


def _asic_pair(asic_index, asics):
    """(ASIC row, ASIC column) of a row-major ASIC index."""
    return divmod(int(asic_index), asics.nasics_x)


def _seed(frame, g, first_key, n_pixels) -> int:
    """Position (into idx) of group g's first inner pixel."""
    local = int(first_key % n_pixels)
    a_ss, a_fs = _asic_pair(first_key // n_pixels, frame.asics)
    lss, lfs = divmod(local, frame.asics.asic_nx)
    return frame.index_of[frame.flat(lfs, lss, (a_ss, a_fs))]


def _free_neighbour(frame, stale, asic, g, done) -> bool:
    """Whether OM's search around the stale entry finds a pixel no earlier peak claimed."""
    anx, any_ = frame.asics.asic_nx, frame.asics.asic_ny
    for dfs, dss in SEARCH:
        f = stale[0] + dfs
        s = stale[1] + dss
        if f < 0 or f >= anx or s < 0 or s >= any_:
            continue
        k = frame.index_of.get(frame.flat(f, s, asic))
        if k is None:
            continue
        other = int(frame.lab[k])
        if other != g and not done[other]:
            return True
    return False


def _stale_lists(frame, processed, order_of, final_size, asics, shape):
    """OM's coordinate lists as the peaks processed so far left them."""
    longest = int(max((final_size[g] for g in processed), default=0))
    infs = [0] * (longest + 1)
    inss = [0] * (longest + 1)
    filled = np.zeros(longest + 1, bool)
    for g in reversed(processed):
        n = int(final_size[g])
        if filled[:n].all():
            continue
        order = order_of(g)
        for j in range(n):
            if not filled[j]:
                ss, fs = divmod(int(frame.idx[order[j]]), shape[1])
                infs[j] = fs % asics.asic_nx
                inss[j] = ss % asics.asic_ny
                filled[j] = True
    return infs, inss


def om_append_order(pixels: np.ndarray, seed: int, shape, asics) -> np.ndarray:
    """OM's append order of one group's pixels (flat indices, any order) grown from ``seed``."""
    pixels = np.sort(np.asarray(pixels, dtype=np.int64))
    lab = np.zeros(pixels.size, dtype=np.int64)
    frame = _Frame(pixels, lab, shape, asics)
    ss, fs = divmod(int(seed), shape[1])
    asic = (ss // asics.asic_ny, fs // asics.asic_nx)
    order = _sweep(frame, frame.index_of[int(seed)], asic, lambda k: False, [], [], set())
    return pixels[np.array(order, dtype=np.int64)]


def om_first_centre(values: np.ndarray, offsets: np.ndarray, fs: np.ndarray, ss: np.ndarray):
    """OM's first centre of mass of one peak, in its float32 arithmetic: pixels in append order,
    weights value − radial mean. Returns (com_fs, com_ss) or None when the weight sum is ~0."""
    sum_i = np.float32(0)
    sum_fs = np.float32(0)
    sum_ss = np.float32(0)
    for value, offset, f, s in zip(
        values.astype(np.float32), offsets.astype(np.float32), fs.astype(np.float32), ss.astype(np.float32)
    ):
        w = np.float32(value - offset)
        sum_i = np.float32(sum_i + w)
        sum_fs = np.float32(sum_fs + np.float32(w * f))
        sum_ss = np.float32(sum_ss + np.float32(w * s))
    if abs(float(sum_i)) < 1e-10:
        return None
    return float(np.float32(float(sum_fs) / abs(float(sum_i)))), float(np.float32(float(sum_ss) / abs(float(sum_i))))
