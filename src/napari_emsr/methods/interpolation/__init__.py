"""Interpolation along the anisotropic axis, no training: the baseline every figure is compared with.

Applied through the same lazy pipeline as an isotropic model (:mod:`napari_emsr.methods.isotropic.apply`), with
the method's name in place of a model.
"""

from __future__ import annotations

from .. import Method, register_method
from ..isotropic.apply import AXIAL

CUBIC = Method(
    name="cubic",
    description="cubic B-spline interpolation along z (no training): the baseline every figure is compared with",
    order=3,
    application=AXIAL,
)

LINEAR = Method(
    name="linear",
    description="linear interpolation along z (no training)",
    order=1,
    application=AXIAL,
)

register_method(CUBIC, replace=True)
register_method(LINEAR, replace=True)
