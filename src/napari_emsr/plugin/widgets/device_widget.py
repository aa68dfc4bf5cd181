"""Device picker: "auto" and the devices that exist here (GPU name and memory shown)."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QWidget


class DeviceWidget(QGroupBox):
    """A drop-down of devices; filled by :meth:`set_devices` (the list needs torch, so a worker makes it)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Device", parent)
        self.device_combo = QComboBox()
        self.device_combo.addItem("auto (best available)", "auto")
        self.device_combo.setToolTip("Where training and reconstruction run")
        form = QFormLayout(self)
        form.addRow("Device", self.device_combo)

    def set_devices(self, devices: list[tuple[str, str]]) -> None:
        """Offer ``devices``, a list of (id, label) as :func:`napari_emsr.device.list_devices` gives."""
        current = self.device()
        self.device_combo.clear()
        self.device_combo.addItem("auto (best available)", "auto")
        for device_id, label in devices:
            self.device_combo.addItem(label, device_id)
        index = self.device_combo.findData(current)
        self.device_combo.setCurrentIndex(max(index, 0))

    def set_device(self, device: str) -> None:
        """Pick ``device`` by id; it is added if the list does not hold it yet."""
        index = self.device_combo.findData(device)
        if index < 0:
            self.device_combo.addItem(device, device)
            index = self.device_combo.count() - 1
        self.device_combo.setCurrentIndex(index)

    def device(self) -> str:
        """The picked device id ("auto", "cpu", "cuda:0", "mps")."""
        return str(self.device_combo.currentData() or "auto")
