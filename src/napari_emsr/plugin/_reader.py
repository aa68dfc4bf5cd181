"""napari reader: anisotropic EM stacks from TIFF and OME-Zarr/zarr, opened lazily with their voxel size.

The reader hands napari the lazy array of :func:`napari_emsr.io.open_volume` through
:func:`napari_emsr.plugin.layers.volume_to_layer_data`: ``scale`` is the voxel size, so a stack with 40 nm
sections and 10 nm pixels looks four times as thick as it is wide, a pyramid becomes a multiscale layer, and
spacing, unit and source go into the layer's metadata. It returns ``None`` quickly for whatever it cannot
read (another suffix, a folder that is not a zarr store, a 2D or RGB TIFF), so napari's own reader takes it.

A TIFF of several image series (an OME-TIFF with a thumbnail, or several stacks) gives one layer per 3D series,
named ``<name> [series N]``, with the series in the metadata: the largest is shown, the others are hidden
(tick their eye in the layer list to see them). The temporary file of a write that was killed is refused with
a message, never shown as a volume.

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
    if not paths:
        return None
    unfinished = _unfinished(paths)
    if unfinished is not None:
        # NOTE: returning None would let another reader show the incomplete data as if it were a volume.
        def refuse(_path: Any) -> list[LayerData]:
            _tell(unfinished)
            raise unfinished

        return refuse
    if not all(_looks_readable(p) for p in paths):
        return None
    layers: list[LayerData] = []
    for p in paths:
        opened = _open_layers(p)
        if opened is None:
            return None
        layers.extend(opened)

    def reader(_path: Any) -> list[LayerData]:
        return layers

    return reader


def _unfinished(paths: Sequence[str | Path]) -> Exception | None:
    """The error for the first path that is the temporary file of a killed write, or None."""
    from napari_emsr.errors import InputError
    from napari_emsr.io.files import refuse_unfinished

    for p in paths:
        try:
            refuse_unfinished(Path(p))
        except InputError as err:
            return err
    return None


def _tell(err: Exception) -> None:
    """Show the refusal as napari's error notification: napari itself reports only that the reader failed."""
    try:
        from napari.utils.notifications import show_error
    except ImportError:  # called without napari: the exception says it
        return
    show_error(f"napari-emsr did not open it: {err} (it was being written by an export of napari-emsr: the "
               "panel's Export or the emsr command)")


def _open_layers(path: str | Path) -> list[LayerData] | None:
    """The layers of ``path``: one volume, or for a TIFF of several image series one layer per 3D series (the
    largest visible, the others hidden); None when it holds no usable 3D volume."""
    from napari_emsr.io import TIFF_SUFFIXES

    name = _stem(path)
    table = None
    if Path(path).name.lower().endswith(TIFF_SUFFIXES):
        table = _tiff_series_or_none(path)
    if not table or len(table) < 2:
        volume = _open_or_none(path)
        return None if volume is None else [volume_to_layer_data(volume, name=name)]
    from napari_emsr.io.tiff import default_series, is_3d_series

    shown = default_series(table)
    stacks = [i for i, shape, axes in table if is_3d_series(shape, axes)] or [shown]
    layers = []
    for i in stacks:
        volume = _open_or_none(path, series=i)
        if volume is None:
            if i == shown:
                return None
            continue
        data = volume_to_layer_data(volume, name=f"{name} [series {i}]", visible=i == shown)
        data[1]["metadata"]["series"] = i
        layers.append(data)
    if len(stacks) > 1:
        logger.info("%s has %d 3D image series: series %d is shown, the others are hidden layers", path,
                    len(stacks), shown)
    # the shown series last, so that it is the selected layer, drawn on top
    layers.sort(key=lambda layer: layer[1]["metadata"]["series"] == shown)
    return layers


def _tiff_series_or_none(path: str | Path) -> list | None:
    from napari_emsr.errors import EMSRError
    from napari_emsr.io.tiff import tiff_series

    try:
        return tiff_series(Path(path))
    except EMSRError:
        return None  # open_volume then says what is wrong


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


def _open_or_none(path: str | Path, series: int | None = None) -> Any:
    """Open ``path`` (a TIFF's image ``series``) lazily as a :class:`napari_emsr.io.Volume`; ``None`` if it is
    no usable 3D volume."""
    from napari_emsr.errors import EMSRError
    from napari_emsr.io import check_volume, open_volume

    try:
        volume = open_volume(path, series=series)
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
