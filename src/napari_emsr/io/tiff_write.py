"""TIFF writing: an uncompressed, contiguous (Big)TIFF mapped into memory and filled block by block (bounded memory),
under a temporary name renamed when complete; ImageJ or OME metadata with the voxel size. Reading is
:mod:`napari_emsr.io.tiff`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import EMSRError, InputError, OutputExistsError
from .blocks import block_axis, chunk_blocks, region
from .safety import PARTIAL_TAG, check_output_path, output_lock, reserve, temporary_path, write_error
from .units import Spacing

log = logging.getLogger(__name__)

# Bytes of one TIFF write block (a group of z planes computed at once).
_TIFF_BLOCK_BYTES = 256 * 2**20
# ImageJ TIFF cannot be BigTIFF: above this size we write OME-TIFF (BigTIFF) instead.
_BIGTIFF_BYTES = int(3.5 * 2**30)
# Bytes of an output's name that temporary names keep whole (io.safety keeps 120).
_KEPT_NAME_BYTES = 120


def write_tiff(
    p: Path,
    arr: da.Array,
    spacing: Spacing | None,
    unit: str,
    *,
    overwrite: bool,
    progress: Callable[[int, int], Any] | None,
) -> Path:
    """Write ``arr`` as an ImageJ or OME-TIFF; see :func:`napari_emsr.io.write_volume`.

    The path is checked before anything is computed (:func:`~napari_emsr.io.safety.check_output_path`), the
    output is locked for the whole write (a second process writing it is refused with an
    :class:`~napari_emsr.errors.OutputBusyError`), and the file is written under a unique temporary name
    (:func:`~napari_emsr.io.safety.temporary_path`) that is renamed onto ``p`` only once it is complete.
    """
    import tifffile

    dtype = np.dtype(arr.dtype)
    if dtype == np.float16:
        # NOTE: neither ImageJ nor OME-XML knows half floats (tifffile refuses them); float32 holds every
        # float16 value exactly.
        log.warning(
            "%s: a TIFF stack (ImageJ or OME) cannot hold float16; writing float32 (exact, twice the size). "
            "Write .zarr to keep float16", p,
        )
        arr = arr.astype(np.float32)
        dtype = np.dtype(np.float32)
    elif dtype.kind in "iu" and dtype.itemsize > 4:
        raise InputError(
            f"cannot write {dtype} data to the TIFF {p}: ImageJ and OME-TIFF hold integers of at most 32 bits; "
            "write .zarr instead, or convert the data to int32/uint32 or float32/float64 first"
        )
    shape = tuple(int(s) for s in arr.shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    # NOTE: first, before anything asks the file system about p: a name that is too long fails every stat().
    check_output_path(p, needed=nbytes, what="TIFF")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} exists; pass overwrite=True (CLI: --overwrite) or choose another path")
    big = nbytes > _BIGTIFF_BYTES
    imagej = not big and dtype in (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))
    if imagej and spacing is not None and not _imagej_can_hold(spacing):
        # NOTE: ImageJ keeps the pixel size as 1 / size in a TIFF rational (two 32-bit integers); OME-XML
        # keeps it as a decimal number, whatever its size.
        log.warning(
            "%s: the voxel size %s %s cannot be stored in an ImageJ TIFF (its resolution tags hold 1 / size as "
            "a fraction of 32-bit integers); writing an OME-TIFF, which keeps it", p, tuple(spacing), unit,
        )
        imagej = False
    kwargs: dict[str, Any] = {"photometric": "minisblack", "bigtiff": big}
    md: dict[str, Any] = {"axes": "ZYX"}
    if imagej:
        kwargs["imagej"] = True
        if spacing is not None:
            md["spacing"] = spacing[0]
            md["unit"] = unit
            kwargs["resolution"] = (1.0 / spacing[2], 1.0 / spacing[1])
    else:
        kwargs["ome"] = True
        if spacing is not None:
            for ax, value in zip("ZYX", spacing):
                md[f"PhysicalSize{ax}"] = value
                if unit == "nm":
                    md[f"PhysicalSize{ax}Unit"] = "nm"
        log.info("writing %s as OME-TIFF (%s, %.1f GB)", p, dtype, nbytes / 1e9)
    kwargs["metadata"] = md

    # An uncompressed, contiguous TIFF mapped into memory: blocks are stored into it in any order and
    # along any axis, so the data is computed once, chunk by chunk, with bounded memory.
    axis = block_axis(arr)
    blocks = chunk_blocks(arr, axis, _TIFF_BLOCK_BYTES)
    with output_lock(p, what="output"):
        # NOTE: checked again under the lock: another process may have finished writing it meanwhile.
        if p.exists() and not overwrite:
            raise OutputExistsError(f"{p} exists; pass overwrite=True (CLI: --overwrite) or choose another path")
        _remove_leftovers(p)
        tmp = temporary_path(p)
        try:
            mm = tifffile.memmap(tmp, shape=shape, dtype=dtype, **kwargs)
            try:
                # The file is sparse so far: reserve its space now, so that a full disk is an error here and
                # not a SIGBUS (death without a message) when a page of the map is written later.
                reserve(tmp, tmp.stat().st_size)
                if progress is not None:  # the total at once, before the first block
                    progress(0, shape[axis])
                for start, stop in blocks:
                    where = region(axis, start, stop)
                    da.store(arr[where], mm, regions=where, lock=False)
                    if progress is not None:
                        progress(stop, shape[axis])
                mm.flush()
            finally:
                del mm
            os.replace(tmp, p)
        except BaseException as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            if isinstance(exc, OSError) and not isinstance(exc, EMSRError):
                err = write_error(exc, p, p.parent, needed=nbytes,
                                  what_next="then write the TIFF again (a TIFF export starts again from the "
                                  "beginning)")
                if err is not None:
                    raise err from None
            raise
    log.info("wrote %s (%s, %s)", p, shape, dtype)
    return p


def _imagej_can_hold(spacing: Spacing) -> bool:
    """Whether tifffile can store 1 / lateral size as a TIFF rational (both terms 32-bit unsigned integers)."""
    limit = float(2**32 - 1)
    for size in spacing[1:]:
        try:
            res = 1.0 / float(size)
        except (ZeroDivisionError, OverflowError):
            return False
        if not (math.isfinite(res) and 1.0 / limit <= res <= limit):
            return False
    return math.isfinite(float(spacing[0]))


def _remove_leftovers(p: Path) -> None:
    """Remove the temporary files of earlier writes of ``p`` that were killed before they finished.

    Called with ``p`` locked, so no other process is writing it; where ``p``'s name is too long to be kept
    whole in temporary names, two outputs could share their prefix, and nothing is removed.
    """
    if len(p.name.encode("utf-8", "surrogateescape")) > _KEPT_NAME_BYTES:
        return
    prefix = "." + p.name + PARTIAL_TAG
    try:
        entries = list(os.scandir(p.parent))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                log.info("removed %s, left by a write of %s that was killed before it finished", entry.path, p)
            except OSError as exc:
                log.debug("could not remove %s: %s", entry.path, exc)
