"""GPEMSR's generative texture prior (Shou et al., "Learning Large-Factor EM Image Super-Resolution with
Generative Priors"): a VQGAN of lateral planes, a latent indexer, and the restorer that fuses the prior.

Stage I, :class:`VQGAN`: an encoder (residual blocks and strided convolutions, ``log2(p)`` halvings, self-attention
at the latent level), a :class:`VectorQuantizer` (a codebook of ``v`` vectors of ``d`` numbers, nearest-vector
look-up with straight-through gradients, codebook and commitment losses), a decoder (residual blocks and
upsampling) that also returns its features at every scale; a :class:`PatchDiscriminator` (trained with the
logistic loss and R1, by the method's stage runner).

Stage II, :class:`Indexer`: from a degraded (interpolated) plane to logits over the codebook at each latent
position, trained with cross-entropy on the indices stage I's encoder gives the original plane.

Stage III, :class:`GPRestorer` (registered as the network ``gpemsr``): carries a frozen copy of the indexer, the
codebook, the decoder and the encoder's first level (its feature embedding). For an interpolated plane it predicts
the codes, decodes a reference plane and multi-scale reference features, learns a mask from the patch-wise cosine
similarity of the embedded input and reference (three convolutions, a sigmoid; the paper embeds with a pretrained
VGG19, here with the codebook's own encoder, trained on this very volume), and fuses reference and input features
coarse to fine (multi-scale prior fusion, the paper's eq. 4). Its output is ``x + body``, the body's last
convolution initialised to zero (an untrained restorer is the identity). The frozen parts are copied in by
:meth:`GPRestorer.set_prior` after stages I and II; a saved restorer's state holds them (and their sizes, in the
buffer ``prior_spec``), so a model file applies on its own.

Prior presets (:data:`PRIORS`): ``large`` is the paper's (v = 1024, d = 512, p = 16); ``small`` and ``tiny`` fit
a CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_emsr.errors import InputError
from napari_emsr.nets._common import check_input, crop, pad_to_multiple

__all__ = ["PRIORS", "SIZES", "VQGAN", "VectorQuantizer", "Indexer", "PatchDiscriminator", "GPRestorer"]

#: Prior presets: codebook size ``codes`` (v), code dimension ``dim`` (d), compression patch ``patch`` (p, a power
#: of two), encoder/decoder widths (``width`` at full resolution, doubling per halving up to ``max_width``) and
#: whether the latent level has self-attention.
PRIORS: dict[str, dict] = {
    "tiny": {"codes": 32, "dim": 16, "patch": 4, "width": 8, "max_width": 16, "attention": 0},
    "small": {"codes": 256, "dim": 64, "patch": 8, "width": 16, "max_width": 64, "attention": 1},
    "large": {"codes": 1024, "dim": 512, "patch": 16, "width": 64, "max_width": 256, "attention": 1},
}
_SPEC_KEYS = ("codes", "dim", "patch", "width", "max_width", "attention")

#: Restorer sizes (the network ``gpemsr``): constructor keyword arguments.
SIZES: dict[str, dict] = {"tiny": {"width": 8}, "small": {"width": 24}, "base": {"width": 64}}


def prior_spec(prior: str | dict) -> dict:
    """The preset called ``prior``, or a dict of its keys, checked."""
    if isinstance(prior, str):
        if prior not in PRIORS:
            raise InputError(f"unknown prior size {prior!r}: choose one of {', '.join(PRIORS)}")
        return dict(PRIORS[prior])
    spec = {k: int(prior[k]) for k in _SPEC_KEYS}
    if spec["patch"] < 2 or spec["patch"] & (spec["patch"] - 1):
        raise InputError(f"the compression patch p must be a power of two of at least 2, got {spec['patch']}")
    return spec


def _levels(spec: dict) -> int:
    return int(round(math.log2(spec["patch"])))


def _widths(spec: dict) -> list[int]:
    """Channels at each level, 0 = full resolution ... L = latent resolution."""
    return [min(spec["width"] * 2**i, spec["max_width"]) for i in range(_levels(spec) + 1)]


def _norm(c: int) -> nn.Module:
    return nn.GroupNorm(1, c)


class ResBlock(nn.Module):
    """norm - SiLU - conv3x3, twice, plus the input (a 1x1 convolution when the width changes)."""

    def __init__(self, c_in: int, c_out: int | None = None):
        super().__init__()
        c_out = c_out or c_in
        self.n1, self.c1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.n2, self.c2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x):
        h = self.c1(F.silu(self.n1(x)))
        return self.skip(x) + self.c2(F.silu(self.n2(h)))


class Attention(nn.Module):
    """Single-head self-attention over all positions (used at the latent resolution only)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


