"""EMSR: edge-attention and window self-attention network for EM super-resolution, written from the paper.

Khateri, M. et al., "No-clean-reference image super-resolution: application to electron microscopy" --
section II-C "Network Architecture" and Fig. 2-3:

- a feature extractor: one 3x3 convolution, ``X_SF = H_FE(y)`` (eq. 10);
- an edge-attention module of ``k`` basic blocks (eq. 11). In a basic block the features pass ``m`` residual
  blocks, then take two paths. The upper path (``n`` residual blocks) gives deep features. The lower path
  (convolution, ReLU, convolution) reconstructs the image in the LR space; this reconstruction and the input
  image are decomposed by an a-trous wavelet (ATW, B3-spline, three scales) into multi-scale edges, which are
  concatenated, filtered and turned by an attention block into attention maps; the deep features times the
  maps are added to the deep features, pass a ViT block (window multi-head self-attention and an MLP
  feed-forward, eq. 12-14) and a convolution;
- a reconstruction module on ``X_EA + X_SF`` (eq. 15): pixel-shuffle up-sampling by ``scale`` and a mapper of
  convolutions.

``scale=1`` is the variant for inputs already interpolated onto the output grid (the isotropic method, the
paired method, which interpolates fractional factors): the pixel shuffle is then a no-op and, like every
network of the registry, the output is ``x + body(x)`` with the last convolution initialised to zero (an
untrained network is the identity). With ``scale > 1`` the input is the LR image and the output is
``scale`` times larger, the body's output added to the cubic up-sampling of the input.
The noisier-copy training of the paper (a shared network on the LR image and a noisier copy) is the paired
method's loss (:mod:`napari_emsr.methods.paired`), not part of the network.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_emsr.errors import InputError
from napari_emsr.nets._common import check_input, crop, pad_to_multiple

__all__ = ["EMSR", "SIZES", "default_kwargs", "atrous_wavelet"]

#: Named sizes: constructor keyword arguments. "base" is the paper's setting (C = 64, k = 3 basic blocks of
#: m = 4 residual blocks, n = 4 in the upper path, 16 heads, windows of 4, MLP ratio 2).
SIZES: dict[str, dict] = {
    "tiny": {"channels": 8, "blocks": 1, "res_blocks": 1, "deep_blocks": 1, "num_heads": 1, "window_size": 4,
             "mlp_ratio": 2.0},
    "small": {"channels": 24, "blocks": 2, "res_blocks": 2, "deep_blocks": 1, "num_heads": 2, "window_size": 8,
              "mlp_ratio": 2.0},
    "base": {"channels": 64, "blocks": 3, "res_blocks": 4, "deep_blocks": 4, "num_heads": 16, "window_size": 4,
             "mlp_ratio": 2.0},
}

#: The B3-spline filter of the a-trous (starlet) wavelet.
_B3 = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)


def default_kwargs(size: str) -> dict:
    """Constructor arguments of the named size (a copy)."""
    if size not in SIZES:
        raise InputError(f"Unknown EMSR size {size!r}. Known sizes: {', '.join(SIZES)}.")
    return dict(SIZES[size])


def atrous_wavelet(img: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """Detail planes of the a-trous wavelet transform: (B, 1, H, W) -> (B, scales, H, W).

    ``c_0 = img``, ``c_j = h_j * c_{j-1}`` with the separable B3-spline ``h`` dilated by ``2**(j-1)`` (holes),
    and the details ``w_j = c_{j-1} - c_j``: band-pass edges at three scales, robust to pixel noise.
    Borders are extended by repetition, so any size works.
    """
    k = torch.tensor(_B3, dtype=img.dtype, device=img.device)
    c = img
    details = []
    for j in range(scales):
        d = 2**j
        pad = 2 * d
        kx = k.view(1, 1, 1, 5)
        ky = k.view(1, 1, 5, 1)
        s = F.conv2d(F.pad(c, (pad, pad, 0, 0), mode="replicate"), kx, dilation=(1, d))
        s = F.conv2d(F.pad(s, (0, 0, pad, pad), mode="replicate"), ky, dilation=(d, 1))
        details.append(c - s)
        c = s
    return torch.cat(details, dim=1)


class ResBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3, plus the input."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class WindowMSA(nn.Module):
    """Multi-head self-attention inside non-overlapping ``M x M`` windows (eq. 13-14), channels-last input."""

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        if dim % num_heads:
            raise InputError(f"EMSR: channels {dim} are not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.window_size = window_size
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C), H and W multiples of M
        b, h, w, c = x.shape
        m = self.window_size
        win = x.reshape(b, h // m, m, w // m, m, c).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, m * m, c)
        nw = win.shape[1]
        qkv = self.qkv(win).reshape(b, nw, m * m, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # (B, nW, heads, N, d)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(2, 3).reshape(b, nw, m * m, c))
        out = out.reshape(b, h // m, w // m, m, m, c).permute(0, 1, 3, 2, 4, 5)
        return out.reshape(b, h, w, c)


class ViTBlock(nn.Module):
    """``X' = W-MSA(LN(X)) + X``, ``X'' = FFN(LN(X')) + X'`` (eq. 12); the FFN is two linear layers with ReLU."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float = 2.0):
        super().__init__()
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowMSA(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        t = x.permute(0, 2, 3, 1)
        t = t + self.attn(self.norm1(t))
        t = t + self.ffn(self.norm2(t))
        return t.permute(0, 3, 1, 2)


class BasicBlock(nn.Module):
    """One basic block of the edge-attention module (Fig. 3)."""

    def __init__(self, ch: int, res_blocks: int, deep_blocks: int, num_heads: int, window_size: int,
                 mlp_ratio: float, scales: int):
        super().__init__()
        self.scales = scales
        self.body = nn.Sequential(*[ResBlock(ch) for _ in range(res_blocks)])
        self.deep = nn.Sequential(*[ResBlock(ch) for _ in range(deep_blocks)])
        # lower path: the image reconstructed in the LR space
        self.to_image = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, 1, 3, padding=1))
        # multi-scale edges of that image and of the input: concatenated, filtered, then attention maps
        self.edge_filter = nn.Sequential(nn.Conv2d(2 * scales, ch, 3, padding=1), nn.ReLU())
        self.attention = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 1),
                                       nn.Sigmoid())
        self.vit = ViTBlock(ch, num_heads, window_size, mlp_ratio)
        self.out = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, feat: torch.Tensor, image_edges: torch.Tensor) -> torch.Tensor:
        """``image_edges``: :func:`atrous_wavelet` of the input image (the same for every block)."""
        f = self.body(feat)
        deep = self.deep(f)
        rec = self.to_image(f)
        edges = torch.cat([atrous_wavelet(rec, self.scales), image_edges], dim=1)
        maps = self.attention(self.edge_filter(edges))
        x = deep + deep * maps
        return feat + self.out(self.vit(x))


