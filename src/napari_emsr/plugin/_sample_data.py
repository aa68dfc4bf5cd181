"""napari sample data: the bundled medulla FIB-SEM crop, anisotropic and as isotropic ground truth.

The crop (129 x 192 x 192 voxels, 10 nm isotropic; CC-BY Janelia FlyEM) ships with the package; the
anisotropic stack is made from it by :func:`napari_emsr.sample.load_sample` (every F-th slice, z 40 nm).
Each layer carries its voxel size as ``scale`` (:func:`napari_emsr.plugin.layers.volume_to_layer_data`) so
the two overlay exactly.

Importing this module is cheap: it never imports torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_emsr.plugin.layers import LayerData, volume_to_layer_data

SAMPLE_FACTOR = 4


def _layer(volume: Any, name: str) -> LayerData:
    # NOTE: the crop is small (a few MB); a numpy array keeps slicing instant.
    data, kwargs, kind = volume_to_layer_data(volume, name=name)
    return np.asarray(data), kwargs, kind


def make_sample_anisotropic() -> list[LayerData]:
    """The anisotropic medulla stack: every 4th slice of the crop, scale (40, 10, 10) nm.

    Returns
    -------
    list of tuple
        One image layer data tuple.
    """
    from napari_emsr.sample import load_sample

    aniso, _ = load_sample(factor=SAMPLE_FACTOR)
    return [_layer(aniso, "medulla anisotropic")]


def make_sample_ground_truth() -> list[LayerData]:
    """The isotropic medulla crop the anisotropic stack was made from, scale (10, 10, 10) nm.

    Returns
    -------
    list of tuple
        One image layer data tuple.
    """
    from napari_emsr.sample import load_sample

    _, truth = load_sample(factor=SAMPLE_FACTOR)
    return [_layer(truth, "medulla ground truth")]
