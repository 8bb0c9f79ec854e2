"""Tests for photonflow.io: frames, masks, .chi, NeXus curves, tables, atomic writes."""

from __future__ import annotations

import json
import os
import pickle

import fabio
import h5py
import hdf5plugin
import numpy as np
import pytest
import tifffile
from fabio.cbfimage import CbfImage
from fabio.edfimage import EdfImage
from fabio.fit2dmaskimage import Fit2dMaskImage
from fabio.tifimage import TifImage

from photonflow.io import (
    DEFAULT_COLUMN_LABELS,
    FrameReadError,
    FrameRef,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    detector_mask,
    frame_count,
    iter_frame_refs,
    parse_frame_spec,
    read_batch,
    read_chi,
    read_curves,
    read_fit2d_mask,
    read_frame,
    read_frames,
    read_mask,
    read_table_csv,
    read_table_hdf5,
    write_chi,
    write_curves,
    write_fit2d_mask,
    write_table_csv,
    write_table_hdf5,
)

RNG = np.random.default_rng(20240601)


def _image(shape=(37, 53), dtype=np.int32, low=-2, high=5000):
    return RNG.integers(low, high, shape).astype(dtype)


def _stack(n=6, shape=(24, 31), dtype=np.uint32):
    return RNG.integers(0, 60000, (n, *shape)).astype(dtype)


def _write_h5(path, data, name="/entry/data/data", **kwargs):
    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=data, chunks=(1, *data.shape[1:]) if data.ndim == 3 else None, **kwargs)
    return path


# ============================================================================ atomic


def test_atomic_path_success_creates_parents_and_hidden_same_suffix_temp(tmp_path):
    final = tmp_path / "a" / "b" / "curves.h5"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".") and tmp.suffix == ".h5"
        assert not final.exists()
        with h5py.File(tmp, "w") as f:
            f["x"] = np.arange(3)
    with h5py.File(final) as f:
        assert f["x"][()].tolist() == [0, 1, 2]
    assert os.listdir(final.parent) == ["curves.h5"]


def test_atomic_path_failure_leaves_old_file_and_no_temp(tmp_path):
    final = tmp_path / "out.npy"
    np.save(final, np.arange(4))
    with pytest.raises(RuntimeError, match="writer broke"):
        with atomic_path(final) as tmp:
            np.save(tmp, np.zeros(1000))  # partial write...
            raise RuntimeError("writer broke")  # ...then the writer fails
    assert np.load(final).tolist() == [0, 1, 2, 3]
    assert os.listdir(tmp_path) == ["out.npy"]


def test_atomic_path_failure_new_file_never_appears(tmp_path):
    final = tmp_path / "new.edf"
    with pytest.raises(ValueError):
        with atomic_path(final) as tmp:
            EdfImage(data=np.ones((4, 4), np.float32)).write(os.fspath(tmp))
            raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_text_and_bytes(tmp_path):
    p = atomic_write_text(tmp_path / "d" / "x.txt", "héllo\n wörld")
    assert p.read_bytes() == "héllo\n wörld".encode()
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(p.parent)) == ["x.txt"]


# ============================================================================ single-frame formats


@pytest.mark.parametrize(
    "suffix,writer,dtype",
    [
        (".edf", EdfImage, np.int32),
        (".edf", EdfImage, np.float32),
        (".cbf", CbfImage, np.int32),
        (".tif", TifImage, np.int32),
        (".tif", TifImage, np.uint16),
    ],
)
def test_fabio_written_formats_round_trip(tmp_path, suffix, writer, dtype):
    data = _image(dtype=dtype, low=0 if dtype == np.uint16 else -2)
    if dtype == np.float32:
        data = data * np.float32(0.25)
    path = tmp_path / f"frame_0001{suffix}"
    writer(data=data).write(os.fspath(path))
    frame = read_frame(path)
    assert frame.shape == (37, 53) and frame.dtype == data.dtype
    np.testing.assert_array_equal(frame, data)
    assert frame_count(path) == 1
    np.testing.assert_array_equal(read_frames(path), data[None])
    np.testing.assert_array_equal(read_frame(path, event=0), data)


def test_tifffile_multipage_tiff_events(tmp_path):
    data = _stack(3, dtype=np.uint16)
    path = tmp_path / "stack.tiff"
    tifffile.imwrite(path, data, photometric="minisblack")  # 3 pages, not one RGB page
    assert frame_count(path) == 3
    np.testing.assert_array_equal(read_frame(path, 2), data[2])
    np.testing.assert_array_equal(read_frames(path, [2, 0]), data[[2, 0]])
    with pytest.raises(FrameReadError, match="give an event"):
        read_frame(path)


