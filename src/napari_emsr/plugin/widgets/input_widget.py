"""Input: which image layer, its voxel size, the anisotropy factor F and the measured anisotropy."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QWidget


def _spin(
    value: float = 1.0, decimals: int = 3, maximum: float = 1e6, minimum: float = 1e-3
) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(minimum, maximum)
    box.setValue(value)
    box.setKeyboardTracking(False)
    return box


class InputWidget(QGroupBox):
    """Layer picker, voxel size (z, y, x) and factor F = z spacing / x spacing (editable; it sets z spacing).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose image layers are offered.

    Signals
    -------
    layer_changed(object)
        The picked layer (or None).
    geometry_changed()
        Voxel size or factor edited.
    """

    layer_changed = Signal(object)
    geometry_changed = Signal()

    def __init__(self, viewer: Any, parent: QWidget | None = None):
        super().__init__("Input", parent)
        self._viewer = viewer
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The anisotropic 3D image layer to train on and reconstruct")
        self.spacing_boxes = [_spin() for _ in range(3)]
        for box, axis in zip(self.spacing_boxes, "zyx"):
            box.setToolTip(f"Voxel size along {axis}")
        self.unit_label = QLabel("nm")
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
        form.addRow("Factor F", self.factor_box)
        form.addRow("Anisotropy", self.anisotropy_label)

        self.layer_combo.currentIndexChanged.connect(self._on_layer_picked)
        for box in self.spacing_boxes:
            box.valueChanged.connect(self._on_spacing_edited)
        self.factor_box.valueChanged.connect(self._on_factor_edited)
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # -- layers ---------------------------------------------------------------------------------------
    def _image_layers(self) -> list:
        from napari.layers import Image

        return [layer for layer in self._viewer.layers if isinstance(layer, Image)]

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
        name = self.layer_combo.currentText()
        if name and name in self._viewer.layers:
            return self._viewer.layers[name]
        return None

    def set_layer(self, layer: Any) -> None:
        """Pick ``layer`` (an image layer of the viewer, or its name)."""
        self._refresh_layers()
        self.layer_combo.setCurrentText(getattr(layer, "name", layer))

    def _on_layer_picked(self, index: int | None = None) -> None:
        layer = self.current_layer()
        if layer is not None:
            spacing, unit = layer_spacing(layer)
            self._set_spacing(spacing)
            self.unit_label.setText(unit)
        self.anisotropy_label.setText("-")
        self.layer_changed.emit(layer)

    # -- geometry -------------------------------------------------------------------------------------
    def _set_spacing(self, spacing: tuple[float, float, float]) -> None:
        for box, value in zip(self.spacing_boxes, spacing):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self._update_factor()

    def _update_factor(self) -> None:
        self.factor_box.blockSignals(True)
        self.factor_box.setValue(max(1.0, self.factor()))
        self.factor_box.blockSignals(False)

    def _on_spacing_edited(self, value: float) -> None:
        self._update_factor()
        self.geometry_changed.emit()

    def _on_factor_edited(self, value: float) -> None:
        z_box = self.spacing_boxes[0]
        z_box.blockSignals(True)
        z_box.setValue(value * self.spacing_boxes[2].value())
        z_box.blockSignals(False)
        self.geometry_changed.emit()

    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (z, y, x) as shown in the fields."""
        return tuple(box.value() for box in self.spacing_boxes)  # type: ignore[return-value]

    def unit(self) -> str:
        """The unit of the voxel size."""
        return self.unit_label.text()

    def factor(self) -> float:
        """F = z spacing / x spacing."""
        z, _, x = self.spacing()
        return z / x if x > 0 else 1.0

    def set_anisotropy(self, text: str) -> None:
        """Show the measured anisotropy (or a short note such as "measuring...")."""
        self.anisotropy_label.setText(text)


def layer_spacing(layer: Any) -> tuple[tuple[float, float, float], str]:
    """Voxel size (z, y, x) and unit of an image layer: its metadata's spacing, else its scale.

    Parameters
    ----------
    layer : napari.layers.Image
        The layer.

    Returns
    -------
    tuple
        ``((z, y, x), unit)``; layers with fewer than 3 dimensions get ones in front.
    """
    meta = layer.metadata or {}
    scale = tuple(float(s) for s in layer.scale)
    spacing = meta.get("spacing") or scale
    spacing = tuple(float(s) for s in spacing)[-3:]
    # NOTE: the scale wins when the user changed it in napari after opening.
    if len(scale) >= 3 and tuple(scale[-3:]) != tuple(spacing) and any(s != 1.0 for s in scale):
        spacing = scale[-3:]
    spacing = (1.0,) * (3 - len(spacing)) + tuple(spacing)
    unit = meta.get("unit")
    if not unit:
        units = getattr(layer, "units", None)
        unit = str(units[-1]) if units else "nm"
        unit = {"nanometer": "nm", "micrometer": "µm", "pixel": "px"}.get(unit, unit)
    return spacing, unit  # type: ignore[return-value]
