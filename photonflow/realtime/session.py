"""A live session: arrivals → ledger → micro-batches → an operation's processor → outputs, in one process.

Sources hand over complete items (a `FileWatcher` on directories, a `FeederListener` for SAXSDOG's
ZMQ messages, or both). Every item is recorded in the `Ledger` before any work; the ledger decides
what needs work (new items, items whose size/mtime or configuration changed) and makes a restart
resume: items pending or in flight when the process stopped are retried, items that arrived while it
was down are found by the catch-up scan, items done are not redone.

Items are grouped by a `MicroBatcher` (up to N frames or T seconds) and processed by a pool of worker
processes, each holding its own processor, built once from the operation registry
(`ProcessorFactory`: ``photonflow.operations.get(name).build_processor(options)``; the SAXS matrices, the
peak finder, the spot fit stay loaded; processes, not threads, because formatting and writing the outputs
hold Python's GIL), or — with a processor object — by threads. Each batch is
``process(refs, batch_name) -> BatchResult``.

Exactly-once results: outputs are written atomically under names that depend only on the item (a
``.chi`` file, a Laue spot table) or on the batch (a CXI peak list of all its frames, the NeXus curves
of a SAXS batch). A batch's name is derived from its items (`batch_name`), and the batch is finished in
the ledger in one transaction, its items recording the batch name and their table rows. An item retried
after a crash (the watch killed between writing a batch file and recording it) lands in a batch of its
own name; the file of the batch that died is named by no ``done`` item, and is deleted at the next start
(and at the end of a session: a batch whose worker died), so every result exists once — in the files
and in the run's table, which is built from the ledger (`Ledger.results`), not from what one session saw.

The session is pure Python: the Prefect layer (flows/live.py) passes callbacks that emit events and
update artifacts.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import queue
import re
import signal
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from ..io import FrameRef, iter_frame_refs
from .batcher import MicroBatcher
from .ledger import Ledger, stat_refs

__all__ = [
    "LiveSession",
    "SessionStats",
    "ReducerFactory",
    "ProcessorFactory",
    "batch_name",
    "remove_stale_batch_files",
]

_WORKER_REDUCER = None
MAX_ROWS = 200_000  # rows kept in SessionStats.rows with keep_rows (the run's table comes from the ledger)
DRAIN_TIMEOUT_S = 300.0  # at the end, how long to wait for batches in flight
MAX_ATTEMPTS = 3  # a batch whose worker process died is retried; an item is failed after this many tries
BATCH_PREFIX = "live-"
#: A live batch's file (or its atomic-write temporary, ".<stem>.<token>.tmp<suffix>"): the batch name,
#: then "." (peaks/<batch>.cxi) or "_" (curves/<batch>_<integration>.h5).
_BATCH_FILE = re.compile(r"^\.?(" + BATCH_PREFIX + r"[0-9a-f]{16})[._]")


class ReducerFactory:
    """How worker processes build their processor: ``factory(*args, **kwargs)`` (picklable)."""

    def __init__(self, factory, *args, **kwargs):
        self.factory, self.args, self.kwargs = factory, args, kwargs


def build_processor(operation: str, options: dict):
    """The registry operation's batch processor for ``options``."""
    from ..operations import get

    return get(operation).build_processor(options)


class ProcessorFactory(ReducerFactory):
    """Worker processes build ``photonflow.operations.get(operation).build_processor(options)``."""

    def __init__(self, operation: str, options: dict):
        super().__init__(build_processor, operation, dict(options))
        self.operation, self.options = operation, dict(options)


def batch_name(refs) -> str:
    """The name of a batch's outputs, derived from its items (order aside): ``live-<16 hex digits>``.
    The same items give the same name (a retry replaces the file), other items another."""
    digest = hashlib.sha1("\n".join(sorted(str(FrameRef(*r)) for r in refs)).encode()).hexdigest()
    return BATCH_PREFIX + digest[:16]


