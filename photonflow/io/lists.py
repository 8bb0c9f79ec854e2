"""CrystFEL list files (what ``indexamajig -i`` reads, PADT writes and the SFX hit finder writes).

One event per line:

    /data/r0484_8.cxi //12        frame 12 (0-based index along the image dataset's axis 0)
    /data/shot_00017.cbf          a single-frame file: no event

Blank lines and lines starting with ``#`` or ``;`` are skipped, and so is anything after the event
that starts with ``#`` or ``;`` (a trailing comment); trailing spaces are ignored. File names with
whitespace cannot be listed. An event is an :data:`EventRef` ``(path, event)``.

The hit lists of :mod:`photonflow.io.cxi` and the good/bad label lists of
:mod:`photonflow.classify.labels` are both read and written here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from photonflow.errors import InputError

from .atomic import atomic_write_text

__all__ = [
    "EVENT_PATTERN",
    "EventRef",
    "ListFileError",
    "format_event",
    "parse_event",
    "read_event_list",
    "write_event_list",
]

EventRef = tuple[str, int | None]
"""``(path, event)``: ``event`` is the 0-based frame index, or None for a single-frame file."""

#: The event token of a list line, ``//N``.
EVENT_PATTERN = re.compile(r"^//(\d+)$")
_COMMENT = ("#", ";")


class ListFileError(InputError, ValueError):
    """A list file (or one event of it) is malformed; the message names the file and line."""


def format_event(ref: EventRef) -> str:
    """``"path //N"`` (``"path"`` for a single-frame file): the list-file form of one event."""
    path, event = ref[0], ref[1]
    return os.fspath(path) if event is None else f"{os.fspath(path)} //{int(event)}"


def parse_event(
    text: str, base: str | os.PathLike | None = None, where: str = "", error: type[ValueError] = ListFileError
) -> EventRef:
    """Parse one list line (``"path //N"`` or ``"path"``) into an :data:`EventRef`.

    ``base``: directory that a relative path is resolved against (None: keep it as written).
    ``where``: prefix for the error message (``"list.lst line 3"``). A trailing ``#``/``;`` comment
    is ignored. Anything else raises ``error``.
    """
    parts = text.split()
    for k, token in enumerate(parts[1:], start=1):
        if token.startswith(_COMMENT):
            parts = parts[:k]
            break
    prefix = f"{where}: " if where else ""
    if not parts:
        raise error(f"{prefix}empty event")
    event: int | None = None
    if len(parts) == 2:
        m = EVENT_PATTERN.match(parts[1])
        if m is None:
            raise error(f"{prefix}expected 'file' or 'file //N', got {text.strip()!r} (N a frame index >= 0)")
        event = int(m.group(1))
    elif len(parts) > 2:
        raise error(
            f"{prefix}expected 'file' or 'file //N', got {text.strip()!r} (file names with spaces cannot be listed)"
        )
    name = parts[0]
    if base is not None and not os.path.isabs(name):
        name = os.path.normpath(os.path.join(os.fspath(base), name))
    return name, event


def read_event_list(
    path: str | os.PathLike, *, resolve: bool = True, error: type[ValueError] = ListFileError, what: str = "list file"
) -> list[tuple[EventRef, int]]:
    """``[(event, line number)]`` of a list file, in file order.

    ``resolve``: relative file names are resolved against the list file's directory (False: kept
    as written). ``error`` (raised for a malformed line, naming file and line, or for a list that
    cannot be read) and ``what`` (the list's name in those messages) let each kind of list speak
    for itself.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {what} ({exc})") from None
    base = path.parent if resolve else None
    out = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(_COMMENT):
            continue
        out.append((parse_event(line, base, where=f"{path} line {n}", error=error), n))
    return out


def write_event_list(
    path: str | os.PathLike,
    refs: Iterable[EventRef],
    relative: bool = False,
    header: str | None = None,
    item: str = "event",
) -> Path:
    """Write events as a list file (atomically), one ``file //N`` (or ``file``) per line; return the path.

    ``relative``: write file names relative to the list's directory (the list then moves with its
    data; :func:`read_event_list` resolves them back). ``header``: comment lines put first (each
    prefixed ``# ``); CrystFEL does not read comments, so leave it None for lists meant for
    indexamajig. ValueError (naming the ``item`` by its position) for a file name with whitespace
    or a negative/non-integer event.
    """
    path = Path(path)
    base = os.path.abspath(path.parent)
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    for i, ref in enumerate(refs):
        name, event = os.fspath(ref[0]), ref[1]
        if not name or any(c.isspace() for c in name):
            raise ValueError(
                f"{path}: {item} {i}: file name {name!r} is empty or has whitespace "
                "(CrystFEL list files cannot hold it)"
            )
        if event is not None and (isinstance(event, bool) or not isinstance(event, (int, np.integer)) or event < 0):
            raise ValueError(f"{path}: {item} {i} ({name}): event must be a frame index >= 0 or None, got {event!r}")
        if relative:
            name = os.path.relpath(os.path.abspath(name), base)
        lines.append(format_event((name, event)))
    return atomic_write_text(path, "".join(line + "\n" for line in lines))