class Encoder(nn.Module):
    """Plane (B, 1, H, W) -> latent (B, d, H/p, W/p); :meth:`embed` gives the first level's features."""

    def __init__(self, spec: dict, out: int | None = None):
        super().__init__()
        ws = _widths(spec)
        self.conv_in = nn.Conv2d(1, ws[0], 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(ws[i]) for i in range(len(ws) - 1))
        self.downs = nn.ModuleList(nn.Conv2d(ws[i], ws[i + 1], 4, stride=2, padding=1) for i in range(len(ws) - 1))
        self.mid = ResBlock(ws[-1])
        self.attn = Attention(ws[-1]) if spec["attention"] else nn.Identity()
        self.conv_out = nn.Sequential(_norm(ws[-1]), nn.SiLU(), nn.Conv2d(ws[-1], out or spec["dim"], 1))

    def embed(self, x):
        """Features at full resolution (the first level), (B, width, H, W)."""
        h = self.conv_in(x)
        return self.blocks[0](h) if len(self.blocks) else h

    def forward(self, x):
        h = self.conv_in(x)
        for block, down in zip(self.blocks, self.downs):
            h = down(block(h))
        return self.conv_out(self.attn(self.mid(h)))


class VectorQuantizer(nn.Module):
    """Nearest-codebook-vector quantisation with straight-through gradients (paper eqs. 1, 2 and 5).

    ``forward(z)`` returns ``(z_q, indices, codebook_loss, commitment_loss)``: ``z_q`` equals the nearest code
    vectors in value, while its gradient passes unchanged to ``z`` (``z + sg[z_q - z]``); the codebook loss
    ``|sg[z] - z_q|^2`` moves the codes, the commitment loss ``|z - sg[z_q]|^2`` the encoder.
    """

    def __init__(self, codes: int, dim: int):
        super().__init__()
        self.codebook = nn.Embedding(codes, dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / codes, 1.0 / codes)

    def indices(self, z):
        """Index of the nearest code vector at each position, (B, h, w)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        e = self.codebook.weight
        dist = (flat * flat).sum(1, keepdim=True) - 2 * flat @ e.t() + (e * e).sum(1)[None]
        return dist.argmin(1).reshape(b, h, w)

    def lookup(self, idx):
        """Code vectors of indices (B, h, w) as a latent (B, d, h, w)."""
        return self.codebook(idx).permute(0, 3, 1, 2)

    def forward(self, z):
        idx = self.indices(z.detach())
        zq = self.lookup(idx)
        codebook = F.mse_loss(zq, z.detach())
        commitment = F.mse_loss(z, zq.detach())
        return z + (zq - z).detach(), idx, codebook, commitment


class Decoder(nn.Module):
    """Latent (B, d, H/p, W/p) -> plane (B, 1, H, W) and its features at every scale, coarse to fine."""

    def __init__(self, spec: dict):
        super().__init__()
        ws = _widths(spec)
        self.widths = ws[::-1]  # feature widths, coarse to fine
        self.conv_in = nn.Conv2d(spec["dim"], ws[-1], 3, padding=1)
        self.mid = ResBlock(ws[-1])
        self.attn = Attention(ws[-1]) if spec["attention"] else nn.Identity()
        self.ups = nn.ModuleList(nn.Conv2d(ws[i + 1], ws[i], 3, padding=1) for i in reversed(range(len(ws) - 1)))
        self.blocks = nn.ModuleList(ResBlock(ws[i]) for i in reversed(range(len(ws) - 1)))
        self.conv_out = nn.Sequential(_norm(ws[0]), nn.SiLU(), nn.Conv2d(ws[0], 1, 3, padding=1))

    def forward(self, zq):
        h = self.attn(self.mid(self.conv_in(zq)))
        feats = [h]
        for up, block in zip(self.ups, self.blocks):
            h = block(up(F.interpolate(h, scale_factor=2.0, mode="nearest")))
            feats.append(h)
        return self.conv_out(h), feats


class VQGAN(nn.Module):
    """Stage I's generator: encoder, vector quantiser, decoder (the discriminator is separate)."""

    def __init__(self, prior: str | dict = "small"):
        super().__init__()
        self.spec = prior_spec(prior)
        self.encoder = Encoder(self.spec)
        self.quantizer = VectorQuantizer(self.spec["codes"], self.spec["dim"])
        self.decoder = Decoder(self.spec)

    def forward(self, x):
        """``(reconstruction, indices, codebook_loss, commitment_loss)`` of planes whose sides are multiples of p."""
        zq, idx, cb, cm = self.quantizer(self.encoder(x))
        rec, _ = self.decoder(zq)
        return rec, idx, cb, cm

    @torch.no_grad()
    def code(self, x):
        """The code indices of planes (B, 1, H, W), H and W multiples of p: stage II's targets."""
        return self.quantizer.indices(self.encoder(x))


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al.): a map of real/fake logits over overlapping patches."""

    def __init__(self, width: int = 32):
        super().__init__()
        c = width
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, 2, 1), _norm(2 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 4 * c, 3, 1, 1), _norm(4 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * c, 1, 3, 1, 1),
        )

    def forward(self, x):
        return self.net(x)


class Indexer(nn.Module):
    """Stage II: degraded plane (B, 1, H, W) -> logits over the codebook (B, v, H/p, W/p)."""

    def __init__(self, prior: str | dict = "small"):
        super().__init__()
        spec = prior_spec(prior)
        self.body = Encoder(spec, out=_widths(spec)[-1])
        self.head = nn.Sequential(nn.SiLU(), nn.Conv2d(_widths(spec)[-1], spec["codes"], 1))

    def forward(self, x):
        return self.head(self.body(x))


class _Prior(nn.Module):
    """The frozen parts stage III carries: indexer, codebook, decoder and the encoder's embedding."""

    def __init__(self, spec: dict):
        super().__init__()
        self.indexer = Indexer(spec)
        self.quantizer = VectorQuantizer(spec["codes"], spec["dim"])
        self.decoder = Decoder(spec)
        self.encoder = Encoder(spec)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        """Reference plane and its multi-scale features (coarse to fine) for interpolated planes ``x``."""
        zq = self.quantizer.lookup(self.indexer(x).argmax(1))
        return self.decoder(zq)


