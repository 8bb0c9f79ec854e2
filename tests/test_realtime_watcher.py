"""The real-time file watcher with the simulated detector writer: only complete files are handed over
(slow in-place writers, renames, never-closed files under the settle rule, growing SWMR HDF5 files
followed by event count), each once; catch-up scans; and a consumer killed and restarted mid-stream
that ends with every frame done exactly once in the ledger."""

import collections
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import fabio
import h5py
import numpy as np
import pytest

from photonflow.io import FrameReadError, FrameRef, atomic_path, read_frame
from photonflow.realtime import FileWatcher, Ledger, MicroBatcher, is_ignored_name
from photonflow.simulate.detector import DetectorWriter, tiff_bytes

pytestmark = pytest.mark.timeout(120)

SHAPE = (48, 64)


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(7).integers(0, 60000, (6, *SHAPE), dtype=np.int32)


def collect(watcher, writer=None, n=None, timeout=15.0, on_refs=None):
    """Take refs from ``watcher`` until ``writer`` is done and has written as many items as were got
    (or ``n`` refs); returns {ref: time handed over}. Fails on a duplicate."""
    got = {}
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        refs = watcher.get(timeout=0.05)
        t = time.time()
        for r in refs:
            assert r not in got, f"{r} handed over twice"
            got[r] = t
        if on_refs is not None and refs:
            on_refs(refs)
        if writer is not None and not writer.running and len(got) >= len(writer.written):
            break
        if n is not None and len(got) >= n:
            break
    return got


def read_h5_event(path, event):
    """Read an event of a (possibly still growing) SWMR file. HDF5 shares one open file per process:
    while the watcher thread (same process here, unlike a beamline) holds it open with other flags,
    opening as a SWMR reader fails; try again shortly (the watcher closes its handle at once)."""
    for attempt in range(100):
        try:
            with h5py.File(path, "r", swmr=True, locking=False) as f:
                return f["/entry/data/data"][event]
        except OSError as exc:
            if "already open" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.01)


def latencies(writer, got):
    return sorted(got[FrameRef(p, e)] - t for p, e, t in writer.written)


# ----------------------------------------------------------------------------- writers × watcher


def test_slow_inplace_writer_is_never_handed_over_early(tmp_path, frames):
    """Each file is written in 4 parts 30 ms apart: readable-looking but incomplete for 90 ms."""
    contents = {}

    def check(refs):  # read at the moment of hand-over: must be complete and equal what was written
        for r in refs:
            i = int(Path(r.path).stem.split("_")[1])
            contents[r] = np.array_equal(read_frame(r.path), frames[i % len(frames)])

    with FileWatcher(tmp_path, patterns=["*.tif"], settle_s=0.5, poll_s=0.05) as w:
        assert w.mode == "inotify"
        writer = DetectorWriter(tmp_path, frames, 50, "inplace", parts=4, part_delay_s=0.03, count=12).start()
        got = collect(w, writer, on_refs=check)
    writer.join()
    assert set(got) == {FrameRef(p, e) for p, e, _ in writer.written}
    assert len(contents) == 12 and all(contents.values())
    # handed over at close, not at the settle time
    assert max(latencies(writer, got)) < 0.3


def test_rename_into_place(tmp_path, frames):
    with FileWatcher(tmp_path, settle_s=0.5, poll_s=0.05) as w:
        writer = DetectorWriter(tmp_path, frames, 300, "rename", parts=2, count=150).start()
        got = collect(w, writer)
    writer.join()
    assert set(got) == {FrameRef(p, None) for p, _, _ in writer.written}
    assert not any(is_ignored_name(Path(r.path).name) for r in got)
    for i in (0, 17, 149):
        assert np.array_equal(read_frame(writer.path(i)), frames[i % len(frames)])
    lat = latencies(writer, got)
    print(
        f"inotify hand-over latency (rename, 300 Hz): p50 {statistics.median(lat) * 1e3:.2f} ms, "
        f"max {lat[-1] * 1e3:.2f} ms"
    )
    assert statistics.median(lat) < 0.05
    assert lat[-1] < 0.25  # no stall on watchdog's rename pairing (its default window is 0.5 s)


