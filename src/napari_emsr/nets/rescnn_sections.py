"""The residual CNN on the section grid (:mod:`napari_emsr.nets.section_grid`): ``rescnn-sections``.

The trunk is :class:`~napari_emsr.nets.rescnn_arch.ResCNN` at the sections' own resolution (no pixel-unshuffle:
halving the section grid along z as well costs more quality than it saves; ``benchmarks/bench_degradation.py
--net rescnn-sections`` compares), with ``ceil(F)`` output channels.
"""

from __future__ import annotations

from napari_emsr.nets import rescnn_arch
from napari_emsr.nets.section_grid import GRID, SectionGrid, sub_rows, trunk_kwargs

__all__ = ["GRID", "SIZES", "ResCNNSections"]

#: Named sizes: the trunk's constructor arguments.
SIZES: dict[str, dict] = {
    "tiny": {"channels": 8, "blocks": 1, "scale_levels": 0},
    "small": {"channels": 32, "blocks": 8, "scale_levels": 0},
    "base": {"channels": 48, "blocks": 12, "scale_levels": 0},
}


class ResCNNSections(SectionGrid):
    """The residual CNN as a section-grid network.

    Args:
        factor (float): the section spacing F in output rows.
        **trunk: :class:`~napari_emsr.nets.rescnn_arch.ResCNN` arguments (channels, blocks, scale_levels); the
            defaults are those of size ``small``.
    """

    def __init__(self, factor: float, **trunk):
        kwargs = trunk_kwargs(SIZES, "small", trunk)
        super().__init__(rescnn_arch.ResCNN(in_channels=1, out_channels=sub_rows(factor), residual=False, **kwargs),
                         factor)
