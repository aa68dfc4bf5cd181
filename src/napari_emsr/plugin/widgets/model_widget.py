"""Save and load the trained model (one file: weights and a JSON config, read without unpickling)."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFileDialog, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

MODEL_FILTER = "napari-emsr model (*.pt *.emsr);;All files (*)"


class ModelWidget(QGroupBox):
    """Save model / Load model buttons and a line that describes the current model.

    Signals
    -------
    save_requested(str), load_requested(str)
        A path was picked in the file dialog.
    """

    save_requested = Signal(str)
    load_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Model", parent)
        self.save_button = QPushButton("Save model...")
        self.load_button = QPushButton("Load model...")
        self.info_label = QLabel("no model yet")  # not shown: its text is the box's title
        row = QHBoxLayout()
        row.addWidget(self.save_button)
        row.addWidget(self.load_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        self.save_button.clicked.connect(self._ask_save)
        self.load_button.clicked.connect(self._ask_load)
        self.set_has_model(False)

    def set_has_model(self, has_model: bool) -> None:
        """Enable Save only when there is a model."""
        self.save_button.setEnabled(has_model)

    def set_info(self, text: str) -> None:
        """Describe the current model (in the box's title: one line less in the panel)."""
        self.info_label.setText(text)
        self.setTitle(f"Model: {text}")

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save napari-emsr model", "emsr_model.pt", MODEL_FILTER)
        if path:
            self.save_requested.emit(path)

    def _ask_load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load napari-emsr model", "", MODEL_FILTER)
        if path:
            self.load_requested.emit(path)
