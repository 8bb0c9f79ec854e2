"""The ledger: one SQLite row per item (a frame of a file), so that a restart resumes with nothing
missed and nothing done twice.

Each item is ``(path, event)`` — ``event`` is ``-1`` in the database for a single-frame file
(``FrameRef.event is None``) — with the file's ``size`` and ``mtime`` when it arrived, the
``config_hash`` it is (to be) processed with, its ``state``::

    pending ──start()──▶ in_flight ──done()──▶ done
       ▲                     │  └─────failed()──▶ failed
       └────recover()────────┘   (process died while in flight)

its ``outputs`` (JSON list of paths), ``error`` text, ``attempts`` (times started), the unix times
``arrived_at``, ``started_at``, ``finished_at``, and once finished the ``batch`` it was done in (the name
its batch's output files carry) and its ``result``: the operation's table rows for it (JSON list).

What "needs work" (:meth:`Ledger.add`):

* an item never seen;
* an item ``done`` or ``failed`` under another ``config_hash`` (a configuration change re-processes);
* an item whose file changed: for a single-frame file, any change of size or mtime; for an event of a
  multi-frame file (HDF5), the file shrinking or its mtime going back. Growth is not a change: a
  growing (SWMR) file changes size and mtime with every appended frame but its earlier events do not
  change, and a restart's catch-up scan sees the final size. (A multi-frame file *replaced* by a
  larger, newer one under the same name is therefore not detected; write new acquisitions to new
  names, as detectors do.)
* an item ``in_flight`` whose file changed (it is redone when its current run finishes or fails).

An item already ``pending`` (or ``in_flight`` and unchanged) is not returned again: adding the same
item twice, or handing it over from both a catch-up scan and the live watcher, queues it once.

**At-least-once processing, exactly-once results.** The ledger records ``done`` after the outputs are
written. A crash between writing the outputs and :meth:`Ledger.done` leaves the item ``in_flight``;
:meth:`Ledger.recover` returns it at the next start and it is processed again. Since outputs are
written atomically (temporary file, then ``os.replace``) under names that depend only on the item, the
redo replaces the earlier outputs with identical ones: an item may be *processed* more than once, but
each result exists once and the ledger ends with one ``done`` row per item.

A batch's items are finished together (:meth:`Ledger.finish`, one transaction), so either all of them
name the batch or none does. Outputs shared by a batch (a CXI peak list of all its frames) are thereby
exactly-once as well: a batch file that no ``done`` item names (:meth:`Ledger.batches`) was written by a
batch whose items are redone elsewhere, and the live session deletes it. The run's table is built from
the ``result`` of the items ``done`` or ``failed`` (:meth:`Ledger.results`): one entry per item, whatever
was retried.

Storage: SQLite in WAL mode (readers never block the writer; a crash never corrupts the file),
``synchronous=NORMAL`` by default (each commit survives a crash of the process; after a power cut the
last commits may be lost and are then redone — pass ``synchronous="FULL"`` to fsync every commit), a
30 s busy timeout so that several processes can share one ledger. Every method is one transaction; one
connection is shared by the threads of a process under a lock. Batches of thousands of items go in one
transaction (well over 10 000 items/s).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from photonflow.io import FrameRef

__all__ = ["STATES", "Item", "Ledger", "stat_refs"]

STATES = ("pending", "in_flight", "done", "failed")
DEFAULT_NAME = "photonflow-ledger.sqlite"
DB_SUFFIXES = (".sqlite", ".sqlite3", ".db")
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    path        TEXT    NOT NULL,
    event       INTEGER NOT NULL,
    size        INTEGER,
    mtime       REAL,
    config_hash TEXT,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'in_flight', 'done', 'failed')),
    outputs     TEXT    NOT NULL DEFAULT '[]',
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    arrived_at  REAL,
    started_at  REAL,
    finished_at REAL,
    batch       TEXT,
    result      TEXT,
    UNIQUE (path, event)
);
CREATE INDEX IF NOT EXISTS items_state ON items (state);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

# A file changed since the item was recorded: any size/mtime change for a single-frame file (event -1);
# for an event of a multi-frame file only shrinking or an older mtime (growth appends, see module doc).
_CHANGED = """(CASE WHEN items.event < 0
      THEN (items.size IS NOT excluded.size OR items.mtime IS NOT excluded.mtime)
      ELSE (excluded.size < items.size OR excluded.mtime < items.mtime) END)"""

_ADD = f"""
INSERT INTO items (path, event, size, mtime, config_hash, state, outputs, attempts, arrived_at)
    SELECT path, event, size, mtime, :config_hash, 'pending', '[]', 0, :now FROM temp.incoming WHERE true ORDER BY k
