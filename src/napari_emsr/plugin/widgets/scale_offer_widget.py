"""The offer of a file's voxel size for a layer napari opened without one."""

from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget


class ScaleOffer(QWidget):
    """"This layer's scale is 1, 1, 1 but the file says ...: use the file's" (hidden when there is nothing to say)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.button = QPushButton("Use the file's")
        self.button.setToolTip("Set the layer's scale (and the voxel size here) to the voxel size its file states")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.label, 1)
        row.addWidget(self.button)
        self.setVisible(False)
