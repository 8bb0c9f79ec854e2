"""Real-time operation: a file watcher that hands over only complete files (and follows growing HDF5
files by event count), a micro-batcher, and a SQLite ledger so that a restart resumes with nothing
missed and nothing done twice.

Pure Python over watchdog (inotify), h5py and SQLite; no Prefect or Dask here (the ``photonflow watch``
command and the flows that consume these live in ``deployments/`` and ``flows/``).

A consumer, in outline::

    ledger = Ledger(out_dir)
    with FileWatcher([data_dir]) as watcher:                 # live events from here on
        todo = ledger.recover()                              # pending / in flight at the last stop
        todo += ledger.add_refs(watcher.scan(), cfg_hash)    # catch-up: what arrived while down
        batcher = MicroBatcher(max_frames=200, max_wait_s=0.05)
        batcher.add(todo)
        while running:
            batcher.add(ledger.add_refs(watcher.get(timeout=batcher.timeout() or 0.5), cfg_hash))
            while (batch := batcher.ready()) is not None:
                batch = ledger.start(batch)
                ...                                          # process, write outputs atomically
                ledger.done_many([(ref, outputs) for ...])
"""

from .batcher import MicroBatcher
from .ledger import STATES, Item, Ledger, stat_refs
from .watcher import FileWatcher, is_ignored_name

__all__ = ["STATES", "FileWatcher", "Item", "Ledger", "MicroBatcher", "is_ignored_name", "stat_refs"]
