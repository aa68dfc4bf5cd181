"""The learned degradation's loader where :mod:`napari_emsr.sections` imports it from; the learned degradation lives
in :mod:`napari_emsr.methods.isotropic.degradation`."""

from __future__ import annotations

from .isotropic.degradation import load_degradation

__all__ = ["load_degradation"]
