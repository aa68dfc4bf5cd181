"""What a pair-maker is given: the volume, its geometry, the normalisation and ways to cut lateral patches.

The trainer builds one :class:`PairContext` per run. It reads random lateral crops of the volume into memory
once (a few hundred MB at most), holds some z planes out for validation, and offers the pieces every pair-maker
of an anisotropic stack needs: random lateral patches (with flips and transposes, so both lateral axes play the
role of the degraded one), the held-out planes, and the interpolated xz plane of the live preview.
Importing this module does not import torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..geometry import output_positions
from ..interpolation import interpolate_axis
from ..io.lazy import compute as _compute
from ..model import Normalisation

log = logging.getLogger(__name__)


@dataclass
class PairContext:
    """The training run as a pair-maker sees it.

    Attributes
    ----------
    data : array
        The stack with the anisotropic axis first (z, y, x), lazy.
    factor : float
        F of the stack.
    order : int
        Interpolation along z in front of the network (1 linear, 3 cubic).
    patch : int
        Side of the square training patches.
    norm : Normalisation
        Intensities -> network range.
    device : str
        Where batches must be (``"cpu"``, ``"cuda:0"`` ...).
    rng : numpy.random.Generator
        The run's seeded generator (patch positions, flips, phases).
    options : dict
        The method's options as resolved (defaults filled in).
    preview_index : int
        The y index of the previewed xz plane.
    train : dict
        The run's network and optimiser settings (net, size, batch, lr, seed, threads).
    stages : dict
        Runners of the method's earlier stages, by name, once they have trained.
    pool : torch.Tensor
        Random lateral crops (normalised, float32) of the training planes, (n, cy, cx), on the CPU.
    val_planes : numpy.ndarray
        z indices held out for validation (never in ``pool``).
    """

    data: Any
    factor: float
    order: int
    patch: int
    norm: Normalisation
    device: str
    rng: np.random.Generator
    options: dict = field(default_factory=dict)
    preview_index: int = 0
    stages: dict = field(default_factory=dict)
    pool: Any = None
    val_planes: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    #: The run's training settings a pair-maker may need to train a short model of its own (``net``, ``size``,
    #: ``batch``, ``lr``, ``seed``, ``threads``): the held-out-section judges of ``--profile judged``.
    train: dict = field(default_factory=dict)
    _preview: np.ndarray | None = field(default=None, repr=False)

    def load_pool(self, max_planes: int = 96, crop: int = 256) -> None:
        """Read random lateral crops into memory (normalised); some z planes are held out for validation."""
        import torch

        nz, ny, nx = self.data.shape
        zs = np.arange(nz)
        n_val = 0 if nz < 3 else int(np.clip(round(0.1 * nz), 1, 4))
        val = zs[np.linspace(0, nz - 1, n_val + 2)[1:-1].round().astype(int)] if n_val else zs[:1]
        train = np.setdiff1d(zs, val) if n_val else zs
        self.val_planes = val
        pick = np.sort(self.rng.choice(train, size=min(len(train), max_planes), replace=False))
        # NOTE: room for a patch plus a margin of 2 F (the learned degradation works on such crops)
        side = self.patch + 2 * int(np.ceil(self.factor))
        cy, cx = min(ny, max(crop, side)), min(nx, max(crop, side))
        crops = []
        for z in pick:
            y0 = int(self.rng.integers(0, ny - cy + 1))
            x0 = int(self.rng.integers(0, nx - cx + 1))
            crops.append(self.data[int(z), y0 : y0 + cy, x0 : x0 + cx])
        if hasattr(crops[0], "dask"):
            import dask.array as da

            arr = _compute(da.stack(crops))
        else:
            arr = np.stack([np.asarray(c) for c in crops])
        arr = self.norm.apply(arr)
        if not np.isfinite(arr).all():
            raise InputError("the volume contains NaN or infinite values; replace them (e.g. with 0) before training")
        self.pool = torch.from_numpy(np.ascontiguousarray(arr))

    def lateral_patches(self, n: int, planes: Any = None, rng: np.random.Generator | None = None,
                        size: int | None = None) -> np.ndarray:
        """``n`` random ``size`` x ``size`` (default ``patch``) crops of ``planes`` (default: the pool), randomly
        transposed and flipped, as (n, size, size) float32: targets whose rows (axis 1) a pair-maker degrades."""
        planes = self.pool if planes is None else planes
        rng = self.rng if rng is None else rng
        p = self.patch if size is None else int(size)
        _, cy, cx = planes.shape
        idx = rng.integers(0, planes.shape[0], n)
        ys = rng.integers(0, cy - p + 1, n)
        xs = rng.integers(0, cx - p + 1, n)
        out = np.empty((n, p, p), np.float32)
        for i in range(n):
            a = planes[idx[i], ys[i] : ys[i] + p, xs[i] : xs[i] + p]
            a = a.numpy() if hasattr(a, "numpy") else a
            if rng.random() < 0.5:  # degrade along x instead of y
                a = a.T
            if rng.random() < 0.5:
                a = a[::-1]
            if rng.random() < 0.5:
                a = a[:, ::-1]
            out[i] = a
        return out

    def held_out_planes(self) -> np.ndarray:
        """The held-out lateral planes, normalised, (n_val, y, x)."""
        return self.norm.apply(_compute(self.data[[int(z) for z in self.val_planes]]))

    def preview_input(self, max_width: int = 384) -> np.ndarray:
        """The interpolated xz plane of the live preview, in input intensity units (float32)."""
        if self._preview is None:
            plane = np.asarray(_compute(self.data[:, self.preview_index, :max_width]), np.float32)
            pos = output_positions(plane.shape[0], self.factor)
            self._preview = interpolate_axis(plane, pos, order=self.order, axis=0)
        return self._preview
