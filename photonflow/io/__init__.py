"""Readers and writers: detector frames, masks, ``.chi`` curves, NeXus curve batches, tables, CXI
files, CrystFEL geometry (:mod:`.geom`) and list files (:mod:`.lists`).

Pure Python over numpy, fabio, h5py (+hdf5plugin) and tifffile. Every output is
written atomically (:mod:`photonflow.io.atomic`).
"""

from .atomic import atomic_path, atomic_write_bytes, atomic_write_text
from .chi import DEFAULT_COLUMN_LABELS, format_chi, read_chi, write_chi
from .compression import dataset_compression
from .cxi import (
    CxiError,
    read_cxi_peaks,
    read_cxi_sources,
    read_hit_list,
    write_cxi_frames,
    write_cxi_peaks,
    write_hit_list,
)
from .geom import (
    AsicLayout,
    BadRegion,
    DetectorGeometry,
    GeometryError,
    Panel,
    load_geometry,
    parse_geometry,
    simulated_detector,
    write_geometry,
)
from .images import (
    DEFAULT_PATTERNS,
    HDF5_DATASET_CANDIDATES,
    Batch,
    FrameReadError,
    FrameRef,
    find_image_dataset,
    frame_count,
    iter_frame_refs,
    parse_frame_spec,
    read_batch,
    read_frame,
    read_frames,
    read_monitor,
)
from .masks import detector_mask, read_fit2d_mask, read_mask, write_fit2d_mask
from .nexus import Curves, read_curves, write_curves
from .tables import json_safe, read_table_csv, read_table_hdf5, write_table_csv, write_table_hdf5

__all__ = [
    "json_safe",
    "DEFAULT_COLUMN_LABELS",
    "DEFAULT_PATTERNS",
    "HDF5_DATASET_CANDIDATES",
    "Batch",
    "Curves",
    "FrameReadError",
    "FrameRef",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "detector_mask",
    "format_chi",
    "find_image_dataset",
    "frame_count",
    "iter_frame_refs",
    "parse_frame_spec",
    "read_batch",
    "read_chi",
    "read_curves",
    "read_fit2d_mask",
    "read_frame",
    "read_frames",
    "read_monitor",
    "read_mask",
    "read_table_csv",
    "read_table_hdf5",
    "write_chi",
    "write_curves",
    "write_fit2d_mask",
    "write_table_csv",
    "write_table_hdf5",
    "AsicLayout",
    "BadRegion",
    "CxiError",
    "DetectorGeometry",
    "GeometryError",
    "Panel",
    "load_geometry",
    "parse_geometry",
    "read_cxi_peaks",
    "read_cxi_sources",
    "read_hit_list",
    "simulated_detector",
    "dataset_compression",
    "write_cxi_frames",
    "write_cxi_peaks",
    "write_geometry",
    "write_hit_list",
]
