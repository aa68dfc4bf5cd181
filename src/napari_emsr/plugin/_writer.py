"""napari writer: image layers to OME-Zarr or TIFF, keeping their voxel size.

The layer's ``scale`` is its voxel size (z, y, x), so it becomes the file's spacing; the unit comes from the
layer's metadata (set by the napari-emsr reader) and defaults to nanometres
(:func:`napari_emsr.plugin.layers.layer_data_to_volume`). Writing goes through
:func:`napari_emsr.io.write_volume`, which writes under a temporary name and renames when complete.

Importing this module is cheap: it never imports torch.
"""

from __future__ import annotations

from typing import Any

from napari_emsr.plugin.layers import layer_data_to_volume
from napari_emsr.plugin.lazy_layer import RestoredPlanes


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write one image layer to ``path`` (``.ome.zarr``, ``.zarr``, ``.tif`` or ``.tiff``).

    Parameters
    ----------
    path : str
        Output path; the suffix picks the format.
    data : array-like
        The layer data, (z, y, x).
    meta : dict
        The layer attributes napari passes (``scale``, ``metadata``, ...).

    Returns
    -------
    list of str
        The path written, or an empty list when nothing was written.

    Raises
    ------
    napari_emsr.errors.InputError
        When the layer is not a single-channel 3D volume or the suffix is not supported.
    """
    from napari_emsr.errors import InputError
    from napari_emsr.io import write_volume

    # NOTE: a restored layer's data stands in for the lazy reconstruction (lazy_layer); write the real one.
    if isinstance(data, RestoredPlanes):
        data = data.dask
    ndim = getattr(data[0] if meta.get("multiscale") else data, "ndim", 0)
    if ndim != 3 or meta.get("rgb"):
        raise InputError(
            f"napari-emsr writes single-channel 3D volumes (z, y, x); this layer has {ndim} dimension(s)"
            f"{' and RGB colour' if meta.get('rgb') else ''}. Use napari's own writer for it."
        )
    # NOTE: napari's save dialog has already asked before replacing an existing file.
    out = write_volume(path, layer_data_to_volume(data, meta), overwrite=True)
    return [str(out)]