class EMSR(nn.Module):
    """EMSR network (Khateri et al., 2024): edge attention, window self-attention, pixel-shuffle output.

    Args:
        in_channels (int): channels of the input and output image.
        channels (int): feature channels ``C`` (constant through the network).
        blocks (int): basic blocks ``k`` of the edge-attention module.
        res_blocks (int): residual blocks ``m`` at the start of each basic block.
        deep_blocks (int): residual blocks ``n`` of the upper (deep-feature) path.
        num_heads (int): heads of the window self-attention.
        window_size (int): side ``M`` of the attention windows.
        mlp_ratio (float): hidden width of the ViT block's feed-forward relative to ``C``.
        edge_scales (int): scales of the a-trous wavelet edges (paper: 3).
        scale (int): up-sampling factor of the pixel-shuffle reconstruction; 1 for inputs already on the
            output grid.
        residual (bool): with ``scale=1``: return ``x + body(x)``, the last convolution initialised to zero;
            with ``scale > 1``: add the cubic up-sampling of the input.

    Shapes:
        ``(B, in_channels, H, W) -> (B, in_channels, scale * H, scale * W)`` for any ``H, W >= 1`` (padded
        internally to a multiple of ``M`` and cropped back).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 24,
        blocks: int = 2,
        res_blocks: int = 2,
        deep_blocks: int = 1,
        num_heads: int = 2,
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        edge_scales: int = 3,
        scale: int = 1,
        residual: bool = True,
    ):
        super().__init__()
        if min(in_channels, channels, window_size, num_heads, edge_scales, scale) < 1 or blocks < 1:
            raise InputError("EMSR: in_channels, channels, blocks, num_heads, window_size, edge_scales and scale "
                             "must be positive")
        if res_blocks < 0 or deep_blocks < 0:
            raise InputError("EMSR: res_blocks and deep_blocks must be >= 0")
        self.in_channels = in_channels
        self.scale = int(scale)
        self.residual = residual
        self.window_size = window_size
        self.edge_scales = edge_scales
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            BasicBlock(channels, res_blocks, deep_blocks, num_heads, window_size, mlp_ratio, edge_scales)
            for _ in range(blocks)
        )
        self.body_out = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsample = nn.Sequential(
            nn.Conv2d(channels, channels * self.scale**2, 3, padding=1), nn.PixelShuffle(self.scale)
        ) if self.scale > 1 else nn.Identity()
        self.mapper = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.tail = nn.Conv2d(channels, in_channels, 3, padding=1)
        if residual:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    @property
    def pad_multiple(self) -> int:
        """H and W are padded internally to a multiple of this."""
        return self.window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels)
        xp, h, w = pad_to_multiple(x, self.pad_multiple)
        image_edges = atrous_wavelet(xp.mean(dim=1, keepdim=True), self.edge_scales)
        shallow = self.head(xp)
        feat = shallow
        for block in self.blocks:
            feat = block(feat, image_edges)
        feat = self.body_out(feat) + shallow
        out = self.tail(self.mapper(self.upsample(feat)))
        out = crop(out, h * self.scale, w * self.scale)
        if not self.residual:
            return out
        if self.scale == 1:
            return x + out
        up = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return up + out
