"""The two entry points for files: :func:`open_volume` and :func:`write_volume`.

They check the arguments, pick TIFF or OME-Zarr by the path (:mod:`napari_emsr.io.formats`) and hand over
to :mod:`napari_emsr.io.tiff` or :mod:`napari_emsr.io.omezarr`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EMSRError, InputError
from .formats import NOT_A_VOLUME, ZARR_MARKERS, is_tiff_name, is_url, is_zarr_name, looks_like_zarr
from .omezarr import INCOMPLETE_MARKER, check_fingerprint, open_zarr, write_zarr
from .safety import PARTIAL_TAG, check_output_path, is_partial_name
from .tiff import open_tiff
from .tiff_write import write_tiff
from .units import to_nm
from .volume import Volume, check_volume

log = logging.getLogger(__name__)


def open_volume(path: str | os.PathLike, *, channel: int | None = None, level: int = 0,
                series: int | None = None) -> Volume:
    """Open a TIFF stack, OME-Zarr or plain zarr array lazily as a :class:`Volume`.

    Parameters
    ----------
    path : str or path-like
        A ``.tif``/``.tiff`` file (ImageJ hyperstack, OME-TIFF or plain multi-page TIFF), or a zarr
        folder (OME-Zarr with ``multiscales``, NGFF 0.4 on zarr v2 or 0.5 on zarr v3, or a plain zarr
        array of either format). A zarr store may also be given as a URL that fsspec reads: ``file://``,
        or ``s3://``, ``gs://``, ``https://`` ... where that protocol's package is installed (s3fs, gcsfs,
        aiohttp ...). On a cluster, the workers read the URL themselves: it must reach the data from them.
    channel : int, optional
        Channel to pick from multi-channel data.
    level : int
        Resolution level of a pyramid (OME-Zarr dataset index, TIFF sub-resolution); 0 is full size.
    series : int, optional
        TIFF only: the image series to read, from 0 (an OME-TIFF may hold several images, e.g. a thumbnail
        and the stack). None: the largest 3D series (by voxel count), with a warning naming it when the file
        has several. A zarr store has one image: only None or 0.

    Returns
    -------
    Volume
        Lazy data (z, y, x) and voxel size in nm when the file states it (``spacing`` None otherwise).
        For an OME-Zarr also its translation (NGFF ``translation``, in nm) and, in ``levels``, the chosen
        level and every coarser one, all lazy.

    Raises
    ------
    InputError
        When the path is missing, is not a regular file or folder (a pipe, a device, a socket), is an
        unfinished write (the temporary file of a write that was killed), is not a readable volume, its
        OME-Zarr metadata is invalid, the data is not a greyscale 3D stack, or ``series`` does not exist.
    """
    try:
        level = int(level)
    except (TypeError, ValueError):
        raise InputError(f"level {level!r} is not a whole number: give e.g. level=0") from None
    if level < 0:
        raise InputError(f"level {level} is negative: give 0 (full resolution) or a higher pyramid level")
    if series is not None:
        if isinstance(series, bool) or not isinstance(series, (int, np.integer)):
            raise InputError(f"series {series!r} is not a whole number: give e.g. series=0 (CLI: --series 0)")
        series = int(series)
        if series < 0:
            raise InputError(f"series {series} is negative: give 0 for the first image series of a TIFF")
    if is_url(path):
        local = _local_path(str(path))
        if local is None:
            _one_series(str(path), series)
            vol = _open_url(str(path), channel=channel, level=level)
            log.info("opened %s: shape %s, %s, voxel size %s %s, %d level(s)", path, vol.shape, vol.dtype,
                     vol.spacing, vol.unit, len(vol.levels))
            return vol
        path = local
    p = Path(path).expanduser()
    refuse_unfinished(p)
    if not p.exists():
        raise InputError(f"{p} does not exist: check the path (and that the drive is mounted)")
    if not p.is_dir() and not p.is_file():
        # NOTE: opening a FIFO waits for a writer forever; a device or a socket is no volume either.
        raise InputError(f"{p} is not a regular file or folder (a pipe, a device or a socket): give a TIFF stack "
                         "or a zarr folder")
    if p.is_dir():
        # NOTE: a store with our marker is an unfinished export even without zarr metadata (e.g. one whose
        # removal for an overwrite was interrupted); open_zarr says so.
        if not looks_like_zarr(p) and not (p / INCOMPLETE_MARKER).exists():
            if (p / "attributes.json").is_file():
                raise InputError(NOT_A_VOLUME.format(path=p) + " (it is an N5 container, which zarr 3 no longer "
                                 "reads: convert it to OME-Zarr first)")
            raise InputError(NOT_A_VOLUME.format(path=p) + " (this folder holds no zarr metadata)")
        _one_series(p, series)
        vol = open_zarr(p, channel=channel, level=level)
    elif is_tiff_name(p):
        vol = open_tiff(p, channel=channel, level=level, series=series)
    elif p.name in ZARR_MARKERS and looks_like_zarr(p.parent):
        refuse_unfinished(p.parent)
        _one_series(p.parent, series)
        vol = open_zarr(p.parent, channel=channel, level=level)
    else:
        raise InputError(NOT_A_VOLUME.format(path=p))
    log.info(
        "opened %s: shape %s, %s, voxel size %s %s, %d level(s)",
        p, vol.shape, vol.dtype, vol.spacing, vol.unit, len(vol.levels),
    )
    return vol


def _a_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:  # e.g. a name too long to ask about: check_output_path says so
        return False


def refuse_unfinished(p: Path) -> None:
    """Refuse the temporary file (or folder) of a write that did not finish: it is never a finished volume.

    Raises
    ------
    InputError
        When ``p`` has the name of one of napari-emsr's temporary files (:func:`.safety.is_partial_name`).
    """
    if not is_partial_name(p):
        return
    target = p.name[1:].split(PARTIAL_TAG, 1)[0] if p.name.startswith(".") else ""
    export = f" of {p.parent / target}" if target else ""
    raise InputError(
        f"{p} is an unfinished write{export}: a temporary file of napari-emsr, left by a write that was killed "
        "before it finished, so its data is incomplete. Delete it, and run the export again"
    )


def _one_series(path: str | Path, series: int | None) -> None:
    if series not in (None, 0):
        raise InputError(f"{path} holds one image: series {series} applies to TIFF files of several image series "
                         "only; leave it out (or give 0)")


def _local_path(url: str) -> Path | None:
    """The local path of a ``file://`` URL (None for any other scheme)."""
    from urllib.parse import unquote, urlparse

    u = urlparse(url)
    if u.scheme.lower() != "file":
        return None
    if u.netloc not in ("", "localhost"):
        raise InputError(f"{url}: a file:// URL names a path on this machine (file:///data/stack.zarr), "
                         f"not on {u.netloc!r}")
    return Path(unquote(u.path))


