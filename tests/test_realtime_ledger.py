"""The real-time ledger (SQLite) and the micro-batcher: restart semantics, config and file changes,
no duplicates, throughput; batches by count and by time with an injected clock."""

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from photonflow.io import FrameRef
from photonflow.realtime import Ledger, MicroBatcher, stat_refs
from photonflow.realtime.ledger import DEFAULT_NAME

REPO = Path(__file__).resolve().parents[1]


def refs(n, prefix="/data/f", event=None):
    return [FrameRef(f"{prefix}{i:05d}.tif", event) for i in range(n)]


def items(rs, size=100, mtime=1000.0):
    return [(r, size, mtime) for r in rs]


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "out" / "ledger.sqlite") as led:
        yield led


# ----------------------------------------------------------------------------- ledger


def test_ledger_file_in_output_directory_wal_mode(tmp_path):
    with Ledger(tmp_path) as led:  # a directory: the ledger file goes inside
        assert led.path == tmp_path / DEFAULT_NAME
        led.add(items(refs(2)), "c")
    con = sqlite3.connect(tmp_path / DEFAULT_NAME)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT count(*) FROM items").fetchone()[0] == 2
    con.close()
    with Ledger(tmp_path / "results" / "run1") as led:  # an output directory not made yet
        assert led.path == tmp_path / "results" / "run1" / DEFAULT_NAME


def test_add_returns_new_items_in_order_and_never_twice(ledger):
    rs = refs(5)
    assert ledger.add(items(rs), "c1") == rs
    assert ledger.add(items(rs), "c1") == []  # pending already: not queued again
    # duplicates inside one call, mixed with new ones: each ref once, in input order
    more = refs(3, prefix="/data/g")
    batch = items([more[0], rs[1], more[0], more[1], more[2], more[1]])
    assert ledger.add(batch, "c1") == more
    assert ledger.counts() == {"pending": 8, "in_flight": 0, "done": 0, "failed": 0, "total": 8}
    # single-frame files are event -1 in the database, None in the refs
    assert all(it.ref.event is None for it in ledger.items())
    assert len(ledger) == 8
    # the same file as a multi-frame item is a different item
    assert ledger.add(items([FrameRef(rs[0].path, 0)]), "c1") == [FrameRef(rs[0].path, 0)]


def test_lifecycle_outputs_errors_attempts_and_times(ledger):
    a, b, c = refs(3)
    t0 = time.time()
    ledger.add(items([a, b, c]), "c1")
    assert ledger.state(a) == "pending" and ledger.state(FrameRef("/nope.tif")) is None
    assert ledger.start([a, b, FrameRef("/unknown.tif")]) == [a, b]
    assert ledger.start([a]) == []  # already in flight: not claimed twice
    assert ledger.done(a, ["/out/a.chi", Path("/out/a.h5")])
    assert ledger.failed(b, ValueError("bad frame: truncated"))
    assert not ledger.done(FrameRef("/unknown.tif"), [])
    ia, ib, ic = ledger.get(a), ledger.get(b), ledger.get(c)
    assert (ia.state, ia.outputs, ia.error, ia.attempts) == ("done", ["/out/a.chi", "/out/a.h5"], None, 1)
    assert ia.config_hash == "c1"
    assert (ib.state, ib.error, ib.attempts) == ("failed", "bad frame: truncated", 1)
    assert (ic.state, ic.attempts, ic.started_at, ic.finished_at) == ("pending", 0, None, None)
    assert t0 <= ia.arrived_at <= ia.started_at <= ia.finished_at <= time.time()
    assert ledger.counts() == {"pending": 1, "in_flight": 0, "done": 1, "failed": 1, "total": 3}
    assert [it.ref for it in ledger.items("done")] == [a]
    assert [it.ref for it in ledger.items()] == [a, b, c]  # arrival order
    with pytest.raises(ValueError, match="state must be one of"):
        list(ledger.items("finished"))
    # a finished item, same file and config: no work; a failed one can be retried on purpose
    assert ledger.add(items([a, b]), "c1") == []
    assert ledger.retry_failed() == [b]
    assert ledger.start([b]) == [b] and ledger.get(b).attempts == 2


