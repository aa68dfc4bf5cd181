"""Reading and writing volumes: TIFF stacks, OME-Zarr (with pyramids) and plain zarr arrays.

Every volume napari-emsr works on is a :class:`Volume`: a lazy dask array in (z, y, x) order plus its
physical voxel size (and, from OME-Zarr, its translation and pyramid levels). Readers never load a whole
file; writers work block by block with bounded memory, write to a temporary name (TIFF) or carry a
completion marker (zarr), so that an interrupted export never looks finished and a zarr export can resume.

Modules, one role each:

- :mod:`.formats`: the suffixes and zarr marker files that tell the formats apart (used by the napari
  reader too);
- :mod:`.files`: :func:`open_volume` and :func:`write_volume`, which pick the format by the path;
- :mod:`.volume`: :class:`Volume`, :func:`check_volume`, :func:`as_volume`, :func:`finite_check`;
- :mod:`.units`: the unit table, voxel size checks and conversion to nm;
- :mod:`.tiff`: TIFF reading and writing;
- :mod:`.omezarr`: zarr / OME-Zarr reading and writing, the incomplete marker and resume;
- :mod:`.ngff`: NGFF metadata through the yaozarrs model of the spec;
- :mod:`.pyramid`: which pyramid levels to write, and the 2x mean downsampling;
- :mod:`.blocks`: blocks of a bounded-memory write;
- :mod:`.safety`: output folder checks, disk space reservation, and :class:`OutputError` for a full disk,
  a file-size limit or a read-only folder.

This package never imports torch, napari or Qt.
"""

from __future__ import annotations

from .files import open_volume, write_volume
from .formats import TIFF_SUFFIXES, ZARR_MARKERS, ZARR_SUFFIXES, looks_like_zarr, same_place
from .omezarr import INCOMPLETE_MARKER, fingerprint_differences, finished_fingerprint, never_started
from .safety import OutputError
from .volume import Volume, as_volume, check_volume, finite_check

__all__ = [
    "Volume",
    "open_volume",
    "as_volume",
    "check_volume",
    "write_volume",
    "finite_check",
    "INCOMPLETE_MARKER",
    "never_started",
    "finished_fingerprint",
    "fingerprint_differences",
    "OutputError",
    "TIFF_SUFFIXES",
    "ZARR_SUFFIXES",
    "ZARR_MARKERS",
    "looks_like_zarr",
    "same_place",
]