def _open_url(url: str, *, channel: int | None, level: int) -> Volume:
    """Open a zarr store at an fsspec URL (``s3://``, ``https://``, ``memory://`` ...)."""
    protocol = url.split("://", 1)[0].lower()
    if is_tiff_name(url.rstrip("/")):
        raise InputError(f"{url}: TIFF stacks are read from files on this machine only; copy it here, or "
                         "convert it to OME-Zarr for reading from a URL")
    try:
        import fsspec
    except ImportError:
        raise InputError(f"{url}: reading from a URL needs fsspec: pip install fsspec") from None
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:  # a known protocol whose package is missing: fsspec says which one
        raise InputError(f"{url}: reading {protocol}:// needs a package that is not installed ({exc})") from None
    except ValueError:
        raise InputError(f"{url}: {protocol}:// is not a protocol fsspec knows (file://, s3://, gs://, https://, "
                         "memory:// ...)") from None
    try:
        fs, root = fsspec.core.url_to_fs(url)
        exists = fs.exists(root)
        unfinished = exists and fs.exists(f"{root.rstrip('/')}/{INCOMPLETE_MARKER}")
        marked = exists and any(fs.exists(f"{root.rstrip('/')}/{m}") for m in ZARR_MARKERS)
    except EMSRError:
        raise
    except Exception as exc:  # network, credentials, a bad bucket name ...: fsspec's backends raise many kinds
        raise InputError(f"{url} cannot be reached ({type(exc).__name__}: {exc}): check the URL, the network and "
                         "the credentials") from None
    if not exists:
        raise InputError(f"{url} does not exist: check the URL")
    if unfinished:
        raise InputError(f"{url} is an unfinished export (it still has the {INCOMPLETE_MARKER} marker): run the "
                         "export again to complete it")
    if not marked:
        raise InputError(NOT_A_VOLUME.format(path=url) + " (no zarr metadata at this URL; N5 is not read: "
                         "convert it to OME-Zarr)")
    return open_zarr(url, channel=channel, level=level)


