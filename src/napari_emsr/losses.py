"""Losses by name: L1 and L1 + the projected distribution loss (PDL, Delbracio et al. 2020) of A2I-3DEM
(Khateri et al.); a method's own loss registers itself (:func:`register_loss`) from its folder.

Importing this module does not import torch (the losses import it when called).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _sorted_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1D Wasserstein-1 distance between the value distributions of a and b, per sample (B, N) -> mean."""
    import torch

    return (torch.sort(a, dim=-1).values - torch.sort(b, dim=-1).values).abs().mean()


def projected_distribution_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PDL on the image and its two first differences (three fixed projections).

    For each image and each projection, the distribution of the projected values over the image is
    compared with the target's by the 1D Wasserstein distance (L1 between sorted values). It penalises
    a restored image whose contrast or edge statistics drift from the real lateral planes, without
    tying them pixel by pixel.
    """
    import torch

    b = pred.shape[0]
    terms = [_sorted_l1(pred.reshape(b, -1), target.reshape(b, -1))]
    for dim in (-1, -2):
        dp = torch.diff(pred, dim=dim).reshape(b, -1)
        dt = torch.diff(target, dim=dim).reshape(b, -1)
        terms.append(_sorted_l1(dp, dt))
    return sum(terms) / len(terms)


def l1_pdl_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """A2I-3DEM's loss (Khateri et al.): L1 + alpha * PDL (alpha = 0.01 in the paper)."""
    import torch.nn.functional as F

    pred = pred.float()
    target = target.float()
    loss = F.l1_loss(pred, target)
    if alpha:
        loss = loss + alpha * projected_distribution_loss(pred, target)
    return loss


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Plain L1 in float32."""
    import torch.nn.functional as F

    return F.l1_loss(pred.float(), target.float())


#: name -> loss ``fn(pred, target, **kwargs)``.
LOSSES: dict[str, Callable] = {"l1_pdl": l1_pdl_loss, "l1": l1_loss}


def register_loss(name: str, fn: Callable) -> Callable:
    """Add a loss to :data:`LOSSES` (a method's folder registers its own); returns ``fn``."""
    LOSSES[name] = fn
    return fn


def get_loss(name: str) -> Callable:
    """The loss called ``name``; InputError listing the known ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise InputError(f"unknown loss {name!r}: known losses are {', '.join(LOSSES)}") from None
