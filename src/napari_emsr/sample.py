"""Bundled sample data: a crop of the CC-BY Janelia FlyEM medulla FIB-SEM volume (10 nm isotropic).

The anisotropic stack is made from the ground truth at run time (slice i sits at ground-truth z = i * F), so a
reconstruction of it can be scored on the ground-truth grid. Does not import torch.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
GT_FILE = DATA / "medulla_gt_129x192x192.tif"
ATTRIBUTION = "Janelia FlyEM neuroproof_examples medulla FIB-SEM (CC-BY 4.0, Janelia Research Campus / HHMI)"
SPACING_NM = 10.0


@lru_cache(maxsize=1)
def _ground_truth() -> np.ndarray:
    import tifffile

    return tifffile.imread(GT_FILE)


def load_sample(factor: int = 4, profile: str = "point"):
    """The anisotropic sample and its ground truth, as (aniso Volume, ground-truth Volume).

    Parameters
    ----------
    factor : int
        Keep every ``factor``-th slice (z spacing ``factor * 10`` nm).
    profile : str
        Section profile of the simulated acquisition (``point``, ``slab``, ``gaussian``).
    """
    from .degrade import make_anisotropic
    from .io import as_volume

    gt = _ground_truth()
    n = (gt.shape[0] - 1) // factor + 1
    gt = gt[: (n - 1) * factor + 1]
    aniso = make_anisotropic(gt, factor, profile)
    a = as_volume(aniso, spacing=(SPACING_NM * factor, SPACING_NM, SPACING_NM), unit="nm")
    g = as_volume(gt, spacing=(SPACING_NM, SPACING_NM, SPACING_NM), unit="nm")
    a.source = f"sample: medulla crop, F = {factor}, {profile} sections"
    g.source = "sample: medulla crop, ground truth"
    return a, g
