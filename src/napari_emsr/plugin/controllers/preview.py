"""The live training preview: one plane three times (the input's, its cubic interpolation and its restoration),
placed beside the input while training runs, and removed when it ends."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from napari_emsr.plugin.layers import preview_layer_kwargs

PREVIEW_LAYER = "emsr preview"
PREVIEW_CUBIC_LAYER = "emsr preview cubic"
PREVIEW_INPUT_LAYER = "emsr preview input"
#: The preview's layers, left to right.
PREVIEW_LAYERS = (PREVIEW_INPUT_LAYER, PREVIEW_CUBIC_LAYER, PREVIEW_LAYER)


def stretched_plane(volume: Any, index: int, factor: float, rows: int) -> np.ndarray:
    """The input's xz plane at y = ``index``, each section repeated over the output rows nearest to it (``rows``
    rows, output row r lies at section r / F): the sections as they are, on the preview's grid."""
    sections = np.asarray(volume.data[:, int(index), :])
    nearest = np.clip(np.rint(np.arange(rows) / float(factor)).astype(int), 0, sections.shape[0] - 1)
    return sections[nearest].astype(np.float32)


class PreviewController:
    """Shows the preview planes the training worker sends, beside the input, and removes them afterwards.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    """

    def __init__(self, viewer: Any):
        self.viewer = viewer
        self.anchor: tuple[Any, float] | None = None
        self.input_plane: np.ndarray | None = None
        self.text = ""
        self.index: int | None = None

    def begin(self, anchor: tuple[Any, float] | None, input_plane: np.ndarray | None, text: str,
              index: int | None = None) -> None:
        """A training starts: where its planes go, the input's own plane (None: none), what the canvas says."""
        self.anchor, self.input_plane, self.text, self.index = anchor, input_plane, text, index

    def show(self, preview: np.ndarray, cubic: np.ndarray | None) -> None:
        """Show the restored preview plane (and, the first time, its cubic interpolation and the input's plane)."""
        if self.anchor is None:
            return
        layer, lateral = self.anchor
        if layer not in self.viewer.layers:
            return
        planes = [(PREVIEW_CUBIC_LAYER, cubic), (PREVIEW_LAYER, preview)]
        if self.input_plane is not None:
            planes.insert(0, (PREVIEW_INPUT_LAYER, self.input_plane))
        for slot, (name, data) in enumerate(planes):
            if data is None:
                continue
            if name in self.viewer.layers:
                self.viewer.layers[name].data = data
            else:
                kwargs = preview_layer_kwargs(layer, lateral, preview.shape[-1], slot, name)
                if self.index is not None:
                    kwargs["metadata"] = {**kwargs["metadata"], "y": int(self.index)}
                self.viewer.add_image(data, **kwargs)
                self.label(True)

    def label(self, on: bool) -> None:
        """Say on the canvas which grey panel is which while the preview planes are shown."""
        overlay = self.viewer.text_overlay
        if on:
            overlay.text = self.text
            overlay.position = "top_center"
            overlay.font_size = 10
        if on or (self.text and overlay.text == self.text):
            overlay.visible = on

    def end(self) -> None:
        """Remove the preview planes (they would widen the view's extent and sit beside the results) and fit the
        camera to what stays."""
        removed = [name for name in PREVIEW_LAYERS if name in self.viewer.layers]
        # NOTE: in one batch: napari's canvas collects garbage after each removal outside a batch (0.3-0.6 s each
        # once torch is loaded: the GUI froze 1.4-1.7 s for the three planes), once after a batch
        batch = getattr(self.viewer.layers, "batched_update", contextlib.nullcontext)
        with batch():
            for name in removed:
                self.viewer.layers.remove(name)
        self.label(False)
        self.input_plane = None
        if removed:
            self.viewer.reset_view()
