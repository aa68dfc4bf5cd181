"""The paired method's pair-maker: LR/HR super-resolution of lateral planes (EMSR, Khateri et al. 2024; AEANet,
Xie et al.).

A lab images a small field at high resolution (HR) and a large field, or a whole series, at low resolution
(LR), both noisy (Khateri et al.), or the same area at two magnifications (Xie et al.), and wants the large field at
high resolution. The trainer's volume is the HR image or stack (its normalisation is the model's); the LR image
of the same region is the option ``lr_image`` (a file, or an in-memory image from :func:`lr_source`). The
lateral factor ``s`` (HR pixels per LR pixel, any number >= 1, e.g. 3.33) is the training factor.

Pairs
-----
- real pairs (an LR image is given): the HR field is registered in the LR field
  (:func:`napari_emsr.methods.paired.registration.register`: refused with its residual when it fails); the LR is
  interpolated
  (cubic B-spline) onto the HR pixel grid, as it is when the model is applied, and the network learns the HR
  from it. The HR reference may be noisy (Khateri et al. show that training with no clean reference works).
- recipe I (EMSR's synthetic I): LR made from the HR by bicubic down-sampling (anti-aliased, as image
  resizing does); recipe II (synthetic II): a random isotropic Gaussian blur (sigma in [0, 3] HR px) and random
  Gaussian noise (sigma in [20, 40] / 255) before the bicubic down-sampling, noise (sigma in [5, 15] / 255)
  after it. Noise levels are in units of the normalised range (the 0.5-99.5 % intensity percentiles at 0 and
  1), i.e. the paper's 8-bit levels over 255.
- the noisier copy (EMSR, Fig. 2, option ``noisier``): each input ``y`` comes with ``y' = y + n``, ``n``
  zero-mean white Gaussian noise of sigma in [0, 5] / 255 added to the LR image, and the shared network is
  trained with ``l1(f(y), x) + l1(f(y'), x) + l1(f(y), f(y'))`` (:func:`noisier_copy_loss`, eq. 16 with
  lambda = 1).

Held-out validation pairs come from z planes never used for training (the trainer's held-out planes), or for a
single image from its right quarter. The model is applied by :mod:`napari_emsr.methods.paired.apply` (every xy plane of
an LR volume, ``s`` times finer), or at the same resolution as an enhancer (EMSR, Fig. 10).
Importing this module does not import torch.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from typing import Any

import numpy as np

from ...errors import InputError
from ...interpolation import interpolate_axis, interpolation_matrix
from ...io.lazy import compute as _compute
from .registration import Registration, bicubic_down_matrix, hr_positions, register

log = logging.getLogger(__name__)

#: Held-out pairs scored at each validation.
N_VALIDATION = 16
#: At most this many training planes are read (a few hundred MB at most for fields of 1000 x 1000 px).
MAX_PLANES = 64
#: Pixels (per plane, times planes) read into memory at most.
MAX_PIXELS = 64_000_000
#: Recipe II's ranges (EMSR, section III-B): blur sigma (HR px), noise before and after (8-bit levels).
RECIPE_II = {"blur": (0.0, 3.0), "noise_before": (20.0, 40.0), "noise_after": (5.0, 15.0)}
#: The noisier copy's extra noise (8-bit levels, EMSR section III-B).
NOISIER_SIGMA = (0.0, 5.0)
#: Name of the method's loss in :data:`napari_emsr.losses.LOSSES`.
LOSS = "noisier_l1"

_IN_MEMORY: dict[str, Any] = {}
_COUNTER = itertools.count(1)


# ------------------------------------------------------------------------------------------------- inputs
def lr_source(image: Any) -> str:
    """Keep an in-memory LR image (array or Volume) for training; returns the ``lr_image`` option that names it.

    For scripts and the panel; the command line gives a file path instead.
    """
    key = f"memory:{next(_COUNTER)}"
    _IN_MEMORY[key] = image
    return key


def release_lr_source(key: str) -> None:
    """Forget an in-memory LR image kept by :func:`lr_source` (a trainer that opened it keeps its own reference)."""
    _IN_MEMORY.pop(key, None)


def as_stack(image: Any):
    """A 2D image (y, x) or 3D stack (z, y, x), array or Volume, as a Volume (z, y, x) (a 2D image: one plane)."""
    import dask.array as da

    from ...io import Volume, as_volume

    if isinstance(image, Volume):
        return image
    shape = tuple(getattr(image, "shape", np.shape(image)))
    if len(shape) == 3 and shape[0] == 1:
        image, shape = image[0], shape[1:]
    if len(shape) != 2:
        return as_volume(image)
    # NOTE: a Volume of one plane is built directly: as_volume refuses it (no z axis to reconstruct), which the
    # paired method does not need
    a = image if isinstance(image, da.Array) else da.from_array(np.asarray(image))
    if a.dtype.kind not in "uif" or min(shape) < 1:
        raise InputError(f"an image of {a.dtype} and shape {shape} cannot be used: give a greyscale 2D image or "
                         "3D stack")
    return Volume(a[None], None)


def open_image(source: Any):
    """Open an LR or HR image or stack: a path (TIFF, OME-Zarr; a 2D TIFF is one plane), an in-memory key from
    :func:`lr_source`, an array or a Volume. Returns a Volume (z, y, x)."""
    from ...io import open_volume

    if isinstance(source, str) and source.startswith("memory:"):
        if source not in _IN_MEMORY:
            raise InputError(f"the LR image {source!r} is no longer in memory: give it again (a file path or image)")
        return as_stack(_IN_MEMORY[source])
    if not isinstance(source, (str, bytes)) and not hasattr(source, "__fspath__"):
        return as_stack(source)
    path = str(source)
    if path.lower().endswith((".tif", ".tiff")):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tf:
                shape = tuple(s for s in tf.series[0].shape if s != 1)
        except FileNotFoundError:
            raise InputError(f"{path} does not exist: check the path") from None
        except Exception:  # not a TIFF: open_volume says what is wrong
            shape = ()
        if len(shape) == 2:
            return as_stack(np.asarray(tifffile.imread(path)).reshape(shape))
    return open_volume(path)


def training_inputs(*, input: str | None = None, hr: str | None = None, lr: str | None = None,
                    factor: float | None = None) -> tuple[Any, dict]:
    """The HR image (the trainer's volume) and the settings the pair decides: ``input`` (the HR's source),
    ``factor`` (from the pair, or as given) and ``lr_image`` (the LR's absolute path; an in-memory key as it is).

    ``input`` and ``hr`` both name the HR (give one); ``lr`` the LR image (None: learn from the HR alone, with
    the factor given).
    """
    from pathlib import Path

    if hr and input:
        raise InputError(f"give the HR image once: as --hr or as INPUT (got {input} and {hr})")
    hr_src = hr or input
    if not hr_src:
        raise InputError("--method paired needs the HR image (--hr HR) and, for real pairs, the LR image (--lr LR)")
    hr_vol = open_image(hr_src)
    settings: dict = {"input": hr_src, "factor": factor}
    if lr:
        lr_vol = open_image(lr)
        check_pair(lr_vol, hr_vol)
        settings["factor"] = pair_factor(lr_vol, hr_vol, factor)
        if not str(lr).startswith("memory:"):
            settings["lr_image"] = str(Path(lr).expanduser().absolute())
    elif factor is None:
        raise InputError("without an LR image (--lr) give the factor to learn from the HR alone: --factor S (HR "
                         "pixels per LR pixel, e.g. 2 or 3.33)")
    return hr_vol, settings


def check_pair(lr, hr) -> None:
    """LR and HR must have the same pixel type and the same number of planes (InputError otherwise)."""
    if np.dtype(lr.dtype) != np.dtype(hr.dtype):
        raise InputError(
            f"the LR image is {lr.dtype} and the HR image {hr.dtype}: give both with the same pixel type (convert "
            "one, e.g. to the other's bit depth)"
        )
    if lr.shape[0] != hr.shape[0]:
        kind = lambda v: "a 2D image" if v.shape[0] == 1 else f"a stack of {v.shape[0]} planes"  # noqa: E731
        raise InputError(
            f"the LR image is {kind(lr)} and the HR image {kind(hr)}: give images or stacks of the same planes "
            "(same dimensions, same number of z planes)"
        )


def pair_factor(lr, hr, factor: float | None = None) -> float:
    """The lateral factor s (HR pixels per LR pixel): ``factor`` if given, else from the lateral voxel sizes,
    else from the sizes of an LR and HR of the same field. InputError when it cannot be told or does not fit."""
    from ...geometry import check_factor

    if factor is not None:
        return check_factor(factor)
    ls, hs = getattr(lr, "spacing", None), getattr(hr, "spacing", None)
    if ls and hs:
        fy, fx = ls[1] / hs[1], ls[2] / hs[2]
        if abs(fy - fx) > 0.02 * fx:
            raise InputError(f"the voxel sizes give a factor {fy:g} along y and {fx:g} along x: pass --factor")
        return check_factor(fx)
    ry, rx = hr.shape[1] / lr.shape[1], hr.shape[2] / lr.shape[2]
    if abs(ry - rx) > 0.02 * max(rx, 1e-9) or rx < 1.0:
        raise InputError(
            f"the factor does not fit the sizes: HR {hr.shape[1]} x {hr.shape[2]} px over LR {lr.shape[1]} x "
            f"{lr.shape[2]} px is {ry:.3g} along y and {rx:.3g} along x. Without voxel sizes the factor is read "
            "from the sizes of an LR and HR of the same field; pass --factor (HR pixels per LR pixel)"
        )
    return check_factor(rx)


# ------------------------------------------------------------------------------------------ degradations
@functools.lru_cache(maxsize=64)
def up_matrix(n_lr: int, n_hr: int, factor: float, offset: float = 0.0) -> np.ndarray:
    """(n_hr, n_lr) matrix of cubic B-spline interpolation of LR samples at the HR pixel centres."""
    return interpolation_matrix(n_lr, hr_positions(n_hr, factor, offset), order=3)


def upsample(lr: np.ndarray, shape: tuple[int, int], factor: float, offset: tuple[float, float] = (0.0, 0.0)):
    """LR planes (..., h, w) interpolated (cubic B-spline) onto an HR grid ``shape`` whose corner is at ``offset``
    (LR px); the interpolation the model is applied with (float32)."""
    a = interpolate_axis(lr, hr_positions(shape[0], factor, offset[0]), order=3, axis=-2)
    return interpolate_axis(a, hr_positions(shape[1], factor, offset[1]), order=3, axis=-1)


def degrade(hr: np.ndarray, factor: float, recipe: str, rng: np.random.Generator) -> np.ndarray:
    """EMSR's synthetic LR of HR planes (n, h, w) (normalised): recipe ``"I"`` or ``"II"``; (n, h / s, w / s)."""
    from scipy import ndimage

    n, py, px = hr.shape
    dy, dx = bicubic_down_matrix(py, float(factor)), bicubic_down_matrix(px, float(factor))
    x = np.array(hr, np.float32, copy=True)
    if recipe == "II":
        lo, hi = RECIPE_II["blur"]
        for i in range(n):
            sigma = rng.uniform(lo, hi)
            if sigma > 0.05:
                x[i] = ndimage.gaussian_filter(x[i], sigma, mode="mirror")
        x += rng.normal(size=x.shape).astype(np.float32) * (rng.uniform(*RECIPE_II["noise_before"], (n, 1, 1))
                                                            / 255.0).astype(np.float32)
    lr = dy @ x @ dx.T
    if recipe == "II":
        lr += rng.normal(size=lr.shape).astype(np.float32) * (rng.uniform(*RECIPE_II["noise_after"], (n, 1, 1))
                                                              / 255.0).astype(np.float32)
    return lr.astype(np.float32)


def _augment(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random transpose and flips for each (p, p) array."""
    t, fy, fx = rng.random(3) < 0.5
    out = []
    for a in arrays:
        if t:
            a = a.T
        if fy:
            a = a[::-1]
        if fx:
            a = a[:, ::-1]
        out.append(a)
    return out


# --------------------------------------------------------------------------------------------------- loss
def noisier_copy_loss(pred, target):
    """EMSR's loss (Khateri et al., eq. 16, lambda = 1, l1): with ``pred`` holding f(y) and f(y') interleaved (2n
    items for
    n targets), ``l1(f(y), x) + l1(f(y'), x) + l1(f(y), f(y'))``; plain l1 when there is no noisier copy."""
    import torch.nn.functional as F

    pred, target = pred.float(), target.float()
    if pred.shape[0] != 2 * target.shape[0]:
        return F.l1_loss(pred, target)
    a, b = pred[0::2], pred[1::2]
    return F.l1_loss(a, target) + F.l1_loss(b, target) + F.l1_loss(a, b)


# --------------------------------------------------------------------------------------------- pair-maker
class PairedPairs:
    """The paired method's pair-maker (see the module docstring)."""

    def __init__(self, ctx) -> None:
        import torch

        self._torch = torch
        self.ctx = ctx
        opts = dict(ctx.options)
        notes: list[str] = []
        self.factor = s = float(ctx.factor)
        self.norm = ctx.norm
        hr = ctx.data
        nz, ny, nx = (int(v) for v in hr.shape)
        lr_given = bool(opts.get("lr_image"))
        recipe = opts["recipe"]
        if recipe == "auto":
            recipe = "real" if lr_given else "II"
        elif lr_given:
            notes.append(f"recipe {recipe}: the LR image is not used, LR patches are made from the HR image")
        self.recipe = recipe  # NOTE: "real" is recorded as info["recipe"]; the option keeps the user's choice
        self.noisier = opts["noisier"] == "on"
        # planes: the trainer's held-out planes for validation, or the right quarter of a single plane
        if nz >= 3:
            val = [int(z) for z in ctx.val_planes]
            train = [z for z in range(nz) if z not in val]
            cols_train, cols_val = slice(0, nx), slice(0, nx)
        else:
            val, train = list(range(nz)), list(range(nz))
            cut = nx - max(nx // 4, min(nx, 16))
            cols_train, cols_val = slice(0, max(cut, 1)), slice(cut, nx)
            notes.append(f"validation on the right {nx - cut} columns of the image, never trained on")
        cap = max(1, min(MAX_PLANES, MAX_PIXELS // max(1, ny * nx)))
        if len(train) > cap:
            train = [train[int(i)] for i in np.linspace(0, len(train) - 1, cap).round()]
        self.registration: Registration | None = None
        hr_train = self.norm.apply(_compute(hr[train]))[:, :, cols_train]
        hr_val = self.norm.apply(_compute(hr[val]))[:, :, cols_val]
        if not (np.isfinite(hr_train).all() and np.isfinite(hr_val).all()):
            raise InputError("the HR image holds NaN or infinite values; replace them before training")
        if recipe == "real":
            lr_vol = open_image(opts["lr_image"])
            check_pair(lr_vol, hr)
            some = [train[int(i)] for i in np.unique(np.linspace(0, len(train) - 1, min(8, len(train))).round())]
            self.registration = reg = register(_compute(lr_vol.data[some]), _compute(hr[some]), s)
            notes.append(f"registration: {reg.note}")
            log.info("registration: %s", reg.note)
            inp_train = self._lr_on_hr_grid(lr_vol.data, train, reg, (ny, nx))[:, :, cols_train]
            inp_val = self._lr_on_hr_grid(lr_vol.data, val, reg, (ny, nx))[:, :, cols_val]
            self.inputs = inp_train
        else:
            self.inputs = None
            inp_val = None
        self.targets = hr_train
        p = int(min(ctx.patch, hr_train.shape[1], hr_train.shape[2]))
        self.patch = p
        self.info = {"recipe": recipe, "lateral_factor": s,
                     "registration": self.registration.as_dict() if self.registration else None,
                     "apply": "lateral", "options": opts, "notes": notes}
        self._val_planes = (hr_val, inp_val)
        self._validation = self._make_validation(hr_val, inp_val)

    # -------------------------------------------------------------------------------------------- pieces
    def _lr_on_hr_grid(self, lr_data, planes: list[int], reg: Registration, shape: tuple[int, int]) -> np.ndarray:
        """The LR planes over the registered HR field, interpolated onto the HR pixel grid (normalised)."""
        s = self.factor
        _, ly, lx = lr_data.shape
        oy, ox = reg.offset
        m = 8  # LR px of context: the cubic B-spline's prefilter sees past the field's edges
        y0, x0 = max(0, math.floor(oy) - m), max(0, math.floor(ox) - m)
        y1 = min(ly, math.ceil(oy + shape[0] / s) + m + 1)
        x1 = min(lx, math.ceil(ox + shape[1] / s) + m + 1)
        win = self.norm.apply(_compute(lr_data[planes, y0:y1, x0:x1]))
        if not np.isfinite(win).all():
            raise InputError("the LR image holds NaN or infinite values; replace them before training")
        return upsample(win, shape, s, (oy - y0, ox - x0))

    def _synthetic(self, hr: np.ndarray, rng: np.random.Generator, recipe: str | None = None) -> np.ndarray:
        """Network inputs made from HR planes (n, h, w) by the recipe, with a margin for the resampling."""
        s = self.factor
        _, h, w = hr.shape
        m = int(math.ceil(4 * s))
        padded = np.pad(hr, ((0, 0), (m, m), (m, m)), mode="reflect")
        lr = degrade(padded, s, recipe or self.recipe, rng)
        uy = up_matrix(lr.shape[-2], padded.shape[-2], s)
        ux = up_matrix(lr.shape[-1], padded.shape[-1], s)
        return (uy @ lr @ ux.T)[:, m : m + h, m : m + w]

    def _noisier(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """LR-space white noise of sigma in [0, 5] / 255 interpolated onto the HR grid: y' - y for n patches."""
        s, p = self.factor, self.patch
        k = int(math.ceil(p / s)) + 8
        noise = rng.normal(size=(n, k, k)).astype(np.float32)
        noise *= (rng.uniform(*NOISIER_SIGMA, (n, 1, 1)) / 255.0).astype(np.float32)
        phase = rng.random(2)
        return upsample(noise, (p, p), s, (4 + phase[0], 4 + phase[1]))

    def _crops(self, n: int, rng: np.random.Generator, targets: np.ndarray, inputs: np.ndarray | None):
        p = self.patch
        nplanes, h, w = targets.shape
        idx = rng.integers(0, nplanes, n)
        ys, xs = rng.integers(0, h - p + 1, n), rng.integers(0, w - p + 1, n)
        x = np.empty((n, p, p), np.float32)
        y = np.empty((n, p, p), np.float32)
        for i in range(n):
            sl = (idx[i], slice(ys[i], ys[i] + p), slice(xs[i], xs[i] + p))
            pair = [targets[sl]] + ([inputs[sl]] if inputs is not None else [])
            pair = _augment(pair, rng)
            y[i] = pair[0]
            if inputs is not None:
                x[i] = pair[1]
        if inputs is None:
            x = self._synthetic(y, rng)
        return x, y

    def _make_validation(self, hr_val: np.ndarray, inp_val: np.ndarray | None):
        rng = np.random.default_rng(12345)
        p = self.patch
        if min(hr_val.shape[1:]) < p:  # a narrow held-out region: validate on smaller patches
            p = int(min(hr_val.shape[1:]))
        keep, self.patch = self.patch, p
        try:
            x, y = self._crops(N_VALIDATION, rng, hr_val, inp_val)
        finally:
            self.patch = keep
        return x, y

    # ------------------------------------------------------------------------------------------ protocol
    def batch(self, n: int):
        """``n`` training pairs (x, y), (n, 1, p, p) on the device; with the noisier copy x is (2n, 1, p, p),
        y and y' interleaved."""
        torch = self._torch
        x, y = self._crops(n, self.ctx.rng, self.targets, self.inputs)
        if self.noisier:
            xn = x + self._noisier(n, self.ctx.rng)
            x = np.stack([x, xn], axis=1).reshape(2 * n, *x.shape[1:])
        dev = self.ctx.device
        return (torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1).to(dev, non_blocking=True),
                torch.from_numpy(np.ascontiguousarray(y)).unsqueeze(1).to(dev, non_blocking=True))

    def validation(self):
        """The fixed held-out pairs (x, y), numpy (N, p, p)."""
        return self._validation

    def preview(self, max_size: int = 384) -> np.ndarray:
        """The network input of a held-out plane (normalised, at most ``max_size`` px a side)."""
        hr_val, inp_val = self._val_planes
        if inp_val is not None:
            return inp_val[0, :max_size, :max_size]
        plane = hr_val[:1, :max_size, :max_size]
        return self._synthetic(plane, np.random.default_rng(7), "I")[0]


def paired_pairs(ctx):
    """The paired method's pair-maker factory."""
    return PairedPairs(ctx)