@pytest.mark.parametrize("use_inotify", [False, True], ids=["polling", "inotify"])
def test_settle_rule_for_files_never_closed(tmp_path, frames, use_inotify):
    """The "settle" writer keeps each descriptor open 3 s after its last byte: no close to observe."""
    settle = 0.25
    with FileWatcher(tmp_path, settle_s=settle, poll_s=0.05, use_inotify=use_inotify) as w:
        assert w.mode == ("inotify" if use_inotify else "polling")
        writer = DetectorWriter(
            tmp_path, frames, 40, "settle", parts=3, part_delay_s=0.04, count=6, hold_open_s=3.0
        ).start()
        got = collect(w, n=6, timeout=10)
        for r, t in got.items():
            assert np.array_equal(read_frame(r.path), frames[int(Path(r.path).stem.split("_")[1])])
        writer.stop()
    lat = latencies(writer, got)
    print(
        f"{w.mode} settle-rule hand-over latency: p50 {statistics.median(lat) * 1e3:.0f} ms "
        f"(settle_s {settle}, poll_s 0.05)"
    )
    assert min(lat) >= settle - 0.01  # never before size and mtime were stable for settle_s
    assert max(lat) < settle + 1.0  # and well before the writer closed the files (3 s)


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "polling"])
def test_growing_swmr_hdf5_followed_by_event_count(tmp_path, frames, use_inotify):
    writer = DetectorWriter(tmp_path, frames, 100, "hdf5_swmr", count=30, hdf5_name="scan/stack.h5")
    with FileWatcher(tmp_path, settle_s=0.3, poll_s=0.05, use_inotify=use_inotify) as w:
        seen = []

        def check(refs):  # readable as a SWMR reader at hand-over, while the writer still appends
            for r in refs:
                assert np.array_equal(read_h5_event(r.path, r.event), frames[r.event % len(frames)])
            seen.extend(refs)

        writer.start()
        got = collect(w, writer, on_refs=check)
        assert w.get(timeout=0.3) == []  # the close hands over nothing new
    writer.join()
    path = str(writer.hdf5_path)
    assert seen == [FrameRef(path, i) for i in range(30)]  # in order, each once
    lat = latencies(writer, got)
    print(
        f"SWMR {'inotify' if use_inotify else 'polling'} hand-over latency: "
        f"p50 {statistics.median(lat) * 1e3:.1f} ms, max {lat[-1] * 1e3:.1f} ms"
    )
    assert statistics.median(lat) < (0.05 if use_inotify else 0.3)  # followed live, not at close
    assert np.array_equal(read_frame(path, 29), frames[29 % len(frames)])  # closed: plain reads work


def test_non_swmr_hdf5_is_handed_over_when_closed(tmp_path):
    """A writer without SWMR: nothing while it writes (the file cannot be opened), all events at close."""
    path = tmp_path / "plain.h5"
    code = (
        "import sys, time, h5py\n"
        "f = h5py.File(sys.argv[1], 'w', libver='latest')\n"
        "ds = f.create_dataset('entry/data/data', shape=(0, 4, 4), maxshape=(None, 4, 4), dtype='i4')\n"
        "for i in range(5):\n"
        "    ds.resize(i + 1, axis=0); ds[i] = i; f.flush(); time.sleep(0.1)\n"
        "print(time.time(), flush=True)\n"
        "f.close()\n"
    )
    with FileWatcher(tmp_path, settle_s=0.3, poll_s=0.05) as w:
        proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        got = collect(w, n=5, timeout=15)
        out, _ = proc.communicate(timeout=30)
        t_last_frame = float(out)
    assert list(got) == [FrameRef(str(path), i) for i in range(5)]
    assert min(got.values()) >= t_last_frame  # nothing before the writer had finished
    assert read_frame(path, 4)[0, 0] == 4


