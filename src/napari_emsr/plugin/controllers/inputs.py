"""The input: the picked layer, its voxel size (and the file's, when napari dropped it), its anisotropy, and the
sample offered while the viewer holds no image."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from napari_emsr.errors import EMSRError
from napari_emsr.plugin.host import Host
from napari_emsr.plugin.layers import AXIS_LABELS, layer_spacing
from napari_emsr.plugin.widgets.scale_offer_widget import ScaleOffer
from napari_emsr.plugin.workers.tasks import anisotropy_task

logger = logging.getLogger(__name__)

#: The npe2 sample the panel offers when the viewer has no image: (plugin, key).
SAMPLE = ("napari-emsr", "medulla_anisotropic")


def file_voxel_size(path: str) -> tuple[tuple[float, float, float], str] | None:
    """The voxel size a volume file states (``((z, y, x), unit)``), or None when it states none (or is no
    volume napari-emsr reads). Only the file's header is read."""
    from napari_emsr.io import open_volume

    try:
        volume = open_volume(path)
    except EMSRError:
        return None
    if volume.spacing is None:
        return None
    return tuple(float(s) for s in volume.spacing), str(volume.unit)


class InputController:
    """Follows the picked layer: its voxel size, its anisotropy (in a worker), the file's voxel size when the
    layer has none, and the sample offer.

    The panel's voxel size and the layer's scale are kept the same both ways (the restored layers are placed by
    the panel's, so they overlay the input only then): a scale changed in napari becomes the panel's voxel size,
    and a voxel size (or F) edited in the panel becomes the layer's scale.

    Parameters
    ----------
    host : Host
        The panel.
    input_widget : InputWidget
        The Input box.
    method_widget : MethodWidget
        Its profile note says which profile "auto" stands for.
    sample_button : QPushButton
        "Open the sample stack".
    """

    def __init__(self, host: Host, input_widget: Any, method_widget: Any, sample_button: Any):
        self.host = host
        self.input = input_widget
        self.method = method_widget
        self.sample_button = sample_button
        self.following = False
        self.pushing = False
        self.watched: Any = None  # the layer whose scale the panel follows
        self.request = 0
        self.running: set = set()
        self.offer = ScaleOffer()
        self.offered: tuple | None = None  # (layer name, spacing, unit)
        self._scale_request = 0
        input_widget.layout().addRow(self.offer)
        self.offer.button.clicked.connect(self.use_file_voxel_size)
        sample_button.clicked.connect(self.open_sample)

    # ------------------------------------------------------------------------------------ the picked layer
    def layer_changed(self, *_: Any) -> None:
        from napari.utils.notifications import show_warning

        host = self.host
        layer = host.current_layer()
        host.runtime.anisotropy = None
        self.input.set_anisotropy("-")
        self.check_file_voxel_size(layer)
        self._watch(layer)
        if layer is None:
            host.set_status("Open a 3D stack (File > Open) or File > Open Sample > napari-emsr.")
            return
        if layer.ndim == 3 and all(str(label).lstrip("-").isdigit() for label in layer.axis_labels):
            # NOTE: napari's default labels ("-3", "-2", "-1") would name the rolled axis "-2": z is the stack's
            # anisotropic axis, so call them what they are.
            layer.axis_labels = AXIS_LABELS
        spacing, unit = layer_spacing(layer)
        self.following = True
        try:
            host.input_params.unit = unit
            host.input_params.spacing = spacing
        finally:
            self.following = False
        try:
            host.current_volume()
        except EMSRError as err:
            host.set_status(str(err))
            show_warning(str(err))
            return
        host.set_status(f"Input: {layer.name} {tuple(layer.data.shape)}, factor {host.input_params.factor:.2f}")
        self.measure_anisotropy()

    def spacing_changed(self, *_: Any) -> None:
        if not self.following:
            self._push_scale()
            self.measure_anisotropy()

    def close(self) -> None:
        """Follow no layer's scale any more (the panel closes)."""
        self._watch(None)

    def _watch(self, layer: Any) -> None:
        """Follow ``layer``'s scale (and no other layer's)."""
        if self.watched is layer:
            return
        if self.watched is not None:
            try:
                self.watched.events.scale.disconnect(self._on_layer_scale)
            except (RuntimeError, TypeError, ValueError):
                pass
        self.watched = layer
        if layer is not None:
            layer.events.scale.connect(self._on_layer_scale)

    def _on_layer_scale(self, *_: Any) -> None:
        """The picked layer's scale changed in napari: the panel's voxel size follows it."""
        layer = self.host.current_layer()
        if self.pushing or layer is None or layer is not self.watched:
            return
        spacing, unit = layer_spacing(layer)
        if tuple(spacing) == tuple(self.host.input_params.spacing):
            return
        self.following = True
        try:
            self.host.input_params.unit = unit
            self.host.input_params.spacing = spacing
        finally:
            self.following = False
        z, y, x = spacing
        self.host.set_status(f"Voxel size from {layer.name}'s scale: z {z:g}, y {y:g}, x {x:g} {unit} "
                             f"(factor {self.host.input_params.factor:.2f})")
        self.measure_anisotropy()

    def _push_scale(self) -> None:
        """The panel's voxel size was edited: the picked layer's scale follows, so what is restored overlays it."""
        layer = self.host.current_layer()
        if layer is None or layer is not self.watched or getattr(layer, "ndim", 0) < 3:
            return
        spacing = tuple(float(s) for s in self.host.input_params.spacing)
        scale = [float(s) for s in layer.scale]
        if tuple(scale[-3:]) == spacing:
            return
        scale[-3:] = spacing
        self.pushing = True
        try:
            layer.scale = scale
            if (layer.metadata or {}).get("spacing"):
                layer.metadata = {**layer.metadata, "spacing": spacing}
        finally:
            self.pushing = False
        z, y, x = spacing
        self.host.set_status(f"{layer.name}'s scale is now z {z:g}, y {y:g}, x {x:g}, the voxel size given here, "
                             "so the restored layers overlay it")

    def measure_anisotropy(self) -> Any:
        """Measure the input's anisotropy (and the section profile "auto" stands for) in a worker."""
        host = self.host
        try:
            volume = host.current_volume()
        except EMSRError:
            return None
        self.request += 1
        request = self.request
        self.input.set_anisotropy("measuring...")
        self.method.set_auto_note("profile", None)
        self.running.add(request)
        return host.start(
            anisotropy_task, volume, host.input_params.factor,
            connect={"returned": partial(self._on_anisotropy, request),
                     "errored": partial(self._on_anisotropy_error, request),
                     "finished": lambda: self.running.discard(request)},
        )

    def _on_anisotropy(self, request: int, result: dict) -> None:
        if request != self.request:
            return
        self.host.runtime.anisotropy = dict(result) if isinstance(result, dict) else None
        ratio = result.get("ratio") if isinstance(result, dict) else None
        text = f"{ratio:.2f}" if isinstance(ratio, (int, float)) else "-"
        detail = ", ".join(f"{k} {v:.3g}" for k, v in result.items() if isinstance(v, float) and k != "ratio")
        self.input.set_anisotropy(text, detail)
        profile = result.get("profile") if isinstance(result, dict) else None
        if profile:
            self.method.set_auto_note("profile", profile.get("label", profile["profile"]), profile.get("note", ""))

    def _on_anisotropy_error(self, request: int, err: BaseException) -> None:
        if request == self.request:
            self.input.set_anisotropy("n/a")
            logger.info("anisotropy not measured: %s", err)

    # ------------------------------------------------------------------------------------ the file's voxel size
    def check_file_voxel_size(self, layer: Any) -> Any:
        """When ``layer``'s scale is 1, 1, 1 and its file states a voxel size, offer it (read in a worker)."""
        self._scale_request += 1
        self.offered = None
        self.offer.setVisible(False)
        path = getattr(getattr(layer, "source", None), "path", None)
        if layer is None or not path or getattr(layer, "ndim", 0) != 3:
            return None
        if any(float(s) != 1.0 for s in layer.scale) or (layer.metadata or {}).get("spacing"):
            return None
        request = self._scale_request
        return self.host.start(file_voxel_size, str(path),
                               connect={"returned": partial(self._on_file_voxel_size, request, layer.name),
                                        "errored": lambda err: logger.info("voxel size not read: %s", err)})

    def _on_file_voxel_size(self, request: int, name: str, found: Any) -> None:
        if request != self._scale_request or found is None or name != self.host.input_params.layer:
            return
        spacing, unit = found
        if all(s == 1.0 for s in spacing):
            return
        z, y, x = spacing
        lateral = f"xy {y:g} {unit}" if y == x else f"y {y:g} {unit}, x {x:g} {unit}"
        self.offered = (name, spacing, unit)
        self.offer.label.setText(f"This layer's scale is 1, 1, 1 but the file says z {z:g} {unit}, {lateral}: "
                                 "use the file's?")
        self.offer.setVisible(True)

    def use_file_voxel_size(self) -> None:
        """Give the layer the voxel size its file states (its scale, and the panel's voxel size)."""
        host = self.host
        if self.offered is None or self.offered[0] not in host.viewer.layers:
            return
        name, spacing, unit = self.offered
        layer = host.viewer.layers[name]
        layer.scale = spacing
        layer.units = (unit,) * 3 if unit in ("nm", "um", "µm", "mm", "m") else layer.units
        layer.metadata = {**(layer.metadata or {}), "spacing": tuple(spacing), "unit": unit}
        self.offered = None
        self.offer.setVisible(False)
        self.layer_changed()
        host.viewer.reset_view()

    # ------------------------------------------------------------------------------------ the sample
    def update_sample_offer(self, *_: Any) -> None:
        """Offer the sample stack while the viewer holds no image layer."""
        from napari.layers import Image

        self.sample_button.setVisible(not any(isinstance(layer, Image) for layer in self.host.viewer.layers))

    def open_sample(self) -> None:
        """Open napari-emsr's anisotropic sample through its npe2 sample contribution, and pick it."""
        viewer = self.host.viewer
        before = set(viewer.layers)
        viewer.open_sample(*SAMPLE)
        added = [layer for layer in viewer.layers if layer not in before]
        if added:
            self.input.set_layer(added[0])
