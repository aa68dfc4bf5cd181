"""Interpolation along the anisotropic axis, no training: the baseline every figure is compared with."""

from __future__ import annotations

from . import Method

CUBIC = Method(
    name="cubic",
    description="cubic B-spline interpolation along z (no training): the baseline every figure is compared with",
    order=3,
)

LINEAR = Method(
    name="linear",
    description="linear interpolation along z (no training)",
    order=1,
)