def test_multiframe_edf(tmp_path):
    data = _stack(3, dtype=np.int32)
    img = EdfImage(data=data[0])
    img.append_frame(data=data[1])
    img.append_frame(data=data[2])
    path = tmp_path / "multi.edf"
    img.write(os.fspath(path))
    assert frame_count(path) == 3
    for i in range(3):
        np.testing.assert_array_equal(read_frame(path, i), data[i])
    np.testing.assert_array_equal(read_frames(path, range(1, 3)), data[1:])
    with pytest.raises(FrameReadError, match=r"event 3 out of range \(file has 3 frames\)"):
        read_frame(path, 3)


def test_real_pilatus_tiff(shared_data):
    path = shared_data / "saxs" / "CeO2_Pilatus1M.tif"
    frame = read_frame(path)
    # README: 981 x 1043 pixels (width x height) -> numpy (rows, cols) = (1043, 981)
    assert frame.shape == (1043, 981) and frame.dtype == np.int32
    assert (frame == -1).sum() == 73533  # module gaps
    assert (frame == -2).sum() == 27  # bad pixels
    np.testing.assert_array_equal(frame, fabio.open(os.fspath(path)).data)
    mask = detector_mask(frame)
    assert mask.sum() == 73533 + 27 and not mask[frame >= 0].any()


def test_real_marccd(shared_data):
    path = shared_data / "laue" / "Ge_blanc_0000.mccd"
    frame = read_frame(path)
    assert frame.shape == (2048, 2048) and frame.dtype == np.uint16
    np.testing.assert_array_equal(frame, fabio.open(os.fspath(path)).data)
    assert frame_count(path) == 1
    assert 0 < frame.mean() < 65535


def test_real_scmos_tiff_matches_fabio(shared_data):
    path = shared_data / "laue" / "img_Ge_sCMOS_0000.tif"
    frame = read_frame(path)
    assert frame.shape == (2018, 2016) and frame.dtype == np.uint16
    np.testing.assert_array_equal(frame, fabio.open(os.fspath(path)).data)


# ============================================================================ HDF5


@pytest.mark.parametrize(
    "compression",
    [
        pytest.param(hdf5plugin.Bitshuffle(cname="lz4"), id="bitshuffle-lz4"),
        pytest.param(hdf5plugin.LZ4(), id="lz4"),
        pytest.param(hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.BITSHUFFLE), id="blosc"),
        pytest.param({"compression": "gzip"}, id="gzip"),
        pytest.param({}, id="none"),
    ],
)
def test_hdf5_compressed_round_trip(tmp_path, compression):
    data = _stack(8, dtype=np.uint32)
    path = _write_h5(tmp_path / "eiger_000001.h5", data, **compression)
    if compression:
        with h5py.File(path) as f:  # really compressed with that filter
            dcpl = f["/entry/data/data"].id.get_create_plist()
            assert dcpl.get_nfilters() >= 1
    assert frame_count(path) == 8
    np.testing.assert_array_equal(read_frame(path, 5), data[5])
    np.testing.assert_array_equal(read_frames(path), data)
    np.testing.assert_array_equal(read_frames(path, range(2, 6)), data[2:6])  # one slice
    np.testing.assert_array_equal(read_frames(path, [1, 4, 7]), data[[1, 4, 7]])
    np.testing.assert_array_equal(read_frames(path, [7, 0, 3]), data[[7, 0, 3]])  # any order
    np.testing.assert_array_equal(read_frames(path, slice(None, None, 3)), data[::3])


@pytest.mark.parametrize(
    "name,suffix",
    [("/entry_1/data_1/data", ".cxi"), ("/entry/instrument/detector/data", ".nxs"), ("/scan/images", ".hdf5")],
)
def test_hdf5_dataset_discovery(tmp_path, name, suffix):
    data = _stack(3, dtype=np.int16)
    path = tmp_path / f"run{suffix}"
    with h5py.File(path, "w") as f:
        f["/aaa/flat"] = np.ones((24, 31))  # 2D: not an image stack
        f["/aaa/ids"] = np.arange(3)
        f[name] = data
    np.testing.assert_array_equal(read_frame(path, 2), data[2])
    assert frame_count(path) == 3


def test_hdf5_candidate_order_and_explicit_dataset(tmp_path):
    a, b = _stack(2), _stack(4)
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f["/entry/instrument/detector/data"] = b
        f["/entry/data/data"] = a
    assert frame_count(path) == 2  # /entry/data/data wins
    assert frame_count(path, dataset="/entry/instrument/detector/data") == 4
    np.testing.assert_array_equal(read_frame(path, 3, dataset="/entry/instrument/detector/data"), b[3])
    np.testing.assert_array_equal(read_batch([(path, 1)], dataset="entry/instrument/detector/data").frames[0], b[1])