def write_volume(
    path: str | os.PathLike,
    data: Any,
    spacing: Any = None,
    unit: str = "nm",
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], Any] | None = None,
    chunks: tuple[int, int, int] | None = None,
    translation: Any = None,
    pyramid: bool | int = True,
    fingerprint: Mapping[str, str] | None = None,
    ngff: str | None = None,
) -> Path:
    """Write a (z, y, x) volume to a TIFF or OME-Zarr, block by block with bounded memory.

    ``.tif``/``.tiff``: an ImageJ hyperstack (voxel size as resolution + ``spacing``, unit nm) for
    uint8/uint16/float32 below 3.5 GB; otherwise an OME-TIFF (BigTIFF above 3.5 GB) with PhysicalSize.
    float16 is written as float32 (exactly; neither format holds half floats), 64-bit integers are refused.
    The file is written uncompressed under a unique temporary name beside the target,
    ``.<name>.emsr-partial-<random>`` (its whole size reserved on disk first where the platform can, then
    memory-mapped and filled block by block), and renamed onto the target when complete; an exception removes
    the temporary file, and one left by a killed process is refused by :func:`open_volume` and removed by the
    next write of the same TIFF. The TIFF is locked while it is written: a second process writing it is
    refused (:class:`~napari_emsr.errors.OutputBusyError`, naming the first). A voxel size too small or too
    large for ImageJ's resolution tags is written as an OME-TIFF. A TIFF holds neither translation nor
    pyramid, nor ``fingerprint``.

    Blocks run along z, unless the dask array has a single chunk along z and several along y or x
    (e.g. a reconstruction computed in xz planes): then they follow that axis, so that every dask
    chunk is computed once.

    ``.zarr`` (including ``.ome.zarr``): an OME-Zarr (NGFF 0.4, zarr format 2; or with ``ngff="0.5"``
    NGFF 0.5, zarr format 3 with the chunks packed in shards), axes z, y, x in nanometer, Blosc-zstd
    compressed: level ``"0"`` is the data; with ``pyramid`` the levels ``"1"``,
    ``"2"`` ... follow, each 2x smaller (mean of 2 voxels, integers rounded) along the axes whose voxel
    size is within 2x of the finest one, computed chunk by chunk from the level before once that is
    written. Every level carries its scale, and a translation: ``translation`` for level 0 when given,
    plus for coarser levels the shift of their voxel centres. A marker file :data:`INCOMPLETE_MARKER`
    exists from the first byte to the last level; it lists the finished level-0 blocks (rows of zarr
    chunks along the block axis, z as a rule) and pyramid levels, and ``fingerprint``. Calling again on a
    folder with the marker and the same shape, dtype, chunks, pyramid and fingerprint resumes it (skipping
    finished blocks and levels) without ``overwrite``; a different fingerprint is refused. The fingerprint
    is also kept in the group attributes (``attrs["napari_emsr"]["fingerprint"]``).

    A full disk, a file-size limit or a folder that cannot be written ends in an :class:`OutputError`
    that says so (and how much space is needed); the output never looks finished: a TIFF's temporary file
    is removed, a zarr store keeps its marker and resumes when called again. The output path is checked
    before anything is computed (a name too long for the file system, a missing or read-only folder, a place
    such as ``/proc``, a file or folder of the wrong kind in the way, too little free space for a TIFF).

    Parameters
    ----------
    path : str or path-like
        Output path; its suffix picks the format.
    data : array-like or Volume
        numpy or dask array (may be larger than memory). Written in its own dtype. For a
        :class:`Volume`, its spacing, unit and translation are used unless ``spacing`` is given.
    spacing : sequence of 3 float, optional
        Voxel size (z, y, x) in ``unit``; converted to nm when the unit is a known length.
    unit : str
        Unit of ``spacing`` and ``translation``.
    overwrite : bool
        Replace an existing complete output. With True an unfinished zarr export is started afresh.
    progress : callable, optional
        ``progress(done, total)`` is called after each block (TIFF: planes along the block axis
        written so far; zarr: blocks of level 0, then of the pyramid levels).
    chunks : tuple of 3 int, optional
        Zarr chunk shape (z, y, x), the same for every level. Default: the dask chunks when they are
        regular and 1-128 MB, else (64, 256, 256), clipped to the volume.
    translation : sequence of 3 float, optional
        Physical position (z, y, x) of voxel (0, 0, 0) in ``unit`` (zarr only; needs ``spacing``).
    pyramid : bool or int
        Zarr only. True: coarser levels until the largest side is at most 256 voxels (8 levels at
        most); False: level 0 only; a number: that many levels, level 0 included (fewer when no axis
        can be halved any more).
    fingerprint : mapping of str to str, optional
        Zarr only. What produces the data, e.g. ``{"input": "/data/stack.tif", "method": "cubic",
        "model": "<sha256>", "planes": "fuse"}``: an unfinished export resumes only with the same
        fingerprint (so that two different results are never mixed in one volume).
    ngff : {"0.4", "0.5"}, optional
        Zarr only. ``"0.4"``: NGFF 0.4 on zarr format 2, one file per chunk; ``"0.5"``: NGFF 0.5 on zarr
        format 3, the chunks of every level packed into shards of up to 128 MB
        (:func:`napari_emsr.io.omezarr.shard_shape`). None: 0.4, or the version of an enclosing
        :func:`napari_emsr.io.omezarr.ngff_version`.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    OutputExistsError
        When a complete output exists and ``overwrite`` is False, or an unfinished zarr export of other
        data (another shape, dtype, chunks, pyramid or fingerprint) is in the way.
    InputError
        For an unsupported suffix, data that is not a greyscale 3D volume, an output folder that does not
        exist, or a dtype the format cannot hold.
    OutputError
        When the output folder cannot be written, the disk is full or a file-size limit is reached.
    OutputBusyError
        When another process is writing the same TIFF.
    """
    p = Path(path).expanduser()
    if isinstance(data, Volume) and spacing is None:
        spacing, unit = data.spacing, data.unit
        if translation is None:
            translation = data.translation
    arr = check_volume(data)
    fingerprint = check_fingerprint(fingerprint)
    if spacing is not None or translation is not None:
        spacing, unit, translation = to_nm(spacing, unit, translation)
    if translation is not None and spacing is None:
        log.warning("ignoring the translation %s: without a voxel size it cannot be placed", translation)
        translation = None
    if is_tiff_name(p) and ngff is not None:
        raise InputError(f"cannot write {p} as NGFF {ngff}: a TIFF is no OME-Zarr; leave ngff out, or write a "
                         ".ome.zarr")
    if is_tiff_name(p):
        if translation is not None:
            log.info("%s: a TIFF stack holds no translation; %s is not written", p, translation)
        return write_tiff(p, arr, spacing, unit, overwrite=overwrite, progress=progress)
    if is_zarr_name(p):
        # NOTE: a file in the way of a zarr store is write_zarr's to refuse or (with overwrite) replace.
        check_output_path(p, folder=not _a_file(p))
        return write_zarr(
            p, arr, spacing, unit, overwrite=overwrite, progress=progress, chunks=chunks, translation=translation,
            pyramid=pyramid, fingerprint=fingerprint, ngff=ngff,
        )
    raise InputError(
        f"cannot write {p}: the name must end in .tif/.tiff (TIFF stack) or .zarr/.ome.zarr (OME-Zarr)"
    )
