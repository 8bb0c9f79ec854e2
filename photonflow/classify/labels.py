"""Good/bad frame labels as PADT writes them: CrystFEL list files, one of good and one of bad events.

List syntax (CrystFEL, as ``indexamajig -i`` reads and PADT writes; read and written by
:mod:`photonflow.io.lists`): one ``file //N`` or ``file`` per line, ``#``/``;`` comments. Every
line is one event, the first event of each file included (PADT's own reader drops it; this one does
not). A relative file name is resolved against the list file's directory, so a list can travel with
its data; absolute names are kept as written.

An event is an :data:`EventRef` ``(path, event)``: the same pair as
:class:`photonflow.io.images.FrameRef` (which is a tuple too, so either can be passed).

Lists from several people or sessions concatenate (:func:`load_labels`): an event listed twice in
the same class counts once (the repeats are counted), an event listed as both good and bad is an
error naming it and both places (or, on request, dropped or given to one class), and events of
data files that are not there are set aside with a message naming the file; the rest goes on.

:func:`labels_from_ids` and ``python -m photonflow.classify.labels`` turn the id numbers a person
reads off a contact sheet (:mod:`photonflow.classify.sheets`) into a label list.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.lists import EVENT_PATTERN, EventRef, ListFileError, format_event, read_event_list, write_event_list
from ..io.lists import parse_event as _parse_event

__all__ = [
    "EventRef",
    "LabelError",
    "LabelSet",
    "format_event",
    "labels_from_ids",
    "load_labels",
    "parse_event",
    "read_label_list",
    "write_label_list",
]

#: The two labels: 1 good, 0 bad (PADT's; every label array, list pair and classifier uses them).
GOOD, BAD = 1, 0
_CONFLICT_POLICIES = ("error", "drop", "good", "bad")


class LabelError(ListFileError):
    """A label list (or a label request) is wrong; the message names the file and line or the event."""


def parse_event(text: str, base: str | os.PathLike | None = None, where: str = "") -> EventRef:
    """One list line (``"path //N"`` or ``"path"``) as an :data:`EventRef`, a relative path resolved
    against ``base`` when given: :func:`photonflow.io.lists.parse_event`, raising LabelError."""
    return _parse_event(text, base, where, error=LabelError)


def read_label_list(path: str | os.PathLike) -> list[EventRef]:
    """Read a PADT/CrystFEL list file: ``[(file, event or None)]`` in file order.

    Every line is one event, the first event of each file included (PADT's reader skips it).
    Relative file names are resolved against the list file's directory. LabelError names the file
    and line of a malformed line, or the list file itself when it cannot be read.
    """
    return [ref for ref, _ in _read_numbered(Path(path))]


def _read_numbered(path: Path) -> list[tuple[EventRef, int]]:
    """``[(event, line number)]`` of a list file; LabelError names file and line."""
    return read_event_list(path, error=LabelError, what="label list")


#: Write events as a list file (atomically): :func:`photonflow.io.lists.write_event_list`
#: (``relative=True`` writes names relative to the list's directory; ``header``: comment lines).
write_label_list = write_event_list


def _key(ref: EventRef) -> EventRef:
    return os.path.normpath(os.path.abspath(os.fspath(ref[0]))), (None if ref[1] is None else int(ref[1]))


@dataclass
class LabelSet:
    """Labelled events from one or more good and bad lists.

    refs: the events (first occurrence order: all good lists, then all bad lists).
    labels: int8 array, 1 good, 0 bad, one per ref. sources: per ref, ``"list file:line"`` of its
    first occurrence. missing: one message per data file that is not there (its events are left out
    of refs). duplicates: per class, how many repeated lines were collapsed. conflicts: one message
    per event listed as both good and bad that a non-error policy resolved. missing_refs: the events
    left out because their file is not there.
    """

    refs: list[EventRef]
    labels: np.ndarray
    sources: list[str]
    missing: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=lambda: {"good": 0, "bad": 0})
    conflicts: list[str] = field(default_factory=list)
    missing_refs: list[EventRef] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def good(self) -> list[EventRef]:
        return [r for r, lab in zip(self.refs, self.labels) if lab == GOOD]

    @property
    def bad(self) -> list[EventRef]:
        return [r for r, lab in zip(self.refs, self.labels) if lab == BAD]

    def counts(self) -> dict[str, int]:
        """``{"good", "bad", "total", "duplicates", "conflicts", "missing_files", "missing_events"}``."""
        n_good = int(np.count_nonzero(self.labels == GOOD))
        return {
            "good": n_good,
            "bad": len(self.refs) - n_good,
            "total": len(self.refs),
            "duplicates": int(sum(self.duplicates.values())),
            "conflicts": len(self.conflicts),
            "missing_files": len(self.missing),
            "missing_events": len(self.missing_refs),
        }

    def write(
        self, good_path: str | os.PathLike, bad_path: str | os.PathLike, relative: bool = False
    ) -> tuple[Path, Path]:
        """Write the good and the bad events back as two list files (atomically)."""
        return (
            write_label_list(good_path, self.good, relative=relative),
            write_label_list(bad_path, self.bad, relative=relative),
        )


def _as_list(paths) -> list:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    return list(paths)


def load_labels(
    good_lists: Sequence[str | os.PathLike] | str | os.PathLike,
    bad_lists: Sequence[str | os.PathLike] | str | os.PathLike,
    on_conflict: str = "error",
    check_files: bool = True,
) -> LabelSet:
    """Concatenate good and bad list files into one :class:`LabelSet`.

    Duplicates within a class collapse to one event (counted in ``duplicates``). An event in both
    classes: ``on_conflict="error"`` (default) raises LabelError naming the event and the list
    file:line of each; ``"drop"`` leaves it out of both; ``"good"``/``"bad"`` keeps it in that class.
    Either way a resolved conflict is reported in ``conflicts``. Paths are compared after making
    them absolute and normalised (``a/./b.cxi`` and ``a/b.cxi`` are one file; symlinks are not
    followed). With ``check_files``, the events of a data file that does not exist are left out and
    the file is named once in ``missing``; whether an event index exists in its file is checked when
    the frames are read (:func:`photonflow.classify.features.extract_features`). A list file that
    cannot be read raises LabelError.
    """
    if on_conflict not in _CONFLICT_POLICIES:
        raise ValueError(f"on_conflict must be one of {_CONFLICT_POLICIES}, got {on_conflict!r}")
    entries: dict[EventRef, dict] = {}  # key -> {"ref", "labels": {label: first "list:line"}}
    order: list[EventRef] = []
    duplicates = {"good": 0, "bad": 0}
    for label, name, lists in ((GOOD, "good", good_lists), (BAD, "bad", bad_lists)):
        for list_path in _as_list(lists):
            list_path = Path(list_path)
            for ref, line in _read_numbered(list_path):
                key = _key(ref)
                where = f"{list_path}:{line}"
                entry = entries.get(key)
                if entry is None:
                    entries[key] = {"ref": ref, "labels": {label: where}}
                    order.append(key)
                elif label in entry["labels"]:
                    duplicates[name] += 1
                else:
                    first = entry["labels"][GOOD if label == BAD else BAD]
                    if on_conflict == "error":
                        raise LabelError(
                            f"event {format_event(ref)} is labelled both good and bad ({first} and {where})"
                        )
                    entry["labels"][label] = where
    conflicts = []
    keep: list[EventRef] = []
    final: dict[EventRef, tuple[int, str]] = {}
    for key in order:
        entry = entries[key]
        if len(entry["labels"]) == 2:
            places = f"good at {entry['labels'][GOOD]}, bad at {entry['labels'][BAD]}"
            text = f"event {format_event(entry['ref'])} labelled both good and bad ({places})"
            if on_conflict == "drop":
                conflicts.append(f"{text}: dropped")
                continue
            label = GOOD if on_conflict == "good" else BAD
            conflicts.append(f"{text}: kept as {on_conflict}")
        else:
            (label,) = entry["labels"]
        final[key] = (label, entry["labels"][label])
        keep.append(key)
    missing: list[str] = []
    missing_refs: list[EventRef] = []
    if check_files:
        exists: dict[str, bool] = {}
        kept = []
        for key in keep:
            ref, where = entries[key]["ref"], final[key][1]
            f = os.fspath(ref[0])
            if f not in exists:
                exists[f] = os.path.isfile(f)
                if not exists[f]:
                    missing.append(f"{f}: data file not found (listed in {where})")
            if exists[f]:
                kept.append(key)
            else:
                missing_refs.append(ref)
        keep = kept
    refs = [entries[k]["ref"] for k in keep]
    labels = np.array([final[k][0] for k in keep], dtype=np.int8)
    sources = [final[k][1] for k in keep]
    return LabelSet(refs, labels, sources, missing, duplicates, conflicts, missing_refs)


_RANGE = re.compile(r"^(\d+)-(\d+)$")
_IDS = re.compile(r"^[\d,\s-]+$")


def labels_from_ids(ids: Iterable[int | str], candidates: Sequence[EventRef]) -> list[EventRef]:
    """The events named by ``ids``, in the order given, each once.

    An id is an index into ``candidates`` (the numbers a contact sheet prints, 0-based: the order of
    the sheet's candidate list), as an int or a string: ``5``, ``"5"``, or an inclusive range
    ``"5-9"``; or an event written as in a list file, ``"path //N"`` / ``"path"``, taken as it is
    (it need not be a candidate). Strings may hold several ids separated by commas or spaces
    (``"3, 5-7 12"``). LabelError names an id out of range or not understood.
    """
    out: list[EventRef] = []
    seen: set[EventRef] = set()
    n = len(candidates)

    def add(ref):
        key = _key(ref)
        if key not in seen:
            seen.add(key)
            out.append((os.fspath(ref[0]), None if ref[1] is None else int(ref[1])))

    def index(i: int, text) -> None:
        if not 0 <= i < n:
            raise LabelError(f"id {text!r} out of range: {n} candidate{'s' * (n != 1)} (ids 0..{n - 1})")
        add(candidates[i])

    for item in ids:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            index(int(item), item)
            continue
        if isinstance(item, tuple) and len(item) == 2:  # an EventRef given directly
            add(item)
            continue
        text = str(item).strip()
        if not _IDS.match(text):  # an event: "path //N" or "path"
            add(parse_event(text, where=f"id {text!r}"))
            continue
        for token in re.split(r"[,\s]+", re.sub(r"\s*-\s*", "-", text)):
            if not token:
                continue
            m = _RANGE.match(token)
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if b < a:
                    raise LabelError(f"id range {token!r} runs backwards")
                for i in range(a, b + 1):
                    index(i, token)
            elif token.isdigit():
                index(int(token), token)
            else:
                raise LabelError(f"id {token!r} is neither a number, a range 'a-b' nor an event 'path //N'")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m photonflow.classify.labels CANDIDATES.lst OUT.lst ID [ID ...]``: write the events
    that the ids name (indices into the candidate list a contact sheet wrote, ranges ``a-b``, or
    ``path //N``) to OUT.lst; ``--append`` adds them to an existing OUT.lst (repeats collapse)."""
    parser = argparse.ArgumentParser(
        prog="python -m photonflow.classify.labels", description="Write a good/bad label list from contact-sheet ids."
    )
    parser.add_argument("candidates", help="candidate list written beside the contact sheet (ids index into it)")
    parser.add_argument("output", help="label list to write (e.g. bad.lst)")
    parser.add_argument("ids", nargs="+", help="ids (5, 5-9) or events ('path //N')")
    parser.add_argument("--append", action="store_true", help="keep the events already in OUTPUT")
    parser.add_argument("--relative", action="store_true", help="write paths relative to OUTPUT's directory")
    args = parser.parse_args(argv)
    try:
        refs = labels_from_ids(_split_ids(args.ids), read_label_list(args.candidates))
        if args.append and os.path.exists(args.output):
            refs = labels_from_ids(read_label_list(args.output) + refs, [])
        write_label_list(args.output, refs, relative=args.relative)
    except (LabelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.output}: {len(refs)} event{'s' * (len(refs) != 1)}")
    return 0


def _split_ids(tokens: Sequence[str]) -> list[str]:
    """Command-line tokens → ids; ``path //N`` arrives as two tokens and is joined back."""
    out: list[str] = []
    for token in tokens:
        if EVENT_PATTERN.match(token) and out:
            out[-1] = f"{out[-1]} {token}"
        else:
            out.append(token)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