def test_restart_recovers_in_flight_and_pending(tmp_path):
    path = tmp_path / "ledger.sqlite"
    rs = refs(6)
    led = Ledger(path)
    led.add(items(rs), "c1")
    led.start(rs[:4])
    led.done(rs[0], ["/out/0"])
    led.failed(rs[1], "unreadable")
    # rs[2], rs[3] in flight, rs[4], rs[5] pending when the process "dies" (no close)
    led2 = Ledger(path)
    recovered = led2.recover()
    assert recovered == [rs[2], rs[3], rs[4], rs[5]]
    assert led2.counts() == {"pending": 4, "in_flight": 0, "done": 1, "failed": 1, "total": 6}
    assert led2.recover() == recovered  # idempotent until they are started
    assert led2.start(recovered) == recovered
    assert [led2.get(r).attempts for r in rs[2:]] == [2, 2, 1, 1]  # the in-flight ones are retries
    # the catch-up scan hands the same files over again: nothing is queued twice
    assert led2.add(items(rs), "c1") == []
    led2.done_many([(r, [f"/out/{i}"]) for i, r in enumerate(recovered)])
    assert led2.counts()["done"] == 5
    led.close()
    led2.close()


def test_recover_after_a_killed_process(tmp_path):
    """A process that dies (os._exit) between start() and done() leaves a ledger that resumes."""
    path = tmp_path / "ledger.sqlite"
    code = (
        "import os, sys\n"
        "from photonflow.io import FrameRef\n"
        "from photonflow.realtime.ledger import Ledger\n"
        "led = Ledger(sys.argv[1])\n"
        "rs = [FrameRef(f'/d/{i}.tif') for i in range(100)]\n"
        "led.add([(r, 1, 1.0) for r in rs], 'c')\n"
        "led.start(rs[:50])\n"
        "led.done_many([(r, ['/o']) for r in rs[:30]])\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=REPO, timeout=60)
    with Ledger(path) as led:
        assert led.counts() == {"pending": 50, "in_flight": 20, "done": 30, "failed": 0, "total": 100}
        rec = led.recover()
        assert len(rec) == 70 and rec[:20] == [FrameRef(f"/d/{i}.tif") for i in range(30, 50)]


def test_config_change_reprocesses_done_and_failed(ledger):
    a, b, c = refs(3)
    ledger.add(items([a, b, c]), "c1")
    ledger.start([a, b])
    ledger.done(a, ["/o/a"])
    ledger.failed(b, "x")
    assert ledger.add(items([a, b, c]), "c1") == []
    assert ledger.add(items([a, b, c]), "c2") == [a, b]  # c is still pending: queued once
    ia = ledger.get(a)
    assert (ia.state, ia.config_hash, ia.error) == ("pending", "c2", None)
    assert ia.outputs == ["/o/a"]  # the old outputs stay listed until the redo replaces them
    # recover(config_hash) records the configuration pending items will be processed under
    ledger.recover("c3")
    assert {it.config_hash for it in ledger.items("pending")} == {"c3"}


def test_file_change_reprocesses_single_frame_files(ledger):
    a, b, c = refs(3)
    ledger.add([(a, 100, 10.0), (b, 100, 10.0), (c, 100, 10.0)], "c1")
    ledger.start([a, b, c])
    for r in (a, b, c):
        ledger.done(r, [])
    assert ledger.add([(a, 100, 10.0), (b, 101, 10.0), (c, 100, 11.0)], "c1") == [b, c]
    assert ledger.add([(a, 99, 9.0)], "c1") == [a]  # any change, smaller or older too
    assert ledger.get(b).size == 101 and ledger.get(c).mtime == 11.0


def test_growing_multiframe_file_is_not_a_change_but_shrinking_is(ledger):
    """SWMR growth changes the file's size and mtime, not its earlier events."""
    ev = [FrameRef("/d/stack.h5", i) for i in range(3)]
    ledger.add([(ev[0], 1000, 5.0), (ev[1], 2000, 6.0)], "c1")
    ledger.start(ev[:2])
    ledger.done_many([(r, []) for r in ev[:2]])
    # the catch-up scan after a restart sees the final size and mtime for every event
    assert ledger.add([(r, 3000, 7.0) for r in ev], "c1") == [ev[2]]
    assert ledger.add([(ev[0], 500, 7.0)], "c1") == [ev[0]]  # shrank: rewritten
    ledger.start([ev[0]])
    ledger.done(ev[0], [])
    assert ledger.add([(ev[0], 500, 4.0)], "c1") == [ev[0]]  # older mtime: replaced


def test_changed_file_while_in_flight_is_redone(ledger):
    a, b = refs(2)
    ledger.add(items([a, b]), "c1")
    ledger.start([a, b])
    assert ledger.add(items([a, b]), "c1") == []  # unchanged: the running attempt counts
    assert ledger.add([(a, 200, 1000.0)], "c1") == [a]  # rewritten meanwhile: queued again
    assert ledger.state(a) == "pending" and ledger.start([a]) == [a]


def test_stat_refs_and_add_refs(tmp_path, ledger):
    f = tmp_path / "x.tif"
    f.write_bytes(b"12345")
    st = f.stat()
    r = FrameRef(str(f))
    h = [FrameRef(str(tmp_path / "s.h5"), i) for i in range(2)]
    assert stat_refs([r]) == [(r, 5, st.st_mtime)]
    assert stat_refs(h) == [(h[0], -1, -1.0), (h[1], -1, -1.0)]  # vanished: still recorded
    assert ledger.add_refs([r], "c") == [r]
    assert (ledger.get(r).size, ledger.get(r).mtime) == (5, st.st_mtime)


def test_throughput_and_threads(tmp_path):
    """10 000 items/s is the target: add, start and done of 20 000 items in batches."""
    with Ledger(tmp_path / "l.sqlite") as led:
        rs = refs(20_000)
        t = time.perf_counter()
        for k in range(0, len(rs), 5000):
            assert len(led.add(items(rs[k : k + 5000]), "c")) == 5000
        t_add = time.perf_counter() - t
        t = time.perf_counter()
        for k in range(0, len(rs), 500):
            chunk = led.start(rs[k : k + 500])
            led.done_many([(r, ["/o"]) for r in chunk])
        t_done = time.perf_counter() - t
        assert led.counts()["done"] == 20_000
        print(f"ledger: add {20_000 / t_add:.0f} items/s, start+done {20_000 / t_done:.0f} items/s")
        assert t_add < 2.0 and t_done < 2.0

        # threads share one ledger: every item claimed exactly once
        more = refs(4000, prefix="/t/f")
        led.add(items(more), "c")
        claimed: list = []
        lock = threading.Lock()

        def worker():
            for k in range(0, len(more), 100):
                got = led.start(more[k : k + 100])
                led.done_many([(r, []) for r in got])
                with lock:
                    claimed.extend(got)

        ts = [threading.Thread(target=worker) for _ in range(4)]
        for t_ in ts:
            t_.start()
        for t_ in ts:
            t_.join()
        assert sorted(claimed) == sorted(more)
        assert {led.get(r).attempts for r in more} == {1}


def test_closed_ledger_raises(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    led.close()
    with pytest.raises(RuntimeError, match="closed"):
        led.add(items(refs(1)), "c")


# ----------------------------------------------------------------------------- batcher


class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def test_batcher_by_count():
    b = MicroBatcher(max_frames=4, max_wait_s=1.0, clock=Clock())
    b.add(range(3))
    assert b.ready() is None and len(b) == 3 and b.timeout() == pytest.approx(1.0)
    b.add(range(3, 10))
    assert b.timeout() == 0.0
    assert b.ready() == [0, 1, 2, 3]
    assert b.ready() == [4, 5, 6, 7]
    assert b.ready() is None  # 2 left, not old enough
    assert b.flush() == [8, 9] and b.flush() == [] and b.ready() is None and b.timeout() is None


def test_batcher_by_time_with_injected_clock():
    clock = Clock(10.0)
    b = MicroBatcher(max_frames=32, max_wait_s=0.02, clock=clock)
    b.add(["a"])
    clock.t = 10.015
    b.add(["b", "c"])
    assert b.ready() is None
    assert b.timeout() == pytest.approx(0.005)
    assert b.deadline() == pytest.approx(10.02) and b.oldest() == 10.0
    clock.t = 10.02
    assert b.ready() == ["a", "b", "c"]  # the oldest waited max_wait_s: everything waiting goes
    # explicit times instead of the clock
    b.add(["d"], now=20.0)
    assert b.ready(now=20.019) is None
    assert b.ready(now=20.02) == ["d"]
    # an overdue backlog larger than max_frames still comes in bounded batches
    b2 = MicroBatcher(max_frames=2, max_wait_s=0.0, clock=clock)
    b2.add([1, 2, 3])
    assert b2.ready() == [1, 2] and b2.ready() == [3] and b2.ready() is None


def test_batcher_rejects_bad_settings():
    with pytest.raises(ValueError):
        MicroBatcher(max_frames=0)
    with pytest.raises(ValueError):
        MicroBatcher(max_wait_s=-1)


def test_realtime_package_is_pure():
    """No Prefect or Dask in photonflow.realtime (the science core rule)."""
    root = REPO / "photonflow"
    for f in [*(root / "realtime").glob("*.py"), root / "simulate" / "detector.py"]:
        text = f.read_text()
        for word in ("import prefect", "from prefect", "import dask", "from dask"):
            assert word not in text, f"{f.name} imports {word.split()[-1]}"
    assert os.path.exists(root / "realtime" / "__init__.py")
