"""Shared test setup: markers that skip by themselves and tiny data. Core tests never import Qt or napari."""

from __future__ import annotations

import os

import numpy as np
import pytest


def pytest_collection_modifyitems(config, items):
    slow = os.environ.get("EMSR_SLOW") == "1"
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    for item in items:
        if "slow" in item.keywords and not slow:
            item.add_marker(pytest.mark.skip(reason="slow: set EMSR_SLOW=1 to run"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture
def tiny_stack():
    """A small anisotropic stack (F = 4) made from the bundled medulla crop: (9, 48, 48) uint8, spacing 40/10/10."""
    from napari_emsr.degrade import make_anisotropic
    from napari_emsr.io import as_volume
    from napari_emsr.sample import _ground_truth

    gt = _ground_truth()[:33, :48, :48]
    a = make_anisotropic(gt, 4, "slab")
    return as_volume(a, spacing=(40.0, 10.0, 10.0)), gt


@pytest.fixture
def rng():
    return np.random.default_rng(0)
