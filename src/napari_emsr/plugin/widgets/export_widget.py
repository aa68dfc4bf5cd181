"""Export the isotropic volume to OME-Zarr or TIFF in the background, with progress and cancel."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

EXPORT_FILTER = "OME-Zarr (*.ome.zarr *.zarr);;TIFF (*.tif *.tiff)"
PLANE_CHOICES = (("fused (xz + yz)", "fuse"), ("xz-restored", "xz"), ("yz-restored", "yz"))


class ExportWidget(QGroupBox):
    """Which reconstruction to export, an Export button (asks for a path), a progress bar and Cancel.

    Signals
    -------
    export_requested(str, str)
        Path and planes (``"fuse"``, ``"xz"`` or ``"yz"``).
    cancel_requested()
        Cancel was pressed.
    """

    export_requested = Signal(str, str)
    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Export", parent)
        self.planes_combo = QComboBox()
        for label, planes in PLANE_CHOICES:
            self.planes_combo.addItem(label, planes)
        self.export_button = QPushButton("Export...")
        self.export_button.setToolTip("Write the whole isotropic volume, chunk by chunk, to OME-Zarr or TIFF")
        self.cancel_button = QPushButton("Cancel")
        self.progress_bar = QProgressBar()
        self.progress_bar.setValue(0)
        row = QHBoxLayout()
        row.addWidget(self.planes_combo)
        row.addWidget(self.export_button)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.progress_bar)
        self.export_button.clicked.connect(self._ask_path)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.set_running(False)

    def planes(self) -> str:
        """The picked reconstruction."""
        return str(self.planes_combo.currentData())

    def set_running(self, running: bool) -> None:
        """Swap the Export and Cancel buttons' enabled states."""
        self.export_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def set_progress(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` chunks."""
        self.progress_bar.setRange(0, max(int(total), 1))
        self.progress_bar.setValue(int(done))

    def _ask_path(self) -> None:
        path, chosen = QFileDialog.getSaveFileName(
            self, "Export isotropic volume", "isotropic.ome.zarr", EXPORT_FILTER
        )
        if path:
            if "TIFF" in chosen and not path.lower().endswith((".tif", ".tiff")):
                path += ".tif"
            elif "Zarr" in chosen and not path.lower().endswith((".zarr", ".tif", ".tiff")):
                path += ".ome.zarr"
            self.export_requested.emit(path, self.planes())
