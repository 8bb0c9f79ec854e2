"""Pixel masks: boolean arrays of the image shape, **True = masked (excluded)**, as pyFAI.

Readers for FIT2D ``.msk`` files, NumPy ``.npy`` and any image format of
:func:`photonflow.io.read_frame` (EDF, TIFF, CBF, HDF5, ...).

Orientation of FIT2D masks
    FIT2D numbers image rows from the bottom: its row 1 is the bottom row of the
    image as a TIFF viewer (and numpy reading the TIFF) shows it. A ``.msk`` file
    stores FIT2D's rows in order, so its first stored row is the *last* TIFF row.
    fabio's ``Fit2dMaskImage`` returns the rows in file order without flipping;
    :func:`read_mask` flips them (``np.flipud``) so that the mask lines up with
    frames as :func:`photonflow.io.read_frame` returns them. SAXSDOG does the same.
    Pass ``flip=False`` for a ``.msk`` written from a numpy array without the
    flip (for example by ``fabio``'s writer directly, as pyFAI's ``eiger-mask`` does).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .images import FrameReadError, read_frame

__all__ = ["read_mask", "read_fit2d_mask", "write_fit2d_mask", "detector_mask"]

_FIT2D_MAGIC = b"M\0\0\0A\0\0\0S\0\0\0K\0\0\0"
_FIT2D_HEADER = 1024


def _unpack_fit2d(path: Path, raw: bytes) -> np.ndarray:
    """FIT2D mask bytes → uint8 array (rows in file order, 1 = masked)."""
    if len(raw) < _FIT2D_HEADER or raw[:16] != _FIT2D_MAGIC:
        raise ValueError(f"{path}: not a FIT2D mask file (no 'MASK' magic in the first 16 bytes)")
    width, height = (int(v) for v in np.frombuffer(raw, "<i4", count=2, offset=0x10))
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: FIT2D mask header has invalid size {width} x {height}")
    words_per_row = (width + 31) // 32  # each row padded to a multiple of 32 bits
    nbytes = height * words_per_row * 4
    body = raw[_FIT2D_HEADER : _FIT2D_HEADER + nbytes]
    if len(body) < nbytes:
        raise ValueError(
            f"{path}: truncated FIT2D mask: {len(body)} data bytes, expected {nbytes} for {height} x {width}"
        )
    packed = np.frombuffer(body, np.uint8).reshape(height, words_per_row * 4)
    # little-endian 32-bit words, bit 0 = first pixel: byte order and bit order are both "little"
    bits = np.unpackbits(packed, axis=1, bitorder="little")
    return bits[:, :width]


def read_fit2d_mask(path: str | os.PathLike, flip: bool = True) -> np.ndarray:
    """Read a FIT2D ``.msk`` file → bool array ``(rows, cols)``, True = masked.

    ``flip=True`` (default) returns TIFF-row order (see module doc);
    ``flip=False`` returns rows in file order (FIT2D order, as fabio does).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mask file not found: {path}")
    mask = _unpack_fit2d(path, path.read_bytes()).astype(bool)
    return np.ascontiguousarray(np.flipud(mask)) if flip else mask


def write_fit2d_mask(path: str | os.PathLike, mask: np.ndarray, flip: bool = True) -> Path:
    """Write a bool mask (True = masked, TIFF-row order) as a FIT2D ``.msk``, atomically.

    ``flip=True`` stores the rows bottom-up as FIT2D does, the inverse of
    :func:`read_fit2d_mask`.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"{path}: mask must be 2D, got shape {mask.shape}")
    if flip:
        mask = np.flipud(mask)
    height, width = mask.shape
    words_per_row = (width + 31) // 32
    padded = np.zeros((height, words_per_row * 32), np.uint8)
    padded[:, :width] = mask
    header = bytearray(_FIT2D_HEADER)
    header[:16] = _FIT2D_MAGIC
    header[0x10:0x1C] = np.array([width, height, 1], "<i4").tobytes()
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(header) + np.packbits(padded, axis=1, bitorder="little").tobytes())
    return Path(path)


def read_mask(
    path: str | os.PathLike,
    shape: tuple[int, int] | None = None,
    *,
    invert: bool = False,
    flip: bool | None = None,
    dataset: str | None = None,
) -> np.ndarray:
    """Read a mask file → bool array, True = masked (excluded), rows in TIFF order.

    * ``.msk``: FIT2D binary mask (1 = masked), flipped to TIFF-row order
      unless ``flip=False``;
    * ``.npy`` and image formats (EDF, TIFF, CBF, HDF5 ``dataset``...): nonzero = masked.

    ``invert=True`` for files where nonzero means *valid*. ``flip`` overrides the
    vertical flip (default: True for ``.msk``, False otherwise). ``shape`` given
    and different → ValueError naming the file and both shapes. Missing file →
    FileNotFoundError.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mask file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".msk":
        mask = read_fit2d_mask(path, flip=True if flip is None else flip)
    else:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            try:
                data = read_frame(path, dataset=dataset)
            except FrameReadError as exc:
                raise ValueError(f"cannot read mask {path}: {exc.reason}") from exc
        if data.ndim != 2:
            raise ValueError(f"mask {path} has shape {data.shape}, expected 2D")
        mask = data != 0
        if flip:
            mask = np.flipud(mask)
    if invert:
        mask = ~mask
    mask = np.ascontiguousarray(mask)
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask {path} has shape {tuple(mask.shape)}, expected {tuple(shape)} (rows, cols)")
    return mask


def detector_mask(frame: np.ndarray) -> np.ndarray:
    """Pixels a detector flags itself: negative values (Pilatus -1 gap, -2 bad) and NaN."""
    frame = np.asarray(frame)
    if frame.dtype.kind == "u":
        return np.zeros(frame.shape, bool)
    if frame.dtype.kind == "f":
        return ~(frame >= 0)
    return frame < 0
