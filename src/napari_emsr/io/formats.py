"""The file formats napari-emsr reads and writes, told apart by name: the one list of suffixes and zarr markers.

The napari reader asks the same lists (through :mod:`napari_emsr.io`), so that what it offers to open is
exactly what :func:`napari_emsr.io.open_volume` reads. Nothing here opens a file.
"""

from __future__ import annotations

import re
from pathlib import Path

#: Suffixes of TIFF stacks (lower case; ``.ome.tif`` ends in one of them).
TIFF_SUFFIXES = (".tif", ".tiff")
#: Suffixes of zarr folders (lower case; ``.ome.zarr`` ends in it).
ZARR_SUFFIXES = (".zarr",)
#: Files that mark a folder as a zarr store: zarr v3 node, v2 group and array, v2 attributes.
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zattrs")

NOT_A_VOLUME = (
    "{path} is not a volume napari-emsr can read: expected a TIFF stack (.tif/.tiff) or an OME-Zarr/zarr folder"
)


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(path: object) -> bool:
    """Whether ``path`` is a URL with a scheme (``file://``, ``s3://``, ``https://``, ``memory://`` ...), read
    through fsspec, rather than a path on this machine."""
    return isinstance(path, str) and bool(_URL.match(path))


def looks_like_zarr(path: str | Path) -> bool:
    """Whether the folder ``path`` holds one of :data:`ZARR_MARKERS` (nothing is read)."""
    p = Path(path)
    return any((p / name).is_file() for name in ZARR_MARKERS)


def is_tiff_name(path: str | Path) -> bool:
    """Whether the name of ``path`` ends in a TIFF suffix."""
    return Path(path).name.lower().endswith(TIFF_SUFFIXES)


def is_zarr_name(path: str | Path) -> bool:
    """Whether the name of ``path`` ends in a zarr suffix (``.zarr``, ``.ome.zarr``)."""
    return Path(path).name.lower().rstrip("/").endswith(ZARR_SUFFIXES)


def same_place(a: str | Path, b: str | Path) -> bool:
    """Whether two paths are the same file or folder, or one lies inside the other (a zarr store is a folder):
    what an output must never be to its input or model, however the paths are written."""
    pa, pb = Path(a).expanduser().resolve(), Path(b).expanduser().resolve()
    return pa == pb or pa in pb.parents or pb in pa.parents