def test_hdf5_errors_name_file_event_reason(tmp_path):
    path = _write_h5(tmp_path / "scan.h5", _stack(3))
    with pytest.raises(FrameReadError) as err:
        read_frame(path, 3)
    assert err.value.path == os.fspath(path) and err.value.event == 3
    assert str(err.value) == f"{path} (event 3): event 3 out of range (file has 3 frames)"
    with pytest.raises(FrameReadError, match="out of range"):
        read_frame(path, -1)
    with pytest.raises(FrameReadError, match=r"dataset '/nope' not found"):
        read_frame(path, 0, dataset="/nope")
    with pytest.raises(FrameReadError, match=r"give an event \(0\.\.2\)"):
        read_frame(path)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f["/entry/title"] = "no images"
    with pytest.raises(FrameReadError, match="no image dataset found"):
        read_frame(empty, 0)


def test_truncated_and_garbage_hdf5(tmp_path):
    good = _write_h5(tmp_path / "good.h5", _stack(4), **hdf5plugin.Bitshuffle(cname="lz4"))
    raw = good.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FrameReadError) as err:
        read_frame(trunc, 1)
    assert "trunc.h5" in str(err.value) and "(event 1)" in str(err.value)
    assert "truncated" in err.value.reason.lower()
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(FrameReadError, match=r"garbage\.h5 \(event 0\): OSError"):
        read_frame(garbage, 0)


# ============================================================================ errors for single-frame files


def test_truncated_tiff_is_frame_read_error(tmp_path, shared_data):
    raw = (shared_data / "saxs" / "CeO2_Pilatus1M.tif").read_bytes()
    path = tmp_path / "frame_0001.tif"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FrameReadError) as err:
        read_frame(path)
    assert err.value.path == os.fspath(path) and err.value.event is None
    assert str(err.value).startswith(f"{path} (single frame): truncated file")


def test_truncated_tiff_small(tmp_path):
    path = tmp_path / "frame_0002.tif"
    tifffile.imwrite(path, _image((200, 300)))
    path.write_bytes(path.read_bytes()[:20000])
    with pytest.raises(FrameReadError, match=r"frame_0002\.tif \(single frame\): truncated file"):
        read_frame(path)


def test_truncated_edf_and_cbf(tmp_path):
    data = _image((100, 120))
    for suffix, writer in ((".edf", EdfImage), (".cbf", CbfImage)):
        path = tmp_path / f"t{suffix}"
        writer(data=data).write(os.fspath(path))
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
        with pytest.raises(FrameReadError, match=rf"t\{suffix} \(single frame\): truncated file"):
            read_frame(path)


def test_garbage_missing_empty_files(tmp_path):
    for name in ("junk.tif", "junk.edf", "junk.cbf", "junk.mccd"):
        p = tmp_path / name
        p.write_bytes(b"\x89garbage" * 50)
        with pytest.raises(FrameReadError, match=rf"{name} \(single frame\): "):
            read_frame(p)
    with pytest.raises(FrameReadError, match=r"missing\.tif \(event 2\): no such file"):
        read_frame(tmp_path / "missing.tif", 2)
    (tmp_path / "zero.cbf").write_bytes(b"")
    with pytest.raises(FrameReadError, match="empty file"):
        read_frame(tmp_path / "zero.cbf")
    with pytest.raises(FrameReadError, match="empty file"):
        frame_count(tmp_path / "zero.cbf")


def test_single_frame_event_out_of_range(tmp_path):
    path = tmp_path / "one.edf"
    EdfImage(data=_image()).write(os.fspath(path))
    with pytest.raises(FrameReadError, match=r"one\.edf \(event 1\): event 1 out of range \(file has 1 frame\)"):
        read_frame(path, 1)


def test_frame_read_error_pickles():
    err = FrameReadError("/data/x.h5", 7, "truncated file: eof")
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.event, back.reason) == ("/data/x.h5", 7, "truncated file: eof")
    assert str(back) == "/data/x.h5 (event 7): truncated file: eof"
    assert back.ref == FrameRef("/data/x.h5", 7)


# ============================================================================ walking


@pytest.fixture
def frame_tree(tmp_path):
    root = tmp_path / "run"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for i in (1, 2, 10):
        EdfImage(data=_image((8, 9))).write(os.fspath(root / f"img_{i}.edf"))
    tifffile.imwrite(root / "sub" / "b.TIF", _image((8, 9)))
    _write_h5(root / "sub" / "a.h5", _stack(3, (8, 9)))
    (root / "notes.txt").write_text("not a frame")
    (root / ".img_0.edf").write_bytes(b"temporary")  # atomic-write temp: skipped
    EdfImage(data=_image((8, 9))).write(os.fspath(root / ".hidden" / "c.edf"))
    return root


