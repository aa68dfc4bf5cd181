"""Networks whose work follows the sections: the body runs on the section grid, not on the output grid.

A plane to restore is the interpolation of real sections that lie ``F`` rows apart (input slice ``i`` at output row
``i * F``, :mod:`napari_emsr.geometry`). Everything the network can know lies in those sections, so these networks

1. take the section rows back out of the interpolated plane (exact rows for an integer ``F``; for a fractional
   ``F`` the plane linearly sampled at ``i * F``, where the interpolation passes through the sections),
2. run a trunk (the residual CNN or the U-shaped attention network) on that section grid at full lateral
   resolution, with ``r = ceil(F)`` output channels: the correction at ``r`` sub-rows of each section
   (sub-pixel convolution along z),
3. lay the sub-rows out along z (they fall ``F / r`` rows apart: whole rows for an integer ``F``; otherwise the
   last step resamples them linearly onto the output rows) and add the correction to the interpolated plane.

The work per output pixel is the trunk's per pixel divided by ``F``; the interface is that of every restoring
network (an interpolated plane in, the restored plane out), so training pairs, tiling and reconstruction are
shared with the output-grid networks. Two constraints follow from the geometry: a plane's row 0 must be a section
(:func:`napari_emsr.model.predict` therefore never cuts these planes into tiles along z, and training pairs use
sampling phase 0) and ``factor`` is part of the network (the model file records it).
The trunk's last convolution starts at zero: the untrained network is the interpolation itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from napari_emsr.errors import InputError
from napari_emsr.nets._common import check_input

__all__ = ["GRID", "SectionGrid", "sub_rows", "trunk_kwargs"]

#: The grid the body of these networks runs on (the model file records it).
GRID = "sections"


class SectionGrid(nn.Module):
    """A trunk on the section grid, sub-pixel along z, added to the interpolated plane.

    Args:
        trunk (nn.Module): maps ``(B, 1, K, W)`` sections to ``(B, r, K, W)`` corrections, ``r = ceil(factor)``.
        factor (float): the section spacing ``F`` in output rows (> 1).

    Shapes:
        ``(B, 1, H, W) -> (B, 1, H, W)``; row 0 of the plane is a section.
    """

    #: predict() keeps whole planes along z (row 0 must be a section).
    section_grid = True

    def __init__(self, trunk: nn.Module, factor: float):
        super().__init__()
        factor = float(factor)
        if not factor > 1.0:
            raise InputError(f"a section-grid network needs a factor above 1, got {factor}")
        self.trunk = trunk
        self.factor = factor
        self.sub_rows = sub_rows(factor)

    def _integer(self) -> int | None:
        f = self.factor
        return int(round(f)) if abs(f - round(f)) < 1e-6 else None

    def sections(self, x: torch.Tensor) -> torch.Tensor:
        """The section rows of interpolated planes ``x`` (B, 1, H, W) -> (B, 1, K, W)."""
        h = x.shape[-2]
        step = self._integer()
        if step is not None:
            return x[..., ::step, :]
        k = int(math.floor((h - 1) / self.factor + 1e-9)) + 1
        pos = torch.arange(k, dtype=torch.float64) * self.factor
        return _sample_rows(x, pos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, 1)
        b, _, h, w = x.shape
        s = self.sections(x)
        k, r = s.shape[-2], self.sub_rows
        corr = self.trunk(s)  # (B, r, K, W): sub-row j of section i lies at output row (i * r + j) * F / r
        corr = corr.permute(0, 2, 1, 3).reshape(b, 1, k * r, w)
        if self._integer() is not None:  # r == F: the sub-rows are the output rows
            corr = corr[..., :h, :]
        else:
            corr = _sample_rows(corr, torch.arange(h, dtype=torch.float64) * (r / self.factor))
        return x + corr.to(x.dtype)


def _sample_rows(a: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``a`` (B, C, N, W) linearly interpolated at fractional rows ``pos`` (clamped to the last row)."""
    n = a.shape[-2]
    pos = pos.clamp(0, n - 1)
    i0 = pos.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    t = (pos - i0).to(a.dtype).to(a.device).view(1, 1, -1, 1)
    i0, i1 = i0.to(a.device), i1.to(a.device)
    return a.index_select(-2, i0) * (1 - t) + a.index_select(-2, i1) * t


def trunk_kwargs(sizes: dict, size: str, overrides: dict) -> dict:
    """The trunk's constructor arguments: those of ``size`` in ``sizes``, then ``overrides``."""
    if size not in sizes:
        raise InputError(f"unknown trunk size {size!r}: choose {', '.join(sizes)}")
    kwargs = dict(sizes[size])
    kwargs.update(overrides)
    return kwargs


def sub_rows(factor: float) -> int:
    """The sub-rows each section's correction has: ``ceil(F)``."""
    return int(math.ceil(float(factor) - 1e-9))
