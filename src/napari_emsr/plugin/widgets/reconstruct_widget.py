"""Reconstruct: which restored planes to add as lazy layers, and whether napari computes planes in the background."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QGroupBox, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from napari_emsr.plugin.async_rendering import PREFERENCE
from napari_emsr.plugin.state import PLANE_LABELS, PLANES, ReconstructParameters


class ReconstructWidget(QGroupBox):
    """Check boxes for the xz, yz and fused reconstructions and a button that adds them as layers.

    The "Compute planes in the background" box shows napari's own asynchronous-rendering preference; the
    widget never changes it: a click only emits :attr:`background_requested`, and the panel asks the user.

    Parameters
    ----------
    params : ReconstructParameters
        Its ``planes`` are shown and edited here.

    Signals
    -------
    reconstruct_requested()
        The Reconstruct button was pressed.
    background_requested(bool)
        The user clicked the background box (the value they ask for).
    """

    reconstruct_requested = Signal()
    background_requested = Signal(bool)

    def __init__(self, params: ReconstructParameters, parent: QWidget | None = None):
        super().__init__("Reconstruct", parent)
        self.params = params
        self.checks = {plane: QCheckBox(PLANE_LABELS[plane]) for plane in PLANES}
        self.checks["xz"].setToolTip("Restore every xz plane (page through y to see them)")
        self.checks["yz"].setToolTip("Restore every yz plane (page through x to see them)")
        self.checks["fuse"].setToolTip(
            "Mean of the xz and yz restorations (as CARE fuses them): computed in blocks of 64 planes with the yz "
            "planes crossing them, so the first view of a block is slow on a CPU (benchmarks/"
            "bench_plane_latency.py --fused-viewer measures it); best for export or on a GPU"
        )
        self.background = QCheckBox("Compute planes in the background (napari preference)")
        self.background.setToolTip(
            f"napari's asynchronous rendering ({PREFERENCE}): a new plane is computed in a thread, "
            "so napari stays usable while a slow plane (the fused layer on a CPU) is on its way. It is napari's "
            "saved preference, kept for every session: changing it here asks first"
        )
        self.button = QPushButton("Reconstruct")
        self.button.setToolTip("Add lazy isotropic layers: a plane is computed only when you look at it")
        row = QHBoxLayout()
        for check in self.checks.values():
            row.addWidget(check)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.background)
        layout.addWidget(self.button)
        self._show_planes(params.planes)
        for check in self.checks.values():
            check.toggled.connect(self._on_checked)
        params.events.planes.connect(self._show_planes)
        self.button.clicked.connect(self.reconstruct_requested)
        self.background.clicked.connect(self._on_background_clicked)

    def _show_planes(self, planes: Any, *_: Any) -> None:
        for plane, check in self.checks.items():
            blocked = check.blockSignals(True)
            check.setChecked(plane in planes)
            check.blockSignals(blocked)

    def _on_checked(self, _: bool) -> None:
        self.params.planes = tuple(plane for plane, check in self.checks.items() if check.isChecked())

    def set_background(self, on: bool) -> None:
        """Show napari's current asynchronous-rendering setting (emits nothing)."""
        blocked = self.background.blockSignals(True)
        self.background.setChecked(bool(on))
        self.background.blockSignals(blocked)

    def _on_background_clicked(self, checked: bool) -> None:
        # NOTE: the box shows napari's setting, not the click: the panel sets it back unless napari's changes.
        self.set_background(not checked)
        self.background_requested.emit(bool(checked))