def test_iter_frame_refs_directory_order(frame_tree):
    refs = list(iter_frame_refs(frame_tree))
    got = [(os.path.relpath(r.path, frame_tree), r.event) for r in refs]
    assert got == [
        ("img_1.edf", None),
        ("img_2.edf", None),
        ("img_10.edf", None),  # natural order
        ("sub/a.h5", 0),
        ("sub/a.h5", 1),
        ("sub/a.h5", 2),
        ("sub/b.TIF", None),  # patterns are case-insensitive
    ]
    assert got == [(os.path.relpath(r.path, frame_tree), r.event) for r in iter_frame_refs(frame_tree)]
    flat = list(iter_frame_refs(frame_tree, recursive=False))
    assert [os.path.basename(r.path) for r in flat] == ["img_1.edf", "img_2.edf", "img_10.edf"]
    only_h5 = list(iter_frame_refs(frame_tree, patterns=("*.h5",)))
    assert [r.event for r in only_h5] == [0, 1, 2]


def test_iter_frame_refs_mixed_inputs_and_ranges(frame_tree):
    h5 = frame_tree / "sub" / "a.h5"
    txt = frame_tree / "notes.txt"
    refs = list(iter_frame_refs([f"{h5}:1-3", frame_tree / "img_2.edf", f"{h5}:0", f"{h5}:2-", f"{h5}:-1", txt]))
    assert refs == [
        FrameRef(str(h5), 1),
        FrameRef(str(h5), 2),
        FrameRef(str(frame_tree / "img_2.edf"), None),
        FrameRef(str(h5), 0),
        FrameRef(str(h5), 2),
        FrameRef(str(h5), 0),
        FrameRef(str(txt), None),  # an explicit file is taken whatever its suffix
    ]
    assert FrameRef(str(h5), 1).label == "a.h5:1" and str(FrameRef(str(h5), 1)) == f"{h5}:1"
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        list(iter_frame_refs(frame_tree / "nope.h5"))
    with pytest.raises(FileNotFoundError, match="nope.h5:1-2"):
        list(iter_frame_refs(f"{frame_tree}/nope.h5:1-2"))


def test_parse_frame_spec():
    assert parse_frame_spec("/d/x.h5:10-20") == ("/d/x.h5", 10, 20)
    assert parse_frame_spec("/d/x.h5:7") == ("/d/x.h5", 7, 8)
    assert parse_frame_spec("/d/x.h5:3-") == ("/d/x.h5", 3, None)
    assert parse_frame_spec("/d/x.h5:-4") == ("/d/x.h5", 0, 4)
    assert parse_frame_spec("/d/x.h5") is None
    assert parse_frame_spec("/d/x.h5:-") is None
    assert parse_frame_spec("/d/x.h5:a-b") is None


def test_iter_frame_refs_range_past_end_fails_on_read(frame_tree):
    h5 = frame_tree / "sub" / "a.h5"
    refs = list(iter_frame_refs(f"{h5}:2-5"))
    assert [r.event for r in refs] == [2, 3, 4]
    batch = read_batch(refs)
    assert batch.refs == refs[:1] and [f.event for f in batch.failures] == [3, 4]
    assert "out of range" in batch.failures[0].reason


def test_read_into_out_buffer(tmp_path):
    data = _stack(4, (8, 9), dtype=np.uint16)
    h5 = _write_h5(tmp_path / "s.h5", data, **hdf5plugin.Bitshuffle(cname="lz4"))
    tif = tmp_path / "f.tif"
    tifffile.imwrite(tif, data[1])
    buf = np.zeros((4, 8, 9), np.uint16)
    assert np.shares_memory(read_frame(h5, 2, out=buf[0]), buf)
    np.testing.assert_array_equal(buf[0], data[2])
    got = read_frame(tif, out=buf[1])
    assert np.shares_memory(got, buf)
    np.testing.assert_array_equal(buf[1], data[1])
    assert np.shares_memory(read_frames(h5, [3, 0], out=buf[2:4]), buf)
    np.testing.assert_array_equal(buf[2:4], data[[3, 0]])
    wrong = np.zeros((8, 9), np.float32)  # wrong dtype: ignored, a new array comes back
    got = read_frame(h5, 1, out=wrong)
    assert not np.shares_memory(got, wrong) and got.dtype == np.uint16 and not wrong.any()