class GPRestorer(nn.Module):
    """Stage III: restore an interpolated plane with multi-scale prior fusion (MPF, paper eq. 4).

    Args:
        width: channels of the restorer's own features at every scale.
        prior: the prior preset the network is built with (replaced by the one its weights hold on loading).
        in_channels: 1 (one plane).
        residual: returns ``x + body(x)``; the last convolution starts at zero.
    """

    def __init__(self, width: int = 24, prior: str | dict = "small", in_channels: int = 1, residual: bool = True):
        super().__init__()
        if in_channels != 1:
            raise InputError("the gpemsr restorer takes one plane (in_channels=1)")
        self.width, self.residual = int(width), bool(residual)
        self._build(prior_spec(prior))

    def _build(self, spec: dict) -> None:
        w = self.width
        self.spec = spec
        self.register_buffer("prior_spec", torch.tensor([spec[k] for k in _SPEC_KEYS], dtype=torch.long))
        self.prior = _Prior(spec)
        ref_w = self.prior.decoder.widths
        n = len(ref_w)
        self.head = nn.Conv2d(1, w, 3, padding=1)
        self.downs = nn.ModuleList(nn.Conv2d(w, w, 4, stride=2, padding=1) for _ in range(n - 1))
        # R_F (fusion of input, reference and coarser features) and R_D (mixing) at each level, coarse to fine
        self.fuse = nn.ModuleList(nn.Conv2d(w + rw + (w if i else 0), w, 3, padding=1) for i, rw in enumerate(ref_w))
        self.mix = nn.ModuleList(nn.Conv2d(2 * w + (w if i else 0), w, 3, padding=1) for i in range(n))
        self.mask = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(16, 1, 3, padding=1))
        self.tail = nn.Conv2d(w, 1, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    # -------------------------------------------------------------- the prior
    def set_prior(self, vqgan: VQGAN, indexer: Indexer) -> None:
        """Copy stage I's codebook, decoder and encoder and stage II's indexer into the frozen prior (rebuilt
        for their preset; the restorer's own layers are rebuilt too when the preset changes)."""
        device = self.tail.weight.device
        if vqgan.spec != self.spec:
            self._build(vqgan.spec)
        self.prior.indexer.load_state_dict(indexer.state_dict())
        self.prior.quantizer.load_state_dict(vqgan.quantizer.state_dict())
        self.prior.decoder.load_state_dict(vqgan.decoder.state_dict())
        self.prior.encoder.load_state_dict(vqgan.encoder.state_dict())
        self.to(device)
        self.prior.eval()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load weights; a state made with another prior preset (``prior_spec``) rebuilds the network first."""
        spec = state_dict.get("prior_spec")
        if spec is not None and spec.numel() == len(_SPEC_KEYS):
            given = prior_spec(dict(zip(_SPEC_KEYS, (int(v) for v in spec.tolist()))))
            if given != self.spec:
                device = self.tail.weight.device
                self._build(given)
                self.to(device)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def train(self, mode: bool = True):
        super().train(mode)
        self.prior.eval()  # frozen: no dropout or statistics to update, ever
        return self

    # ---------------------------------------------------------------- forward
    def reference(self, x):
        """The decoded reference plane of interpolated planes ``x`` (sides multiples of p)."""
        with torch.no_grad():
            return self.prior(x)[0]

    def similarity_mask(self, x, ref):
        """Mask in [0, 1] at full resolution from the patch-wise (p x p) cosine similarity of the embedded input
        and reference."""
        p = self.spec["patch"]
        with torch.no_grad():
            ex, er = self.prior.encoder.embed(x), self.prior.encoder.embed(ref)
            b, c, h, w = ex.shape
            ux = F.unfold(ex, p, stride=p)  # (B, c p p, patches)
            ur = F.unfold(er, p, stride=p)
            cs = F.cosine_similarity(ux, ur, dim=1, eps=1e-6).reshape(b, 1, h // p, w // p)
        return torch.sigmoid(self.mask(cs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, 1)
        p = self.spec["patch"]
        xp, h, w = pad_to_multiple(x, p)
        xf = xp.float()
        with torch.no_grad():
            ref, ref_feats = self.prior(xf)
        mask = self.similarity_mask(xf, ref)
        # the input's features at every scale, fine to coarse, then used coarse to fine
        f = F.leaky_relu(self.head(xp), 0.1)
        lr_feats = [f]
        for down in self.downs:
            f = F.leaky_relu(down(f), 0.1)
            lr_feats.append(f)
        lr_feats = lr_feats[::-1]
        h_prev = None
        for i, (lr_f, ref_f) in enumerate(zip(lr_feats, ref_feats)):
            m = F.interpolate(mask, size=lr_f.shape[-2:], mode="bilinear", align_corners=False)
            up = [] if h_prev is None else [F.interpolate(h_prev, scale_factor=2.0, mode="nearest")]
            fused = F.leaky_relu(self.fuse[i](torch.cat([lr_f, ref_f.to(lr_f.dtype), *up], 1)), 0.1) * m
            h_prev = F.leaky_relu(self.mix[i](torch.cat([fused, lr_f, *up], 1)), 0.1)
        out = self.tail(h_prev)
        out = xp + out if self.residual else out
        return crop(out, h, w)
