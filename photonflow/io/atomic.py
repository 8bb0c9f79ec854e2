"""Atomic output files: write to a hidden temporary file, then ``os.replace``.

A reader (a file watcher, a person, the next task) sees either the old file or
the complete new one, never a partial file. The temporary file lives in the same
directory as the target (so ``os.replace`` is a rename within one file system),
its name starts with ``.`` (so directory walkers skip it) and it keeps the
target's suffix (so writers that pick a format from the suffix — h5py, numpy,
fabio, tifffile — behave as for the final name).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes"]


def _temporary_name(final: Path) -> Path:
    # Not created here: the writer creates it with the usual permissions (umask).
    token = uuid.uuid4().hex[:12]
    return final.with_name(f".{final.stem}.{token}.tmp{final.suffix}")


@contextmanager
def atomic_path(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; move it onto ``final_path`` on success.

    Parent directories are created. If the body raises, the temporary file is
    removed and ``final_path`` is left untouched (an existing file keeps its old
    content). The body must create the temporary file.

    >>> with atomic_path("out/curves.h5") as tmp:
    ...     with h5py.File(tmp, "w") as f: ...
    """
    final = Path(final_path)
    if not os.path.isdir(final.parent):  # a stat: much cheaper than mkdir(exist_ok=True) per file
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write of {final}: the writer did not create {tmp.name}")
        os.replace(tmp, final)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation); return the path."""
    return atomic_write_bytes(path, text.encode(encoding))
