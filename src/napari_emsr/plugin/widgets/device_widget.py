"""Device picker: "auto" and the devices that exist here (GPU name and memory shown)."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QComboBox, QFormLayout, QWidget

from napari_emsr.plugin.state import TrainingParameters

AUTO_LABEL = "auto (best available)"


class DeviceWidget(QWidget):
    """A drop-down of devices bound to ``params.device``; filled by :meth:`set_devices` (one form row, shown in
    the method's box).

    Parameters
    ----------
    params : TrainingParameters
        Its ``device`` is shown and edited here (training and reconstruction both run there).
    """

    def __init__(self, params: TrainingParameters, parent: QWidget | None = None):
        super().__init__(parent)
        self.params = params
        self.device_combo = QComboBox()
        self.device_combo.addItem(AUTO_LABEL, "auto")
        self.device_combo.setToolTip("Where training and reconstruction run")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Device", self.device_combo)
        self._show_device(params.device)
        self.device_combo.currentIndexChanged.connect(self._on_picked)
        params.events.device.connect(self._show_device)

    def set_devices(self, devices: list[tuple[str, str]]) -> None:
        """Offer ``devices``, a list of (id, label) as :func:`napari_emsr.device.list_devices` gives (a worker
        makes the list: it needs torch)."""
        blocked = self.device_combo.blockSignals(True)
        self.device_combo.clear()
        self.device_combo.addItem(AUTO_LABEL, "auto")
        for device_id, label in devices:
            self.device_combo.addItem(label, device_id)
        self.device_combo.blockSignals(blocked)
        self._show_device(self.params.device)

    def _show_device(self, device: str, *_: Any) -> None:
        index = self.device_combo.findData(device)
        blocked = self.device_combo.blockSignals(True)
        if index < 0:
            self.device_combo.addItem(device, device)
            index = self.device_combo.count() - 1
        self.device_combo.setCurrentIndex(index)
        self.device_combo.blockSignals(blocked)

    def _on_picked(self, index: int) -> None:
        self.params.device = str(self.device_combo.currentData() or "auto")
