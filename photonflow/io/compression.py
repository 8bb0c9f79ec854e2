"""HDF5 compression by name: the h5py ``create_dataset`` keywords of every filter photonflow writes.

The filters other than gzip come from hdf5plugin (imported only when one is asked for); readers
need hdf5plugin imported to decompress them (:mod:`photonflow.io.images` does).
"""

from __future__ import annotations

__all__ = ["COMPRESSIONS", "dataset_compression"]

#: The names :func:`dataset_compression` knows (besides None / "none" for no filter).
COMPRESSIONS = ("bitshuffle", "lz4", "blosc-lz4", "blosc-zstd", "gzip")


def dataset_compression(name: str | None, *, gzip_level: int = 4, gzip_shuffle: bool = False) -> dict:
    """Keywords for ``h5py.Group.create_dataset`` that compress with filter ``name`` (any case).

    * None, False or ``"none"``: no filter (``{}``);
    * ``"bitshuffle"`` (also ``"bitshuffle-lz4"``, ``"bslz4"``): Bitshuffle + LZ4, as Eiger and
      Jungfrau writers do;
    * ``"lz4"``: LZ4;
    * ``"blosc-lz4"``: Blosc LZ4, level 5, bit shuffle; ``"blosc-zstd"``: Blosc Zstd, level 3, bit shuffle;
    * ``"gzip"``: gzip at ``gzip_level``, after HDF5's byte shuffle when ``gzip_shuffle``.

    ValueError names an unknown filter.
    """
    if name is None or name is False:
        return {}
    c = str(name).lower()
    if c == "none":
        return {}
    if c == "gzip":
        kw = {"compression": "gzip", "compression_opts": int(gzip_level)}
        return {**kw, "shuffle": True} if gzip_shuffle else kw
    import hdf5plugin

    if c in ("bitshuffle", "bitshuffle-lz4", "bslz4"):
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if c == "lz4":
        return dict(hdf5plugin.LZ4())
    if c == "blosc-lz4":
        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.BITSHUFFLE))
    if c == "blosc-zstd":
        return dict(hdf5plugin.Blosc(cname="zstd", clevel=3, shuffle=hdf5plugin.Blosc.BITSHUFFLE))
    raise ValueError(f"unknown compression {name!r}: choose None or one of {', '.join(COMPRESSIONS)}")