# ============================================================================ batches


def test_read_batch_collects_failures_keeps_dtype(tmp_path, shared_data):
    pil = shared_data / "saxs" / "CeO2_Pilatus1M.tif"
    other = shared_data / "saxs" / "Fe3O4C_M1_map_1_P1_E1_001.tif"
    small = tmp_path / "small.edf"
    EdfImage(data=_image((10, 10))).write(os.fspath(small))
    bad = tmp_path / "bad.tif"
    bad.write_bytes(pil.read_bytes()[:1000])
    refs = [FrameRef(str(pil)), FrameRef(str(bad)), FrameRef(str(small)), FrameRef(str(other))]
    frames, good, failures = read_batch(refs)
    assert frames.shape == (2, 1043, 981) and frames.dtype == np.int32
    assert good == [refs[0], refs[3]]
    assert frames.min() == -2  # Pilatus gap/bad values survive
    np.testing.assert_array_equal(frames[0], read_frame(pil))
    assert [f.path for f in failures] == [str(bad), str(small)]
    assert failures[1].reason == "shape (10, 10) differs from expected (1043, 981)"
    assert "truncated" in failures[0].reason
    as_float = read_batch(refs[:1], dtype=np.float32).frames
    assert as_float.dtype == np.float32 and as_float[0, 0, 0] == frames[0, 0, 0]


def test_read_batch_expected_shape_and_hdf5_groups(tmp_path):
    data = _stack(5, (8, 9), dtype=np.uint16)
    h5 = _write_h5(tmp_path / "s.h5", data, **hdf5plugin.LZ4())
    refs = [FrameRef(str(h5), e) for e in (0, 1, 2, 9, 4)]  # event 9 breaks the group read
    batch = read_batch(refs, expected_shape=(8, 9))
    np.testing.assert_array_equal(batch.frames, data[[0, 1, 2, 4]])
    assert batch.frames.dtype == np.uint16
    assert [f.event for f in batch.failures] == [9]
    wrong = read_batch(refs[:2], expected_shape=(9, 8))
    assert wrong.frames.shape == (0, 9, 8) and len(wrong.failures) == 2
    assert wrong.failures[0].reason == "shape (8, 9) differs from expected (9, 8)"
    empty = read_batch([])
    assert empty.frames.shape[0] == 0 and empty.refs == [] and empty.failures == []


def test_read_batch_promotes_mixed_dtypes(tmp_path):
    a, b = tmp_path / "a.edf", tmp_path / "b.edf"
    EdfImage(data=np.full((4, 4), 7, np.uint16)).write(os.fspath(a))
    EdfImage(data=np.full((4, 4), -1, np.int32)).write(os.fspath(b))
    frames = read_batch([FrameRef(str(a)), FrameRef(str(b))]).frames
    assert frames.dtype == np.int32 and frames[0, 0, 0] == 7 and frames[1, 0, 0] == -1


# ============================================================================ masks


def test_fit2d_mask_reader_matches_fabio(tmp_path):
    for shape in ((13, 32), (7, 981), (1043, 981), (5, 65)):
        mask = RNG.random(shape) < 0.3
        path = tmp_path / f"m_{shape[0]}x{shape[1]}.msk"
        Fit2dMaskImage(data=mask.astype(np.uint8)).write(os.fspath(path))
        fabio_rows = fabio.open(os.fspath(path)).data.astype(bool)  # fabio: file row order
        np.testing.assert_array_equal(fabio_rows, mask)
        np.testing.assert_array_equal(read_fit2d_mask(path, flip=False), fabio_rows)
        np.testing.assert_array_equal(read_mask(path), np.flipud(fabio_rows))


def test_fit2d_mask_header_layout(tmp_path):
    path = write_fit2d_mask(tmp_path / "x.msk", np.eye(3, 40, dtype=bool))
    raw = path.read_bytes()
    assert raw[0:16:4] == b"MASK"
    assert np.frombuffer(raw, "<i4", 2, 0x10).tolist() == [40, 3]  # width (cols), height (rows)
    assert len(raw) == 1024 + 3 * 2 * 4  # 40 bits padded to 2 x 32-bit words per row
    # FIT2D row 1 (first stored) = bottom TIFF row = eye row 2: pixel (2, 2) -> bit 2 of first word
    assert np.frombuffer(raw, "<u4", 2, 1024).tolist() == [1 << 2, 0]
    np.testing.assert_array_equal(fabio.open(os.fspath(path)).data.astype(bool), np.flipud(np.eye(3, 40, dtype=bool)))
    np.testing.assert_array_equal(read_mask(path), np.eye(3, 40, dtype=bool))


