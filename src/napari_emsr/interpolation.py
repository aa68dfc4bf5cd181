"""Interpolation along one axis: the geometry every method shares.

Geometry (contract): input slice ``i`` lies at output position ``i * F``; output slice 0 coincides with input
slice 0. The same interpolation (:func:`interpolate_axis`) makes the network's input at training time (from a
lateral patch degraded along one axis, :mod:`napari_emsr.degrade`) and at reconstruction time (from the real axial
planes), so the network sees at inference exactly the kind of input it was trained on. Numpy only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

ORDERS = {"linear": 1, "cubic": 3}


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
