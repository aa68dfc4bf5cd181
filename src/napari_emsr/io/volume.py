"""The :class:`Volume` every part of napari-emsr works on, and the checks that make an array one.

A volume is a lazy dask array in (z, y, x) order plus its physical voxel size, where it sits in space
(``translation``) and, when the file holds a pyramid, its coarser resolution levels. :func:`check_volume`
turns numpy, dask or zarr arrays with channel or extra axes into a greyscale (z, y, x) array, or says what
is wrong with them; nothing here reads a whole array.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from ..errors import InputError
from ..geometry import factor_from_spacing
from .units import Spacing, check_spacing, check_translation, normalise_unit

log = logging.getLogger(__name__)


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
        Unit of ``spacing`` and ``translation``; ``"nm"`` whenever the file gives a known length unit.
    source : str or None
        The path the volume was read from, if any.
    translation : tuple of float or None
        Physical position (z, y, x) of voxel (0, 0, 0) in ``unit`` (NGFF ``translation``); None when
        the file does not say.
    levels : tuple of dask.array.Array
        The resolution pyramid, finest first: ``levels[0]`` is always ``data``; each further level is a
        coarser lazy array of the same field of view. Default: ``(data,)``.
    """

    data: da.Array
    spacing: Spacing | None
    unit: str = "nm"
    source: str | None = None
    translation: Spacing | None = None
    levels: tuple[da.Array, ...] = ()

    def __post_init__(self) -> None:
        if self.spacing is not None:
            self.spacing = check_spacing(self.spacing)
        if self.translation is not None:
            self.translation = check_translation(self.translation)
        levels = tuple(self.levels or ())
        if levels and levels[0] is not self.data:
            # NOTE: dataclasses.replace(volume, data=...) keeps the old pyramid: it still fits a new level 0
            # of the same shape (e.g. normalised data), otherwise it is dropped rather than shown wrong.
            if tuple(levels[0].shape) == tuple(self.data.shape):
                levels = (self.data,) + levels[1:]
            else:
                log.debug("dropping a pyramid whose level 0 %s does not match the data %s", levels[0].shape,
                          self.data.shape)
                levels = ()
        self.levels = levels or (self.data,)

    @property
    def factor(self) -> float | None:
        """Anisotropy factor F = z spacing / x spacing (:func:`napari_emsr.geometry.factor_from_spacing`)."""
        return factor_from_spacing(self.spacing, axis=0)

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
    shape = tuple(int(s) for s in (data.shape if hasattr(data, "shape") else np.shape(data)))
    arr = reduce_axes(data, channel=channel, axes=axes)
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


def reduce_axes(data: Any, *, channel: int | None = None, axes: str | None = None) -> da.Array:
    """The greyscale spatial axes of ``data`` as a dask array, without the size checks of :func:`check_volume`.

    Coarser levels of a pyramid may be a single voxel thick; they go through this and not through
    :func:`check_volume`. Parameters and errors as there (dtype, channel choice, RGB, extra axes).
    """
    arr = _to_dask(data)
    _check_dtype(arr.dtype)
    if channel is not None:
        try:
            channel = int(channel)
        except (TypeError, ValueError):
            raise InputError(f"channel {channel!r} is not a whole number: give e.g. channel=0") from None
        if channel < 0:
            raise InputError(f"channel {channel} is negative: give a channel index from 0")
    if axes is not None:
        return _apply_axes(arr, axes.upper(), channel)
    return _guess_axes(arr, channel)


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
        A :class:`Volume` keeps its source, translation and pyramid; its spacing and unit are replaced
        when ``spacing`` is given.
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
    translation = None
    levels: tuple[da.Array, ...] = ()
    old_unit = None
    if isinstance(array, Volume):
        source, translation, levels, old_unit = array.source, array.translation, array.levels, array.unit
        if spacing is None:
            spacing, unit = array.spacing, array.unit
        array = array.data
    data = check_volume(array, channel=channel)
    if spacing is not None:
        spacing = check_spacing(spacing)
        norm_unit, to_nm = normalise_unit(unit)
        if to_nm is not None:
            spacing = tuple(s * to_nm for s in spacing)
            unit = "nm"
        elif norm_unit is not None:
            unit = norm_unit
    if translation is not None and old_unit is not None and (unit or "nm") != old_unit:
        # The translation is in the old unit; a voxel size in another unit cannot place it.
        log.info("dropping the translation %s %s: the new voxel size is in %s", translation, old_unit, unit)
        translation = None
    if levels and levels[0] is not data:
        levels = ()  # a channel was picked or the axes changed: the pyramid no longer fits
    return Volume(data=data, spacing=spacing, unit=unit or "nm", source=source, translation=translation,
                  levels=levels)


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