# ----------------------------------------------------------------------------- names, trees, scans


def _put(path, frame):
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(tiff_bytes(frame))


def test_recursive_patterns_and_hidden_or_temporary_names(tmp_path, frames):
    with (
        FileWatcher(tmp_path, patterns=("*.tif", "*.edf"), settle_s=0.3, poll_s=0.05) as w,
        FileWatcher(tmp_path, patterns=("*.tif",), recursive=False, settle_s=0.3, poll_s=0.05) as flat,
    ):
        _put(tmp_path / "top.tif", frames[0])
        _put(tmp_path / "a" / "b" / "deep.TIF", frames[1])  # new subdirectories, case-insensitive pattern
        fabio.edfimage.EdfImage(data=frames[2]).write(str(tmp_path / "a" / "x.edf"))
        (tmp_path / "notes.txt").write_text("not a frame")
        # hidden and temporary names are ignored until renamed to a matching name
        for name in (".hidden.tif", "frame.tif.part", "frame.tif.tmp", "frame.tif~"):
            (tmp_path / name).write_bytes(tiff_bytes(frames[3]))
        _put(tmp_path / ".cache" / "in_hidden_dir.tif", frames[3])
        got = collect(w, n=3, timeout=5)
        time.sleep(0.5)  # past settle_s: nothing else may come
        got.update(collect(w, n=1, timeout=0.2))
        assert set(got) == {
            FrameRef(str(tmp_path / "top.tif")),
            FrameRef(str(tmp_path / "a" / "b" / "deep.TIF")),
            FrameRef(str(tmp_path / "a" / "x.edf")),
        }
        os.replace(tmp_path / "frame.tif.part", tmp_path / "frame.tif")
        assert w.get(timeout=2) == [FrameRef(str(tmp_path / "frame.tif"))]
        flat_got = collect(flat, n=2, timeout=1)
        assert set(flat_got) == {FrameRef(str(tmp_path / "top.tif")), FrameRef(str(tmp_path / "frame.tif"))}