def test_fit2d_mask_orientation_on_real_pilatus_gaps(tmp_path, shared_data):
    """FIT2D stores rows bottom-up: a FIT2D mask of the Pilatus gaps must line up with image < 0."""
    image = read_frame(shared_data / "saxs" / "CeO2_Pilatus1M.tif")
    gaps = image < 0
    assert not np.array_equal(gaps, np.flipud(gaps))  # asymmetric: a wrong flip fails
    path = tmp_path / "pilatus_gaps.msk"
    Fit2dMaskImage(data=np.flipud(gaps).astype(np.uint8)).write(os.fspath(path))  # as FIT2D stores it
    mask = read_mask(path, shape=image.shape)
    assert mask.dtype == bool and mask.shape == (1043, 981)
    np.testing.assert_array_equal(mask, gaps)
    np.testing.assert_array_equal(mask, detector_mask(image))
    # our writer stores it the same way FIT2D does
    mine = write_fit2d_mask(tmp_path / "mine.msk", gaps)
    assert mine.read_bytes() == path.read_bytes()


def test_image_masks_and_invert(tmp_path):
    mask = RNG.random((20, 30)) < 0.2
    np.save(tmp_path / "m.npy", mask)
    EdfImage(data=mask.astype(np.int8)).write(os.fspath(tmp_path / "m.edf"))
    tifffile.imwrite(tmp_path / "m.tif", mask.astype(np.uint8) * 255)
    tifffile.imwrite(tmp_path / "valid.tif", (~mask).astype(np.uint8))  # nonzero = valid pixel
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["/mask"] = mask.astype(np.uint8)
    for name in ("m.npy", "m.edf", "m.tif"):
        got = read_mask(tmp_path / name, shape=(20, 30))
        assert got.dtype == bool
        np.testing.assert_array_equal(got, mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "valid.tif", invert=True), mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.h5", dataset="/mask"), mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.npy", flip=True), np.flipud(mask))


def test_mask_errors(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((20, 30), bool))
    with pytest.raises(ValueError, match=r"m\.npy has shape \(20, 30\), expected \(1043, 981\)"):
        read_mask(tmp_path / "m.npy", shape=(1043, 981))
    with pytest.raises(FileNotFoundError, match=r"nothere\.msk"):
        read_mask(tmp_path / "nothere.msk")
    (tmp_path / "bad.msk").write_bytes(b"NOPE" * 300)
    with pytest.raises(ValueError, match=r"bad\.msk: not a FIT2D mask"):
        read_mask(tmp_path / "bad.msk")
    good = write_fit2d_mask(tmp_path / "short.msk", np.ones((50, 50), bool))
    good.write_bytes(good.read_bytes()[:1100])
    with pytest.raises(ValueError, match=r"short\.msk: truncated FIT2D mask"):
        read_mask(good)


def test_detector_mask():
    frame = np.array([[0, -1, 5], [-2, 3, 0]], np.int32)
    np.testing.assert_array_equal(detector_mask(frame), [[False, True, False], [True, False, False]])
    f = np.array([1.0, -0.5, np.nan, 0.0])
    assert detector_mask(f).tolist() == [False, True, True, False]
    assert not detector_mask(np.array([0, 65535], np.uint16)).any()


# ============================================================================ .chi


def _saxsdog_chi(path, q, intensity, sigma, config, params, labels=DEFAULT_COLUMN_LABELS):
    """What SAXSDOG writes (its exact np.savetxt call)."""
    data = np.array([q, intensity, sigma]).transpose()
    headerstr = json.dumps(config) + "\n"
    headerstr += json.dumps(params) + "\n"
    headerstr += json.dumps(list(labels)) + "\n"
    headerstr += "   " + str(data.shape[0]) + ""
    np.savetxt(path, data, fmt="%.18e", delimiter=" ", newline="\n ", header=headerstr, footer="", comments="")


CONFIG = {"Wavelength": 1.54, "Distance": 1031.2, "PixelSize": 172.0, "Mask": "/mask/m.msk", "Bins": [1, 2]}
PARAMS = {"I0": 123.25, "I1": 4.5e-3, "I2": 7.0}


def _curve(n=1000):
    q = np.linspace(0.05, 12.0, n)
    intensity = 1e4 * np.exp(-q) + RNG.random(n)
    sigma = np.sqrt(intensity)
    intensity[[0, 3, n - 1]] = np.nan  # empty bins
    sigma[[0, 3, n - 1]] = np.nan
    return q, intensity, sigma


