"""Axial degradation: how a section profile, sampling every F planes and noise turn tissue into a stack.

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
from .interpolation import interpolate_axis

PROFILES = ("point", "slab", "gaussian")
NOISES = ("none", "gaussian", "poisson-gaussian")

PROFILE_DESCRIPTIONS = {
    "point": "each section is a thin sample of the tissue (every F-th plane)",
    "slab": "each section integrates the tissue over its thickness F (serial sections, block-face)",
    "gaussian": "each section is a Gaussian-weighted average, FWHM = F (a soft slab)",
    "auto": "estimated from the stack: its z spectrum is compared with lateral lines degraded each way",
    "mixed": "training only: each pair draws point, gaussian or slab at random (robust when the profile is unknown)",
}

#: The Gaussian profile's standard deviation in units of its FWHM (the named ``"gaussian"`` profile has FWHM = F,
#: so this is its softness in units of F): ``1 / (2 sqrt(2 ln 2))``, about 0.4247.
GAUSSIAN_SOFTNESS = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _soft_slab(u: np.ndarray, t: float, s: float) -> np.ndarray:
    """The continuous profile (not normalised) at positions ``u``: a slab of width ``t`` convolved with a Gaussian
    of standard deviation ``s > 0`` (a Gaussian when ``t`` is 0), all in the same units."""
    if t < 1e-3:
        return np.exp(-0.5 * (u / s) ** 2)
    from scipy.special import erf

    return erf((u + t / 2.0) / (s * math.sqrt(2.0))) - erf((u - t / 2.0) / (s * math.sqrt(2.0)))


def section_kernel(thickness: float, softness: float, factor: float) -> np.ndarray | None:
    """A section profile of the continuous family: a slab of ``thickness * F`` with Gaussian edges of standard
    deviation ``softness * F`` (both in units of the section spacing F), integrated over each lateral pixel.

    ``(0, 0)`` is point sampling (None), ``(1, 0)`` the slab profile, ``(0, GAUSSIAN_SOFTNESS)`` (0.4247) about
    the Gaussian one (FWHM = F); everything between (a thin slab, a slab with soft edges, a wide Gaussian) is one
    more point of the same two-parameter family, which :func:`fit_profile` fits to the stack.
    """
    t, s = float(thickness) * factor, float(softness) * factor
    if not (math.isfinite(t) and math.isfinite(s)) or t < 0 or s < 0:
        raise InputError(f"a section thickness and softness must be non-negative numbers, got {thickness}, {softness}")
    if factor <= 1.0 or (t < 0.05 and s < 0.05):
        return None
    r = max(1, int(math.ceil(t / 2.0 + 3.0 * s - 0.5)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    if s < 1e-3:  # a sharp slab: each pixel's exact overlap with it
        w = np.clip(np.minimum(x + 0.5, t / 2.0) - np.maximum(x - 0.5, -t / 2.0), 0.0, None)
    else:  # the continuous profile averaged over each pixel (midpoints of 32 sub-pixels: symmetric)
        sub = 32
        u = x[:, None] - 0.5 + (np.arange(sub) + 0.5)[None, :] / sub
        w = _soft_slab(u, t, s).mean(axis=1)
    if w.sum() <= 0:
        return None
    return (w / w.sum()).astype(np.float32)


def profile_kernel(profile, factor: float) -> np.ndarray | None:
    """1D section profile (normalised kernel, odd length, centred) for a factor; None for a point profile.

    ``profile`` is a name of :data:`PROFILES` or a ``(thickness, softness)`` pair of :func:`section_kernel`.
    """
    if isinstance(profile, (tuple, list)):
        return section_kernel(profile[0], profile[1], factor)
    if profile == "point" or factor <= 1.0:
        return None
    if profile == "slab":
        # A box of width F centred on the kept sample; fractional ends get partial weight.
        half = factor / 2.0
        r = int(math.ceil(half - 0.5 + 1e-9))
        x = np.arange(-r, r + 1, dtype=np.float64)
        w = np.clip(np.minimum(x + 0.5, half) - np.maximum(x - 0.5, -half), 0.0, None)
    elif profile == "gaussian":
        sigma = factor * GAUSSIAN_SOFTNESS
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
