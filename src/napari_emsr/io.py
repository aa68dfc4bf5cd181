"""Reading and writing volumes: TIFF stacks, OME-Zarr and plain zarr arrays.

Every volume napari-emsr works on is a :class:`Volume`: a lazy dask array in (z, y, x) order plus its
physical voxel size. Readers never load a whole file; writers work block by block with bounded memory,
write to a temporary name (TIFF) or carry a completion marker (zarr), so that an interrupted export
never looks finished and a zarr export can resume.

This module never imports torch, napari or Qt.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from napari_emsr.errors import InputError, OutputExistsError

__all__ = [
    "Volume",
    "open_volume",
    "as_volume",
    "check_volume",
    "write_volume",
    "finite_check",
    "INCOMPLETE_MARKER",
]

log = logging.getLogger(__name__)

#: Name of the file that marks a zarr export as unfinished (JSON: shape, dtype, chunks, finished z-blocks).
INCOMPLETE_MARKER = ".emsr_incomplete"

_TIFF_SUFFIXES = (".tif", ".tiff")
_ZARR_SUFFIXES = (".zarr",)
_NOT_A_VOLUME = (
    "{path} is not a volume napari-emsr can read: expected a TIFF stack (.tif/.tiff) or an OME-Zarr/zarr folder"
)
# Bytes of one TIFF write block (a group of z planes computed at once).
_TIFF_BLOCK_BYTES = 256 * 2**20
# ImageJ TIFF cannot be BigTIFF: above this size we write OME-TIFF (BigTIFF) instead.
_BIGTIFF_BYTES = int(3.5 * 2**30)
# Default chunk edge lengths of zarr exports (z, y, x).
_ZARR_CHUNKS = (64, 256, 256)

# Length units -> nanometres. Keys are lower case.
_UNIT_TO_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "um": 1e3,
    "\u00b5m": 1e3,  # micro sign
    "\u03bcm": 1e3,  # greek mu
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "pm": 1e-3,
    "picometer": 1e-3,
    "a": 0.1,
    "\u00e5": 0.1,  # Å
    "\u212b": 0.1,  # Angstrom sign
    "angstrom": 0.1,
}


# --------------------------------------------------------------------------------------------------
# Volume
# --------------------------------------------------------------------------------------------------


@dataclass
class Volume:
    """A lazy 3D volume with its physical voxel size.

    Parameters
    ----------
    data : dask.array.Array
        The voxels, axes (z, y, x). Lazy: nothing is read until computed.
    spacing : tuple of float or None
        Physical voxel size (z, y, x) in ``unit``; None when the file does not say.
    unit : str
        Unit of ``spacing``; ``"nm"`` whenever the file gives a known length unit.
    source : str or None
        The path the volume was read from, if any.
    """

    data: da.Array
    spacing: tuple[float, float, float] | None
    unit: str = "nm"
    source: str | None = None

    def __post_init__(self) -> None:
        if self.spacing is not None:
            self.spacing = _check_spacing(self.spacing)

    @property
    def factor(self) -> float | None:
        """Anisotropy factor F = z spacing / x spacing, or None without spacing."""
        if self.spacing is None:
            return None
        return float(self.spacing[0] / self.spacing[2])

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape (z, y, x) of the data."""
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """Data type of the voxels."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """Number of axes (always 3 for a validated volume)."""
        return self.data.ndim


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _check_spacing(spacing: Any) -> tuple[float, float, float]:
    """Return ``spacing`` as three positive finite floats, or raise InputError."""
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(
            f"voxel size {spacing!r} is not understood: give three numbers (z, y, x), e.g. (40, 4, 4)"
        ) from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(
            f"voxel size {spacing!r} is not valid: give three positive numbers (z, y, x), e.g. (40, 4, 4)"
        )
    return values  # type: ignore[return-value]


def _normalise_unit(unit: str | None) -> tuple[str | None, float | None]:
    """Map a unit name to ('nm', factor to nm) when it is a known length unit, else (unit, None)."""
    if unit is None:
        return None, None
    text = str(unit).strip()
    # ImageJ sometimes stores the micro sign escaped in its description.
    text = text.replace("\\u00B5", "\u00b5").replace("\\u00b5", "\u00b5")
    key = text.lower()
    if key in _UNIT_TO_NM:
        return "nm", _UNIT_TO_NM[key]
    if key in ("", "pixel", "pixels", "px"):
        return "pixel", None
    return text, None


def _to_dask(data: Any) -> da.Array:
    """Wrap numpy, dask, zarr (or anything array-like) as a dask array without reading it."""
    if isinstance(data, Volume):
        return data.data
    if isinstance(data, da.Array):
        return data
    if not (hasattr(data, "shape") and hasattr(data, "dtype") and hasattr(data, "__getitem__")):
        data = np.asarray(data)
    if np.dtype(data.dtype).kind == "O":
        raise InputError("the data holds Python objects, not numbers: give a numeric greyscale array")
    # zarr, h5py and memmaps are read lazily through __getitem__.
    return da.from_array(data, chunks=_lazy_chunks(tuple(data.shape), data.dtype))


def _lazy_chunks(shape: tuple[int, ...], dtype: Any) -> tuple[int, ...]:
    """Chunks of about 64 MB made of whole planes along the first axis where possible."""
    if len(shape) == 0:
        return ()
    itemsize = max(1, np.dtype(dtype).itemsize)
    plane = int(np.prod(shape[1:], dtype=np.int64)) * itemsize if len(shape) > 1 else itemsize
    n = max(1, min(int(shape[0]) or 1, (64 * 2**20) // max(plane, 1)))
    return (n,) + tuple(int(s) or 1 for s in shape[1:])


def _check_dtype(dtype: np.dtype) -> None:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        raise InputError(
            "boolean (mask) data cannot be reconstructed: give the greyscale image, "
            "or convert the mask to uint8 first"
        )
    if dtype.kind == "c":
        raise InputError("complex-valued data is not an image napari-emsr can use: give real greyscale values")
    if dtype.kind not in "uif":
        raise InputError(
            f"data type {dtype} is not numeric: give a greyscale image (uint8, uint16, float32, ...)"
        )


def check_volume(data: Any, *, channel: int | None = None, axes: str | None = None) -> da.Array:
    """Validate an array as a greyscale 3D volume and return it as a (z, y, x) dask array.

    Parameters
    ----------
    data : array-like
        numpy, dask or zarr array (or a :class:`Volume`). Never read whole.
    channel : int, optional
        Channel to pick from multi-channel data. Without ``axes`` the channel axis is axis 0 of a
        (c, z, y, x) array, or the last axis of a (z, y, x, 3|4) RGB(A) array.
    axes : str, optional
        Axis letters as a file reader knows them (e.g. tifffile's ``"ZCYX"`` or ``"QYXS"``); ``C`` and
        ``S`` are channel axes. Without it the axes are guessed from the shape.

    Returns
    -------
    dask.array.Array
        The (z, y, x) volume, still lazy.

    Raises
    ------
    InputError
        For a 2D image, RGB or multi-channel data without a channel choice, 4D+ data, a non-numeric,
        boolean or complex dtype, or an axis shorter than 2.
    """
    arr = _to_dask(data)
    _check_dtype(arr.dtype)
    shape = tuple(int(s) for s in arr.shape)
    if channel is not None:
        try:
            channel = int(channel)
        except (TypeError, ValueError):
            raise InputError(f"channel {channel!r} is not a whole number: give e.g. channel=0") from None
        if channel < 0:
            raise InputError(f"channel {channel} is negative: give a channel index from 0")

    if axes is not None:
        arr = _apply_axes(arr, axes.upper(), channel)
    else:
        arr = _guess_axes(arr, channel)

    if arr.ndim == 2:
        raise InputError(
            f"a single 2D image (shape {shape}) has no z axis to reconstruct; give a 3D stack (z, y, x)"
        )
    if arr.ndim != 3:
        raise InputError(
            f"data of shape {shape} is not a 3D volume: give a greyscale 3D stack (z, y, x)"
        )
    if arr.shape[0] == 1:
        raise InputError(
            f"a single 2D image (shape {shape}) has no z axis to reconstruct; give a 3D stack (z, y, x)"
        )
    if min(arr.shape) < 2:
        raise InputError(
            f"volume of shape {tuple(arr.shape)} has an axis shorter than 2 voxels: "
            "give a 3D stack with at least 2 voxels along z, y and x"
        )
    return arr


def _pick_channel(arr: da.Array, ax: int, channel: int | None, shape: tuple[int, ...]) -> da.Array:
    n = int(arr.shape[ax])
    if channel >= n:  # type: ignore[operator]
        raise InputError(
            f"channel {channel} does not exist: the data (shape {shape}) has {n} channels; "
            f"pick one of 0..{n - 1}"
        )
    return arr[(slice(None),) * ax + (channel,)]


def _rgb_error(shape: tuple[int, ...]) -> InputError:
    return InputError(
        f"RGB/multi-channel data (shape {shape}): convert to greyscale or pick a channel with "
        "channel=... (CLI: --channel)"
    )


def _channel_error(shape: tuple[int, ...], n: int) -> InputError:
    return InputError(
        f"the data (shape {shape}) has {n} channels or an extra axis: pick one with channel=... "
        f"(CLI: --channel), 0..{n - 1}"
    )


def _apply_axes(arr: da.Array, axes: str, channel: int | None) -> da.Array:
    """Reduce an array with known axis letters to its spatial axes."""
    shape = tuple(int(s) for s in arr.shape)
    if len(axes) != arr.ndim:
        return _guess_axes(arr, channel)
    # Pick the channel: a non-singleton C axis first, else S (RGB samples).
    chan_axis = None
    for letter in ("C", "S"):
        if letter in axes and shape[axes.index(letter)] > 1:
            chan_axis = axes.index(letter)
            break
    if channel is not None:
        if chan_axis is None:
            if channel != 0:
                raise InputError(
                    f"channel {channel} does not exist: the data (shape {shape}) has a single channel; "
                    "leave channel unset"
                )
        else:
            arr = _pick_channel(arr, chan_axis, channel, shape)
            axes = axes[:chan_axis] + axes[chan_axis + 1 :]
    # Drop singleton axes.
    keep = [i for i, s in enumerate(arr.shape) if s != 1 or axes[i] in "ZYX"]
    drop = tuple(i for i in range(arr.ndim) if i not in keep)
    if drop:
        arr = arr[tuple(0 if i in drop else slice(None) for i in range(arr.ndim))]
        axes = "".join(axes[i] for i in keep)
    if "S" in axes:
        raise _rgb_error(shape)
    if "C" in axes:
        raise _channel_error(shape, int(arr.shape[axes.index("C")]))
    if arr.ndim > 3:
        raise InputError(
            f"data of shape {shape} (axes {axes}) has more than three spatial/time axes: "
            "give one 3D stack (z, y, x), e.g. a single time point"
        )
    if arr.ndim == 3 and axes[-1] not in "X":
        # e.g. an RGB 2D image reported as YXS after dropping: be safe and say so.
        raise InputError(
            f"data of shape {shape} (axes {axes}) is not a (z, y, x) stack: give a greyscale 3D stack"
        )
    return arr


def _guess_axes(arr: da.Array, channel: int | None) -> da.Array:
    """Reduce an array without axis information to (z, y, x) by its shape."""
    shape = tuple(int(s) for s in arr.shape)
    # Squeeze singleton axes while there are more than three.
    while arr.ndim > 3 and 1 in arr.shape:
        i = list(arr.shape).index(1)
        arr = arr[(slice(None),) * i + (0,)]
    if arr.ndim == 4:
        rgb_like = arr.shape[-1] in (3, 4) and arr.shape[0] > 4
        if channel is None:
            if arr.shape[-1] in (3, 4):
                raise _rgb_error(shape)
            raise _channel_error(shape, int(arr.shape[0]))
        arr = _pick_channel(arr, arr.ndim - 1 if rgb_like else 0, channel, shape)
    elif arr.ndim == 3:
        if channel not in (None, 0):
            raise InputError(
                f"channel {channel} does not exist: the data (shape {shape}) has a single channel; "
                "leave channel unset"
            )
        # A 2D RGB(A) image (y, x, 3|4): an EM volume 3 or 4 voxels wide in x is not plausible.
        if arr.shape[-1] in (3, 4) and arr.shape[0] >= 16 and arr.shape[1] >= 16:
            raise _rgb_error(shape)
    elif arr.ndim > 4:
        raise InputError(
            f"data of shape {shape} has {arr.ndim} axes: give one greyscale 3D stack (z, y, x)"
        )
    return arr


def as_volume(
    array: Any,
    spacing: Any = None,
    unit: str = "nm",
    *,
    channel: int | None = None,
) -> Volume:
    """Wrap an in-memory or lazy array as a validated :class:`Volume`.

    Parameters
    ----------
    array : array-like or Volume
        numpy, dask or zarr array, (z, y, x) or with a channel axis (see :func:`check_volume`).
        A :class:`Volume` is returned with ``spacing``/``unit`` replaced when those are given.
    spacing : sequence of 3 float, optional
        Voxel size (z, y, x). A length unit (e.g. ``"um"``) is converted to nm.
    unit : str
        Unit of ``spacing``.
    channel : int, optional
        Channel to pick from multi-channel data.

    Returns
    -------
    Volume
    """
    source = None
    if isinstance(array, Volume):
        source = array.source
        if spacing is None:
            spacing, unit = array.spacing, array.unit
        array = array.data
    data = check_volume(array, channel=channel)
    if spacing is not None:
        spacing = _check_spacing(spacing)
        norm_unit, to_nm = _normalise_unit(unit)
        if to_nm is not None:
            spacing = tuple(s * to_nm for s in spacing)
            unit = "nm"
        elif norm_unit is not None:
            unit = norm_unit
    return Volume(data=data, spacing=spacing, unit=unit or "nm", source=source)


def finite_check(data: Any, sample_planes: int = 8) -> None:
    """Raise InputError when a sample of z planes holds NaN or infinite values.

    Only ``sample_planes`` evenly spaced planes are read, so this is cheap on large lazy volumes.
    Integer data cannot hold NaN and returns at once.

    Parameters
    ----------
    data : array-like or Volume
        (z, y, x) volume.
    sample_planes : int
        Number of z planes to look at.
    """
    arr = _to_dask(data)
    if arr.dtype.kind not in "fc":
        return
    if arr.ndim < 1 or arr.shape[0] == 0:
        return
    n = int(arr.shape[0])
    idx = np.unique(np.linspace(0, n - 1, max(1, min(int(sample_planes), n))).round().astype(int))
    bad = np.asarray(da.compute(*[~da.isfinite(arr[int(i)]).all() for i in idx]))
    if bad.any():
        first = int(idx[np.argmax(bad)])
        raise InputError(
            f"the volume holds NaN or infinite values (first seen in z plane {first}): replace them, "
            "e.g. with numpy.nan_to_num, or crop them away"
        )


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def open_volume(path: str | os.PathLike, *, channel: int | None = None, level: int = 0) -> Volume:
    """Open a TIFF stack, OME-Zarr or plain zarr array lazily as a :class:`Volume`.

    Parameters
    ----------
    path : str or path-like
        A ``.tif``/``.tiff`` file (ImageJ hyperstack, OME-TIFF or plain multi-page TIFF), or a zarr
        folder (OME-Zarr with ``multiscales``, or a plain zarr array; zarr format 2 or 3).
    channel : int, optional
        Channel to pick from multi-channel data.
    level : int
        Resolution level of a pyramid (OME-Zarr dataset index, TIFF sub-resolution); 0 is full size.

    Returns
    -------
    Volume
        Lazy data (z, y, x) and voxel size in nm when the file states it (``spacing`` None otherwise).

    Raises
    ------
    InputError
        When the path is missing, is not a readable volume, or the data is not a greyscale 3D stack.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{p} does not exist: check the path (and that the drive is mounted)")
    try:
        level = int(level)
    except (TypeError, ValueError):
        raise InputError(f"level {level!r} is not a whole number: give e.g. level=0") from None
    if level < 0:
        raise InputError(f"level {level} is negative: give 0 (full resolution) or a higher pyramid level")
    if p.is_dir():
        if _looks_like_zarr(p):
            vol = _open_zarr(p, channel=channel, level=level)
        else:
            raise InputError(_NOT_A_VOLUME.format(path=p) + " (this folder holds no zarr metadata)")
    elif p.suffix.lower() in _TIFF_SUFFIXES:
        vol = _open_tiff(p, channel=channel, level=level)
    elif p.name in ("zarr.json", ".zattrs", ".zgroup", ".zarray") and _looks_like_zarr(p.parent):
        vol = _open_zarr(p.parent, channel=channel, level=level)
    else:
        raise InputError(_NOT_A_VOLUME.format(path=p))
    log.info(
        "opened %s: shape %s, %s, voxel size %s %s", p, vol.shape, vol.dtype, vol.spacing, vol.unit
    )
    return vol


def _looks_like_zarr(p: Path) -> bool:
    return any((p / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup", ".zattrs"))


def _spacing_in_nm(
    values: tuple[float, float, float] | None, unit: str | None
) -> tuple[tuple[float, float, float] | None, str]:
    """Convert a voxel size to nm where the unit is a known length; keep it as is otherwise."""
    if values is None:
        return None, "nm"
    try:
        values = _check_spacing(values)
    except InputError:
        log.warning("ignoring invalid voxel size %r in the file", values)
        return None, "nm"
    norm, to_nm = _normalise_unit(unit)
    if to_nm is not None:
        return tuple(v * to_nm for v in values), "nm"  # type: ignore[return-value]
    return values, (norm or "pixel")


# ---- TIFF -----------------------------------------------------------------------------------------


def _open_tiff(p: Path, *, channel: int | None, level: int) -> Volume:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tf:
            if not tf.series:
                raise InputError(_NOT_A_VOLUME.format(path=p) + " (the TIFF holds no image series)")
            series = tf.series[0]
            levels = series.levels
            if level >= len(levels):
                raise InputError(
                    f"{p} has {len(levels)} resolution level(s); level {level} does not exist: "
                    f"pick 0..{len(levels) - 1}"
                )
            axes = levels[level].axes
            ij = tf.imagej_metadata or {}
            if axes == "CYX" and channel is None and ij.get("mode", "grayscale") == "grayscale" and not ij.get("slices"):
                # NOTE: tifffile (and scripts built on it) write a plain 3D ImageJ stack as "channels"
                # unless told otherwise; a greyscale one with no slices is a z stack in practice.
                axes = "ZYX"
            base_shape = tuple(int(s) for s in series.shape)
            level_shape = tuple(int(s) for s in levels[level].shape)
            spacing, unit = _tiff_spacing(tf, series)
    except InputError:
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error ...
        raise InputError(
            _NOT_A_VOLUME.format(path=p) + f" (the TIFF could not be read: {exc})"
        ) from None

    try:
        reader = _LazyTiff(str(p), level)
        zarr_arr = reader.open()
        reader.shape, reader.dtype = tuple(zarr_arr.shape), np.dtype(zarr_arr.dtype)
        reader.ndim = len(reader.shape)
        from dask.base import tokenize

        arr = da.from_array(
            reader,
            chunks=_tiff_dask_chunks(zarr_arr.shape, zarr_arr.chunks, zarr_arr.dtype),
            name="tiff-" + tokenize(str(p), p.stat().st_mtime_ns, p.stat().st_size, level),
            fancy=False,
            lock=False,
            meta=np.empty((0,) * reader.ndim, dtype=reader.dtype),
        )
    except Exception as exc:
        raise InputError(
            _NOT_A_VOLUME.format(path=p) + f" (the TIFF could not be opened lazily: {exc})"
        ) from None

    # A pyramid level is coarser laterally (and sometimes in z): scale the voxel size to it.
    if spacing is not None and level > 0:
        sp_axes = [a for a in "ZYX"]
        scaled = list(spacing)
        for j, letter in enumerate(sp_axes):
            if letter in axes:
                i = axes.index(letter)
                scaled[j] = spacing[j] * base_shape[i] / max(level_shape[i], 1)
        spacing = tuple(scaled)  # type: ignore[assignment]

    data = check_volume(arr, channel=channel, axes=axes)
    return Volume(data=data, spacing=spacing, unit=unit, source=str(p))


class _LazyTiff:
    """Array-like view of one TIFF series level, read through tifffile's zarr store on demand.

    Unlike the store itself (which holds an open file and a lock) it can be pickled, so dask graphs
    built on it can be sent to ``dask.distributed`` workers; each process opens the file once.
    """

    def __init__(self, path: str, level: int) -> None:
        self.path = path
        self.level = level
        self.shape: tuple[int, ...] = ()
        self.dtype = np.dtype("uint8")
        self.ndim = 0
        self._arr: Any = None

    def open(self) -> Any:
        if self._arr is None:
            import tifffile
            import zarr

            store = tifffile.imread(self.path, aszarr=True, series=0, level=self.level)
            self._arr = zarr.open(store, mode="r")
        return self._arr

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.open()[key])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arr"] = None
        return state


def _tiff_dask_chunks(
    shape: tuple[int, ...], chunks: tuple[int, ...], dtype: Any
) -> tuple[int, ...]:
    """Dask chunks for a TIFF zarr view: whole pages where they fit in ~128 MB, else page tiles."""
    shape = tuple(int(s) for s in shape)
    chunks = tuple(int(c) for c in chunks)
    if len(shape) < 2:
        return chunks
    itemsize = np.dtype(dtype).itemsize
    # Spatial plane = last two axes (plus RGB samples for YXS pages, which tifffile keeps whole).
    lead = len(shape) - 2
    if len(shape) >= 3 and chunks[-1] == shape[-1] and shape[-1] in (3, 4) and chunks[-2] != shape[-2]:
        lead = len(shape) - 3
    plane_bytes = int(np.prod(shape[lead:], dtype=np.int64)) * itemsize
    if plane_bytes <= 128 * 2**20:
        return tuple(1 for _ in shape[:lead]) + shape[lead:]
    # Very large pages: keep tiles but grow them to about 2048 px.
    out = list(chunks)
    for i in range(lead, len(shape)):
        if chunks[i] < shape[i]:
            out[i] = min(shape[i], max(chunks[i], (2048 // chunks[i]) * chunks[i]))
    return tuple(out)


def _tiff_spacing(tf: Any, series: Any) -> tuple[tuple[float, float, float] | None, str]:
    """Voxel size (z, y, x) of a TIFF from OME or ImageJ metadata, in nm when the unit is known."""
    if tf.is_ome and tf.ome_metadata:
        try:
            got = _ome_tiff_spacing(tf.ome_metadata)
        except Exception as exc:  # malformed XML: carry on without voxel size
            log.warning("could not read the OME-XML voxel size: %s", exc)
            got = None
        if got is not None:
            return got
    if tf.is_imagej:
        md = tf.imagej_metadata or {}
        page = tf.pages.first if hasattr(tf.pages, "first") else tf.pages[0]
        xy = _page_resolution(page)
        z = md.get("spacing")
        unit = md.get("unit")
        if z is None:
            if xy is not None:
                log.warning(
                    "%s has a lateral pixel size but no z spacing; give the voxel size explicitly",
                    tf.filehandle.path,
                )
            return None, "nm"
        if xy is None:
            # ImageJ without calibration of x/y: pixel width 1 in the same unit.
            xy = (1.0, 1.0)
        return _spacing_in_nm((float(z), xy[0], xy[1]), unit)
    return None, "nm"


def _page_resolution(page: Any) -> tuple[float, float] | None:
    """Pixel size (y, x) = 1 / (Y|X)Resolution, or None when it is absent or the default 1."""
    tags = page.tags
    out = []
    for name in ("YResolution", "XResolution"):
        tag = tags.get(name)
        if tag is None:
            return None
        value = tag.value
        try:
            res = value[0] / value[1] if isinstance(value, tuple) else float(value)
        except (TypeError, ZeroDivisionError):
            return None
        if not res or not math.isfinite(res):
            return None
        out.append(1.0 / res)
    if out == [1.0, 1.0]:
        return None
    return out[0], out[1]


def _ome_tiff_spacing(xml: str) -> tuple[tuple[float, float, float] | None, str] | None:
    """PhysicalSizeZ/Y/X of the first OME image, converted to nm (default unit micrometre)."""
    import tifffile

    ome = tifffile.xml2dict(xml).get("OME", {})
    image = ome.get("Image")
    if isinstance(image, list):
        image = image[0]
    if not isinstance(image, dict):
        return None
    pixels = image.get("Pixels", {})
    values = []
    for ax in "ZYX":
        size = pixels.get(f"PhysicalSize{ax}")
        if size is None:
            return None
        unit = pixels.get(f"PhysicalSize{ax}Unit", "\u00b5m")  # OME default is micrometre
        norm, to_nm = _normalise_unit(unit)
        if to_nm is None:
            log.warning("unknown OME unit %r: ignoring the voxel size", unit)
            return None
        values.append(float(size) * to_nm)
    return _spacing_in_nm(tuple(values), "nm")  # type: ignore[arg-type]


# ---- zarr -----------------------------------------------------------------------------------------


def _open_zarr(p: Path, *, channel: int | None, level: int) -> Volume:
    import zarr

    if (p / INCOMPLETE_MARKER).exists():
        raise InputError(
            f"{p} is an unfinished export (it still has the {INCOMPLETE_MARKER} marker): run the export "
            "again to complete it, or delete the folder"
        )
    try:
        node = zarr.open(str(p), mode="r")
    except Exception as exc:
        raise InputError(_NOT_A_VOLUME.format(path=p) + f" (zarr could not open it: {exc})") from None

    if _is_zarr_array(node):
        data = check_volume(da.from_zarr(node), channel=channel)
        return Volume(data=data, spacing=None, unit="nm", source=str(p))

    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales")
    if multiscales is None and isinstance(attrs.get("ome"), dict):  # NGFF 0.5 (zarr v3)
        multiscales = attrs["ome"].get("multiscales")
    if not multiscales:
        names = sorted(_array_names(node))
        hint = f"; it holds the arrays {names}: open one of them, e.g. {p / names[0]}" if names else ""
        raise InputError(
            _NOT_A_VOLUME.format(path=p) + f" (a zarr group without OME-Zarr 'multiscales' metadata{hint})"
        )
    ms = multiscales[0]
    datasets = ms.get("datasets") or []
    if level >= len(datasets):
        raise InputError(
            f"{p} has {len(datasets)} resolution level(s); level {level} does not exist: "
            f"pick 0..{max(len(datasets) - 1, 0)}"
        )
    ds = datasets[level]
    try:
        arr = node[ds["path"]]
    except Exception as exc:
        raise InputError(
            f"{p} is an OME-Zarr whose dataset {ds.get('path')!r} cannot be read ({exc}): "
            "the export may be incomplete; write it again"
        ) from None

    ndim = len(arr.shape)
    axes_meta = ms.get("axes")
    names, types, units = _ngff_axes(axes_meta, ndim)
    scale = _ngff_scale(ms.get("coordinateTransformations"), ds.get("coordinateTransformations"), ndim)

    letters = "".join(
        "C" if t == "channel" or n in ("c", "channel") else ("T" if t == "time" or n == "t" else "?")
        for n, t in zip(names, types)
    )
    spatial = [i for i, ch in enumerate(letters) if ch == "?"]
    axis_letters = list(letters)
    for i, letter in zip(spatial[-3:], "ZYX"[-len(spatial[-3:]) :] if spatial else ""):
        axis_letters[i] = letter
    for i in spatial[:-3]:
        axis_letters[i] = "T"  # extra unnamed non-spatial axis
    data = check_volume(da.from_zarr(arr), channel=channel, axes="".join(axis_letters))

    spacing = None
    unit = "nm"
    sp = spatial[-3:]
    if scale is not None and len(sp) == 3:
        sp_units = {units[i] for i in sp}
        sp_unit = units[sp[0]] if len(sp_units) == 1 else None
        values = tuple(float(scale[i]) for i in sp)
        if len(sp_units) > 1:
            # Different units per axis: convert each one to nm.
            conv = [_normalise_unit(units[i])[1] for i in sp]
            if all(c is not None for c in conv):
                values = tuple(v * c for v, c in zip(values, conv))  # type: ignore[operator]
                sp_unit = "nm"
        if sp_unit is None and all(v == 1.0 for v in values):
            spacing = None  # no units and unit scale: the file does not state a voxel size
        else:
            spacing, unit = _spacing_in_nm(values, sp_unit)  # type: ignore[arg-type]
    return Volume(data=data, spacing=spacing, unit=unit, source=str(p))


def _is_zarr_array(node: Any) -> bool:
    return hasattr(node, "shape") and hasattr(node, "dtype") and not hasattr(node, "group_keys")


def _array_names(group: Any) -> list[str]:
    try:
        return [str(k) for k in group.array_keys()]
    except Exception:
        return []


def _ngff_axes(axes_meta: Any, ndim: int) -> tuple[list[str], list[str | None], list[str | None]]:
    """Names, types and units of NGFF axes (0.3 lists of names, 0.4+ lists of dicts)."""
    if not axes_meta:
        names = ["t", "c", "z", "y", "x"][-ndim:] if ndim <= 5 else [f"d{i}" for i in range(ndim)]
        return names, [None] * ndim, [None] * ndim
    names, types, units = [], [], []
    for ax in axes_meta:
        if isinstance(ax, str):
            names.append(ax.lower())
            types.append(None)
            units.append(None)
        else:
            names.append(str(ax.get("name", "")).lower())
            types.append(ax.get("type"))
            units.append(ax.get("unit"))
    if len(names) != ndim:
        raise InputError(
            f"OME-Zarr metadata lists {len(names)} axes but the data has {ndim}: the file is inconsistent; "
            "open the array folder inside it directly"
        )
    for i, n in enumerate(names):
        if types[i] is None:
            types[i] = "time" if n == "t" else ("channel" if n == "c" else "space")
    return names, types, units


def _ngff_scale(global_ct: Any, ds_ct: Any, ndim: int) -> list[float] | None:
    """Product of the 'scale' transforms of a multiscale and its dataset."""
    scale = None
    for cts in (ds_ct, global_ct):
        for ct in cts or []:
            if ct.get("type") == "scale" and "scale" in ct:
                values = [float(v) for v in ct["scale"]]
                if len(values) != ndim:
                    continue
                scale = values if scale is None else [a * b for a, b in zip(scale, values)]
    return scale


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def write_volume(
    path: str | os.PathLike,
    data: Any,
    spacing: Any = None,
    unit: str = "nm",
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], Any] | None = None,
    chunks: tuple[int, int, int] | None = None,
) -> Path:
    """Write a (z, y, x) volume to a TIFF or OME-Zarr, block by block with bounded memory.

    ``.tif``/``.tiff``: an ImageJ hyperstack (voxel size as resolution + ``spacing``, unit nm) for
    uint8/uint16/float32 below 3.5 GB; otherwise an OME-TIFF (BigTIFF above 3.5 GB) with PhysicalSize.
    The file is written uncompressed as ``<name>.partial<suffix>`` beside the target (memory-mapped,
    filled block by block) and renamed when complete; an exception removes the partial file.

    Blocks run along z, unless the dask array has a single chunk along z and several along y or x
    (e.g. a reconstruction computed in xz planes): then they follow that axis, so that every dask
    chunk is computed once.

    ``.zarr`` (including ``.ome.zarr``): an OME-Zarr (NGFF 0.4, zarr format 2), axes z, y, x in
    nanometer, one dataset ``"0"``, Blosc-zstd compressed. A marker file :data:`INCOMPLETE_MARKER` lists
    the finished blocks (rows of zarr chunks along the block axis, z as a rule) while writing and is
    removed at the end. Calling again on a folder with the marker and the same shape, dtype and chunks
    resumes it (skipping finished blocks) without ``overwrite``.

    Parameters
    ----------
    path : str or path-like
        Output path; its suffix picks the format.
    data : array-like or Volume
        numpy or dask array (may be larger than memory). Written in its own dtype. For a
        :class:`Volume`, its spacing and unit are used unless ``spacing`` is given.
    spacing : sequence of 3 float, optional
        Voxel size (z, y, x) in ``unit``; converted to nm when the unit is a known length.
    unit : str
        Unit of ``spacing``.
    overwrite : bool
        Replace an existing complete output. With True an unfinished zarr export is started afresh.
    progress : callable, optional
        ``progress(done, total)`` is called after each block (TIFF: planes along the block axis
        written so far; zarr: blocks).
    chunks : tuple of 3 int, optional
        Zarr chunk shape (z, y, x). Default: the dask chunks when they are regular and 1-128 MB,
        else (64, 256, 256), clipped to the volume.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    OutputExistsError
        When a complete output exists and ``overwrite`` is False.
    InputError
        For an unsupported suffix or data that is not a greyscale 3D volume.
    """
    p = Path(path).expanduser()
    if isinstance(data, Volume) and spacing is None:
        spacing, unit = data.spacing, data.unit
    arr = check_volume(data)
    if spacing is not None:
        spacing = _check_spacing(spacing)
        norm, to_nm = _normalise_unit(unit)
        if to_nm is not None:
            spacing = tuple(s * to_nm for s in spacing)
            unit = "nm"
        else:
            unit = norm or unit
    name = p.name.lower()
    if name.endswith(_TIFF_SUFFIXES):
        return _write_tiff(p, arr, spacing, unit, overwrite=overwrite, progress=progress)
    if name.endswith(_ZARR_SUFFIXES):
        return _write_zarr(p, arr, spacing, unit, overwrite=overwrite, progress=progress, chunks=chunks)
    raise InputError(
        f"cannot write {p}: the name must end in .tif/.tiff (TIFF stack) or .zarr/.ome.zarr (OME-Zarr)"
    )


def _block_axis(arr: da.Array) -> int:
    """Axis to write along: z, unless the data has a single chunk along z and several along another axis.

    Computed data (e.g. a reconstruction made of xz planes) may be chunked with whole z columns; cutting
    it into z-blocks would compute every chunk once per block, so blocks follow its chunks instead.
    """
    counts = [len(c) for c in arr.chunks]
    if counts[0] > 1 or max(counts) == 1:
        return 0
    return int(np.argmax(counts))


def _blocks(arr: da.Array, axis: int, target_bytes: int) -> list[tuple[int, int]]:
    """Ranges along ``axis`` that follow the dask chunks and hold about ``target_bytes`` each."""
    n = int(arr.shape[axis])
    other = [int(s) for i, s in enumerate(arr.shape) if i != axis]
    slab = int(np.prod(other, dtype=np.int64)) * arr.dtype.itemsize
    bounds = np.cumsum((0,) + tuple(int(c) for c in arr.chunks[axis]))
    blocks = []
    start = 0
    for end in bounds[1:]:
        end = int(end)
        if (end - start) * slab >= target_bytes or end == n:
            blocks.append((start, end))
            start = end
    return blocks


def _region(axis: int, start: int, stop: int) -> tuple[slice, ...]:
    return tuple(slice(start, stop) if i == axis else slice(None) for i in range(3))


def _write_tiff(
    p: Path,
    arr: da.Array,
    spacing: tuple[float, float, float] | None,
    unit: str,
    *,
    overwrite: bool,
    progress: Callable[[int, int], Any] | None,
) -> Path:
    import tifffile

    if p.is_dir():
        raise OutputExistsError(f"{p} exists and is a folder; choose another path for the TIFF")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} exists; pass overwrite=True (CLI: --overwrite) or choose another path")
    if not p.parent.exists():
        raise InputError(f"the folder {p.parent} does not exist: create it or choose another output path")
    suffix = p.suffix
    tmp = p.with_name(p.name[: -len(suffix)] + ".partial" + suffix)

    shape = tuple(int(s) for s in arr.shape)
    dtype = np.dtype(arr.dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    big = nbytes > _BIGTIFF_BYTES
    imagej = not big and dtype in (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))
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
    axis = _block_axis(arr)
    blocks = _blocks(arr, axis, _TIFF_BLOCK_BYTES)
    try:
        mm = tifffile.memmap(tmp, shape=shape, dtype=dtype, **kwargs)
        try:
            for start, stop in blocks:
                region = _region(axis, start, stop)
                da.store(arr[region], mm, regions=region, lock=False)
                if progress is not None:
                    progress(stop, shape[axis])
            mm.flush()
        finally:
            del mm
        os.replace(tmp, p)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    log.info("wrote %s (%s, %s)", p, shape, dtype)
    return p


def _zarr_chunks(arr: da.Array) -> tuple[int, int, int]:
    """Zarr chunks for ``arr``: its own dask chunks when regular and 1-128 MB, else (64, 256, 256).

    Keeping the dask chunks means every chunk is computed exactly once (no rechunking of computed data).
    """
    first = tuple(int(c[0]) for c in arr.chunks)
    regular = all(all(int(x) == c[0] for x in c[:-1]) and int(c[-1]) <= c[0] for c in arr.chunks)
    nbytes = int(np.prod(first, dtype=np.int64)) * arr.dtype.itemsize
    if regular and 2**20 <= nbytes <= 128 * 2**20:
        return first  # type: ignore[return-value]
    return _ZARR_CHUNKS


def _write_marker(folder: Path, state: dict) -> None:
    tmp = folder / (INCOMPLETE_MARKER + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, folder / INCOMPLETE_MARKER)


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / INCOMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None


def _zarr_major() -> int:
    import zarr

    try:
        return int(str(zarr.__version__).split(".")[0])
    except ValueError:
        return 3


def _ngff_metadata(spacing: tuple[float, float, float] | None, unit: str, name: str) -> dict:
    axes = []
    for ax in "zyx":
        entry: dict[str, Any] = {"name": ax, "type": "space"}
        if spacing is not None and unit == "nm":
            entry["unit"] = "nanometer"
        axes.append(entry)
    scale = list(spacing) if spacing is not None else [1.0, 1.0, 1.0]
    return {
        "multiscales": [
            {
                "version": "0.4",
                "name": name,
                "axes": axes,
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
                ],
                "type": "none",
                "metadata": {"written_by": "napari-emsr"},
            }
        ]
    }


def _create_zarr(p: Path, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: np.dtype, attrs: dict) -> Any:
    import numcodecs
    import zarr

    compressor = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    if _zarr_major() >= 3:
        group = zarr.open_group(str(p), mode="w", zarr_format=2)
        group.attrs.update(attrs)
        arr = group.create_array(
            "0",
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            compressors=compressor,
            chunk_key_encoding={"name": "v2", "separator": "/"},
            fill_value=0,
        )
    else:  # zarr 2.x
        group = zarr.open_group(str(p), mode="w")
        group.attrs.update(attrs)
        arr = group.create_dataset(
            "0", shape=shape, chunks=chunks, dtype=dtype, compressor=compressor, dimension_separator="/",
            fill_value=0,
        )
    return arr


def _write_zarr(
    p: Path,
    arr: da.Array,
    spacing: tuple[float, float, float] | None,
    unit: str,
    *,
    overwrite: bool,
    progress: Callable[[int, int], Any] | None,
    chunks: tuple[int, int, int] | None,
) -> Path:
    import zarr

    shape = tuple(int(s) for s in arr.shape)
    dtype = np.dtype(arr.dtype)
    if chunks is None:
        chunks = _zarr_chunks(arr)
    try:
        chunks = tuple(max(1, min(int(c), s)) for c, s in zip(chunks, shape))  # type: ignore[assignment]
    except (TypeError, ValueError):
        raise InputError(f"chunks {chunks!r} is not understood: give three whole numbers (z, y, x)") from None
    if len(chunks) != 3:
        raise InputError(f"chunks {chunks!r} must have three entries (z, y, x)")
    data = arr.rechunk(chunks)
    axis = _block_axis(data)
    step = chunks[axis]
    blocks = [(b0, min(shape[axis], b0 + step)) for b0 in range(0, shape[axis], step)]
    state = {
        "shape": list(shape),
        "dtype": dtype.str,
        "chunks": list(chunks),
        "axis": axis,
        "total": len(blocks),
        "done": [],
    }

    done: set[int] = set()
    zarr_arr = None
    if p.exists():
        if p.is_file():
            if not overwrite:
                raise OutputExistsError(
                    f"{p} exists; pass overwrite=True (CLI: --overwrite) or choose another path"
                )
            p.unlink()
        else:
            marker = _read_marker(p) if (p / INCOMPLETE_MARKER).exists() else None
            resumable = (
                marker is not None
                and not overwrite
                and marker.get("shape") == state["shape"]
                and marker.get("dtype") == state["dtype"]
                and marker.get("chunks") == state["chunks"]
                and marker.get("axis", 0) == axis
            )
            if resumable:
                try:
                    zarr_arr = zarr.open(str(p / "0"), mode="r+")
                    if tuple(zarr_arr.shape) != shape or np.dtype(zarr_arr.dtype) != dtype:
                        zarr_arr = None
                except Exception:
                    zarr_arr = None
            if zarr_arr is not None:
                done = {int(b) for b in marker.get("done", []) if 0 <= int(b) < len(blocks)}  # type: ignore[union-attr]
                log.info("resuming %s: %d of %d blocks already written", p, len(done), len(blocks))
            elif (p / INCOMPLETE_MARKER).exists() and not overwrite:
                raise OutputExistsError(
                    f"{p} holds an unfinished export of a different volume (shape, dtype or chunks differ); "
                    "pass overwrite=True (CLI: --overwrite) to start again, or choose another path"
                )
            elif not overwrite:
                raise OutputExistsError(
                    f"{p} exists; pass overwrite=True (CLI: --overwrite) or choose another path"
                )
            else:
                if not _looks_like_zarr(p) and any(p.iterdir()):
                    raise InputError(
                        f"{p} is a folder that is not a zarr store; refusing to delete it: "
                        "choose another output path"
                    )
                shutil.rmtree(p)
    elif not p.parent.exists():
        raise InputError(f"the folder {p.parent} does not exist: create it or choose another output path")

    if zarr_arr is None:
        p.mkdir()
        _write_marker(p, state)
        name = p.name[: -len(".ome.zarr")] if p.name.lower().endswith(".ome.zarr") else p.stem
        zarr_arr = _create_zarr(p, shape, chunks, dtype, _ngff_metadata(spacing, unit, name))
        # zarr may have rewritten the folder: make sure the marker is (still) there.
        _write_marker(p, state)

    for b, (b0, b1) in enumerate(blocks):
        if b in done:
            continue
        region = _region(axis, b0, b1)
        da.store(data[region], zarr_arr, regions=region, lock=False)
        done.add(b)
        state["done"] = sorted(done)
        _write_marker(p, state)
        if progress is not None:
            progress(len(done), len(blocks))
    (p / INCOMPLETE_MARKER).unlink()
    log.info("wrote %s (%s, %s, chunks %s)", p, shape, dtype, chunks)
    return p
