"""The dock panel's former module: :class:`napari_emsr.plugin.panel.EMSRWidget` is the panel (kept importable
here for scripts written against this name)."""

from napari_emsr.plugin.controllers.preview import PREVIEW_CUBIC_LAYER, PREVIEW_LAYER
from napari_emsr.plugin.controllers.tasks import NEXT_STEP
from napari_emsr.plugin.panel import EMSRWidget

__all__ = ["EMSRWidget", "NEXT_STEP", "PREVIEW_CUBIC_LAYER", "PREVIEW_LAYER"]
