"""Where a high-resolution field lies inside a larger low-resolution field (paired LR/HR training).

A lab images a small field at high resolution (HR) and a large field at low resolution (LR), or the same
area at two magnifications. Before the two can be used as training pairs, the HR field is found in the LR
image: the HR image is down-sampled to the LR pixel size (anti-aliased bicubic, by exactly the factor),
located by normalised cross-correlation (``skimage.feature.match_template``) and refined to a fraction of an
LR pixel by phase correlation (``skimage.registration.phase_cross_correlation``). The residual is the RMS
difference of the two standardised images once aligned (0: identical up to brightness and contrast;
sqrt(2): unrelated); a residual above :data:`MAX_RESIDUAL` means the registration failed.

Geometry (LR pixel units, pixel edges): the HR field's top-left corner lies at ``offset`` in the LR image, so
the centre of HR pixel ``j`` lies at LR coordinate ``offset + (j + 0.5) / factor - 0.5``
(:func:`hr_positions`). Importing this module does not import torch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ...errors import InputError

#: Registrations with a larger residual (RMS difference of the standardised images) are refused.
MAX_RESIDUAL = 0.6
#: Gaussian smoothing (LR px) of both images before the residual is measured.
SMOOTH = 1.0
#: A field within this many LR pixels of the other's size (per axis) is taken as the same field.
SAME_FIELD_PX = 1.0


@dataclass(frozen=True)
class Registration:
    """Where the HR field lies in the LR image.

    Attributes
    ----------
    offset : (float, float)
        LR coordinates (y, x) of the HR field's top-left corner (pixel edges).
    factor : float
        HR pixels per LR pixel (lateral).
    size : (int, int)
        The HR field's size in LR pixels (y, x), rounded.
    residual : float
        RMS difference of the standardised LR crop and down-sampled HR once aligned.
    searched : bool
        Whether the HR field was searched for in a larger LR field (False: the same field, refined only).
    """

    offset: tuple[float, float]
    factor: float
    size: tuple[int, int]
    residual: float
    searched: bool

    @property
    def note(self) -> str:
        """One line for the user."""
        where = (f"found at LR (y, x) = ({self.offset[0]:.2f}, {self.offset[1]:.2f})" if self.searched
                 else f"same field, shift ({self.offset[0]:+.2f}, {self.offset[1]:+.2f}) LR px")
        return (f"HR field ({self.size[0]} x {self.size[1]} LR px at factor {self.factor:g}) {where}; "
                f"residual {self.residual:.3f} (standardised RMS; refused above {MAX_RESIDUAL:g})")

    def as_dict(self) -> dict:
        """JSON-able."""
        return {"offset": [round(float(v), 4) for v in self.offset], "factor": float(self.factor),
                "size": [int(v) for v in self.size], "residual": round(float(self.residual), 4),
                "searched": bool(self.searched)}


def hr_positions(n_hr: int, factor: float, offset: float = 0.0) -> np.ndarray:
    """LR coordinates (pixel centres) of the centres of ``n_hr`` HR pixels whose field starts at ``offset``."""
    return offset + (np.arange(n_hr, dtype=np.float64) + 0.5) / float(factor) - 0.5


def _keys(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """The bicubic (Keys) kernel."""
    t = np.abs(t)
    return np.where(t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1,
                    np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0))


@functools.lru_cache(maxsize=64)
def bicubic_down_matrix(n: int, factor: float) -> np.ndarray:
    """(floor(n / factor), n) matrix of anti-aliased bicubic down-sampling (the kernel widened by the factor, as
    image resizing does); LR pixel ``i``'s centre lies at HR coordinate ``(i + 0.5) * factor - 0.5``."""
    m = max(1, int(n // factor))
    out = np.zeros((m, n), np.float64)
    scale = max(1.0, float(factor))
    for i in range(m):
        u = (i + 0.5) * factor - 0.5
        js = np.arange(math.floor(u - 2 * scale) - 1, math.ceil(u + 2 * scale) + 2)
        w = _keys((u - js) / scale)
        idx = np.abs(js)  # mirror at 0 ...
        idx = np.where(idx > n - 1, 2 * (n - 1) - idx, idx).clip(0, n - 1)  # ... and at n - 1
        np.add.at(out[i], idx, w)
        out[i] /= out[i].sum()
    return out.astype(np.float32)


def downsample(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` (y, x) down-sampled by exactly ``factor`` (anti-aliased bicubic, :func:`bicubic_down_matrix`;
    ``floor(n / factor)`` pixels per axis), float32."""
    image = np.asarray(image, np.float32)
    dy = bicubic_down_matrix(image.shape[0], float(factor))
    dx = bicubic_down_matrix(image.shape[1], float(factor))
    return (dy @ image @ dx.T).astype(np.float32)


def _standardise(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    sd = a.std()
    return (a - a.mean()) / (sd if sd > 0 else 1.0)


def _sample(lr: np.ndarray, offset: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """The LR image at the pixel centres of a ``shape`` field whose corner is at ``offset`` (linear)."""
    from scipy import ndimage

    yy = offset[0] + np.arange(shape[0])
    xx = offset[1] + np.arange(shape[1])
    grid = np.meshgrid(yy, xx, indexing="ij")
    return ndimage.map_coordinates(np.asarray(lr, np.float32), grid, order=3, mode="nearest")


def residual(lr: np.ndarray, small_hr: np.ndarray, offset: tuple[float, float]) -> float:
    """RMS difference of the standardised LR (sampled at ``offset``) and down-sampled HR planes, (n, h, w) or
    (h, w), averaged over the planes."""
    lr, small_hr = np.atleast_3d(lr.T).T, np.atleast_3d(small_hr.T).T
    rs = [np.sqrt(np.mean((_standardise(_sample(a, offset, b.shape)) - _standardise(b)) ** 2))
          for a, b in zip(lr, small_hr)]
    return float(np.mean(rs))


def _smooth(a: np.ndarray, sigma: float = SMOOTH) -> np.ndarray:
    """Planes (n, y, x) smoothed laterally: interpolating noisy pixels at fractional offsets averages their noise,
    which would pull the best match towards half-pixel shifts; smoothing both images first makes that negligible."""
    from scipy import ndimage

    return ndimage.gaussian_filter(a, (0, sigma, sigma), mode="nearest")


def register(lr: np.ndarray, hr: np.ndarray, factor: float, *, max_residual: float = MAX_RESIDUAL) -> Registration:
    """Locate the HR image ``hr`` inside the LR image ``lr`` of ``factor`` times coarser pixels.

    ``lr`` and ``hr`` are planes (y, x) or the same planes of two stacks (n, y, x): one offset for all, found on
    all of them (noise averages out). Two images of the same field (sizes within :data:`SAME_FIELD_PX` LR px)
    are only refined, and a shift is kept only when it lowers the residual by more than 5 % (noise alone moves
    the best match by a few tenths of an LR pixel).

    Raises
    ------
    InputError
        When the HR field at this factor is larger than the LR field (or the factor does not fit the sizes), or
        when the registration fails (the residual is given).
    """
    from skimage.feature import match_template
    from skimage.registration import phase_cross_correlation

    lr = np.asarray(lr, np.float32)
    hr = np.asarray(hr, np.float32)
    if lr.ndim != hr.ndim or lr.ndim not in (2, 3) or (lr.ndim == 3 and len(lr) != len(hr)):
        raise InputError(f"registration takes two planes or two stacks of as many planes, got {lr.shape} and "
                         f"{hr.shape}")
    if lr.ndim == 2:
        lr, hr = lr[None], hr[None]
    if not (np.isfinite(lr).all() and np.isfinite(hr).all()):
        raise InputError("the LR or HR image holds NaN or infinite values; replace them before training")
    small = np.stack([downsample(h, factor) for h in hr])
    field = tuple(s / factor for s in hr.shape[1:])
    shape = lr.shape[1:]
    if any(f > n + SAME_FIELD_PX for f, n in zip(field, shape)):
        raise InputError(
            f"the HR image ({hr.shape[1]} x {hr.shape[2]} px) at factor {factor:g} covers "
            f"{field[0]:.1f} x {field[1]:.1f} LR px, more than the LR image ({shape[0]} x {shape[1]} px): "
            "the HR field must lie inside the LR field. Check the factor (--factor, or the voxel sizes) and that "
            "--lr and --hr are not swapped"
        )
    sh, sw = small.shape[1:]
    if min(sh, sw) < 8:
        raise InputError(
            f"the HR image is {sh} x {sw} px at the LR pixel size: too small to register (at least 8 x 8 LR px); "
            "give a larger HR field"
        )
    same = all(abs(f - n) <= SAME_FIELD_PX for f, n in zip(field, shape))
    if same:
        y0, x0 = 0, 0
    else:
        ncc = sum(match_template(a, b) for a, b in zip(lr, small))
        y0, x0 = (int(c) for c in np.unravel_index(int(np.argmax(ncc)), ncc.shape))
    lr, small = _smooth(lr), _smooth(small)
    start = (float(y0), float(x0))
    offset, res = start, residual(lr, small, start)
    crop = lr[0, y0 : y0 + sh, x0 : x0 + sw]
    h, w = min(crop.shape[0], sh), min(crop.shape[1], sw)
    if h >= 8 and w >= 8:
        try:
            shift, _, _ = phase_cross_correlation(_standardise(crop[:h, :w]), _standardise(small[0, :h, :w]),
                                                  upsample_factor=20, normalization=None)
            # NOTE: a refinement beyond one LR pixel means the phase correlation locked on something else
            if np.all(np.abs(shift) <= 1.0):
                cand = (y0 + float(shift[0]), x0 + float(shift[1]))
                r = residual(lr, small, cand)
                if r < res:
                    offset, res = cand, r
        except ValueError:
            pass
    # a local search of the residual itself, to 1/8 LR px
    steps = np.arange(-4, 5) / 8.0
    centre = offset
    for dy in steps:
        for dx in steps:
            cand = (centre[0] + dy, centre[1] + dx)
            r = residual(lr, small, cand)
            if r < res - 1e-6:
                offset, res = cand, r
    if same:
        res0 = residual(lr, small, start)
        if res > 0.95 * res0:
            offset, res = start, res0
    reg = Registration(offset, float(factor), (int(round(field[0])), int(round(field[1]))), res, not same)
    if not math.isfinite(res) or res > max_residual:
        raise InputError(
            f"the HR image could not be registered in the LR image: residual {res:.3f} (standardised RMS "
            f"difference at the best match, LR (y, x) = ({offset[0]:.1f}, {offset[1]:.1f}); at most "
            f"{max_residual:g} is accepted, sqrt(2) = unrelated). Check that both show the same region and the "
            f"factor {factor:g} (--factor or the voxel sizes; a few % off already raises the residual), or crop "
            "the LR image around the HR field"
        )
    return reg
