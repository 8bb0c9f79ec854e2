"""The live session with the registry's processors, without Prefect: batch names, the batch finished in
one ledger transaction with its rows, and the watch killed between writing a batch's CXI files and
recording them, then restarted: the stale files are deleted and every frame has one result."""

import collections
import sqlite3
import time
from pathlib import Path

import pytest

from photonflow.deployments.cli.sfx import SIMULATED_DETECTOR_PF8
from photonflow.io import FrameRef, iter_frame_refs
from photonflow.io.cxi import read_cxi_sources
from photonflow.io.geom import load_geometry
from photonflow.realtime.ledger import Ledger, stat_refs
from photonflow.realtime.session import (
    LiveSession,
    ProcessorFactory,
    batch_name,
    build_processor,
    remove_stale_batch_files,
)
from photonflow.simulate.sfx import write_sfx_dataset

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]


class StaticSource:
    """A source whose every item is there at the start (the catch-up scan), nothing live."""

    def __init__(self, refs):
        self.refs = list(refs)

    def scan(self):
        return list(self.refs)

    def get(self, timeout=0.0):
        time.sleep(min(timeout, 0.05))
        return []


@pytest.fixture(scope="module")
def sfx_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sfx-session")
    ds = write_sfx_dataset(
        root / "data", load_geometry(REPO / "config" / "geometry" / "sim256.geom"), 24, frames_per_file=4, seed=11
    )
    refs = list(iter_frame_refs([str(p) for p in ds.cxi_files]))
    return ds, refs


def sfx_options(ds, out):
    return {
        "geometry": str(ds.geometry_path),
        "output_dir": str(out),
        "peakfinder8": SIMULATED_DETECTOR_PF8,
        "hits": {"min_peaks": 10, "max_peaks": 1000},
    }


def sfx_session(ledger, refs, options):
    """A session over ``refs`` (all there at the start), batches of 5, one worker process."""
    out = Path(options["output_dir"])
    return LiveSession(
        ProcessorFactory("sfx", options),
        ledger,
        [StaticSource(refs)],
        "cfg",
        max_frames=5,
        max_wait_s=0.01,
        workers=1,
        batch_dirs=[out / "peaks", out / "hits", out / "artifacts"],
    )


def key(path, event):
    return (str(path), -1 if event is None else int(event))


def test_batch_names_depend_on_the_items_only():
    a, b, c = FrameRef("/d/x.cxi", 0), FrameRef("/d/x.cxi", 1), FrameRef("/d/y.tif")
    assert batch_name([a, b]) == batch_name([b, a]) == batch_name([tuple(b), tuple(a)])
    assert len({batch_name([a, b]), batch_name([a]), batch_name([b]), batch_name([a, b, c])}) == 4
    assert batch_name([a]).startswith("live-") and len(batch_name([a])) == len("live-") + 16


def test_only_live_batch_files_that_no_done_item_names_are_removed(tmp_path):
    keep, stale = batch_name([FrameRef("/a")]), batch_name([FrameRef("/b")])
    peaks, curves = tmp_path / "peaks", tmp_path / "curves"
    peaks.mkdir()
    curves.mkdir()
    names = [
        peaks / f"{keep}.cxi",
        peaks / f"{stale}.cxi",
        peaks / f".{stale}.0123456789ab.tmp.cxi",
        curves / f"{stale}_full.h5",
        curves / f"{keep}_full.h5",
        peaks / "batch_00000.cxi",
        peaks / "live-notahash.cxi",
    ]
    for p in names:
        p.write_text("x")
    removed = remove_stale_batch_files([peaks, curves, tmp_path / "absent"], {keep})
    assert sorted(removed) == sorted(str(p) for p in names[1:4])
    assert all(p.exists() for p in names[:1] + names[4:])


def test_ledger_finish_records_batch_and_rows_in_one_go(tmp_path):
    refs = [FrameRef(f"/d/f{i}.tif") for i in range(3)]
    with Ledger(tmp_path / "l.sqlite") as led:
        led.add([(r, 1, 1.0) for r in refs], "cfg")
        led.start(refs)
        assert led.finish(
            [(refs[0], ["/o/a"], [{"n": 1}]), (refs[1], [], [])],
            [(refs[2], "broken", [{"n": 0}])],
            batch="live-0123456789abcdef",
        ) == (2, 1)
        assert led.finish([(refs[0], ["/o/b"], [])]) == (0, 0)  # not in flight: unchanged
        assert led.batches() == {"live-0123456789abcdef"}
        got = [(item.ref, item.state, item.batch, rows) for item, rows in led.results()]
        assert got == [
            (refs[0], "done", "live-0123456789abcdef", [{"n": 1}]),
            (refs[1], "done", "live-0123456789abcdef", []),
            (refs[2], "failed", "live-0123456789abcdef", [{"n": 0}]),
        ]
        assert [i.ref for i, _ in led.results(("failed",))] == [refs[2]]
        # a changed file re-queues the item: it forgets its batch and rows
        assert led.add([(refs[0], 2, 2.0)], "cfg") == [refs[0]]
        assert led.get(refs[0]).batch is None and led.batches() == {"live-0123456789abcdef"}
        with pytest.raises(ValueError, match="state"):
            list(led.results(("lost",)))


