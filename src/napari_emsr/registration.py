"""Where a high-resolution field lies inside a larger low-resolution field (paired LR/HR training).

A lab images a small field at high resolution (HR) and a large field at low resolution (LR), or the same
area at two magnifications. Before the two can be used as training pairs, the HR field is found in the LR
image: the HR image is down-sampled to the LR pixel size (scikit-image ``resize`` with anti-aliasing),
located by normalised cross-correlation (``skimage.feature.match_template``) and refined to a fraction of an
LR pixel by phase correlation (``skimage.registration.phase_cross_correlation``). The residual is the RMS
difference of the two standardised images once aligned (0: identical up to brightness and contrast;
sqrt(2): unrelated); a residual above :data:`MAX_RESIDUAL` means the registration failed.

Geometry (LR pixel units, pixel edges): the HR field's top-left corner lies at ``offset`` in the LR image, so
the centre of HR pixel ``j`` lies at LR coordinate ``offset + (j + 0.5) / factor - 0.5``
(:func:`hr_positions`). Importing this module does not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: Registrations with a larger residual (RMS difference of the standardised images) are refused.
MAX_RESIDUAL = 1.0
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


def downsample(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` (y, x) at ``1 / factor`` of its pixel count per axis, anti-aliased (float32)."""
    from skimage.transform import resize

    image = np.asarray(image, np.float32)
    shape = tuple(max(1, int(round(s / factor))) for s in image.shape)
    return resize(image, shape, order=1, anti_aliasing=factor > 1, preserve_range=True).astype(np.float32)


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
    return ndimage.map_coordinates(np.asarray(lr, np.float32), grid, order=1, mode="nearest")


def residual(lr: np.ndarray, small_hr: np.ndarray, offset: tuple[float, float]) -> float:
    """RMS difference of the standardised LR (sampled at ``offset``) and down-sampled HR."""
    a = _standardise(_sample(lr, offset, small_hr.shape))
    b = _standardise(small_hr)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def register(lr: np.ndarray, hr: np.ndarray, factor: float, *, max_residual: float = MAX_RESIDUAL) -> Registration:
    """Locate the HR image ``hr`` (y, x) inside the LR image ``lr`` (y, x) of ``factor`` times coarser pixels.

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
    if lr.ndim != 2 or hr.ndim != 2:
        raise InputError(f"registration takes two 2D planes, got shapes {lr.shape} and {hr.shape}")
    if not (np.isfinite(lr).all() and np.isfinite(hr).all()):
        raise InputError("the LR or HR image holds NaN or infinite values; replace them before training")
    small = downsample(hr, factor)
    field = tuple(s / factor for s in hr.shape)
    if any(f > n + SAME_FIELD_PX for f, n in zip(field, lr.shape)):
        raise InputError(
            f"the HR image ({hr.shape[0]} x {hr.shape[1]} px) at factor {factor:g} covers "
            f"{field[0]:.1f} x {field[1]:.1f} LR px, more than the LR image ({lr.shape[0]} x {lr.shape[1]} px): "
            "the HR field must lie inside the LR field. Check the factor (--factor, or the voxel sizes) and that "
            "--lr and --hr are not swapped"
        )
    if min(small.shape) < 8:
        raise InputError(
            f"the HR image is {small.shape[0]} x {small.shape[1]} px at the LR pixel size: too small to register "
            "(at least 8 x 8 LR px); give a larger HR field"
        )
    same = all(abs(f - n) <= SAME_FIELD_PX for f, n in zip(field, lr.shape))
    if same:
        coarse = (0, 0)
    else:
        ncc = match_template(lr, small)
        coarse = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    y0, x0 = (int(c) for c in coarse)
    crop = lr[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]]
    h, w = min(crop.shape[0], small.shape[0]), min(crop.shape[1], small.shape[1])
    shift = (0.0, 0.0)
    if h >= 8 and w >= 8:
        try:
            sh, _, _ = phase_cross_correlation(_standardise(crop[:h, :w]), _standardise(small[:h, :w]),
                                               upsample_factor=20, normalization=None)
            # NOTE: a refinement beyond one LR pixel means the phase correlation locked on something else
            if np.all(np.abs(sh) <= 1.0):
                shift = (float(sh[0]), float(sh[1]))
        except ValueError:
            pass
    offset = (y0 + shift[0], x0 + shift[1])
    res = residual(lr, small, offset)
    # the refinement is kept only when it helps; then a local search of the residual itself (1/8 LR px)
    res0 = residual(lr, small, (float(y0), float(x0)))
    if res0 <= res:
        offset, res = (float(y0), float(x0)), res0
    steps = np.arange(-4, 5) / 8.0
    best = offset
    for dy in steps:
        for dx in steps:
            cand = (offset[0] + dy, offset[1] + dx)
            r = residual(lr, small, cand)
            if r < res - 1e-6:
                best, res = cand, r
    offset = best
    reg = Registration(offset, float(factor), (int(round(field[0])), int(round(field[1]))), res, not same)
    if not math.isfinite(res) or res > max_residual:
        raise InputError(
            f"the HR image could not be registered in the LR image: residual {res:.3f} (standardised RMS "
            f"difference at the best match, LR (y, x) = ({offset[0]:.1f}, {offset[1]:.1f}); at most "
            f"{max_residual:g} is accepted, sqrt(2) = unrelated). Check that both show the same region, the factor "
            "(--factor or the voxel sizes), or crop the LR image around the HR field"
        )
    return reg