def test_chi_exact_saxsdog_layout(tmp_path):
    q, intensity, sigma = _curve()
    _saxsdog_chi(tmp_path / "ref.chi", q, intensity, sigma, CONFIG, PARAMS)
    write_chi(tmp_path / "ours.chi", q, intensity, sigma, CONFIG, PARAMS)
    assert (tmp_path / "ours.chi").read_bytes() == (tmp_path / "ref.chi").read_bytes()
    text = (tmp_path / "ours.chi").read_text()
    assert text.split("\n")[3] == "   1000" and text.endswith("\n ") and "\n nan nan nan\n" not in text


def test_chi_numpy_scalars_in_header(tmp_path):
    q, intensity, sigma = _curve(5)
    params = {"I0": np.float64(1.5), "I1": np.float32(2.0), "I2": np.int64(3)}
    write_chi(tmp_path / "x.chi", q, intensity, sigma, {"a": np.arange(2)}, params)
    *_, header = read_chi(tmp_path / "x.chi")
    assert header["integral_params"] == {"I0": 1.5, "I1": 2.0, "I2": 3} and header["config"] == {"a": [0, 1]}


def test_chi_read_saxsdog_file_and_nan_round_trip(tmp_path):
    q, intensity, sigma = _curve()
    _saxsdog_chi(tmp_path / "ref.chi", q, intensity, sigma, CONFIG, PARAMS)
    for name in ("ref.chi",):
        q2, i2, s2, header = read_chi(tmp_path / name)
        np.testing.assert_array_equal(q2, q)  # %.18e round-trips float64 exactly
        np.testing.assert_array_equal(i2, intensity)  # NaN == NaN for assert_array_equal
        np.testing.assert_array_equal(s2, sigma)
        assert np.isnan(i2[[0, 3, 999]]).all()
        assert header["config"] == CONFIG and header["integral_params"] == PARAMS
        assert header["column_labels"] == list(DEFAULT_COLUMN_LABELS) and header["npoints"] == 1000
    write_chi(tmp_path / "o.chi", q, intensity, sigma, CONFIG, PARAMS, column_labels=("Phi Angle [rad]", "I", "E"))
    assert read_chi(tmp_path / "o.chi")[3]["column_labels"] == ["Phi Angle [rad]", "I", "E"]


def test_chi_read_fit2d_and_plain(tmp_path):
    fit2d = tmp_path / "fit2d.chi"
    fit2d.write_text(
        "CeO2 sample\n2-Theta Angle (Degrees)\nIntensity\n       3\n  1.0  10.0\n  2.0  20.5\n  3.0  nan\n"
    )
    q, i, s, header = read_chi(fit2d)
    assert q.tolist() == [1.0, 2.0, 3.0] and i[:2].tolist() == [10.0, 20.5] and np.isnan(i[2]) and s is None
    assert header["title"] == "CeO2 sample" and header["labels"] == ["2-Theta Angle (Degrees)", "Intensity"]
    assert header["npoints"] == 3
    plain = tmp_path / "plain.chi"
    plain.write_text("0.1 5 1\n0.2 6 2\n")
    q, i, s, header = read_chi(plain)
    assert q.tolist() == [0.1, 0.2] and i.tolist() == [5, 6] and s.tolist() == [1, 2] and header["lines"] == []
    wrong = tmp_path / "wrong.chi"
    wrong.write_text("t\nx\ny\n   5\n1 2\n")
    with pytest.raises(ValueError, match="announces 5 points, file has 1"):
        read_chi(wrong)


def test_chi_write_is_atomic(tmp_path):
    with pytest.raises(ValueError):
        write_chi(tmp_path / "x.chi", [1, 2], [1, 2, 3], [1, 2], {}, {})
    assert list(tmp_path.iterdir()) == []


# ============================================================================ NeXus curves


