"""Compare: the input, its cubic interpolation and the restored volume side by side in napari's grid, or
cubic and restored flipped in one view, at the same plane and zoom."""

from __future__ import annotations

from functools import partial
from typing import Any

from napari_emsr.errors import EMSRError, InputError
from napari_emsr.plugin.host import Host
from napari_emsr.plugin.layers import paging_order, reconstruction_layer_kwargs
from napari_emsr.plugin.lazy_layer import RestoredPlanes, cubic_region
from napari_emsr.plugin.state import PLANE_LABELS
from napari_emsr.plugin.workers.tasks import compare_task

#: What the canvas calls the three cells of a comparison, left to right (short: a cell is a third of the canvas).
#: The baseline the comparison shows beside the result: cubic interpolation (a method of the registry).
BASELINE = "cubic"
CELL_LABELS = ("input", BASELINE, "restored")


def canvas_text(viewer: Any) -> Any:
    """napari's text overlay of the canvas."""
    return viewer.canvas.overlays["text"]


class CompareController:
    """Side by side and Flip.

    Parameters
    ----------
    host : Host
        The panel.
    blocks : BlockPump
        Adds a missing restored or cubic layer.
    """

    def __init__(self, host: Host, blocks: Any):
        self.host = host
        self.blocks = blocks
        #: True while the comparison itself moves, shows or hides layers (its own changes end nothing).
        self.arranging = False
        self.watched: list = []
        viewer = host.viewer
        # NOTE: the canvas label names the grid's cells: once the grid or the layers change it names the wrong
        # ones (and covers the layers' own names), so it goes.
        grid = getattr(getattr(viewer, "canvas", None), "grid", None) or viewer.grid  # napari >= 0.9: the canvas's
        for event in (grid.events.enabled, grid.events.shape, grid.events.stride,
                      viewer.layers.events.inserted, viewer.layers.events.removed, viewer.layers.events.moved):
            event.connect(self.end)

    def restored_for(self, layer: Any, planes: str) -> Any:
        """The restored layer of ``layer`` made for ``planes`` (or the fused one), or None."""
        layers = self.host.viewer.layers
        for candidate in (planes, "fuse"):
            name = f"{layer.name} {PLANE_LABELS[candidate]}"
            if name in layers and isinstance(layers[name].data, RestoredPlanes):
                return layers[name]
        return None

    def cubic_for(self, layer: Any) -> Any:
        layers = self.host.viewer.layers
        name = f"{layer.name} cubic"
        found = layers[name] if name in layers else None
        return found if found is not None and isinstance(found.data, RestoredPlanes) else None

    def side_by_side(self, planes: str = "xz") -> Any:
        """Show the input, its cubic interpolation and the restored volume side by side in napari's grid.

        The three share napari's dims and camera, so they show the same plane at the same zoom; the canvas says
        which cell is which (``input | cubic | restored``), and the current plane. The view is rolled to
        ``planes`` (those the restoration is made for). A missing restored or cubic layer is made first (lazily,
        in a worker).

        Returns
        -------
        worker or None
            The worker that builds missing layers (None when none was needed, or on an error).
        """
        host = self.host
        try:
            layer = host.current_layer()
            volume = host.current_volume()
            restored = self.restored_for(layer, planes)
            model = host.model_or_method() if restored is None else None
        except EMSRError as err:
            host.report_error(err, "comparing")
            return None
        jobs = []
        if restored is None:
            jobs.append((model, planes, PLANE_LABELS[planes]))
        if self.cubic_for(layer) is None:
            jobs.append((BASELINE, "xz", BASELINE))
        if not jobs:
            self.arrange(layer, planes)
            return None
        factor = float(model.factor) if model is not None and not isinstance(model, str) else host.input_params.factor
        host.set_status("Preparing the comparison...")
        return host.start(
            compare_task, volume, jobs, host.params.device,
            connect={"returned": partial(self._on_ready, layer, volume, factor, planes),
                     "errored": lambda err: host.report_error(err, what="comparing")},
        )

    def _on_ready(self, layer: Any, volume: Any, factor: float, planes: str, results: list) -> None:
        host, viewer = self.host, self.host.viewer
        if layer not in viewer.layers:
            return
        viewer.dims.ndisplay = 2
        viewer.dims.order = paging_order(viewer.dims.ndim, planes)
        interpolate = cubic_region(volume.data, factor)
        for label, made_for, array, out_spacing in results:
            name = f"{layer.name} {label}"
            kwargs = reconstruction_layer_kwargs(
                layer, volume, out_spacing, name=name, spacing=host.input_params.spacing,
                unit=host.input_params.unit, metadata={"planes": made_for, "input": layer.name},
            )
            data = RestoredPlanes(array, made_for, interpolate, label)
            added = self.blocks.add(name, data, kwargs, tell=label != BASELINE)
            if label != BASELINE:
                host.runtime.reconstructed_layers = [*host.runtime.reconstructed_layers, added]
        self.arrange(layer, planes)

    def arrange(self, layer: Any, planes: str) -> None:
        host = self.host
        cubic, restored = self.cubic_for(layer), self.restored_for(layer, planes)
        if cubic is None or restored is None:
            return
        self.arranging = True
        try:
            self._arrange(layer, cubic, restored, planes)
        finally:
            self.arranging = False
        self.watch((layer, cubic, restored))
        host.set_status(
            f"Side by side: {layer.name} | cubic | {restored.name}, same {planes} plane and zoom; page through "
            f"{'y' if planes == 'xz' else 'x'} with the slider. Flip cubic / restored compares them in one view."
        )

    def _arrange(self, layer: Any, cubic: Any, restored: Any, planes: str) -> None:
        host, viewer = self.host, self.host.viewer
        trio = (layer, cubic, restored)
        viewer.dims.ndisplay = 2
        viewer.dims.order = paging_order(viewer.dims.ndim, planes)
        self.blocks.hidden_in_3d = []
        for other in viewer.layers:
            other.visible = other in trio
        # NOTE: napari's grid fills its cells in layer-list order (hidden layers take none): moved to the end in
        # this order, they read input | cubic | restored from left to right.
        for member in trio:
            viewer.layers.move(viewer.layers.index(member), len(viewer.layers))
        viewer.grid.stride = 1
        viewer.grid.shape = (1, 3)
        viewer.grid.enabled = True
        # NOTE: a layer's name overlay is cut to the width of its cell, and the three names share the input's
        # (long) name: the canvas says which cell is which in three short words instead.
        for member in trio:
            member.name_overlay.visible = False
        self.say_cells(" | ".join(CELL_LABELS))
        viewer.canvas.overlays["current_slice"].visible = True
        viewer.fit_to_view(layers=[layer])
        host.runtime.comparing = trio

    def watch(self, trio: tuple) -> None:
        """End the comparison when one of its layers is shown or hidden by anything but the comparison."""
        self.unwatch()
        for member in trio:
            member.events.visible.connect(self.end)
        self.watched = list(trio)

    def unwatch(self) -> None:
        for member in self.watched:
            try:
                member.events.visible.disconnect(self.end)
            except (RuntimeError, TypeError, ValueError):
                pass
        self.watched = []

    def end(self, *_: Any) -> None:
        """The grid or the layers changed: the canvas label (which names the cells) goes, the comparison ends."""
        if self.arranging or self.host.runtime.comparing is None:
            return
        self.unwatch()
        overlay = canvas_text(self.host.viewer)
        if overlay.text in (" | ".join(CELL_LABELS), *CELL_LABELS):
            overlay.visible = False
            overlay.text = ""
        self.host.runtime.comparing = None

    def say_cells(self, text: str) -> None:
        """Write which cell (or view) is which at the top of the canvas."""
        overlay = canvas_text(self.host.viewer)
        overlay.text = text
        overlay.position = "top_center"
        overlay.font_size = 10
        overlay.visible = True

    def labels(self) -> str:
        """What the canvas says about the compared views now ("" when nothing is compared)."""
        overlay = canvas_text(self.host.viewer)
        return overlay.text if overlay.visible and self.host.runtime.comparing is not None else ""

    def flip(self) -> None:
        """Swap cubic and restored in one view (napari's grid off), at the same plane."""
        self.arranging = True
        try:
            trio = self._flip()
        finally:
            self.arranging = False
        if trio is not None:
            self.watch(trio)

    def _flip(self) -> tuple | None:
        host, viewer = self.host, self.host.viewer
        trio = host.runtime.comparing
        if trio is None or any(member not in viewer.layers for member in trio):
            layer = host.current_layer()
            cubic = self.cubic_for(layer) if layer is not None else None
            restored = None
            if layer is not None:
                restored = self.restored_for(layer, "xz") or self.restored_for(layer, "yz")
            if cubic is None or restored is None:
                host.report_error(InputError("nothing to flip yet: press Side by side first"), "comparing")
                return None
            trio = (layer, cubic, restored)
            host.runtime.comparing = trio
        layer, cubic, restored = trio
        viewer.grid.enabled = False
        show_cubic = restored.visible or not cubic.visible
        layer.visible = False
        cubic.visible, restored.visible = show_cubic, not show_cubic
        for member in (cubic, restored):
            member.name_overlay.visible = True
        shown = cubic if show_cubic else restored
        self.say_cells(CELL_LABELS[1] if show_cubic else CELL_LABELS[2])
        viewer.fit_to_view(layers=[shown])
        host.set_status(f"Showing {shown.name} (Flip again for {(restored if show_cubic else cubic).name}).")
        return trio
