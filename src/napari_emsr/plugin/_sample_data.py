"""napari sample data: the bundled medulla FIB-SEM crop, anisotropic and as isotropic ground truth.

The crop (129 x 192 x 192 voxels, 10 nm isotropic; CC-BY Janelia FlyEM) ships with the package; the
anisotropic stack is made from it by :func:`napari_emsr.sample.load_sample` (every F-th slice, z 40 nm), and an
LR / HR pair for the paired method by :func:`make_sample_pair`.
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


#: The sample pair: planes kept (every 8th of the crop, 80 nm apart), the HR crop (rows, columns at 10 nm) and the
#: noise of each acquisition (grey levels).
PAIR_PLANES, PAIR_CROP, PAIR_NOISE = slice(0, 128, 8), (slice(40, 140), slice(60, 160)), 6.0


def make_sample_pair() -> list[LayerData]:
    """An LR / HR pair of the medulla crop for the paired method: an LR stack of the whole field at 20 nm and an
    HR crop at 10 nm, each with its own noise (two acquisitions), 16 planes 80 nm apart, uint8.

    The LR is the crop down-sampled by 2 (anti-aliased bicubic,
    :func:`napari_emsr.methods.paired.registration.downsample`); the
    HR field (100 x 100 px) lies at LR (20, 30) px. The pixel sizes (``scale``) give the factor s = 2.

    Returns
    -------
    list of tuple
        Two image layer data tuples: LR, then HR.
    """
    from napari_emsr.methods.paired.registration import downsample
    from napari_emsr.sample import SPACING_NM, _ground_truth

    rng = np.random.default_rng(0)
    planes = np.asarray(_ground_truth()[PAIR_PLANES], np.float32)
    lr = np.stack([downsample(p, 2.0) for p in planes])
    hr = planes[(slice(None), *PAIR_CROP)]

    def acquired(a: np.ndarray) -> np.ndarray:
        return np.clip(a + rng.normal(0.0, PAIR_NOISE, a.shape), 0, 255).round().astype(np.uint8)

    dz = SPACING_NM * (PAIR_PLANES.step or 1)
    meta = {"unit": "nm", "source": "sample: medulla crop, LR / HR pair"}
    common = {"colormap": "gray", "units": ("nm",) * 3, "axis_labels": ("z", "y", "x")}
    return [
        (acquired(lr), {"name": "medulla LR (20 nm)", "scale": (dz, 2 * SPACING_NM, 2 * SPACING_NM),
                        "metadata": {**meta, "spacing": (dz, 2 * SPACING_NM, 2 * SPACING_NM)}, **common}, "image"),
        (acquired(hr), {"name": "medulla HR crop (10 nm)", "scale": (dz, SPACING_NM, SPACING_NM),
                        "metadata": {**meta, "spacing": (dz, SPACING_NM, SPACING_NM)}, **common}, "image"),
    ]