def test_nexus_curves_structure_and_round_trip(tmp_path):
    n, nbins = 4, 50
    q = np.linspace(0.1, 5, nbins)
    intensity = RNG.random((n, nbins)) * 100
    sigma = np.sqrt(intensity)
    intensity[1, 7] = sigma[1, 7] = np.nan
    ids = ["scan_001.h5:0", "scan_001.h5:1", "frame_0003.tif", "fläche.edf"]
    extra = {"I0": np.arange(n) * 1.5, "status": np.array(["ok", "ok", "dim", "ok"])}
    path = write_curves(
        tmp_path / "out" / "batch_0001.h5",
        q,
        intensity,
        sigma,
        ids,
        extra=extra,
        attrs={"operation": "integrate", "config": {"bins": nbins}, "n_frames": n},
    )
    with h5py.File(path) as f:
        assert f.attrs["default"] == "entry"
        entry = f["entry"]
        assert entry.attrs["NX_class"] == "NXentry" and entry.attrs["default"] == "data"
        data = entry["data"]
        assert data.attrs["NX_class"] == "NXdata" and data.attrs["signal"] == "I"
        assert list(data.attrs["axes"]) == [".", "q"] and int(data.attrs["q_indices"]) == 1
        assert data["q"].attrs["units"] == "1/nm"
        assert data["I"].shape == (n, nbins) and data["I_errors"].shape == (n, nbins)
        assert h5py.check_string_dtype(data["frame_id"].dtype).encoding == "utf-8"
    curves = read_curves(path)
    np.testing.assert_array_equal(curves.q, q)
    np.testing.assert_array_equal(curves.intensity, intensity)
    np.testing.assert_array_equal(curves.sigma, sigma)
    assert curves.frame_ids == ids
    np.testing.assert_array_equal(curves.extra["I0"], extra["I0"])
    assert curves.extra["status"].tolist() == ["ok", "ok", "dim", "ok"]
    assert curves.attrs["operation"] == "integrate" and json.loads(curves.attrs["config"]) == {"bins": nbins}
    assert curves.attrs["n_frames"] == n


def test_nexus_validation_and_no_sigma(tmp_path):
    q = np.arange(3.0)
    with pytest.raises(ValueError, match="2 frame ids for 1 curves"):
        write_curves(tmp_path / "x.h5", q, np.ones(3), None, ["a", "b"])
    assert not (tmp_path / "x.h5").exists()
    write_curves(tmp_path / "y.h5", q, np.ones(3), None, ["a"])
    c = read_curves(tmp_path / "y.h5")
    assert c.sigma is None and c.intensity.shape == (1, 3)


# ============================================================================ tables


def test_table_csv_round_trip(tmp_path):
    cols = {
        "frame": ["a.tif", "b, with comma.tif", 'c "q".tif'],
        "I0": np.array([1.0, np.nan, 1e-300]),
        "n": np.array([1, 2, 3]),
        "hit": np.array([True, False, True]),
    }
    path = write_table_csv(tmp_path / "t" / "summary.csv", cols)
    assert path.read_text().splitlines()[0] == "frame,I0,n,hit"
    back = read_table_csv(path)
    assert list(back) == list(cols)
    assert back["frame"].tolist() == cols["frame"]
    np.testing.assert_array_equal(back["I0"], cols["I0"])
    assert back["n"].dtype == np.int64 and back["n"].tolist() == [1, 2, 3]
    assert back["hit"].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="differ in length"):
        write_table_csv(tmp_path / "bad.csv", {"a": [1, 2], "b": [1]})


def test_table_hdf5_round_trip_keeps_other_groups(tmp_path):
    path = tmp_path / "s.h5"
    write_curves(path, np.arange(3.0), np.ones((1, 3)), None, ["a"])
    cols = {"frame": np.array(["x.tif", "y.tif"]), "I1": np.array([0.5, np.nan]), "n": np.array([3, 4])}
    write_table_hdf5(path, cols, group="table")
    write_table_hdf5(path, {"z": [1, 2]}, group="table")  # replaces the group
    write_table_hdf5(path, cols, group="summary/peaks")
    back = read_table_hdf5(path, group="summary/peaks")
    assert list(back) == ["frame", "I1", "n"] and back["frame"].tolist() == ["x.tif", "y.tif"]
    np.testing.assert_array_equal(back["I1"], cols["I1"])
    assert read_table_hdf5(path)["z"].tolist() == [1, 2]
    assert read_curves(path).frame_ids == ["a"]  # the curves survived
    assert sorted(os.listdir(tmp_path)) == ["s.h5"]


def _swmr_writer(path, ready, done):
    import h5py

    f = h5py.File(path, "w", libver="latest")
    d = f.create_dataset("/entry/data/data", shape=(0, 8, 9), maxshape=(None, 8, 9), dtype="i4", chunks=(1, 8, 9))
    f.swmr_mode = True
    for i in range(3):
        d.resize(i + 1, axis=0)
        d[i] = i
        d.flush()
    ready.set()
    done.wait(30)
    f.close()


def test_reads_events_of_a_file_a_swmr_writer_still_holds(tmp_path):
    """A detector still acquiring keeps its HDF5 file open in SWMR mode: events already flushed read."""
    import multiprocessing as mp

    from photonflow.io import frame_count, read_frame

    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    path = tmp_path / "live.h5"
    writer = ctx.Process(target=_swmr_writer, args=(str(path), ready, done))
    writer.start()
    try:
        assert ready.wait(60)
        assert frame_count(path) == 3
        assert (read_frame(path, 2) == 2).all()
    finally:
        done.set()
        writer.join(30)