def test_a_version_1_ledger_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE items (path TEXT NOT NULL, event INTEGER NOT NULL, size INTEGER, mtime REAL, config_hash TEXT,
            state TEXT NOT NULL, outputs TEXT NOT NULL DEFAULT '[]', error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
            arrived_at REAL, started_at REAL, finished_at REAL, UNIQUE (path, event));
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
        INSERT INTO meta VALUES ('schema_version', '1');
        INSERT INTO items (path, event, size, mtime, config_hash, state, outputs, attempts)
            VALUES ('/d/old.tif', -1, 1, 1.0, 'cfg', 'done', '["/o/old.chi"]', 1);
    """)
    con.close()
    with Ledger(path) as led:
        assert [(i.ref, i.state, i.outputs, rows) for i, rows in led.results()] == [
            (FrameRef("/d/old.tif"), "done", ["/o/old.chi"], [])
        ]
        assert led.add([(FrameRef("/d/old.tif"), 1, 1.0)], "cfg") == []  # done stays done
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    con.close()


def test_sfx_killed_between_writing_a_batch_and_recording_it(tmp_path, sfx_data):
    """The first 'process' claimed 8 frames, wrote their peak and hit CXI files and died before the
    ledger heard of it. The restart redoes them in other batches (batches of 5 here): the dead batch's
    files are deleted, and every frame is in exactly one peak file and one table row."""
    ds, refs = sfx_data
    out = tmp_path / "out"
    options = sfx_options(ds, out)
    dead = refs[:8]
    with Ledger(out / "ledger.sqlite") as led:  # the process that died
        led.add(stat_refs(refs[:12]), "cfg")
        assert led.start(dead) == dead
        build_processor("sfx", options).process(dead, batch_name(dead))
    stale = [out / "peaks" / f"{batch_name(dead)}.cxi", out / "hits" / f"{batch_name(dead)}.cxi"]
    assert all(p.exists() for p in stale)
    (out / "peaks" / f".{batch_name(dead)}.0123456789ab.tmp.cxi").write_bytes(b"half")  # an atomic write cut short

    ledger = Ledger(out / "ledger.sqlite")
    session = sfx_session(ledger, refs, options)
    stats = session.run(idle_timeout_s=1.0)
    assert (stats.done, stats.failed) == (24, 0)
    assert sorted(session.stale_removed) == sorted(
        str(p) for p in stale + [out / "peaks" / f".{batch_name(dead)}.0123456789ab.tmp.cxi"]
    )
    assert not any(p.exists() for p in stale)

    reference = build_processor("sfx", sfx_options(ds, tmp_path / "reference")).process(refs, "reference")
    expected = {key(r["path"], r["event"]): r for r in reference.rows}
    # the ledger: one done item per frame, its rows the batch run's, the dead batch's frames tried twice
    results = list(ledger.results())
    assert len(results) == 24 and all(item.state == "done" for item, _ in results)
    rows = {key(item.ref.path, item.ref.event): item_rows for item, item_rows in results}
    assert set(rows) == set(expected)
    assert all(
        len(r) == 1 and r[0]["n_peaks"] == expected[k]["n_peaks"] and r[0]["hit"] == expected[k]["hit"]
        for k, r in rows.items()
    )
    assert {str(item.ref) for item, _ in results if item.attempts == 2} == {str(r) for r in dead}
    # the batch files: every frame in exactly one peak list, every hit in exactly one hits file
    in_peaks = collections.Counter(key(*s) for p in (out / "peaks").glob("*.cxi") for s in read_cxi_sources(p))
    assert set(in_peaks) == set(expected) and set(in_peaks.values()) == {1}
    in_hits = collections.Counter(key(*s) for p in (out / "hits").glob("*.cxi") for s in read_cxi_sources(p))
    assert set(in_hits) == {k for k, r in expected.items() if r["hit"]} and set(in_hits.values()) == {1}
    assert {p.stem for p in (out / "peaks").glob("*.cxi")} == ledger.batches()
    # every done item names its batch's files as its outputs
    for item, _ in results:
        assert str(out / "peaks" / f"{item.batch}.cxi") in item.outputs

    # a second start with nothing new: no work, and no file of a done batch is touched
    before = sorted(p.name for p in (out / "peaks").iterdir())
    again = sfx_session(ledger, refs, options)
    assert again.run(idle_timeout_s=0.5).done == 0
    assert sorted(p.name for p in (out / "peaks").iterdir()) == before and again.stale_removed == []
    ledger.close()


def test_processor_objects_run_in_threads(tmp_path, sfx_data):
    """A processor object (no factory) runs in threads of the session's process, same interface."""
    ds, refs = sfx_data
    out = tmp_path / "out"
    ledger = Ledger(out / "ledger.sqlite")
    processor = build_processor("sfx", sfx_options(ds, out))
    stats = LiveSession(
        processor, ledger, [StaticSource(refs[:6])], "cfg", max_frames=4, max_wait_s=0.01, workers=2
    ).run(idle_timeout_s=0.5)
    assert (stats.done, stats.failed, stats.batches) == (6, 0, 2)
    assert ledger.counts()["done"] == 6 and len(list((out / "peaks").glob("live-*.cxi"))) == 2
    ledger.close()
