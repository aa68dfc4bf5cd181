"""Geometry of an anisotropic stack and its isotropic output: the one owner of F, the axis and the output grid.

Conventions (DESIGN.md, contract): arrays are (z, y, x) with the anisotropic axis 0 unless the user says
otherwise; F = spacing along the anisotropic axis / lateral spacing, need not be an integer; output slice 0
coincides with input slice 0, input slice ``i`` lies at output position ``i * F``, the output reaches at least
the last input slice and its spacing equals the lateral spacing on every axis.

Every other module asks this one: the reader and the panel (F from a voxel size), the trainer and the
reconstruction (axis to the front and back, output length and positions), the export (output spacing).
numpy only: importing this module imports neither torch nor dask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InputError

#: The largest anisotropy factor accepted (a larger one almost always means mixed-up units).
MAX_FACTOR = 64.0


def check_axis(axis: Any) -> int:
    """The anisotropic axis as 0, 1 or 2; anything else raises InputError."""
    try:
        a = int(axis)
    except (TypeError, ValueError):
        raise InputError(f"axis must be 0, 1 or 2 (the anisotropic axis of a (z, y, x) stack), got {axis!r}") from None
    if a not in (0, 1, 2) or a != axis:
        raise InputError(f"axis must be 0, 1 or 2 (the anisotropic axis of a (z, y, x) stack), got {axis!r}")
    return a


def check_factor(factor: Any) -> float:
    """Validate an anisotropy factor and return it as a float (InputError with what to do otherwise)."""
    try:
        f = float(factor)
    except (TypeError, ValueError):
        raise InputError(f"the anisotropy factor must be a number, got {factor!r}") from None
    if not math.isfinite(f):
        raise InputError(
            f"the anisotropy factor F = {factor} is not a finite number: F is the z spacing divided by the lateral "
            "spacing (e.g. 40 nm / 10 nm = 4); check the voxel size or pass --factor"
        )
    if f < 1.0:
        raise InputError(
            f"the anisotropy factor F = {factor} is below 1: F is the z spacing divided by the lateral spacing "
            "(e.g. 40 nm / 10 nm = 4); check the voxel size or pass --factor"
        )
    if f > MAX_FACTOR:
        raise InputError(
            f"the anisotropy factor F = {f:g} is absurdly large (at most {MAX_FACTOR:g} is supported); check the "
            "voxel size units (z and xy must be in the same unit) or pass --factor"
        )
    return f


def lateral_axes(axis: int = 0) -> tuple[int, int]:
    """The two lateral axes of a 3D array whose anisotropic axis is ``axis``, in their order."""
    axis = check_axis(axis)
    return tuple(a for a in range(3) if a != axis)  # type: ignore[return-value]


def factor_from_spacing(spacing: Sequence[float] | None, axis: int = 0) -> float | None:
    """F = spacing along ``axis`` / lateral spacing (the last lateral axis, x for axis 0); None without spacing."""
    if spacing is None:
        return None
    lat = lateral_axes(axis)
    return float(spacing[axis]) / float(spacing[lat[-1]])


def resolve_factor(factor: float | None, spacing: Sequence[float] | None, axis: int = 0) -> float:
    """The factor to use: ``factor`` when given, else the voxel size's; checked. InputError when neither exists."""
    f = factor if factor is not None else factor_from_spacing(spacing, axis)
    if f is None:
        raise InputError(
            "the volume has no voxel size, so the anisotropy factor is unknown: pass --factor F "
            "(z spacing / lateral spacing, e.g. 40 nm / 10 nm -> 4)"
        )
    coarse = coarse_axis(spacing)
    if factor is None and f < 1.0 and coarse is not None and coarse != axis:
        # NOTE: the voxel size says which axis is the coarse one: that is the fix, not a --factor
        raise InputError(
            f"along axis {axis} the voxel size gives F = {f:g}, below 1; the coarse axis of this volume is axis "
            f"{coarse} ({spacing_text(spacing)}): pass --axis {coarse}"
        )
    return check_factor(f)


