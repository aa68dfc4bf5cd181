"""The U-shaped window-attention network (A2I-3DEM, Khateri et al.) on the section grid
(:mod:`napari_emsr.nets.section_grid`): ``uformer-sections``.

The trunk is :class:`~napari_emsr.nets.uformer_arch.UFormer` on the section rows, with ``ceil(F)`` output channels.
"""

from __future__ import annotations

from napari_emsr.nets import uformer_arch
from napari_emsr.nets.section_grid import GRID, SectionGrid, sub_rows, trunk_kwargs

__all__ = ["GRID", "SIZES", "UFormerSections"]

#: Named sizes: the trunk's constructor arguments (those of the output-grid network).
SIZES: dict[str, dict] = {name: dict(kwargs) for name, kwargs in uformer_arch.SIZES.items()}


class UFormerSections(SectionGrid):
    """The U-shaped attention network as a section-grid network.

    Args:
        factor (float): the section spacing F in output rows.
        **trunk: :class:`~napari_emsr.nets.uformer_arch.UFormer` arguments; the defaults are those of size
            ``small``.
    """

    def __init__(self, factor: float, **trunk):
        kwargs = trunk_kwargs(SIZES, "small", trunk)
        super().__init__(uformer_arch.UFormer(in_channels=1, out_channels=sub_rows(factor), residual=False,
                                              **kwargs), factor)
