"""Export the isotropic volume to OME-Zarr or TIFF in the background, with progress and cancel."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_emsr.plugin.state import ExportStatus, ReconstructParameters, clock

EXPORT_FILTER = "OME-Zarr (*.ome.zarr *.zarr);;TIFF (*.tif *.tiff)"
PLANE_CHOICES = (("fused (xz + yz)", "fuse"), ("xz-restored", "xz"), ("yz-restored", "yz"))


class ExportWidget(QGroupBox):
    """Which reconstruction to export, an Export button (asks for a path), a progress bar with the blocks written
    and the time left, Cancel, where to compute (here or a dask scheduler) and the time it should take here.

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
        self.scheduler_edit = QLineEdit(params.scheduler)
        self.scheduler_edit.setPlaceholderText("here, or tcp://host:port")
        self.scheduler_edit.setToolTip(
            "Where the export computes: empty for this process, a dask scheduler address (tcp://host:8786) or "
            "local:N (N worker processes here). Workers read the input and write a zarr output themselves: "
            "both must be on a file system they see (a layer held in memory is sent to them)"
        )
        #: How long an export should take here (shown in the bar before an export starts; its tooltip says how).
        self.estimate_text = ""
        row = QHBoxLayout()
        row.addWidget(self.planes_combo)
        row.addWidget(self.export_button)
        row.addWidget(self.cancel_button)
        where = QHBoxLayout()
        where.addWidget(self.progress_bar, 3)
        where.addWidget(QLabel("on"))
        where.addWidget(self.scheduler_edit, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(where)
        self.scheduler_edit.editingFinished.connect(
            lambda: setattr(params, "scheduler", self.scheduler_edit.text().strip())
        )
        params.events.scheduler.connect(self._show_scheduler)
        self._show_planes(params.export_planes)
        self.planes_combo.currentIndexChanged.connect(
            lambda _: setattr(params, "export_planes", str(self.planes_combo.currentData()))
        )
        params.events.export_planes.connect(self._show_planes)
        self.export_button.clicked.connect(self._ask_path)
        self.cancel_button.clicked.connect(self.cancel_requested)
        status.events.state.connect(self._show_state)
        for event in (status.events.done, status.events.total, status.events.elapsed, status.events.state):
            event.connect(self._show_progress)
        self._show_state()

    def set_lateral(self, on: bool) -> None:
        """A paired method: no choice of planes (the LR layer's xy planes, finer or enhanced, are written)."""
        self.lateral = bool(on)
        self.planes_combo.setVisible(not on)

    def _show_scheduler(self, spec: str, *_: Any) -> None:
        if self.scheduler_edit.text().strip() != spec:
            self.scheduler_edit.setText(spec)

    def show_estimate(self, text: str, tip: str = "") -> None:
        """Show how long an export should take here, in the bar until an export starts (empty: none)."""
        self.estimate_text = text
        self.progress_bar.setToolTip(tip)
        self._show_progress()

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
        status = self.status
        if status.busy:
            self.progress_bar.setFormat(status.progress_text().replace("%", "%%"))
        elif status.done:
            # NOTE: an export that ended (or was cancelled) has no time left to tell
            ended = "done" if status.total and status.done >= status.total else "stopped at"
            self.progress_bar.setFormat(f"{ended} {status.done}/{status.total} blocks in {clock(status.elapsed)}")
        else:
            self.progress_bar.setFormat((self.estimate_text or "not started").replace("%", "%%"))

    def _ask_path(self) -> None:
        title, default = (("Export the super-resolved volume", "lateral.ome.zarr") if getattr(self, "lateral", False)
                          else ("Export isotropic volume", "isotropic.ome.zarr"))
        path, chosen = QFileDialog.getSaveFileName(self, title, default, EXPORT_FILTER)
        if path:
            if "TIFF" in chosen and not path.lower().endswith((".tif", ".tiff")):
                path += ".tif"
            elif "Zarr" in chosen and not path.lower().endswith((".zarr", ".tif", ".tiff")):
                path += ".ome.zarr"
            self.export_requested.emit(path)