def spacing_text(spacing: Sequence[float]) -> str:
    """``"voxel size 40, 10, 10, axes in the file's order"``: what the messages about the coarse axis show."""
    return f"voxel size {', '.join(f'{float(s):g}' for s in spacing)}, axes in the file's order"


def coarse_axis(spacing: Sequence[float] | None) -> int | None:
    """The one axis whose voxel size is clearly (5 %) the largest, or None."""
    if spacing is None or len(spacing) != 3:
        return None
    s = [float(v) for v in spacing]
    top = max(range(3), key=lambda a: s[a])
    rest = max(s[a] for a in range(3) if a != top)
    return top if s[top] > 1.05 * rest else None


def front_order(axis: int = 0) -> tuple[int, int, int]:
    """The transpose that moves the anisotropic ``axis`` to the front, keeping the lateral axes in order."""
    return (check_axis(axis),) + lateral_axes(axis)


def to_front(array: Any, axis: int = 0) -> Any:
    """``array`` (numpy or dask) with the anisotropic axis first: (anisotropic, lateral 1, lateral 2)."""
    return array if axis == 0 else array.transpose(front_order(axis))


def from_front(array: Any, axis: int = 0) -> Any:
    """Undo :func:`to_front`: put the first axis back at ``axis``."""
    return array if axis == 0 else array.transpose(tuple(int(i) for i in np.argsort(front_order(axis))))


def output_length(n: int, factor: float) -> int:
    """Number of output slices for ``n`` input slices: ``ceil((n - 1) * F) + 1`` (reaches the last input slice)."""
    return int(math.ceil((n - 1) * factor - 1e-9)) + 1


def output_positions(n: int, factor: float) -> np.ndarray:
    """Positions of the output slices in input-slice units (output ``k`` sits at input ``k / F``)."""
    return np.arange(output_length(n, factor), dtype=np.float64) / factor


def output_shape(shape: Sequence[int], factor: float, axis: int = 0) -> tuple[int, int, int]:
    """Shape of the isotropic output of a stack of ``shape`` (the anisotropic axis stretched by F)."""
    out = [int(s) for s in shape]
    out[axis] = output_length(out[axis], factor)
    return tuple(out)  # type: ignore[return-value]


def output_spacing(spacing: Sequence[float] | None, axis: int = 0) -> tuple[float, float, float] | None:
    """Voxel size of the isotropic output: the lateral spacing (of the last lateral axis) on every axis."""
    if spacing is None:
        return None
    s = float(spacing[lateral_axes(axis)[-1]])
    lat = [float(v) for v in spacing]
    lat[axis] = s
    return tuple(lat)  # type: ignore[return-value]


def training_phases(factor: float, n: int) -> np.ndarray:
    """Where the first kept section falls in a training patch, for ``n`` patch offsets: ``(-o) mod F``.

    At reconstruction, input slice ``i`` sits at output row ``i * F``; a patch cut from that output grid at
    integer offset ``o`` sees its first section at ``(-o) mod F``. Training with exactly these phases keeps
    the kept rows where they fall in real data: for an integer F they are whole rows (a point-sampled
    section is an exact row, as at reconstruction), never a blend of two rows.
    """
    if factor <= 1.0:
        return np.zeros(n)
    return np.mod(-np.arange(n, dtype=np.float64), factor)


def phase_bins(n: int, factor: float, phase: float = 0.0) -> np.ndarray:
    """The phase bin (0 .. ceil(F) - 1) of each of ``n`` output planes: where a plane lies between sections,
    ``(z - phase) mod F`` in ``ceil(F)`` equal bins; sections lie at z = phase + i * F (bin 0)."""
    bins = math.ceil(factor)
    z = np.arange(n, dtype=np.float64)
    return np.minimum((np.mod(z - phase, factor) / factor * bins).astype(int), bins - 1)
