"""Export the isotropic volume to OME-Zarr or TIFF in the background, with progress and cancel."""

from __future__ import annotations

from typing import Any

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

from napari_emsr.plugin.state import ExportStatus, ReconstructParameters

EXPORT_FILTER = "OME-Zarr (*.ome.zarr *.zarr);;TIFF (*.tif *.tiff)"
PLANE_CHOICES = (("fused (xz + yz)", "fuse"), ("xz-restored", "xz"), ("yz-restored", "yz"))


class ExportWidget(QGroupBox):
    """Which reconstruction to export, an Export button (asks for a path), a progress bar and Cancel.

    Parameters
    ----------
    params : ReconstructParameters
        Its ``export_planes`` is shown and edited here.
    status : ExportStatus
        Drives the progress bar and which button is enabled.

    Signals
    -------
    export_requested(str)
        The path picked in the file dialog.
    cancel_requested()
        Cancel was pressed.
    """

    export_requested = Signal(str)
    cancel_requested = Signal()

    def __init__(self, params: ReconstructParameters, status: ExportStatus, parent: QWidget | None = None):
        super().__init__("Export", parent)
        self.params = params
        self.status = status
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
        self._show_planes(params.export_planes)
        self.planes_combo.currentIndexChanged.connect(
            lambda _: setattr(params, "export_planes", str(self.planes_combo.currentData()))
        )
        params.events.export_planes.connect(self._show_planes)
        self.export_button.clicked.connect(self._ask_path)
        self.cancel_button.clicked.connect(self.cancel_requested)
        status.events.state.connect(self._show_state)
        status.events.done.connect(self._show_progress)
        status.events.total.connect(self._show_progress)
        self._show_state()

    def _show_planes(self, planes: str, *_: Any) -> None:
        index = self.planes_combo.findData(planes)
        if index >= 0:
            self.planes_combo.setCurrentIndex(index)

    def _show_state(self, *_: Any) -> None:
        running = self.status.busy
        self.export_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _show_progress(self, *_: Any) -> None:
        self.progress_bar.setRange(0, max(int(self.status.total), 1))
        self.progress_bar.setValue(int(self.status.done))

    def _ask_path(self) -> None:
        path, chosen = QFileDialog.getSaveFileName(
            self, "Export isotropic volume", "isotropic.ome.zarr", EXPORT_FILTER
        )
        if path:
            if "TIFF" in chosen and not path.lower().endswith((".tif", ".tiff")):
                path += ".tif"
            elif "Zarr" in chosen and not path.lower().endswith((".zarr", ".tif", ".tiff")):
                path += ".ome.zarr"
            self.export_requested.emit(path)
