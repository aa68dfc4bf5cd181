"""Axial degradation and interpolation along one axis: the geometry every method shares.

Geometry (DESIGN.md, contract): input slice ``i`` lies at output position ``i * F``; output slice 0 coincides
with input slice 0; the output has ``output_length(n, F)`` slices and reaches at least the last input slice.

The same interpolation (:func:`interpolate_axis`) makes the network's input at training time (from a lateral
patch degraded along one axis) and at reconstruction time (from the real axial planes), so the network sees at
inference exactly the kind of input it was trained on. Numpy only: this module does not import torch.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .errors import InputError

PROFILES = ("point", "slab", "gaussian")
NOISES = ("none", "gaussian", "poisson-gaussian")
ORDERS = {"linear": 1, "cubic": 3}

PROFILE_DESCRIPTIONS = {
    "point": "each section is a thin sample of the tissue (every F-th plane)",
    "slab": "each section integrates the tissue over its thickness F (serial sections, block-face)",
    "gaussian": "each section is a Gaussian-weighted average, FWHM = F (a soft slab)",
    "mixed": "training only: each pair draws point, gaussian or slab at random (robust when the profile is unknown)",
}


def check_factor(factor: float) -> float:
    """Validate an anisotropy factor and return it as a float."""
    try:
        f = float(factor)
    except (TypeError, ValueError):
        raise InputError(f"the anisotropy factor must be a number, got {factor!r}") from None
    if not math.isfinite(f) or f < 1.0:
        raise InputError(
            f"the anisotropy factor F = {factor} is below 1: F is the z spacing divided by the lateral spacing "
            "(e.g. 40 nm / 10 nm = 4); check the voxel size or pass --factor"
        )
    if f > 64:
        raise InputError(
            f"the anisotropy factor F = {f:g} is absurdly large (at most 64 is supported); check the voxel size "
            "units (z and xy must be in the same unit) or pass --factor"
        )
    return f


def output_length(n: int, factor: float) -> int:
    """Number of output slices for ``n`` input slices at factor ``factor``.

    The output reaches at least the last input slice: ``ceil((n - 1) * F) + 1``.
    """
    return int(math.ceil((n - 1) * factor - 1e-9)) + 1


def output_positions(n: int, factor: float) -> np.ndarray:
    """Positions of the output slices in input-slice units (output k sits at input ``k / F``)."""
    return np.arange(output_length(n, factor), dtype=np.float64) / factor


def _mirror(idx: np.ndarray, n: int) -> np.ndarray:
    """Fold indices into [0, n) by whole-sample symmetric mirroring (scipy's ``mirror`` mode)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def _bspline3(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    out = np.zeros_like(t)
    m1 = t < 1
    m2 = (t >= 1) & (t < 2)
    out[m1] = 2.0 / 3.0 - t[m1] ** 2 + 0.5 * t[m1] ** 3
    out[m2] = (2.0 - t[m2]) ** 3 / 6.0
    return out


def _taps(positions: np.ndarray, n: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (mirrored into [0, n)) and weights of the B-spline of ``order`` at ``positions``."""
    positions = np.asarray(positions, dtype=np.float64)
    if order == 1:
        base = np.floor(positions)
        offs = np.arange(0, 2)
        idx = base[:, None] + offs[None, :]
        w = 1.0 - np.abs(positions[:, None] - idx)
    elif order == 3:
        base = np.floor(positions) - 1
        offs = np.arange(0, 4)
        idx = base[:, None] + offs[None, :]
        w = _bspline3(positions[:, None] - idx)
    else:
        raise ValueError(f"order must be 1 or 3, got {order}")
    return _mirror(idx.astype(np.int64), n), w


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


def interpolate_axis(data: np.ndarray, positions: np.ndarray, order: int = 3, axis: int = 0) -> np.ndarray:
    """Interpolate ``data`` along ``axis`` at fractional ``positions`` (in sample units).

    B-spline interpolation with mirror boundaries, identical to ``scipy.ndimage.map_coordinates`` with
    ``mode="mirror"`` along that axis, but separable and cheap: a prefilter along the axis, then a few taps
    per output sample. Returns float32.
    """
    a = np.moveaxis(np.asarray(data, dtype=np.float32), axis, 0)
    n = a.shape[0]
    if order == 3 and n > 1:
        a = ndimage.spline_filter1d(a, order=3, axis=0, mode="mirror", output=np.float32)
    idx, w = _taps(positions, n, order)
    w = w.astype(np.float32)
    out = np.zeros((len(positions),) + a.shape[1:], dtype=np.float32)
    shape = (len(positions),) + (1,) * (a.ndim - 1)
    for k in range(idx.shape[1]):
        out += w[:, k].reshape(shape) * a[idx[:, k]]
    return np.moveaxis(out, 0, axis)


def interpolation_matrix(n: int, positions: np.ndarray, order: int = 3) -> np.ndarray:
    """The (len(positions), n) matrix M with ``interpolate_axis(x, positions) == M @ x`` (float32)."""
    return interpolate_axis(np.eye(n, dtype=np.float32), positions, order=order, axis=0)


def profile_kernel(profile: str, factor: float) -> np.ndarray | None:
    """1D section profile (normalised kernel, odd length, centred) for a factor; None for a point profile."""
    if profile == "point" or factor <= 1.0:
        return None
    if profile == "slab":
        # A box of width F centred on the kept sample; fractional ends get partial weight.
        half = factor / 2.0
        r = int(math.ceil(half - 0.5 + 1e-9))
        x = np.arange(-r, r + 1, dtype=np.float64)
        w = np.clip(np.minimum(x + 0.5, half) - np.maximum(x - 0.5, -half), 0.0, None)
    elif profile == "gaussian":
        sigma = factor / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        r = max(1, int(math.ceil(3 * sigma)))
        x = np.arange(-r, r + 1, dtype=np.float64)
        w = np.exp(-0.5 * (x / sigma) ** 2)
    else:
        raise InputError(f"unknown section profile {profile!r}: choose one of {', '.join(PROFILES)}")
    return (w / w.sum()).astype(np.float32)


def section_blur(data: np.ndarray, profile: str, factor: float, axis: int = 0) -> np.ndarray:
    """Blur ``data`` along ``axis`` with the section profile (what a physical section integrates)."""
    k = profile_kernel(profile, factor)
    data = np.asarray(data, dtype=np.float32)
    if k is None:
        return data
    return ndimage.convolve1d(data, k, axis=axis, mode="mirror")


def add_noise(lr: np.ndarray, noise: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """Add acquisition noise to normalised samples: ``gaussian`` (sigma = level) or ``poisson-gaussian``."""
    if noise in (None, "none") or level <= 0:
        return lr
    if noise == "gaussian":
        return lr + rng.normal(0.0, level, lr.shape).astype(np.float32)
    if noise == "poisson-gaussian":
        # Signal-dependent part: variance proportional to the (shifted, non-negative) intensity.
        sig = np.sqrt(np.clip(lr + 0.5, 0.0, None) * level * 0.5)
        return lr + (rng.normal(0.0, 1.0, lr.shape) * (sig + level * 0.5)).astype(np.float32)
    raise InputError(f"unknown noise model {noise!r}: choose one of {', '.join(NOISES)}")


def degrade_axis(
    hr: np.ndarray,
    factor: float,
    profile: str = "slab",
    *,
    phase: float = 0.0,
    order: int = 3,
    axis: int = 0,
    noise: str = "none",
    noise_level: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Simulate an axial acquisition along ``axis`` of a well-sampled array, then interpolate it back.

    The section profile blurs ``hr``; samples are taken at ``phase + i * factor`` (linear sampling between
    rows for a fractional position); optional noise is added; the samples are interpolated back onto every
    row with :func:`interpolate_axis` (``order``), exactly as a real stack is at reconstruction time.

    Returns an array of the shape of ``hr`` (float32): the network's input for the target ``hr``.
    """
    hr = np.moveaxis(np.asarray(hr, dtype=np.float32), axis, 0)
    n = hr.shape[0]
    blurred = section_blur(hr, profile, factor, axis=0)
    count = int(math.floor((n - 1 - phase) / factor + 1e-9)) + 1
    pos = phase + np.arange(count) * factor
    lr = interpolate_axis(blurred, pos, order=1, axis=0) if count > 0 else blurred[:0]
    if rng is None:
        rng = np.random.default_rng(0)
    lr = add_noise(lr, noise, noise_level, rng)
    back = interpolate_axis(lr, (np.arange(n) - phase) / factor, order=order, axis=0)
    return np.moveaxis(back, 0, axis)


def make_anisotropic(volume: np.ndarray, factor: int, profile: str = "point") -> np.ndarray:
    """Make an anisotropic stack from an isotropic volume: slice ``i`` sits at input z = ``i * factor``.

    For scoring: the kernel is centred on the kept slice (``../shared/data/README.md``). ``factor`` must be an
    integer here. Output dtype is the input's (rounded).
    """
    if int(factor) != factor or factor < 1:
        raise InputError(f"make_anisotropic needs an integer factor >= 1, got {factor}")
    factor = int(factor)
    v = np.asarray(volume)
    blurred = section_blur(v, profile, factor, axis=0)
    out = blurred[::factor]
    if np.issubdtype(v.dtype, np.integer):
        info = np.iinfo(v.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(v.dtype)

