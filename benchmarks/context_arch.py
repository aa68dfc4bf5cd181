"""Multi-slice context (experimental, measured by ``bench_large_factors.py``): a restoring network that sees 2N+1
neighbouring planes, fused by 3D convolutions.

Args:
    context: N, the neighbours on each side (the input has 2N+1 channels, the plane to restore in the middle).
    base, base_size: the restoring network that follows the fusion (a :mod:`napari_emsr.nets` name and size).
    width: channels of the 3D fusion.

The fusion (a 3x3x3 convolution over (neighbour, row, column), then one over all 2N+1 neighbours) adds a
correction to the middle plane, initialised to zero: an untrained fusion passes the middle plane on, and the whole
network starts as its base network. A single plane (one channel) is taken as its own context.

Which neighbours, at training and at application (see ``context_pairs.ContextPairs``): a
self-supervised pair is a lateral patch at section z whose rows are degraded like z; the axis perpendicular to it
is the stack's z, so its context is the same patch in sections z - N ... z + N, each degraded the same way. These
neighbours lie F lateral pixels apart. An axial plane restored at application (xz at row y) has the lateral axis y
perpendicular to it; its context with the same physical spacing is the interpolated planes at y - N F ... y + N F
(``stride`` = F rounded), not the adjacent rows, whose planes would be nearly identical to it, unlike anything
seen in training.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from napari_emsr.errors import InputError

__all__ = ["ContextNet", "SIZES"]

SIZES: dict[str, dict] = {
    "tiny": {"context": 2, "base_size": "tiny", "width": 4},
    "small": {"context": 2, "base_size": "small", "width": 16},
    "base": {"context": 2, "base_size": "base", "width": 32},
}


class ContextNet(nn.Module):
    """(B, 2N+1, H, W) neighbouring planes -> (B, 1, H, W), the middle plane restored."""

    def __init__(self, context: int = 2, base: str = "rescnn", base_size: str = "small", width: int = 16,
                 residual: bool = True):
        super().__init__()
        from napari_emsr.nets import build_net

        if int(context) < 1:
            raise InputError(f"context must be at least 1 neighbour on each side, got {context}")
        self.context = int(context)
        c = 2 * self.context + 1
        self.fuse = nn.Sequential(nn.Conv3d(1, width, 3, padding=1), nn.LeakyReLU(0.1),
                                  nn.Conv3d(width, 1, (c, 3, 3), padding=(0, 1, 1)))
        nn.init.zeros_(self.fuse[2].weight)
        nn.init.zeros_(self.fuse[2].bias)
        self.base = build_net(base, size=base_size, residual=residual)

    @property
    def channels(self) -> int:
        return 2 * self.context + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, self.channels):
            raise InputError(f"expected (B, {self.channels}, H, W) neighbouring planes, got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, self.channels, -1, -1)
        n = self.context
        fused = x[:, n : n + 1] + self.fuse(x[:, None]).squeeze(2)
        return self.base(fused)
