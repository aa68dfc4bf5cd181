"""napari reader: anisotropic EM stacks from TIFF and OME-Zarr/zarr, opened lazily with their voxel size.

The reader hands napari the lazy array of :func:`napari_emsr.io.open_volume` through
:func:`napari_emsr.plugin.layers.volume_to_layer_data`: ``scale`` is the voxel size, so a stack with 40 nm
sections and 10 nm pixels looks four times as thick as it is wide, a pyramid becomes a multiscale layer, and
spacing, unit and source go into the layer's metadata. It returns ``None`` quickly for whatever it cannot
read (another suffix, a folder that is not a zarr store, a 2D or RGB TIFF), so napari's own reader takes it.

Importing this module is cheap: it never imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_emsr.plugin.layers import LayerData, volume_to_layer_data

logger = logging.getLogger(__name__)

__all__ = ["napari_get_reader"]


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
    from napari_emsr.io import TIFF_SUFFIXES, ZARR_SUFFIXES, looks_like_zarr

    p = Path(path)
    name = p.name.lower().rstrip("/")
    if name.endswith(TIFF_SUFFIXES):
        return p.is_file()
    if p.is_dir():
        return name.endswith(ZARR_SUFFIXES) or looks_like_zarr(p)
    return False


def _open_or_none(path: str | Path) -> Any:
    """Open ``path`` lazily as a :class:`napari_emsr.io.Volume`; ``None`` if it is no usable 3D volume."""
    from napari_emsr.errors import EMSRError
    from napari_emsr.io import check_volume, open_volume

    try:
        volume = open_volume(path)
        check_volume(volume.data)
    except EMSRError as err:
        # NOTE: a 2D image, an RGB picture or a 4D stack is left to napari's builtin reader.
        logger.warning("napari-emsr does not read %s: %s", path, err)
        return None
    return volume


def _stem(path: str | Path) -> str:
    """The layer name of a file: its name without the volume suffix (``stack.ome.zarr`` -> ``stack``)."""
    from napari_emsr.io import TIFF_SUFFIXES, ZARR_SUFFIXES

    name = Path(path).name.rstrip("/")
    bases = (*TIFF_SUFFIXES, *ZARR_SUFFIXES)
    suffixes = sorted({s for base in bases for s in (".ome" + base, base)}, key=len, reverse=True)
    for suffix in suffixes:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