def remove_stale_batch_files(directories, keep: set[str]) -> list[str]:
    """Delete the live batch files in ``directories`` whose batch is not in ``keep`` (the batches of
    ``done`` items, `Ledger.batches`); returns the paths deleted. Other files are left alone."""
    removed = []
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            m = _BATCH_FILE.match(entry.name)
            if m and m.group(1) not in keep and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                    removed.append(entry.path)
                except FileNotFoundError:
                    pass
    return removed


def _process(processor, batch: list[FrameRef], name: str) -> dict:
    """One batch through a processor (``process(refs, batch_name)``, or an older reducer's
    ``reduce(refs, overwrite=True)``); the BatchResult as a dict, with the batch name."""
    if hasattr(processor, "process"):
        report = processor.process(batch, name).to_dict()
    else:
        report = processor.reduce(batch, overwrite=True).to_dict()
    report["batch"] = name
    return report


def _init_worker(spec: ReducerFactory) -> None:
    global _WORKER_REDUCER
    # Ctrl-C reaches the whole process group: the watch process decides how to stop, the workers
    # finish the batch in hand
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_REDUCER = spec.factory(*spec.args, **spec.kwargs)


def _worker_ready(delay: float) -> int:
    time.sleep(delay)
    return os.getpid()


def _process_in_worker(batch: list[FrameRef], name: str) -> dict:
    return _process(_WORKER_REDUCER, batch, name)


def _rows_by_item(report: dict, batch: list[FrameRef]) -> dict[str, list]:
    """The batch's table rows grouped by item label (rows name their item by ``path`` and ``event``,
    -1 for a single-frame file)."""
    labels = {(r.path, -1 if r.event is None else int(r.event)): str(r) for r in batch}
    out: dict[str, list] = {}
    for row in report.get("rows", []):
        label = labels.get((row.get("path"), row.get("event", -1)), row.get("frame"))
        if label is not None:
            out.setdefault(label, []).append(row)
    return out


@dataclass
class SessionStats:
    arrived: int = 0
    queued: int = 0
    done: int = 0
    failed: int = 0
    batches: int = 0
    started: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.time)
    failures: list = field(default_factory=list)
    rows: deque = field(default_factory=lambda: deque(maxlen=MAX_ROWS))  # the latest rows only

    def as_dict(self) -> dict:
        elapsed = max(time.time() - self.started, 1e-9)
        return {
            "arrived": self.arrived,
            "queued": self.queued,
            "done": self.done,
            "failed": self.failed,
            "batches": self.batches,
            "elapsed_s": elapsed,
            "frames_per_s": self.done / elapsed,
        }


