"""A live reduction session: arrivals → ledger → micro-batches → reducer → outputs, in one process.

Sources hand over complete items (a `FileWatcher` on directories, a `FeederListener` for SAXSDOG's
ZMQ messages, or both). Every item is recorded in the `Ledger` before any work; the ledger decides
what needs work (new items, items whose size/mtime or configuration changed) and makes a restart
resume: items pending or in flight when the process stopped are retried, items that arrived while it
was down are found by the catch-up scan, items done are not redone.

Items are grouped by a `MicroBatcher` (up to N frames or T seconds) and reduced by a pool of worker
processes, each holding its own reducer (the matrices stay loaded; processes, not threads, because
formatting and writing the outputs hold Python's GIL), or — with a reducer object — by threads. Results are
written atomically by the reducer, so an item retried after a crash replaces its outputs:
at-least-once processing, exactly-once results.

The session is pure Python: the Prefect layer (flows/live.py) passes callbacks that emit events and
update artifacts.
"""

from __future__ import annotations

import queue
import threading
import time
import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from ..io import FrameRef, iter_frame_refs
from .batcher import MicroBatcher
from .ledger import Ledger, stat_refs

__all__ = ["LiveSession", "SessionStats", "ReducerFactory"]

_WORKER_REDUCER = None
MAX_ROWS = 200_000  # integral-parameter rows kept for the end-of-run table (about 200 MB at most)
DRAIN_TIMEOUT_S = 300.0  # at the end, how long to wait for batches in flight
MAX_ATTEMPTS = 3  # a batch whose worker process died is retried; an item is failed after this many tries


class ReducerFactory:
    """How worker processes build their reducer: ``factory(*args, **kwargs)`` (picklable)."""

    def __init__(self, factory, *args, **kwargs):
        self.factory, self.args, self.kwargs = factory, args, kwargs


def _init_worker(spec: ReducerFactory) -> None:
    global _WORKER_REDUCER
    # Ctrl-C reaches the whole process group: the watch process decides how to stop, the workers
    # finish the batch in hand
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_REDUCER = spec.factory(*spec.args, **spec.kwargs)


def _worker_ready(delay: float) -> int:
    time.sleep(delay)
    return os.getpid()


def _reduce_in_worker(batch) -> dict:
    return _WORKER_REDUCER.reduce(batch, overwrite=True).to_dict()


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
    """Reduce items as they arrive until stopped.

    reducer: a `ReducerFactory` (worker processes, the default for live work) or an object with
    ``reduce(refs, overwrite=True) -> BatchReport`` (photonflow.saxs; used from threads);
    sources: objects with ``get(timeout) -> list`` (FrameRef or path strings) and optionally
    ``scan()`` for catch-up; on_batch(refs, report_dict, stats), on_arrivals(refs): callbacks.
    """

    def __init__(self, reducer, ledger: Ledger, sources, config_hash: str, max_frames: int = 32,
                 max_wait_s: float = 0.02, workers: int = 2, on_batch=None, on_arrivals=None,
                 keep_rows: bool = True):
        self.reducer = reducer
        self.ledger = ledger
        self.sources = list(sources)
        self.config_hash = config_hash
        self.batcher = MicroBatcher(max_frames=max_frames, max_wait_s=max_wait_s)
        self.workers = max(1, int(workers))
        self.on_batch = on_batch
        self.on_arrivals = on_arrivals
        self.keep_rows = keep_rows
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
    def _work(self, batch: list[FrameRef]) -> dict:
        return self.reducer.reduce(batch, overwrite=True).to_dict()

    def _submit(self, batch: list[FrameRef]) -> None:
        batch = self.ledger.start(batch)  # only what this session claims (not already in flight elsewhere)
        if not batch:
            return
        self._in_flight += 1
        try:
            if isinstance(self.reducer, ReducerFactory):
                future = self._executor.submit(_reduce_in_worker, batch)
            else:
                future = self._executor.submit(self._work, batch)
        except BrokenProcessPool:
            self._completed.put((batch, {"retry": "a worker process died"}))
            return

        def finished(fut, batch=batch):
            try:
                report = fut.result()
            except BrokenProcessPool as exc:  # a worker died (crash, OOM, signal): try these again
                report = {"retry": f"a worker process died ({exc})"}
            except BaseException as exc:  # noqa: BLE001  (a bug: every item of the batch failed)
                report = {"failed": {str(r): f"batch failed: {type(exc).__name__}: {exc}" for r in batch},
                          "outputs": {}, "rows": [], "failures": []}
            self._completed.put((batch, report))

        future.add_done_callback(finished)

    def _new_executor(self):
        if isinstance(self.reducer, ReducerFactory):
            ctx = multiprocessing.get_context("spawn")
            executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init_worker,
                                           initargs=(self.reducer,))
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
            for ref in batch:
                key = str(ref)
                if key in report["failed"]:
                    self.ledger.failed(ref, report["failed"][key])
                    self.stats.failed += 1
                    self.stats.failures.append(f"{key}: {report['failed'][key]}")
                else:
                    self.ledger.done(ref, report["outputs"].get(key, []))
                    self.stats.done += 1
            if self.keep_rows:
                self.stats.rows.extend(report.get("rows", []))
            self.stats.last_activity = time.time()
            if self.on_batch is not None:
                self.on_batch(batch, report, self.stats)

    def run(self, duration_s: float | None = None, idle_timeout_s: float | None = None,
            max_items: int | None = None, poll_s: float = 0.005) -> SessionStats:
        """Run until stop(), ``duration_s``, ``idle_timeout_s`` without arrivals or work, or
        ``max_items`` items finished; then finish the work already admitted."""
        t0 = time.time()
        self.stats = SessionStats()
        recovered = self.ledger.recover(self.config_hash)
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
                if self._stop.is_set() or (duration_s is not None and now - t0 >= duration_s) or (
                    max_items is not None and finished >= max_items
                ) or (
                    idle_timeout_s is not None and self._in_flight == 0 and now - self.stats.last_activity >= idle_timeout_s
                    and not len(self.batcher) and not self._retry_queue
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
        if self._in_flight or self._retry_queue:  # left over: the ledger retries them at the next start
            self.stats.failures.append(f"{self._in_flight} batch(es) still in flight after {DRAIN_TIMEOUT_S:.0f} s")
        return self.stats
