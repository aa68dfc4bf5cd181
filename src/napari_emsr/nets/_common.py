"""Helpers shared by the networks (torch only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_emsr.errors import InputError


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Pad the last two axes of ``x`` at the bottom/right up to a multiple of ``multiple``.

    Mirror padding (``reflect``) is used as far as the image allows; what is left (images smaller
    than the padding) is filled by repeating the edge. Returns the padded tensor and the original
    height and width, for :func:`crop`.
    """
    h, w = x.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return x, h, w
    rh = min(ph, h - 1)
    rw = min(pw, w - 1)
    if rh > 0 or rw > 0:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if ph - rh > 0 or pw - rw > 0:
        x = F.pad(x, (0, pw - rw, 0, ph - rh), mode="replicate")
    return x, h, w


def crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`."""
    if x.shape[-2] == h and x.shape[-1] == w:
        return x
    return x[..., :h, :w]


def check_input(x: torch.Tensor, in_channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise InputError(
            f"expected a (B, {in_channels}, H, W) tensor, got shape {tuple(x.shape)}"
        )
