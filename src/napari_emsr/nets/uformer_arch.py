"""U-shaped vision transformer of A2I-3DEM, written from the paper.

Khateri, M. et al., "A2I-3DEM: self-supervised isotropic reconstruction of anisotropic 3D electron
microscopy" -- section II-B "Network Architecture": a hierarchical U-shaped encoder-decoder whose
stages are vision-transformer blocks

    X'  = W-MSA(LN(X)) + X
    X'' = GLEN(LN(X')) + X'

with window multi-head self-attention (W-MSA) carrying a learned relative position bias
(Swin-style, eq. 3-4), and the gated locally-enhanced feed-forward network (GLEN): a depth-wise
convolution for local context and a gate formed as the element-wise product of two parallel
linear paths. Shallow convolutional features are added to the output of the last decoder before
the projection convolution.

Everything here is plain torch (no timm, no einops). Feature maps inside the transformer stages
are kept channels-last, ``(B, H, W, C)``, so that LayerNorm and the linear layers act on the
channel axis directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_emsr.errors import InputError
from napari_emsr.nets._common import check_input, crop, pad_to_multiple

__all__ = ["UFormer", "SIZES", "default_kwargs"]

#: Named sizes: constructor keyword arguments. "tiny" is for tests, "small" trains on a laptop
#: CPU, "base" is the paper-like size for GPUs.
SIZES: dict[str, dict] = {
    "tiny": {"embed_dim": 8, "depths": (1, 1), "num_heads": (1, 1), "window_size": 4,
             "mlp_ratio": 2.0},
    "small": {"embed_dim": 24, "depths": (1, 1, 2), "num_heads": (1, 2, 4), "window_size": 8,
              "mlp_ratio": 2.0},
    "base": {"embed_dim": 32, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8),
             "window_size": 8, "mlp_ratio": 2.0},
}

_MASK_VALUE = -1.0e4  # finite, representable in fp16/bf16; no row is ever fully masked


def default_kwargs(size: str) -> dict:
    """Constructor arguments of the named size (a copy)."""
    if size not in SIZES:
        raise InputError(f"Unknown UFormer size {size!r}. Known sizes: {', '.join(SIZES)}.")
    return dict(SIZES[size])


# --------------------------------------------------------------------------------------------
# windows


def _to_windows(x: torch.Tensor, m: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, nW, m*m, C); H and W must be multiples of m."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // m, m, w // m, m, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // m) * (w // m), m * m, c)


def _from_windows(x: torch.Tensor, m: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_to_windows`."""
    b, _, _, c = x.shape
    x = x.reshape(b, h // m, w // m, m, m, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def _relative_position_index(m: int) -> torch.Tensor:
    """(m*m, m*m) index into a ((2m-1)**2, heads) bias table, as in Swin."""
    ys, xs = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :] + (m - 1)  # (2, N, N), in [0, 2m-2]
    return rel[0] * (2 * m - 1) + rel[1]


