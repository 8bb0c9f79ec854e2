"""Micro-batching of arrivals: up to ``max_frames`` frames or ``max_wait_s`` seconds, whichever first.

At high arrival rates a batch fills up (``max_frames``) long before its oldest frame has waited
``max_wait_s``, so the per-batch overhead is shared by many frames and throughput holds; at low rates a
frame never waits longer than ``max_wait_s`` for company, so latency stays low.

Pure and single-threaded: the caller supplies the time (``now``; default ``clock()``, monotonic
seconds), so tests drive it with an injected clock::

    b = MicroBatcher(max_frames=32, max_wait_s=0.02)
    while running:
        b.add(watcher.get(timeout=b.timeout() or 0.1))
        while (batch := b.ready()) is not None:
            process(batch)
    process(b.flush())
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["MicroBatcher"]

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Collect items (FrameRefs) into batches of at most ``max_frames``.

    ``ready(now)`` returns a batch (oldest items first) when ``max_frames`` items are waiting, or when
    the oldest waiting item was added ``max_wait_s`` or more before ``now``; otherwise None.
    ``flush()`` returns everything waiting (possibly more than ``max_frames``; call ``ready`` in a loop
    if batches must stay bounded). Items keep their order. Not thread-safe (use it from one thread).
    """

    def __init__(self, max_frames: int = 32, max_wait_s: float = 0.02, clock: Callable[[], float] = time.monotonic):
        if int(max_frames) < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames!r}")
        if not max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s!r}")
        self.max_frames = int(max_frames)
        self.max_wait_s = float(max_wait_s)
        self.clock = clock
        self._items: deque[tuple[float, T]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, refs: Iterable[T], now: float | None = None) -> None:
        """Queue ``refs``, all stamped with arrival time ``now`` (default ``clock()``)."""
        t = self.clock() if now is None else now
        self._items.extend((t, r) for r in refs)

    def oldest(self) -> float | None:
        """Arrival time of the oldest waiting item, or None when empty."""
        return self._items[0][0] if self._items else None

    def deadline(self) -> float | None:
        """Clock time at which the oldest waiting item has waited ``max_wait_s`` (None when empty)."""
        return self._items[0][0] + self.max_wait_s if self._items else None

    def timeout(self, now: float | None = None) -> float | None:
        """Seconds until ``ready`` returns a batch by time (0 when one is ready now); None when empty.

        Use it as the timeout of the next ``watcher.get``.
        """
        if not self._items:
            return None
        if len(self._items) >= self.max_frames:
            return 0.0
        t = self.clock() if now is None else now
        return max(0.0, self._items[0][0] + self.max_wait_s - t)

    def ready(self, now: float | None = None) -> list[T] | None:
        """A batch of up to ``max_frames`` items if one is due at ``now``, else None."""
        if not self._items:
            return None
        if len(self._items) < self.max_frames:
            t = self.clock() if now is None else now
            if t < self._items[0][0] + self.max_wait_s:  # same arithmetic as deadline()
                return None
        n = min(self.max_frames, len(self._items))
        return [self._items.popleft()[1] for _ in range(n)]

    def flush(self) -> list[T]:
        """Everything waiting, oldest first (empty list when nothing waits)."""
        out = [r for _, r in self._items]
        self._items.clear()
        return out