ON CONFLICT (path, event) DO UPDATE SET
    size = excluded.size, mtime = excluded.mtime, config_hash = excluded.config_hash, state = 'pending',
    error = NULL, arrived_at = excluded.arrived_at, started_at = NULL, finished_at = NULL, batch = NULL,
    result = NULL
WHERE (items.state IN ('done', 'failed') AND (items.config_hash IS NOT excluded.config_hash OR {_CHANGED}))
   OR (items.state = 'in_flight' AND {_CHANGED})
RETURNING path, event
"""

_COLUMNS = (
    "path, event, size, mtime, config_hash, state, outputs, error, attempts, arrived_at, started_at, finished_at, batch"
)


class Item(NamedTuple):
    """One ledger row (see the module doc); ``ref.event`` is None for a single-frame file."""

    ref: FrameRef
    size: int | None
    mtime: float | None
    config_hash: str | None
    state: str
    outputs: list[str]
    error: str | None
    attempts: int
    arrived_at: float | None
    started_at: float | None
    finished_at: float | None
    batch: str | None = None


def _key(ref: FrameRef | tuple) -> tuple[str, int]:
    path, event = ref[0], ref[1]
    return os.fspath(path), -1 if event is None else int(event)


def _ref(path: str, event: int) -> FrameRef:
    return FrameRef(path, None if event < 0 else event)


def _item(row: tuple) -> Item:
    path, event, size, mtime, cfg, state, outputs, error, attempts, arrived, started, finished, batch = row
    return Item(
        _ref(path, event),
        size,
        mtime,
        cfg,
        state,
        json.loads(outputs or "[]"),
        error,
        attempts,
        arrived,
        started,
        finished,
        batch,
    )


def stat_refs(refs: Iterable[FrameRef]) -> list[tuple[FrameRef, int, float]]:
    """``(ref, size, mtime)`` for each ref, for :meth:`Ledger.add` (one ``stat`` per distinct file).

    A file that vanished gets size -1 and mtime -1.0 (it is still recorded, and fails when read).
    """
    cache: dict[str, tuple[int, float]] = {}
    out = []
    for ref in refs:
        sig = cache.get(ref.path)
        if sig is None:
            try:
                st = os.stat(ref.path)
                sig = (st.st_size, st.st_mtime)
            except OSError:
                sig = (-1, -1.0)
            cache[ref.path] = sig
        out.append((ref, sig[0], sig[1]))
    return out


class Ledger:
    """SQLite ledger of items (see the module doc). ``Ledger(path)``: the database file (an existing
    file, or a name ending in .sqlite, .sqlite3 or .db), or else the output directory, in which
    ``photonflow-ledger.sqlite`` is used (directories are created). Thread-safe; several processes
    may share one file. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, *, synchronous: str = "NORMAL", timeout_s: float = 30.0):
        p = Path(path)
        if not (p.is_file() or p.suffix.lower() in DB_SUFFIXES):
            p = p / DEFAULT_NAME  # the output directory
        p.parent.mkdir(parents=True, exist_ok=True)
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.path = p
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(p, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        c = self._conn
        c.execute("PRAGMA journal_mode=WAL")
        c.execute(f"PRAGMA synchronous={synchronous.upper()}")
        c.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        c.execute("PRAGMA temp_store=MEMORY")
        with self._transaction() as cur:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    cur.execute(stmt)
            have = {row[1] for row in cur.execute("PRAGMA table_info(items)")}
            for column in ("batch", "result"):  # a ledger of version 1
                if column not in have:
                    cur.execute(f"ALTER TABLE items ADD COLUMN {column} TEXT")
            cur.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        c.execute(
            "CREATE TEMP TABLE IF NOT EXISTS incoming "
            "(k INTEGER PRIMARY KEY, path TEXT NOT NULL, event INTEGER NOT NULL, size INTEGER, mtime REAL)"
        )

    # ------------------------------------------------------------------ plumbing

    class _Tx:
        def __init__(self, ledger: Ledger):
            self.ledger = ledger

        def __enter__(self) -> sqlite3.Cursor:
            self.ledger._lock.acquire()
            try:
                if self.ledger._conn is None:
                    raise RuntimeError(f"ledger {self.ledger.path} is closed")
                self.cur = self.ledger._conn.cursor()
                self.cur.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.ledger._lock.release()
                raise
            return self.cur

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                if exc_type is None:
                    try:
                        self.cur.execute("COMMIT")
                    except BaseException:
                        self.cur.execute("ROLLBACK")
                        raise
                else:
                    self.cur.execute("ROLLBACK")
            finally:
                self.cur.close()
                self.ledger._lock.release()

    def _transaction(self) -> Ledger._Tx:
        return Ledger._Tx(self)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({os.fspath(self.path)!r})"

    # ------------------------------------------------------------------ arrivals

    def add(self, items: Iterable[tuple[FrameRef, int, float]], config_hash: str | None) -> list[FrameRef]:
        """Record arrivals ``(ref, size, mtime)``; return the refs that need work, in input order,
        each once, now ``pending`` (see the module doc for what needs work)."""
        rows = []
        for k, (ref, size, mtime) in enumerate(items):
            path, event = _key(ref)
            rows.append((k, path, event, None if size is None else int(size), None if mtime is None else float(mtime)))
        if not rows:
            return []
        with self._transaction() as cur:
            cur.execute("DELETE FROM temp.incoming")
            cur.executemany("INSERT INTO temp.incoming (k, path, event, size, mtime) VALUES (?, ?, ?, ?, ?)", rows)
            returned = set(cur.execute(_ADD, {"config_hash": config_hash, "now": time.time()}).fetchall())
            cur.execute("DELETE FROM temp.incoming")
        out = []
        for _, path, event, _, _ in rows:
            if (path, event) in returned:
                returned.discard((path, event))  # each ref once
                out.append(_ref(path, event))
        return out

    def add_refs(self, refs: Iterable[FrameRef], config_hash: str | None) -> list[FrameRef]:
        """:meth:`add` with each file's current size and mtime (:func:`stat_refs`)."""
        return self.add(stat_refs(refs), config_hash)

    # ------------------------------------------------------------------ transitions

    def start(self, refs: Iterable[FrameRef]) -> list[FrameRef]:
        """Claim ``pending`` items: → ``in_flight``, ``attempts += 1``. Returns the refs claimed (items
        not pending — unknown, already in flight or finished — are left alone and not returned)."""
        now = time.time()
        claimed = []
        with self._transaction() as cur:
            for ref in refs:
                path, event = _key(ref)
                cur.execute(
                    "UPDATE items SET state = 'in_flight', attempts = attempts + 1, started_at = ?, "
                    "finished_at = NULL WHERE path = ? AND event = ? AND state = 'pending'",
                    (now, path, event),
                )
                if cur.rowcount:
                    claimed.append(_ref(path, event))
        return claimed

    def release(self, refs: Iterable[FrameRef]) -> list[FrameRef]:
        """Give ``in_flight`` items back (→ ``pending``), e.g. when the worker reducing them died; returns
        the refs released."""
        released = []
        with self._transaction() as cur:
            for ref in refs:
                path, event = _key(ref)
                cur.execute(
                    "UPDATE items SET state = 'pending', started_at = NULL WHERE path = ? AND event = ? "
                    "AND state = 'in_flight'",
                    (path, event),
                )
                if cur.rowcount:
                    released.append(_ref(path, event))
        return released

    def done(self, ref: FrameRef, outputs: Sequence[str | os.PathLike] = ()) -> bool:
        """Mark an item ``done`` with its output paths. False if the item is unknown."""
        return self.done_many([(ref, outputs)]) == 1

    def done_many(self, items: Iterable[tuple[FrameRef, Sequence[str | os.PathLike]]]) -> int:
        """:meth:`done` for many items in one transaction; returns how many were known."""
        now = time.time()
        n = 0
        with self._transaction() as cur:
            for ref, outputs in items:
                path, event = _key(ref)
                cur.execute(
                    "UPDATE items SET state = 'done', outputs = ?, error = NULL, finished_at = ? "
                    "WHERE path = ? AND event = ? AND state = 'in_flight'",
                    (json.dumps([os.fspath(o) for o in outputs]), now, path, event),
                )
                n += cur.rowcount
        return n

    def failed(self, ref: FrameRef, error: str | BaseException) -> bool:
        """Mark an item ``failed`` with the error text. False if the item is unknown."""
        return self.failed_many([(ref, error)]) == 1

    def failed_many(self, items: Iterable[tuple[FrameRef, str | BaseException]]) -> int:
        """:meth:`failed` for many items in one transaction; returns how many were known."""
        now = time.time()
        n = 0
        with self._transaction() as cur:
            for ref, error in items:
                path, event = _key(ref)
                cur.execute(
                    "UPDATE items SET state = 'failed', error = ?, finished_at = ? "
                    "WHERE path = ? AND event = ? AND state = 'in_flight'",
                    (str(error), now, path, event),
                )
                n += cur.rowcount
        return n

    def finish(
        self,
        done: Iterable[tuple[FrameRef, Sequence[str | os.PathLike], list]] = (),
        failed: Iterable[tuple[FrameRef, str | BaseException, list]] = (),
        batch: str | None = None,
    ) -> tuple[int, int]:
        """Finish a batch in one transaction: ``done`` items ``(ref, outputs, rows)`` and ``failed`` items
        ``(ref, error, rows)``, each recorded with the ``batch`` name and its ``rows`` (the operation's
        table rows for it). Only items ``in_flight`` change; returns how many (done, failed) did."""
        now = time.time()
        n_done = n_failed = 0
        with self._transaction() as cur:
            for ref, outputs, rows in done:
                path, event = _key(ref)
                cur.execute(
                    "UPDATE items SET state = 'done', outputs = ?, error = NULL, finished_at = ?, batch = ?, "
                    "result = ? WHERE path = ? AND event = ? AND state = 'in_flight'",
                    (json.dumps([os.fspath(o) for o in outputs]), now, batch, json.dumps(list(rows)), path, event),
                )
                n_done += cur.rowcount
            for ref, error, rows in failed:
                path, event = _key(ref)
                cur.execute(
                    "UPDATE items SET state = 'failed', error = ?, finished_at = ?, batch = ?, result = ? "
                    "WHERE path = ? AND event = ? AND state = 'in_flight'",
                    (str(error), now, batch, json.dumps(list(rows)), path, event),
                )
                n_failed += cur.rowcount
        return n_done, n_failed

    def recover(self, config_hash: str | None = None) -> list[FrameRef]:
        """At start-up: everything ``pending`` or ``in_flight`` (in arrival order), all now ``pending``.

        Items in flight when the previous process died are retried (their ``attempts`` keep counting).
        ``config_hash``: record that they will be processed under this configuration. Call it once,
        before this process starts work, and not while another live process works on the same ledger.
        """
        with self._transaction() as cur:
            rows = cur.execute(
                "SELECT path, event FROM items WHERE state IN ('pending', 'in_flight') ORDER BY rowid"
            ).fetchall()
            cur.execute("UPDATE items SET state = 'pending' WHERE state = 'in_flight'")
            if config_hash is not None:
                cur.execute("UPDATE items SET config_hash = ? WHERE state = 'pending'", (config_hash,))
        return [_ref(p, e) for p, e in rows]

    def retry_failed(self) -> list[FrameRef]:
        """Put every ``failed`` item back to ``pending``; return them (for a deliberate re-run)."""
        with self._transaction() as cur:
            rows = cur.execute("SELECT path, event FROM items WHERE state = 'failed' ORDER BY rowid").fetchall()
            cur.execute("UPDATE items SET state = 'pending', error = NULL WHERE state = 'failed'")
        return [_ref(p, e) for p, e in rows]

    # ------------------------------------------------------------------ reports

    def state(self, ref: FrameRef) -> str | None:
        """The item's state, or None if the ledger has never seen it."""
        row = self.get(ref)
        return None if row is None else row.state

    def get(self, ref: FrameRef) -> Item | None:
        """The item's row, or None."""
        path, event = _key(ref)
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM items WHERE path = ? AND event = ?", (path, event)
            ).fetchone()
        return None if row is None else _item(row)

    def counts(self) -> dict[str, int]:
        """``{"pending": n, "in_flight": n, "done": n, "failed": n, "total": n}``."""
        out = dict.fromkeys(STATES, 0)
        with self._lock:
            for state, n in self._conn.execute("SELECT state, count(*) FROM items GROUP BY state"):
                out[state] = n
        out["total"] = sum(out[s] for s in STATES)
        return out

    def _rows(self, states: Sequence[str] | None, columns: str, chunk: int) -> Iterator[tuple]:
        """Rows (``columns``) of the items in ``states`` (None: all), in arrival order, read in chunks."""
        bad = [s for s in states or () if s not in STATES]
        if bad:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {bad[0]!r}")
        where = "" if states is None else f"AND state IN ({', '.join('?' * len(states))})"
        last = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT rowid, {columns} FROM items WHERE rowid > ? {where} ORDER BY rowid LIMIT {int(chunk)}",
                    (last, *(states or ())),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield row[1:]
            last = rows[-1][0]

    def items(self, state: str | None = None, chunk: int = 10_000) -> Iterator[Item]:
        """Every item (or those in ``state``) in arrival order, read in chunks (the ledger may change
        while the iterator is consumed; each chunk is consistent)."""
        for row in self._rows(None if state is None else (state,), _COLUMNS, chunk):
            yield _item(row)

    def results(self, states: Sequence[str] = ("done", "failed"), chunk: int = 10_000) -> Iterator[tuple[Item, list]]:
        """``(item, rows)`` of every item in ``states``, in arrival order: the table rows recorded by
        :meth:`finish` (``[]`` for an item finished without them). Read in chunks, as :meth:`items`."""
        for row in self._rows(tuple(states), f"{_COLUMNS}, result", chunk):
            yield _item(row[:-1]), json.loads(row[-1] or "[]")

    def batches(self) -> set[str]:
        """The names of the batches that ``done`` items were finished in (their files hold results)."""
        with self._lock:
            rows = self._conn.execute("SELECT DISTINCT batch FROM items WHERE state = 'done' AND batch IS NOT NULL")
            return {name for (name,) in rows}

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM items").fetchone()[0]
