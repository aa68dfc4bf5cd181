"""Input: which image layer, its voxel size, the anisotropy factor F and the measured anisotropy.

The widget shows an :class:`~napari_emsr.plugin.state.InputParameters` and writes the user's edits to it; the
panel reacts to the parameters' events, never to this widget's controls.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QWidget

from napari_emsr.plugin.state import InputParameters


def _spin(
    value: float = 1.0, decimals: int = 2, maximum: float = 1e5, minimum: float = 1e-2
) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(minimum, maximum)
    box.setValue(value)
    box.setKeyboardTracking(False)
    # NOTE: never narrower than its longest value ("99999.99"): a squeezed box clipped "50.00" to "50.0(".
    box.setMinimumWidth(box.sizeHint().width())
    return box


class InputWidget(QGroupBox):
    """Layer picker, voxel size (z, y, x) and factor F = z spacing / x spacing (editable; it sets z spacing).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose image layers are offered.
    params : InputParameters
        What the widget shows and edits.
    """

    def __init__(self, viewer: Any, params: InputParameters, parent: QWidget | None = None):
        super().__init__("Input", parent)
        self._viewer = viewer
        self.params = params
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The anisotropic 3D image layer to train on and reconstruct")
        self.spacing_boxes = [_spin() for _ in range(3)]
        for box, axis in zip(self.spacing_boxes, "zyx"):
            box.setToolTip(f"Voxel size along {axis}")
        self.unit_label = QLabel(params.unit)
        self.factor_box = _spin(1.0, decimals=3, maximum=100.0, minimum=1.0)
        self.factor_box.setToolTip("F = z spacing / lateral spacing; editing it sets the z spacing")
        self.anisotropy_label = QLabel("-")
        self.anisotropy_label.setToolTip(
            "Measured anisotropy of the input (ratio of lateral to axial high-frequency content)"
        )

        spacing_row = QHBoxLayout()
        for box in self.spacing_boxes:
            spacing_row.addWidget(box)
        spacing_row.addWidget(self.unit_label)
        form = QFormLayout(self)
        form.addRow("Layer", self.layer_combo)
        form.addRow("Voxel (z, y, x)", spacing_row)
        factor_row = QHBoxLayout()
        factor_row.addWidget(self.factor_box)
        factor_row.addWidget(QLabel("anisotropy"))
        factor_row.addWidget(self.anisotropy_label, 1)
        form.addRow("Factor F", factor_row)

        self._show_spacing(params.spacing)
        self.layer_combo.currentIndexChanged.connect(self._on_layer_picked)
        for axis, box in enumerate(self.spacing_boxes):
            box.valueChanged.connect(partial(self._on_spacing_edited, axis))
        self.factor_box.valueChanged.connect(params.set_factor)
        params.events.layer.connect(self._show_layer)
        params.events.spacing.connect(self._show_spacing)
        params.events.unit.connect(lambda unit: self.unit_label.setText(str(unit)))
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # -- layers ---------------------------------------------------------------------------------------
    def _image_layers(self) -> list:
        """The image layers one can train on and reconstruct: not the panel's own isotropic results (xz, yz,
        fused planes, their uncertainty; F = 1: picking one after its stack was deleted ended in a factor
        mismatch) nor the preview planes. A paired method's xy result is still a stack of sections: listed."""
        from napari.layers import Image

        from napari_emsr.plugin.controllers.preview import PREVIEW_LAYER
        from napari_emsr.plugin.lazy_layer import RestoredPlanes

        return [layer for layer in self._viewer.layers if isinstance(layer, Image)
                and not (isinstance(layer.data, RestoredPlanes) and layer.data.axis)
                and not layer.name.startswith(PREVIEW_LAYER)]

    def _refresh_layers(self, event: Any = None) -> None:
        try:
            current = self.layer_combo.currentText()
        except RuntimeError:  # the panel was closed while the viewer lives on
            self._disconnect()
            return
        names = []
        for layer in self._image_layers():
            names.append(layer.name)
            # NOTE: reconnecting is harmless; napari's EmitterGroup ignores a callback connected twice.
            layer.events.name.connect(self._refresh_layers)
        if names == [self.layer_combo.itemText(i) for i in range(self.layer_combo.count())]:
            return
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        if self.layer_combo.currentText() != current or not names:
            self._on_layer_picked()

    def _disconnect(self) -> None:
        events = self._viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.disconnect(self._refresh_layers)
        for layer in self._viewer.layers:
            layer.events.name.disconnect(self._refresh_layers)

    def current_layer(self) -> Any:
        """The picked image layer, or None."""
        name = self.params.layer
        if name and name in self._viewer.layers:
            return self._viewer.layers[name]
        return None

    def set_layer(self, layer: Any) -> None:
        """Pick ``layer`` (an image layer of the viewer, or its name)."""
        self._refresh_layers()
        self.layer_combo.setCurrentText(getattr(layer, "name", layer))

    def _on_layer_picked(self, index: int | None = None) -> None:
        self.params.layer = self.layer_combo.currentText() or None

    def _show_layer(self, name: str | None) -> None:
        self._refresh_layers()
        if name and self.layer_combo.currentText() != name:
            self.layer_combo.setCurrentText(name)

    # -- geometry -------------------------------------------------------------------------------------
    def _show_spacing(self, spacing: tuple[float, float, float]) -> None:
        for box, value in zip(self.spacing_boxes, spacing):
            box.blockSignals(True)
            box.setValue(float(value))
            box.blockSignals(False)
        self.factor_box.blockSignals(True)
        self.factor_box.setValue(max(1.0, self.params.factor))
        self.factor_box.blockSignals(False)

    def _on_spacing_edited(self, axis: int, value: float) -> None:
        # NOTE: the edited axis alone: the other boxes show their values rounded (a 0.004 µm pixel reads 0.01), and
        # the voxel size becomes the layer's scale
        spacing = list(self.params.spacing)
        spacing[axis] = float(value)
        self.params.spacing = tuple(spacing)  # type: ignore[assignment]

    def set_anisotropy(self, text: str, detail: str = "") -> None:
        """Show the measured anisotropy (or a short note such as "measuring...") and its details as tooltip."""
        self.anisotropy_label.setText(text)
        if detail:
            self.anisotropy_label.setToolTip(detail)
