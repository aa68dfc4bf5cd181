"""Losses: L1 and the projected distribution loss (PDL, Delbracio et al. 2020) of paper 000."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _sorted_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1D Wasserstein-1 distance between the value distributions of a and b, per sample (B, N) -> mean."""
    return (torch.sort(a, dim=-1).values - torch.sort(b, dim=-1).values).abs().mean()


def projected_distribution_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PDL on the image and its two first differences (three fixed projections).

    For each image and each projection, the distribution of the projected values over the image is
    compared with the target's by the 1D Wasserstein distance (L1 between sorted values). It penalises
    a restored image whose contrast or edge statistics drift from the real lateral planes, without
    tying them pixel by pixel.
    """
    b = pred.shape[0]
    terms = [_sorted_l1(pred.reshape(b, -1), target.reshape(b, -1))]
    for dim in (-1, -2):
        dp = torch.diff(pred, dim=dim).reshape(b, -1)
        dt = torch.diff(target, dim=dim).reshape(b, -1)
        terms.append(_sorted_l1(dp, dt))
    return sum(terms) / len(terms)


def l1_pdl_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """Paper 000's loss: L1 + alpha * PDL (alpha = 0.01 in the paper)."""
    pred = pred.float()
    target = target.float()
    loss = F.l1_loss(pred, target)
    if alpha:
        loss = loss + alpha * projected_distribution_loss(pred, target)
    return loss


LOSSES = {"l1_pdl": l1_pdl_loss, "l1": lambda p, t: F.l1_loss(p.float(), t.float())}
