"""Reconstruct: which restored planes to add as lazy layers."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QGroupBox, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

PLANES = ("xz", "yz", "fuse")
LABELS = {"xz": "xz-restored", "yz": "yz-restored", "fuse": "fused"}


class ReconstructWidget(QGroupBox):
    """Check boxes for the xz, yz and fused reconstructions and a button that adds them as layers.

    Signals
    -------
    reconstruct_requested(list)
        The picked planes, a list among ``"xz"``, ``"yz"``, ``"fuse"``.
    background_toggled(bool)
        The user ticked or cleared "Compute planes in the background" (napari's asynchronous rendering).
    """

    reconstruct_requested = Signal(list)
    background_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Reconstruct", parent)
        self.checks = {plane: QCheckBox(LABELS[plane]) for plane in PLANES}
        self.checks["xz"].setChecked(True)
        self.checks["xz"].setToolTip("Restore every xz plane (page through y to see them)")
        self.checks["yz"].setToolTip("Restore every yz plane (page through x to see them)")
        self.checks["fuse"].setToolTip(
            "Mean of the xz and yz restorations (as CARE fuses them): computed in blocks of 64 planes with the yz "
            "planes crossing them; slow to browse on a CPU (about 35 s a block: tick 'Compute planes in the "
            "background'), best for export or on a GPU"
        )
        self.background = QCheckBox("Compute planes in the background")
        self.background.setToolTip(
            "napari's asynchronous rendering (Preferences > Experimental > Render Layers Asynchronously; napari "
            "keeps the choice): a new plane is computed in a thread, so napari stays usable while a slow plane "
            "(the fused layer on a CPU) is on its way"
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
        self.button.clicked.connect(self._on_click)
        self.background.toggled.connect(self.background_toggled)

    def planes(self) -> list[str]:
        """The checked planes."""
        return [plane for plane, check in self.checks.items() if check.isChecked()]

    def set_planes(self, planes: list[str]) -> None:
        """Check exactly ``planes``."""
        for plane, check in self.checks.items():
            check.setChecked(plane in planes)

    def set_background(self, on: bool) -> None:
        """Show napari's current asynchronous-rendering setting (emits nothing)."""
        blocked = self.background.blockSignals(True)
        self.background.setChecked(bool(on))
        self.background.blockSignals(blocked)

    def _on_click(self) -> None:
        self.reconstruct_requested.emit(self.planes())
