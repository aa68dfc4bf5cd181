"""A small, fast residual CNN for restoring an interpolated axial plane on a CPU.

The gaps to fill between real sections after interpolation are up to about 8-12 rows, so the
network needs a receptive field of some 40+ pixels along both axes at low cost. It therefore does
little at full resolution: a head convolution, then ``scale_levels`` pixel-unshuffle(2) stages,
``blocks`` residual blocks at the lowest resolution (where each 3x3 convolution sees
``2**scale_levels`` times further), pixel-shuffle back up with skips from the full-resolution
features, a fusion convolution and a tail convolution initialised to zero. The output is
``x + body(x)``.

Receptive field (scale_levels=1): about ``8 * blocks + 14`` pixels.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_emsr.errors import InputError
from napari_emsr.nets._common import check_input, crop, pad_to_multiple

__all__ = ["ResCNN", "SIZES", "default_kwargs"]

#: Named sizes: constructor keyword arguments.
SIZES: dict[str, dict] = {
    "tiny": {"channels": 8, "blocks": 1, "scale_levels": 1},
    "small": {"channels": 32, "blocks": 8, "scale_levels": 1},
    "base": {"channels": 48, "blocks": 12, "scale_levels": 1},
}


def default_kwargs(size: str) -> dict:
    """Constructor arguments of the named size (a copy)."""
    if size not in SIZES:
        raise InputError(f"Unknown ResCNN size {size!r}. Known sizes: {', '.join(SIZES)}.")
    return dict(SIZES[size])


class ResBlock(nn.Module):
    """conv3x3 - LeakyReLU - conv3x3, plus the input."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.1))


class Down(nn.Module):
    """pixel-unshuffle(2) then conv3x3: (c, H, W) -> (2c, H/2, W/2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(4 * ch, 2 * ch, 3, padding=1)

    def forward(self, x):
        return F.leaky_relu(self.conv(F.pixel_unshuffle(x, 2)), 0.1)


class Up(nn.Module):
    """conv1x1 then pixel-shuffle(2): (2c, H/2, W/2) -> (c, H, W)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * ch, 4 * ch, 1)

    def forward(self, x):
        return F.pixel_shuffle(self.conv(x), 2)


class ResCNN(nn.Module):
    """Residual CNN that works mostly at reduced resolution; fast on CPUs.

    Args:
        in_channels (int): channels of the input and output image.
        channels (int): channels at full resolution; level ``l`` has ``channels * 2**l``.
        blocks (int): residual blocks (two 3x3 convolutions each) at the lowest resolution.
        residual (bool): return ``x + body(x)``; the tail convolution is then initialised to
            zero, so the untrained network is the identity.
        scale_levels (int): pixel-unshuffle(2) stages before the residual blocks (0 = all at
            full resolution).
        out_channels (int, optional): channels of the output (default ``in_channels``); only
            without ``residual`` may they differ (the section-grid networks use it).

    Shapes:
        ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` for any ``H, W >= 1`` (padded
        internally to a multiple of ``2**scale_levels`` and cropped back).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 32,
        blocks: int = 6,
        residual: bool = True,
        scale_levels: int = 1,
        out_channels: int | None = None,
    ):
        super().__init__()
        if in_channels < 1 or channels < 1 or blocks < 0 or scale_levels < 0:
            raise InputError(
                "in_channels and channels must be positive, blocks and scale_levels >= 0"
            )
        out_channels = in_channels if out_channels is None else int(out_channels)
        if residual and out_channels != in_channels:
            raise InputError("a residual network has as many output channels as input channels")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = channels
        self.blocks = blocks
        self.residual = residual
        self.scale_levels = scale_levels
        low_ch = channels * 2**scale_levels

        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.downs = nn.ModuleList(Down(channels * 2**i) for i in range(scale_levels))
        self.body = nn.Sequential(*[ResBlock(low_ch) for _ in range(blocks)])
        self.body_out = nn.Conv2d(low_ch, low_ch, 3, padding=1)
        self.ups = nn.ModuleList(Up(channels * 2**i) for i in reversed(range(scale_levels)))
        self.fuse = nn.Conv2d(channels, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, out_channels, 3, padding=1)
        if residual or out_channels != in_channels:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    @property
    def pad_multiple(self) -> int:
        return 2**self.scale_levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels)
        xp, h, w = pad_to_multiple(x, self.pad_multiple)
        feat = F.leaky_relu(self.head(xp), 0.1)
        skips = []
        for down in self.downs:
            skips.append(feat)
            feat = down(feat)
        feat = feat + self.body_out(self.body(feat))
        for up in self.ups:
            feat = up(feat) + skips.pop()
        out = self.tail(F.leaky_relu(self.fuse(feat), 0.1))
        out = crop(out, h, w)
        return x + out if self.residual else out