def _shift_mask(h: int, w: int, m: int, s: int, device: torch.device) -> torch.Tensor:
    """(nW, m*m, m*m) additive mask for windows after a cyclic shift by ``s``.

    Tokens that were not neighbours before the roll (they came from opposite borders) must not
    attend to each other.
    """
    label = torch.zeros(h, w, device=device)
    n = 0
    for ys in (slice(0, h - m), slice(h - m, h - s), slice(h - s, h)):
        for xs in (slice(0, w - m), slice(w - m, w - s), slice(w - s, w)):
            label[ys, xs] = n
            n += 1
    win = _to_windows(label[None, :, :, None], m)[0, :, :, 0]  # (nW, N)
    diff = win[:, :, None] != win[:, None, :]
    return torch.zeros(diff.shape, device=device).masked_fill(diff, _MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping ``m x m`` windows (W-MSA).

    ``softmax(Q K^T / sqrt(d) + B) V`` with ``B`` a learned relative position bias, one
    ``(2m-1)**2`` table per head. With ``shift > 0`` the map is rolled by ``-shift`` first and
    rolled back after (shifted windows, with the mask that keeps wrapped-around tokens apart).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int = 0):
        super().__init__()
        if dim % num_heads:
            raise InputError(f"channels {dim} are not divisible by {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift = shift
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer(
            "bias_index", _relative_position_index(window_size).flatten(), persistent=False
        )
        self._mask_cache: dict[tuple, torch.Tensor] = {}

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N) relative position bias."""
        n = self.window_size**2
        return self.bias_table[self.bias_index].reshape(n, n, self.num_heads).permute(2, 0, 1)

    def _mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w, str(device))
        mask = self._mask_cache.get(key)
        if mask is None:
            mask = _shift_mask(h, w, self.window_size, self.shift, device)
            if len(self._mask_cache) > 16:
                self._mask_cache.clear()
            self._mask_cache[key] = mask
        return mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        b, h, w, c = x.shape
        m = self.window_size
        if h % m or w % m:
            raise InputError(f"feature map {h}x{w} is not a multiple of the window {m}")
        shift = self.shift if min(h, w) > m else 0
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        win = _to_windows(x, m)  # (B, nW, N, C)
        nw, n = win.shape[1], win.shape[2]
        qkv = self.qkv(win).reshape(b, nw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, nW, heads, N, d)
        bias = self.position_bias()  # (heads, N, N)
        if shift:
            bias = bias[None] + self._mask(h, w, x.device)[:, None]  # (nW, heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        out = out.transpose(2, 3).reshape(b, nw, n, c)
        out = _from_windows(self.proj(out), m, h, w)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out


class GLEN(nn.Module):
    """Gated locally-enhanced feed-forward network.

    A linear layer expands to two parallel paths, a 3x3 depth-wise convolution adds local
    context to both, the gate is their element-wise product (one path through GELU), and a
    linear layer projects back.
    """

    def __init__(self, dim: int, mlp_ratio: float = 2.0):
        super().__init__()
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.fc_in = nn.Linear(dim, 2 * hidden)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.fc_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        y = self.fc_in(x).permute(0, 3, 1, 2)
        y = self.dwconv(y).permute(0, 2, 3, 1)
        a, g = y.chunk(2, dim=-1)
        return self.fc_out(F.gelu(a) * g)


class ViTBlock(nn.Module):
    """``X' = W-MSA(LN(X)) + X``;  ``X'' = GLEN(LN(X')) + X'`` (paper eq. 2)."""

    def __init__(self, dim, num_heads, window_size, mlp_ratio=2.0, shift=0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, shift)
        self.norm2 = nn.LayerNorm(dim)
        self.glen = GLEN(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.glen(self.norm2(x))


class Stage(nn.Sequential):
    """``depth`` ViT blocks; with ``shift`` every second block uses shifted windows."""

    def __init__(self, dim, depth, num_heads, window_size, mlp_ratio, shift: bool):
        half = window_size // 2 if shift else 0
        super().__init__(*[
            ViTBlock(dim, num_heads, window_size, mlp_ratio, shift=half if i % 2 else 0)
            for i in range(depth)
        ])


class UFormer(nn.Module):
    """U-shaped vision transformer for restoring an interpolated 2D plane (A2I-3DEM).

    Khateri et al., A2I-3DEM, section II-B: shallow convolutional features, a symmetric
    encoder-decoder with ``K = len(depths)`` levels of ViT blocks (window attention with relative
    position bias + GLEN), skip connections between encoder and decoder, the shallow features
    added to the last decoder's output, and a projection convolution.

    Args:
        in_channels (int): channels of the input and output image.
        embed_dim (int): channels ``C`` of the first level; level ``i`` has ``C * 2**i``.
        depths (Sequence[int]): ViT blocks per encoder level, the last being the bottleneck;
            decoder level ``i`` has ``depths[i]`` blocks too. ``K = len(depths)``.
        num_heads (Sequence[int]): attention heads per level (same length as ``depths``).
        window_size (int): side ``M`` of the attention windows.
        mlp_ratio (float): hidden width of GLEN relative to the level's channels.
        residual (bool): return ``x + body(x)``; the projection is then initialised to zero, so
            the untrained network is the identity.
        shift_windows (bool): every second block of a stage attends in windows shifted by
            ``M // 2`` (Swin). The paper uses plain W-MSA (False).
        out_channels (int, optional): channels of the output (default ``in_channels``); only
            without ``residual`` may they differ (the section-grid networks use it).

    Shapes:
        ``(B, in_channels, H, W) -> (B, in_channels, H, W)`` for any ``H, W >= 1``; the input is
        padded internally (mirror) to a multiple of ``M * 2**(K-1)`` and cropped back.
    """

    def __init__(
        self,
        in_channels: int = 1,
        embed_dim: int = 32,
        depths: Sequence[int] = (2, 2, 2),
        num_heads: Sequence[int] = (1, 2, 4),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        residual: bool = True,
        shift_windows: bool = False,
        out_channels: int | None = None,
    ):
        super().__init__()
        depths = tuple(int(d) for d in depths)
        num_heads = tuple(int(h) for h in num_heads)
        if len(depths) < 1 or len(depths) != len(num_heads):
            raise InputError(
                f"depths {depths} and num_heads {num_heads} must be non-empty and of equal length"
            )
        if window_size < 1 or embed_dim < 1 or in_channels < 1:
            raise InputError("in_channels, embed_dim and window_size must be positive")
        out_channels = in_channels if out_channels is None else int(out_channels)
        if residual and out_channels != in_channels:
            raise InputError("a residual network has as many output channels as input channels")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.embed_dim = embed_dim
        self.depths = depths
        self.num_heads = num_heads
        self.window_size = window_size
        self.residual = residual
        self.levels = len(depths)
        dims = [embed_dim * 2**i for i in range(self.levels)]

        self.shallow = nn.Sequential(
            nn.Conv2d(in_channels, embed_dim, 3, padding=1), nn.LeakyReLU(0.2)
        )
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i in range(self.levels - 1):
            self.encoders.append(
                Stage(dims[i], depths[i], num_heads[i], window_size, mlp_ratio, shift_windows)
            )
            self.downs.append(nn.Conv2d(dims[i], dims[i + 1], 4, stride=2, padding=1))
        self.bottleneck = Stage(
            dims[-1], depths[-1], num_heads[-1], window_size, mlp_ratio, shift_windows
        )
        # decoders[j] works at level i = K-2-j
        self.ups = nn.ModuleList()
        self.fuses = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in reversed(range(self.levels - 1)):
            self.ups.append(nn.ConvTranspose2d(dims[i + 1], dims[i], 2, stride=2))
            self.fuses.append(nn.Linear(2 * dims[i], dims[i]))
            self.decoders.append(
                Stage(dims[i], depths[i], num_heads[i], window_size, mlp_ratio, shift_windows)
            )
        self.projection = nn.Conv2d(embed_dim, out_channels, 3, padding=1)

        self.apply(self._init_weights)
        if residual or out_channels != in_channels:
            nn.init.zeros_(self.projection.weight)
            nn.init.zeros_(self.projection.bias)

    @staticmethod
    def _init_weights(mod: nn.Module) -> None:
        if isinstance(mod, nn.Linear):
            nn.init.trunc_normal_(mod.weight, std=0.02)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.LayerNorm):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)

    @property
    def pad_multiple(self) -> int:
        """H and W are padded internally to a multiple of this."""
        return self.window_size * 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels)
        xp, h, w = pad_to_multiple(x, self.pad_multiple)
        low = self.shallow(xp)  # (B, C, H, W)
        feat = low.permute(0, 2, 3, 1)  # channels-last tokens (B, H, W, C)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            feat = enc(feat)
            skips.append(feat)
            feat = down(feat.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        feat = self.bottleneck(feat)
        for up, fuse, dec in zip(self.ups, self.fuses, self.decoders):
            feat = up(feat.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            feat = fuse(torch.cat([feat, skips.pop()], dim=-1))
            feat = dec(feat)
        out = self.projection(feat.permute(0, 3, 1, 2) + low)
        out = crop(out, h, w)
        return x + out if self.residual else out