def test_truncated_file_waits_then_rewritten_and_changed_files_come_again(tmp_path, frames):
    data = tiff_bytes(frames[0])
    p = tmp_path / "f_000001.tif"
    with FileWatcher(tmp_path, settle_s=0.2, poll_s=0.05, give_up_s=1.5) as w:
        p.write_bytes(data[: len(data) // 2])  # closed, but truncated: not complete
        assert w.get(timeout=0.5) == []
        with open(p, "ab") as f:  # the writer appends the rest
            f.write(data[len(data) // 2 :])
        assert w.get(timeout=2) == [FrameRef(str(p))]
        assert w.get(timeout=0.4) == []
        _put(p, frames[1])  # rewritten: handed over again (the ledger decides about the work)
        assert w.get(timeout=2) == [FrameRef(str(p))]
        assert np.array_equal(read_frame(p), frames[1])
        # a file that stays truncated is handed over after give_up_s, so its failure gets recorded
        q = tmp_path / "broken.tif"
        q.write_bytes(data[:1000])
        t = time.monotonic()
        assert w.get(timeout=4) == [FrameRef(str(q))]
        assert time.monotonic() - t >= 1.4
        with pytest.raises(FrameReadError, match="truncated"):
            read_frame(q)


def test_scan_catches_up_and_live_path_takes_the_rest(tmp_path, frames):
    old = time.time() - 60
    names = ["run_10.tif", "run_2.tif", "sub/run_1.tif"]
    for n in names:
        _put(tmp_path / n, frames[0])
        os.utime(tmp_path / n, (old, old))
    with h5py.File(tmp_path / "stack.h5", "w") as f:
        f["entry/data/data"] = frames[:3]
    os.utime(tmp_path / "stack.h5", (old, old))
    _put(tmp_path / "young.tif", frames[1])  # written just now (< settle_s): left to the live path
    with FileWatcher(tmp_path, settle_s=1.0, poll_s=0.05) as w:
        assert w.get(timeout=0.1) == []  # files present at start are not "arrivals" by themselves
        backlog = w.scan()
        h5 = str(tmp_path / "stack.h5")
        assert backlog == [
            FrameRef(str(tmp_path / "run_2.tif")),
            FrameRef(str(tmp_path / "run_10.tif")),
            FrameRef(h5, 0),
            FrameRef(h5, 1),
            FrameRef(h5, 2),
            FrameRef(str(tmp_path / "sub/run_1.tif")),
        ]  # natural order
        assert w.scan() == []  # nothing twice
        assert w.get(timeout=3) == [FrameRef(str(tmp_path / "young.tif"))]
        _put(tmp_path / "new.tif", frames[2])
        assert w.get(timeout=2) == [FrameRef(str(tmp_path / "new.tif"))]
        assert w.scan() == [] and w.get(timeout=0.4) == []
    # a watcher that was never started can scan too
    assert len(FileWatcher(tmp_path, settle_s=0.1).scan()) == 8


def test_rescan_after_lost_events(tmp_path, frames):
    """inotify events lost (kernel queue overflow, announced by watchdog's warning): a rescan finds the files."""
    with FileWatcher(tmp_path, settle_s=0.2, poll_s=0.05) as w:
        w._observer.unschedule_all()  # from here on no event arrives, as after an overflow
        _put(tmp_path / "lost.tif", frames[0])
        assert w.get(timeout=0.4) == []
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        assert w.get(timeout=2) == [FrameRef(str(tmp_path / "lost.tif"))]


def test_polling_rescan_sees_files_rewritten_in_place(tmp_path, frames):
    """Polling lists only directories whose mtime changed; a file rewritten in place (the directory
    unchanged) is found by the full rescan every rescan_s."""
    p = tmp_path / "x.tif"
    with FileWatcher(tmp_path, settle_s=0.1, poll_s=0.05, use_inotify=False, rescan_s=0.5) as w:
        _put(p, frames[0])
        assert w.get(timeout=2) == [FrameRef(str(p))]
        with open(p, "r+b") as f:
            f.seek(0)
            f.write(tiff_bytes(frames[1]))
        t = time.monotonic()
        assert w.get(timeout=3) == [FrameRef(str(p))]
        assert time.monotonic() - t < 1.5
        assert np.array_equal(read_frame(p), frames[1])


def test_watcher_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FileWatcher(tmp_path / "missing").start()
    w = FileWatcher(tmp_path).start()
    with pytest.raises(RuntimeError, match="already started"):
        w.start()
    w.stop()
    assert not w.running


def test_detector_writer_options(tmp_path, frames):
    w = DetectorWriter(
        tmp_path,
        lambda i: np.full(SHAPE, i, np.uint16),
        None,
        "rename",
        name_pattern="r/{:03d}.tif",
        count=5,
        start_index=10,
        keep_last=2,
    )
    w.start().join()
    assert [os.path.basename(p) for p, _, _ in w.written] == [f"{i:03d}.tif" for i in range(10, 15)]
    assert sorted(os.listdir(tmp_path / "r")) == ["013.tif", "014.tif"]  # keep_last deleted the rest
    assert np.array_equal(read_frame(tmp_path / "r" / "014.tif"), np.full(SHAPE, 4, np.uint16))
    ts = [t for _, _, t in w.written]
    assert ts == sorted(ts) and w.achieved_rate_hz > 0
    with pytest.raises(ValueError, match="mode"):
        DetectorWriter(tmp_path, frames, 1, "magic")
    with pytest.raises(ValueError, match="count"):
        DetectorWriter(tmp_path, lambda i: frames[0], 1, "rename")


# ----------------------------------------------------------------------------- crash and restart


class Consumer:
    """A minimal live consumer: watcher → ledger → micro-batches → "process" (read the frame, write
    it atomically as .npy) → ledger.done. Counts how often each item was processed."""

    def __init__(self, data, out, processed, cfg="cfg-1"):
        self.data, self.out, self.processed, self.cfg = data, out, processed, cfg
        self.ledger = Ledger(out)
        self.watcher = FileWatcher(data, settle_s=0.3, poll_s=0.05).start()
        self.batcher = MicroBatcher(max_frames=8, max_wait_s=0.02)
        self.recovered = self.ledger.recover(self.cfg)
        self.batcher.add(self.recovered)
        self.batcher.add(self.ledger.add_refs(self.watcher.scan(), self.cfg))

    def output(self, ref):
        name = Path(ref.path).stem + ("" if ref.event is None else f"_{ref.event:05d}")
        return self.out / "frames" / f"{name}.npy"

    def process(self, batch, crash=False):
        batch = self.ledger.start(batch)
        results = []
        for ref in batch:
            frame = read_h5_event(ref.path, ref.event) if ref.event is not None else read_frame(ref.path)
            with atomic_path(self.output(ref)) as tmp:
                np.save(tmp, frame)
            self.processed[ref] += 1
            results.append((ref, [str(self.output(ref))]))
        if crash:  # outputs written, done() never recorded
            return batch
        self.ledger.done_many(results)
        return batch

    def step(self):
        refs = self.watcher.get(timeout=self.batcher.timeout() or 0.05)
        self.batcher.add(self.ledger.add_refs(refs, self.cfg))
        batches = []
        while (b := self.batcher.ready()) is not None:
            batches.append(b)
        return batches

    def stop(self):
        self.watcher.stop()
        self.ledger.close()


def test_consumer_killed_and_restarted_mid_stream(tmp_path, frames):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    tif = DetectorWriter(data, frames, 150, "rename", count=240)
    h5 = DetectorWriter(data, frames, 80, "hdf5_swmr", count=120, hdf5_name="eiger/series.h5")
    processed = collections.Counter()
    tif.start()
    h5.start()

    # first consumer: runs until ~60 items are done, then dies with a batch in flight
    first = Consumer(data, out, processed)
    crashed = None
    t_end = time.monotonic() + 20
    while crashed is None and time.monotonic() < t_end:
        for batch in first.step():
            if first.ledger.counts()["done"] >= 60 and crashed is None:
                crashed = first.process(batch, crash=True)
            elif crashed is None:
                first.process(batch)
    assert crashed, "the first consumer never got to the crash point"
    first.watcher.stop()  # the process is gone: its watcher stops, its ledger connection is dropped
    time.sleep(0.4)  # frames keep arriving while nothing runs

    # second consumer: recover + catch-up scan + live
    second = Consumer(data, out, processed)
    assert set(crashed) <= set(second.recovered)
    t_end = time.monotonic() + 30
    expected = None
    while time.monotonic() < t_end:
        for batch in second.step():
            second.process(batch)
        if not tif.running and not h5.running:
            expected = {FrameRef(p, e) for w in (tif, h5) for p, e, _ in w.written}
            if second.ledger.counts()["done"] >= len(expected) and len(second.batcher) == 0:
                break
    tif.join()
    h5.join()
    led = second.ledger
    counts = led.counts()
    second.stop()
    first.ledger.close()

    assert len(expected) == 360
    assert counts == {"pending": 0, "in_flight": 0, "done": 360, "failed": 0, "total": 360}
    assert {it.ref for it in Ledger(out).items("done")} == expected
    # processed exactly once, except the batch in flight at the crash: processed again (at-least-once),
    # with one result each (exactly-once results)
    assert set(processed) == expected
    assert {r for r, n in processed.items() if n == 2} == set(crashed)
    assert all(n == 1 for r, n in processed.items() if r not in crashed)
    with Ledger(out) as led:
        for ref in expected:
            item = led.get(ref)
            assert item.attempts == (2 if ref in crashed else 1)
            assert item.outputs == [str(second.output(ref))]
    assert len(list((out / "frames").glob("*.npy"))) == 360
    for ref in list(expected)[::37]:
        i = ref.event if ref.event is not None else int(Path(ref.path).stem.split("_")[1])
        assert np.array_equal(np.load(second.output(ref)), frames[i % len(frames)])