class LiveSession:
    """Process items as they arrive until stopped.

    reducer: a `ProcessorFactory` / `ReducerFactory` (worker processes, the default for live work) or
    a processor object with ``process(refs, batch_name) -> BatchResult`` (or an older reducer's
    ``reduce(refs, overwrite=True)``; used from threads); sources: objects with ``get(timeout) -> list``
    (FrameRef or path strings) and optionally ``scan()`` for catch-up; batch_dirs: the directories the
    processor writes its per-batch files to (stale ones are deleted there, see the module doc);
    on_batch(refs, report_dict, stats), on_arrivals(refs): callbacks.
    """

    def __init__(
        self,
        reducer,
        ledger: Ledger,
        sources,
        config_hash: str,
        max_frames: int = 32,
        max_wait_s: float = 0.02,
        workers: int = 2,
        on_batch=None,
        on_arrivals=None,
        keep_rows: bool = True,
        batch_dirs=(),
    ):
        self.reducer = reducer
        self.ledger = ledger
        self.sources = list(sources)
        self.config_hash = config_hash
        self.batcher = MicroBatcher(max_frames=max_frames, max_wait_s=max_wait_s)
        self.workers = max(1, int(workers))
        self.on_batch = on_batch
        self.on_arrivals = on_arrivals
        self.keep_rows = keep_rows
        self.batch_dirs = [os.fspath(d) for d in batch_dirs]
        self.stale_removed: list[str] = []
        self.stats = SessionStats()
        self._stop = threading.Event()
        self._completed: queue.Queue = queue.Queue()
        self._in_flight = 0
        self._retry_queue: deque = deque()

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ arrivals
    def _expand(self, items) -> list[FrameRef]:
        refs = []
        for item in items:
            if isinstance(item, FrameRef):
                refs.append(item)
            elif isinstance(item, tuple):
                refs.append(FrameRef(*item))
            else:  # a path (feeder): expand multi-frame files into events
                try:
                    refs.extend(iter_frame_refs([str(item)]))
                except (OSError, ValueError) as exc:
                    self.stats.failed += 1
                    self.stats.failures.append(f"{item}: {exc}")
        return refs

    def _admit(self, items) -> None:
        refs = self._expand(items)
        if not refs:
            return
        self.stats.arrived += len(refs)
        self.stats.last_activity = time.time()
        todo = self.ledger.add(stat_refs(refs), self.config_hash)
        if todo:
            self.stats.queued += len(todo)
            self.batcher.add(todo)
        if self.on_arrivals is not None:
            self.on_arrivals(refs)

    # ------------------------------------------------------------------ work
    def _submit(self, batch: list[FrameRef]) -> None:
        batch = self.ledger.start(batch)  # only what this session claims (not already in flight elsewhere)
        if not batch:
            return
        self._in_flight += 1
        name = batch_name(batch)
        try:
            if isinstance(self.reducer, ReducerFactory):
                future = self._executor.submit(_process_in_worker, batch, name)
            else:
                future = self._executor.submit(_process, self.reducer, batch, name)
        except BrokenProcessPool:
            self._completed.put((batch, {"retry": "a worker process died"}))
            return

        def finished(fut, batch=batch):
            try:
                report = fut.result()
            except BrokenProcessPool as exc:  # a worker died (crash, OOM, signal): try these again
                report = {"retry": f"a worker process died ({exc})"}
            except BaseException as exc:  # noqa: BLE001  (a bug: every item of the batch failed)
                report = {
                    "failed": {str(r): f"batch failed: {type(exc).__name__}: {exc}" for r in batch},
                    "outputs": {},
                    "rows": [],
                    "failures": [],
                }
            self._completed.put((batch, report))

        future.add_done_callback(finished)

    def _new_executor(self):
        if isinstance(self.reducer, ReducerFactory):
            ctx = multiprocessing.get_context("spawn")
            executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=ctx, initializer=_init_worker, initargs=(self.reducer,)
            )
            for _ in range(20):  # every worker started and ready before the first batch
                if len(set(executor.map(_worker_ready, [0.2] * self.workers))) >= self.workers:
                    break
            return executor
        return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="photonflow-reduce")

    def _retry(self, batch: list[FrameRef], reason: str) -> None:
        """Items of a batch whose worker died go back to the queue, up to MAX_ATTEMPTS tries each."""
        if getattr(self._executor, "_broken", False):
            self._executor.shutdown(wait=False, cancel_futures=False)
            self._executor = self._new_executor()
        again, give_up = [], []
        for ref in batch:
            item = self.ledger.get(ref)
            (give_up if item is not None and item.attempts >= MAX_ATTEMPTS else again).append(ref)
        for ref in give_up:
            self.ledger.failed(ref, f"{reason}, {MAX_ATTEMPTS} times, while reducing it")
            self.stats.failed += 1
            self.stats.failures.append(f"{ref}: {reason}")
        # retried alone and one at a time: a later death is then the fault of the one item in flight
        self._retry_queue.extend(self.ledger.release(again))

    def _collect(self, block: bool = False, timeout: float = 0.0) -> None:
        while True:
            try:
                batch, report = self._completed.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                return
            block = False
            self._in_flight -= 1
            if "retry" in report:
                self._retry(batch, report["retry"])
                continue
            self.stats.batches += 1
            rows = _rows_by_item(report, batch)
            done, failed = [], []
            for ref in batch:
                key = str(ref)
                if key in report["failed"]:
                    failed.append((ref, report["failed"][key], rows.get(key, [])))
                    self.stats.failures.append(f"{key}: {report['failed'][key]}")
                else:  # its own outputs, else the batch's files (a CXI peak list of the whole batch)
                    done.append((ref, report["outputs"].get(key) or report.get("files", []), rows.get(key, [])))
            self.ledger.finish(done, failed, batch=report.get("batch"))  # all of the batch, or none
            self.stats.done += len(done)
            self.stats.failed += len(failed)
            if self.keep_rows:
                self.stats.rows.extend(report.get("rows", []))
            self.stats.last_activity = time.time()
            if self.on_batch is not None:
                self.on_batch(batch, report, self.stats)

    def run(
        self,
        duration_s: float | None = None,
        idle_timeout_s: float | None = None,
        max_items: int | None = None,
        poll_s: float = 0.005,
    ) -> SessionStats:
        """Run until stop(), ``duration_s``, ``idle_timeout_s`` without arrivals or work, or
        ``max_items`` items finished; then finish the work already admitted."""
        t0 = time.time()
        self.stats = SessionStats()
        recovered = self.ledger.recover(self.config_hash)
        self._remove_stale()  # the files of batches that died with the last process
        if recovered:
            self.stats.queued += len(recovered)
            self.batcher.add(recovered)
        for source in self.sources:  # catch-up: items that arrived while nobody watched
            scan = getattr(source, "scan", None)
            if scan is not None:
                self._admit(scan())
        self._executor = self._new_executor()
        try:
            while True:
                now = time.time()
                finished = self.stats.done + self.stats.failed
                if (
                    self._stop.is_set()
                    or (duration_s is not None and now - t0 >= duration_s)
                    or (max_items is not None and finished >= max_items)
                    or (
                        idle_timeout_s is not None
                        and self._in_flight == 0
                        and now - self.stats.last_activity >= idle_timeout_s
                        and not len(self.batcher)
                        and not self._retry_queue
                    )
                ):
                    break
                wait = self.batcher.timeout()
                wait = poll_s if wait is None else min(wait, poll_s)
                for source in self.sources:
                    items = source.get(timeout=0 if self._in_flight > self.workers else wait / len(self.sources))
                    if items:
                        self._admit(items)
                if self._retry_queue:  # after a worker died: suspects alone, nothing else meanwhile
                    if self._in_flight == 0:
                        self._submit([self._retry_queue.popleft()])
                else:  # at most workers + 1 batches in flight: the batcher grows batches meanwhile
                    while self._in_flight <= self.workers:
                        batch = self.batcher.ready(time.monotonic())
                        if not batch:
                            break
                        self._submit(batch)
                self._collect(block=self._in_flight > self.workers, timeout=poll_s)
            # drain: everything admitted gets done
            rest = self.batcher.flush()
            for i in range(0, len(rest), self.batcher.max_frames):
                self._submit(rest[i : i + self.batcher.max_frames])
            deadline = time.time() + DRAIN_TIMEOUT_S
            while (self._in_flight > 0 or self._retry_queue) and time.time() < deadline:
                if self._retry_queue and self._in_flight == 0:
                    self._submit([self._retry_queue.popleft()])
                self._collect(block=True, timeout=1.0)
        finally:
            self._executor.shutdown(wait=self._in_flight == 0, cancel_futures=True)
        self._remove_stale()  # those of batches whose worker died
        if self._in_flight or self._retry_queue:  # left over: the ledger retries them at the next start
            self.stats.failures.append(f"{self._in_flight} batch(es) still in flight after {DRAIN_TIMEOUT_S:.0f} s")
        return self.stats

    def _remove_stale(self) -> None:
        if self.batch_dirs:
            self.stale_removed += remove_stale_batch_files(self.batch_dirs, self.ledger.batches())
