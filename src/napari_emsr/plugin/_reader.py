"""napari reader: anisotropic EM stacks from TIFF and OME-Zarr/zarr, opened lazily with their voxel size.

The reader hands napari the lazy array of :func:`napari_emsr.io.open_volume` with ``scale`` set to the voxel
size, so that a stack with 40 nm sections and 10 nm pixels looks four times as thick as it is wide, and
records spacing, unit and source in the layer's metadata. It returns ``None`` quickly for whatever it cannot
read (another suffix, a folder that is not a zarr store, a 2D or RGB TIFF), so napari's own reader takes it.

Importing this module is cheap: it never imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr",)
# Files that mark a folder as a zarr store (v2 group/array, v3).
ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")

LayerData = tuple[Any, dict, str]


def napari_get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return a reader for ``path`` if napari-emsr can open it as a 3D volume, else ``None``.

    Parameters
    ----------
    path : str or sequence of str
        A file or folder, or a list of them (each must be readable).

    Returns
    -------
    callable or None
        A function that takes the path(s) and returns a list of layer data tuples.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(_looks_readable(p) for p in paths):
        return None
    volumes = []
    for p in paths:
        volume = _open_or_none(p)
        if volume is None:
            return None
        volumes.append(volume)

    def reader(_path: Any) -> list[LayerData]:
        return [volume_to_layer_data(v, name=_stem(p)) for v, p in zip(volumes, paths)]

    return reader


def _looks_readable(path: str | Path) -> bool:
    """Cheap check on the name (and for a folder, the zarr marker files): no file content is read."""
    p = Path(path)
    name = p.name.lower().rstrip("/")
    if name.endswith(TIFF_SUFFIXES):
        return p.is_file()
    if p.is_dir():
        return name.endswith(ZARR_SUFFIXES) or any((p / m).exists() for m in ZARR_MARKERS)
    return False


def _open_or_none(path: str | Path):
    """Open ``path`` lazily as a :class:`napari_emsr.io.Volume`; ``None`` if it is no usable 3D volume."""
    from napari_emsr.errors import EMSRError
    from napari_emsr.io import check_volume, open_volume

    try:
        volume = open_volume(path)
        check_volume(volume.data)
    except EMSRError as err:
        # NOTE: a 2D image, an RGB picture or a 4D stack is left to napari's builtin reader.
        logger.info("napari-emsr does not read %s: %s", path, err)
        return None
    return volume


def _stem(path: str | Path) -> str:
    name = Path(path).name.rstrip("/")
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def contrast_limits_for(data: Any) -> tuple[float, float]:
    """Contrast limits from one middle z slice (cheap on a lazy array), falling back to the dtype's range.

    Parameters
    ----------
    data : array-like
        A (z, y, x) array, numpy or dask.

    Returns
    -------
    tuple of float
        (low, high) with high > low.
    """
    plane = np.asarray(data[data.shape[0] // 2])
    if plane.size:
        lo, hi = (float(v) for v in np.percentile(plane, (0.1, 99.9)))
        if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
            return lo, hi
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0


def _is_known_unit(unit: str) -> bool:
    """Whether napari (through pint) understands ``unit``; an unknown one is kept in metadata only."""
    try:
        import pint

        pint.get_application_registry().Unit(unit)
    except Exception:  # noqa: BLE001 - any parse failure means "do not pass it to napari"
        return False
    return True


def volume_to_layer_data(volume: Any, name: str, **extra: Any) -> LayerData:
    """The napari layer data tuple of a :class:`napari_emsr.io.Volume`, with scale = voxel size.

    Parameters
    ----------
    volume : napari_emsr.io.Volume
        The volume (lazy data, spacing (z, y, x) or None, unit, source).
    name : str
        Layer name.
    **extra
        More layer keyword arguments (they win over the defaults).

    Returns
    -------
    tuple
        ``(data, kwargs, "image")``.
    """
    spacing = tuple(float(s) for s in volume.spacing) if volume.spacing is not None else None
    unit = getattr(volume, "unit", None) or "nm"
    metadata = {
        "spacing": spacing,
        "unit": unit,
        "source": str(volume.source) if getattr(volume, "source", None) is not None else None,
    }
    kwargs: dict[str, Any] = {
        "name": name,
        "metadata": metadata,
        "contrast_limits": contrast_limits_for(volume.data),
        "multiscale": False,
        "colormap": "gray",
    }
    if spacing is not None:
        kwargs["scale"] = spacing
        if _is_known_unit(unit):
            kwargs["units"] = (unit,) * 3
    kwargs.update(extra)
    return volume.data, kwargs, "image"
