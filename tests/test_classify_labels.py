"""Good/bad label lists (PADT/CrystFEL ``file //event`` syntax): reading, writing, concatenating."""

import os

import numpy as np
import pytest

from photonflow.classify.labels import (
    LabelError,
    labels_from_ids,
    load_labels,
    main,
    parse_event,
    read_label_list,
    write_label_list,
)


@pytest.fixture()
def data(tmp_path):
    """Three (empty) data files beside the lists: a.cxi, b.cxi and a single-frame c.cbf."""
    d = tmp_path / "run"
    d.mkdir()
    for name in ("a.cxi", "b.cxi", "c.cbf"):
        (d / name).write_bytes(b"x")
    return d


def test_round_trip_absolute_paths(tmp_path, data):
    refs = [(str(data / "a.cxi"), 0), (str(data / "a.cxi"), 7), (str(data / "c.cbf"), None), (str(data / "b.cxi"), 12)]
    path = write_label_list(tmp_path / "lists" / "good.lst", refs)
    assert path.read_text() == (f"{data}/a.cxi //0\n{data}/a.cxi //7\n{data}/c.cbf\n{data}/b.cxi //12\n")
    assert read_label_list(path) == refs
    assert not [p for p in (tmp_path / "lists").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_first_event_of_each_file_is_kept_unlike_padt_reader(tmp_path, data):
    # PADT's own reader drops the first event of every file; ours keeps all five lines.
    text = f"{data}/a.cxi //0\n{data}/a.cxi //1\n{data}/a.cxi //5\n{data}/b.cxi //0\n{data}/b.cxi //3\n"
    (tmp_path / "bad.lst").write_text(text)
    refs = read_label_list(tmp_path / "bad.lst")
    assert refs == [
        (f"{data}/a.cxi", 0),
        (f"{data}/a.cxi", 1),
        (f"{data}/a.cxi", 5),
        (f"{data}/b.cxi", 0),
        (f"{data}/b.cxi", 3),
    ]
    labels = load_labels([], [tmp_path / "bad.lst"])
    assert len(labels) == 5 and labels.counts()["bad"] == 5
    assert (f"{data}/a.cxi", 0) in labels.refs and (f"{data}/b.cxi", 0) in labels.refs


def test_padt_trailing_spaces_comments_and_blank_lines(tmp_path, data):
    text = (
        f"# written by PADT\n\n{data}/a.cxi //12 \n; CrystFEL-style comment\n"
        f"   {data}/a.cxi //14   # note\n{data}/c.cbf\n\n"
    )
    (tmp_path / "g.lst").write_text(text)
    assert read_label_list(tmp_path / "g.lst") == [
        (f"{data}/a.cxi", 12),
        (f"{data}/a.cxi", 14),
        (f"{data}/c.cbf", None),
    ]


def test_malformed_line_names_file_and_line(tmp_path):
    (tmp_path / "x.lst").write_text("a.cxi //1\n\na.cxi event2\n")
    with pytest.raises(LabelError, match=r"x\.lst line 3: expected 'file' or 'file //N'"):
        read_label_list(tmp_path / "x.lst")
    with pytest.raises(LabelError, match=r"nothere\.lst: label list not found"):
        read_label_list(tmp_path / "nothere.lst")


def test_relative_paths_resolve_against_the_list_directory(tmp_path, data, monkeypatch):
    (data / "labels").mkdir()
    (data / "labels" / "good.lst").write_text("../a.cxi //3\n../c.cbf\n")
    monkeypatch.chdir(tmp_path)  # not the list's directory
    refs = read_label_list(data / "labels" / "good.lst")
    assert refs == [(str(data / "a.cxi"), 3), (str(data / "c.cbf"), None)]
    # written relative, read back to the same absolute paths
    out = write_label_list(data / "labels" / "copy.lst", refs, relative=True)
    assert out.read_text() == "../a.cxi //3\n../c.cbf\n"
    assert read_label_list(out) == refs
    assert load_labels([data / "labels" / "good.lst"], []).missing == []


def test_concatenation_of_lists_from_two_sessions(tmp_path, data):
    (tmp_path / "good1.lst").write_text(f"{data}/a.cxi //0\n{data}/a.cxi //1\n")
    (tmp_path / "good2.lst").write_text(f"{data}/b.cxi //0\n{data}/c.cbf\n")
    (tmp_path / "bad1.lst").write_text(f"{data}/a.cxi //2\n")
    (tmp_path / "bad2.lst").write_text(f"{data}/b.cxi //4\n{data}/b.cxi //5\n")
    ls = load_labels([tmp_path / "good1.lst", tmp_path / "good2.lst"], [tmp_path / "bad1.lst", tmp_path / "bad2.lst"])
    assert ls.refs == [
        (f"{data}/a.cxi", 0),
        (f"{data}/a.cxi", 1),
        (f"{data}/b.cxi", 0),
        (f"{data}/c.cbf", None),
        (f"{data}/a.cxi", 2),
        (f"{data}/b.cxi", 4),
        (f"{data}/b.cxi", 5),
    ]
    assert ls.labels.tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert ls.labels.dtype == np.int8
    assert ls.sources[3] == f"{tmp_path / 'good2.lst'}:2"
    assert ls.sources[6] == f"{tmp_path / 'bad2.lst'}:2"
    assert ls.counts() == {
        "good": 4,
        "bad": 3,
        "total": 7,
        "duplicates": 0,
        "conflicts": 0,
        "missing_files": 0,
        "missing_events": 0,
    }


def test_duplicates_within_a_class_collapse_and_are_counted(tmp_path, data):
    (tmp_path / "g1.lst").write_text(f"{data}/a.cxi //0\n{data}/a.cxi //1\n{data}/a.cxi //0\n")
    # the same file spelled differently (./ and ..) is the same event
    (tmp_path / "g2.lst").write_text(f"{data}/./a.cxi //1\n{data}/../run/b.cxi //2\n")
    (tmp_path / "b.lst").write_text(f"{data}/b.cxi //3\n{data}/b.cxi //3\n")
    ls = load_labels([tmp_path / "g1.lst", tmp_path / "g2.lst"], [tmp_path / "b.lst"])
    assert ls.refs == [(f"{data}/a.cxi", 0), (f"{data}/a.cxi", 1), (f"{data}/../run/b.cxi", 2), (f"{data}/b.cxi", 3)]
    assert ls.labels.tolist() == [1, 1, 1, 0]
    assert ls.duplicates == {"good": 2, "bad": 1}
    assert ls.counts()["duplicates"] == 3


def test_event_in_good_and_bad_is_an_error_naming_it(tmp_path, data):
    (tmp_path / "good.lst").write_text(f"{data}/a.cxi //0\n{data}/a.cxi //7\n")
    (tmp_path / "bad.lst").write_text(f"{data}/b.cxi //1\n\n{data}/a.cxi //7\n")
    with pytest.raises(LabelError) as err:
        load_labels([tmp_path / "good.lst"], [tmp_path / "bad.lst"])
    msg = str(err.value)
    assert f"event {data}/a.cxi //7 is labelled both good and bad" in msg
    assert f"{tmp_path / 'good.lst'}:2" in msg and f"{tmp_path / 'bad.lst'}:3" in msg
    # policies: drop it, or give it to one class; each is reported
    dropped = load_labels([tmp_path / "good.lst"], [tmp_path / "bad.lst"], on_conflict="drop")
    assert dropped.refs == [(f"{data}/a.cxi", 0), (f"{data}/b.cxi", 1)] and dropped.labels.tolist() == [1, 0]
    assert len(dropped.conflicts) == 1 and dropped.conflicts[0].endswith(": dropped")
    as_bad = load_labels([tmp_path / "good.lst"], [tmp_path / "bad.lst"], on_conflict="bad")
    assert as_bad.labels.tolist() == [1, 0, 0] and as_bad.refs[1] == (f"{data}/a.cxi", 7)
    with pytest.raises(ValueError, match="on_conflict"):
        load_labels([], [], on_conflict="maybe")


def test_missing_data_file_reported_rest_kept(tmp_path, data):
    (tmp_path / "good.lst").write_text(f"{data}/a.cxi //0\n{data}/gone.cxi //0\n{data}/gone.cxi //1\n{data}/c.cbf\n")
    (tmp_path / "bad.lst").write_text(f"{data}/b.cxi //2\n")
    ls = load_labels([tmp_path / "good.lst"], [tmp_path / "bad.lst"])
    assert ls.refs == [(f"{data}/a.cxi", 0), (f"{data}/c.cbf", None), (f"{data}/b.cxi", 2)]
    assert ls.labels.tolist() == [1, 1, 0]
    assert ls.missing == [f"{data}/gone.cxi: data file not found (listed in {tmp_path / 'good.lst'}:2)"]
    assert ls.missing_refs == [(f"{data}/gone.cxi", 0), (f"{data}/gone.cxi", 1)]
    assert ls.counts()["missing_events"] == 2
    # a missing label list itself is an error naming it
    with pytest.raises(LabelError, match="nolist.lst: label list not found"):
        load_labels([tmp_path / "nolist.lst"], [])


def test_write_lists_back_from_a_label_set(tmp_path, data):
    (tmp_path / "good.lst").write_text(f"{data}/a.cxi //0\n")
    (tmp_path / "bad.lst").write_text(f"{data}/a.cxi //1\n{data}/c.cbf\n")
    ls = load_labels(tmp_path / "good.lst", tmp_path / "bad.lst")
    g, b = ls.write(tmp_path / "out" / "g.lst", tmp_path / "out" / "b.lst")
    assert read_label_list(g) == [(f"{data}/a.cxi", 0)]
    assert read_label_list(b) == [(f"{data}/a.cxi", 1), (f"{data}/c.cbf", None)]


def test_write_rejects_bad_names_and_events(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        write_label_list(tmp_path / "x.lst", [("a b.cxi", 1)])
    with pytest.raises(ValueError, match="frame index"):
        write_label_list(tmp_path / "x.lst", [("a.cxi", -1)])
    assert not (tmp_path / "x.lst").exists()


def test_labels_from_ids():
    cands = [("/d/a.cxi", i) for i in range(10)] + [("/d/c.cbf", None)]
    assert labels_from_ids([3, "5-7", "0, 9 10"], cands) == [
        ("/d/a.cxi", 3),
        ("/d/a.cxi", 5),
        ("/d/a.cxi", 6),
        ("/d/a.cxi", 7),
        ("/d/a.cxi", 0),
        ("/d/a.cxi", 9),
        ("/d/c.cbf", None),
    ]
    # repeats collapse; events given by name are taken as they are
    assert labels_from_ids(["2", 2, "/d/b.cxi //4", np.int64(1)], cands) == [
        ("/d/a.cxi", 2),
        ("/d/b.cxi", 4),
        ("/d/a.cxi", 1),
    ]
    with pytest.raises(LabelError, match=r"id '11' out of range: 11 candidates \(ids 0\.\.10\)"):
        labels_from_ids(["11"], cands)
    with pytest.raises(LabelError, match="runs backwards"):
        labels_from_ids(["7-5"], cands)


def test_ids_command_writes_and_appends(tmp_path, capsys):
    cands = tmp_path / "sheet.lst"
    write_label_list(cands, [("/d/a.cxi", i) for i in range(6)])
    out = tmp_path / "bad.lst"
    assert main([str(cands), str(out), "1", "3-4"]) == 0
    assert read_label_list(out) == [("/d/a.cxi", 1), ("/d/a.cxi", 3), ("/d/a.cxi", 4)]
    assert main([str(cands), str(out), "--append", "4", "0", "/d/z.cxi", "//9"]) == 0
    assert read_label_list(out) == [("/d/a.cxi", 1), ("/d/a.cxi", 3), ("/d/a.cxi", 4), ("/d/a.cxi", 0), ("/d/z.cxi", 9)]
    assert main([str(cands), str(out), "6"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_parse_event_relative_base():
    assert parse_event("x.cxi //3", base="/data/run") == (os.path.normpath("/data/run/x.cxi"), 3)
    assert parse_event("/abs/x.cxi", base="/data/run") == ("/abs/x.cxi", None)
