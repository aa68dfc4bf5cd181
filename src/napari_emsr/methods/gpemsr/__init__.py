"""The large-factor method with a generative texture prior (GPEMSR, Shou et al., CVPR 2024): :mod:`.prior` holds
its stages and pair-maker; its model is applied as an isotropic one (:mod:`napari_emsr.methods.isotropic.apply`).
Its network, ``gpemsr``, is :class:`napari_emsr.nets.vqgan_arch.GPRestorer`."""

from __future__ import annotations

from ...nets import register_net
from .. import register_method
from .prior import GPEMSR

register_net(
    "gpemsr", "napari_emsr.nets.vqgan_arch", "GPRestorer",
    "GPEMSR's restorer (Shou et al.): carries a frozen codebook prior (indexer, codebook, decoder) and fuses the "
    "decoded reference into its features at every scale through a learned similarity mask (method gpemsr).",
)
register_method(GPEMSR, replace=True)
