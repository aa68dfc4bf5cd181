"""AEANet: a U-Net whose bottleneck is an augmented, spatially permutation-equivariant attention block.

Xie, Y. et al., "Augmented Equivariant Attention Networks for Microscopy Image Super-Resolution" (AEANet):

- attention with shared references (section 3.3, eq. 6): a learnable matrix ``R`` (r x c) is stacked on the
  tokens ``X`` of the feature map, ``X~ = [R; X]``, and
  ``A_R(X) = 1 / (r + wh) * q(X) k(X~)^T v(X~)``: queries come from the image only, keys and values from the
  image and the references the whole training set shares. Theorem 2: ``A_R`` is equivariant to any spatial
  permutation (the references are not permuted), unlike attention with a learned query, which is invariant;
- batch-aware attention (section 4, eq. 8), used in training only: keys and values are taken from every
  image of the (half) batch, ``A_batch(X_i) = 1 / (N wh) q(X_i) k([X_1..X_N])^T v([X_1..X_N])``;
- the attention block (section 5.1): in training the batch is split in two halves, one through ``A_R``, the
  other through ``A_batch``, the projections ``q, k, v`` shared; in prediction everything goes through ``A_R``.
  A residual connection adds the block's input (section 5.2, after GVTNets);
- a U-Net of depth 3 (two stride-2 convolutions down, two transposed convolutions up, skips by
  concatenation) with the attention block as its bottom block (Fig. 4).

The normalisation is the paper's division by the number of keys (eq. 2), not a softmax, so the product is
computed as ``q (k^T v)``: linear in the number of pixels. The network works on inputs already interpolated onto
the output grid (the paper's LR images are bicubically up-sampled), and returns ``x + body(x)`` with the last
convolution initialised to zero, like every network of the registry.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_emsr.errors import InputError
from napari_emsr.nets._common import check_input, crop, pad_to_multiple

__all__ = ["AEANet", "AugmentedAttention", "SIZES", "default_kwargs"]

#: Named sizes: constructor keyword arguments ("base" is about the size of the paper's U-Net).
SIZES: dict[str, dict] = {
    "tiny": {"channels": 8, "references": 8, "convs": 1},
    "small": {"channels": 24, "references": 32, "convs": 2},
    "base": {"channels": 32, "references": 64, "convs": 2},
}


def default_kwargs(size: str) -> dict:
    """Constructor arguments of the named size (a copy)."""
    if size not in SIZES:
        raise InputError(f"Unknown AEANet size {size!r}. Known sizes: {', '.join(SIZES)}.")
    return dict(SIZES[size])


class AugmentedAttention(nn.Module):
    """The augmented equivariant attention block on (B, C, H, W) features.

    ``references`` learnable shared references (0: plain self-attention). ``batch_aware``: in training, the
    second half of a batch of at least two goes through the batch-aware attention.
    """

    def __init__(self, dim: int, references: int = 32, batch_aware: bool = True):
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.batch_aware = batch_aware
        self.refs = nn.Parameter(torch.randn(references, dim) * 0.02) if references > 0 else None

    def shared_references(self, tokens: torch.Tensor) -> torch.Tensor:
        """``A_R`` on tokens (B, S, C): keys and values from ``[R; X]``, divided by ``r + S``."""
        b = tokens.shape[0]
        full = tokens if self.refs is None else torch.cat([self.refs.expand(b, -1, -1), tokens], dim=1)
        kv = self.k(full).transpose(1, 2) @ self.v(full)  # (B, C, C)
        return (self.q(tokens) @ kv) / full.shape[1]

    def batch_attention(self, tokens: torch.Tensor) -> torch.Tensor:
        """``A_batch`` on tokens (N, S, C): keys and values from every image of the batch, divided by ``N S``."""
        n, s, c = tokens.shape
        flat = tokens.reshape(1, n * s, c)
        kv = self.k(flat).transpose(1, 2) @ self.v(flat)  # (1, C, C)
        return (self.q(tokens) @ kv) / (n * s)

    def attend(self, tokens: torch.Tensor) -> torch.Tensor:
        """The attention of the block on tokens (B, S, C) (without the residual)."""
        b = tokens.shape[0]
        if self.training and self.batch_aware and b >= 2:
            half = b // 2
            out = torch.cat([self.shared_references(tokens[:half]), self.batch_attention(tokens[half:])], dim=0)
        else:
            out = self.shared_references(tokens)
        return self.proj(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        out = self.attend(tokens).transpose(1, 2).reshape(b, c, h, w)
        return x + out


def _conv_block(cin: int, cout: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(max(1, n)):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class AEANet(nn.Module):
    """Augmented Equivariant Attention Network (Xie et al.): U-Net of depth 3, attention block at the bottom.

    Args:
        in_channels (int): channels of the input and output image.
        channels (int): channels of the first level; level ``l`` has ``channels * 2**l``.
        references (int): size ``r`` of the learnable shared references of the bottleneck attention.
        convs (int): 3x3 convolutions per U-Net level (each side).
        batch_aware (bool): use the batch-aware attention for half of each training batch.
        residual (bool): return ``x + body(x)``, the last convolution initialised to zero.

    Shapes:
        ``(B, in_channels, H, W) -> (B, in_channels, H, W)`` for any ``H, W >= 1`` (padded internally to a
        multiple of 4 and cropped back).
    """

    def __init__(self, in_channels: int = 1, channels: int = 24, references: int = 32, convs: int = 2,
                 batch_aware: bool = True, residual: bool = True):
        super().__init__()
        if min(in_channels, channels) < 1 or references < 0:
            raise InputError("AEANet: in_channels and channels must be positive, references >= 0")
        self.in_channels = in_channels
        self.residual = residual
        c0, c1, c2 = channels, 2 * channels, 4 * channels
        self.enc0 = _conv_block(in_channels, c0, convs)
        self.down0 = nn.Conv2d(c0, c1, 3, stride=2, padding=1)
        self.enc1 = _conv_block(c1, c1, convs)
        self.down1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.bottom = AugmentedAttention(c2, references, batch_aware)
        self.up1 = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.dec1 = _conv_block(2 * c1, c1, convs)
        self.up0 = nn.ConvTranspose2d(c1, c0, 2, stride=2)
        self.dec0 = _conv_block(2 * c0, c0, convs)
        self.tail = nn.Conv2d(c0, in_channels, 3, padding=1)
        if residual:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    @property
    def pad_multiple(self) -> int:
        """H and W are padded internally to a multiple of this."""
        return 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels)
        xp, h, w = pad_to_multiple(x, self.pad_multiple)
        s0 = self.enc0(xp)
        s1 = self.enc1(F.leaky_relu(self.down0(s0), 0.1))
        b = self.bottom(F.leaky_relu(self.down1(s1), 0.1))
        d1 = self.dec1(torch.cat([self.up1(b), s1], dim=1))
        d0 = self.dec0(torch.cat([self.up0(d1), s0], dim=1))
        out = crop(self.tail(d0), h, w)
        return x + out if self.residual else out
