"""The work a restoring network does per output voxel, counted by torch (``torch.utils.flop_counter``).

A multiply-add counts as 2 FLOPs. The figure is per output pixel of one plane; a fused reconstruction restores
every voxel twice (its xz and its yz plane), so it costs twice that per output voxel. Importing this module imports
torch.
"""

from __future__ import annotations

import torch
import torch.utils.flop_counter

from . import build_net, grid_of, net_names, net_sizes

__all__ = ["flops_per_pixel", "flops_table"]

#: The plane counted: the rows (before scaling by F) and columns of a typical chunk's plane.
SECTIONS = 32
COLUMNS = 256


def flops_per_pixel(net: torch.nn.Module, factor: float, sections: int = SECTIONS, columns: int = COLUMNS) -> float:
    """FLOPs per output pixel of ``net`` restoring one plane of ``sections`` sections at spacing ``factor``."""
    rows = int(round((sections - 1) * float(factor))) + 1
    x = torch.zeros(1, 1, rows, columns)
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode(), torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
            net(x)
    finally:
        if was_training:
            net.train()
    return counter.get_total_flops() / float(rows * columns)


def flops_table(factors=(4, 8, 12), names=None) -> list[dict]:
    """``{"net", "size", "grid", "factor", "flops_per_pixel"}`` for every registered network and size at each
    factor (the networks that restore planes from the interpolated stack: the method-specific ones whose
    construction needs more than a size are left out)."""
    rows = []
    for name in names or net_names():
        for size in net_sizes(name):
            for f in factors:
                kwargs = {"factor": float(f)} if grid_of(name) == "sections" else {}
                try:
                    net = build_net(name, size=size, **kwargs)
                except Exception:  # NOTE: a network this table cannot build alone (a method's own)
                    break
                rows.append({"net": name, "size": size, "grid": grid_of(name), "factor": f,
                             "flops_per_pixel": flops_per_pixel(net, f)})
    return rows
