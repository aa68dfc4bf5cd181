"""The paired method: LR/HR super-resolution of xy planes (EMSR, Khateri et al. 2024; AEANet, Xie et al.).

- :mod:`.pairs`: the pair-maker (registered real pairs, or synthetic recipes I and II) and the noisier-copy loss;
- :mod:`.registration`: where the HR field lies in the LR field;
- :mod:`.apply`: how the model is applied (every xy plane of an LR volume made finer, lazily, or enhanced);
- its networks (``emsr``, ``aeanet``) and loss (``noisier_l1``) register here.

Its panel piece is :mod:`napari_emsr.plugin.flows.paired` (the flow of the ``lateral`` application).
Importing this package does not import torch.
"""

from __future__ import annotations

from ...losses import register_loss
from ...nets import register_net
from .. import Method, Option, register_method
from .apply import LATERAL
from .pairs import (
           LOSS,
           as_stack,
           check_pair,
           lr_source,
           noisier_copy_loss,
           open_image,
           pair_factor,
           paired_pairs,
           release_lr_source,
           training_inputs,
)

__all__ = ["PAIRED", "as_stack", "check_pair", "lr_source", "open_image", "pair_factor", "release_lr_source",
           "training_inputs"]

register_net(
    "emsr", "napari_emsr.nets.emsr_arch", "EMSR",
    "EMSR (Khateri et al.): residual blocks with a-trous wavelet edge attention and a window-attention ViT block; "
    "pixel-shuffle output (scale 1 on interpolated inputs).",
)
register_net(
    "aeanet", "napari_emsr.nets.aeanet_arch", "AEANet",
    "AEANet (Xie et al.): U-Net of depth 3 whose bottleneck attention has learnable shared references "
    "(batch-aware in training); linear in the number of pixels.",
)
register_loss(LOSS, noisier_copy_loss)

PAIRED = Method(
    name="paired",
    description="paired LR/HR super-resolution of xy planes (EMSR, Khateri et al.; AEANet, Xie et al.): learn from "
    "an LR and an HR image of the same region (or the HR alone, degraded by recipe I or II), then make every xy plane "
    "of an LR volume s times finer, or enhance images at the same resolution",
    pairs=paired_pairs,
    # NOTE: the residual CNN is the default on the CPU: benchmarks/bench_paired.py measures its held-out gain over
    # bicubic and its time against EMSR's network (--net emsr, Khateri et al.).
    net="rescnn",
    size="small",
    loss=LOSS,
    order=3,
    defaults={"batch_cuda": 32},
    application=LATERAL,
    inputs=training_inputs,
    options=(
        Option("lr_image", "", label="LR image",
               help="the LR image or stack of the HR's region (a file; the trainer's input is the HR). Not given: "
               "LR patches are made from the HR by --recipe"),
        Option("recipe", "auto", choices=("auto", "I", "II"), label="Recipe",
               help="how LR training inputs are made: auto (the LR image when given, else II), I (bicubic "
               "down-sampling of the HR), II (random blur and noise before and after bicubic down-sampling, "
               "as in EMSR, Khateri et al.)",
               descriptions={"auto": "the registered LR image when one is given, else recipe II",
                             "I": "bicubic down-sampling of the HR (EMSR's synthetic I)",
                             "II": "random Gaussian blur and noise, bicubic down-sampling, noise (synthetic II)"}),
        Option("noisier", "on", choices=("on", "off"), label="Noisier copy",
               help="train the shared network on the LR input and a noisier copy of it, with the loss "
               "l1(f(y), x) + l1(f(y'), x) + l1(f(y), f(y')) (EMSR, Khateri et al.); off: l1(f(y), x)"),
    ),
)

register_method(PAIRED, replace=True)
