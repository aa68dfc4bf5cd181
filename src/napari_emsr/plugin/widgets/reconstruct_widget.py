"""Reconstruct: which restored planes to add as lazy layers."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_emsr.plugin.state import PLANE_LABELS, PLANES, ReconstructParameters


class ReconstructWidget(QGroupBox):
    """Check boxes for the xz, yz and fused reconstructions and a button that adds them as layers.

    Parameters
    ----------
    params : ReconstructParameters
        Its ``planes`` are shown and edited here.

    Signals
    -------
    reconstruct_requested()
        The Reconstruct button was pressed.
    """

    reconstruct_requested = Signal()

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
        self.enhance_check = QCheckBox("enhance (same resolution)")
        self.enhance_check.setToolTip(
            "Paired model: apply it at the LR layer's own resolution (denoise and sharpen: the enhancer of EMSR, "
            "Khateri et al.) instead of making its xy planes s times finer"
        )
        self.enhance_check.setVisible(False)
        self.deband_check = QCheckBox("deband")
        self.deband_check.setToolTip(
            "Filter each restored plane by its place between sections so that the planes between sections are as "
            "detailed as the sections: no bands with the section period (emsr apply --deband; off: the network's "
            "output as it is)"
        )
        self.button = QPushButton("Reconstruct")
        self.button.setToolTip("Add lazy isotropic layers: a plane is computed only when you look at it")
        row = QHBoxLayout()
        for check in self.checks.values():
            row.addWidget(check)
        row.addWidget(self.enhance_check)
        row.addWidget(self.deband_check)
        row.addWidget(self.button, 1)
        self.estimate_label = QLabel("")
        self.estimate_label.setWordWrap(True)
        self.estimate_label.setVisible(False)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.estimate_label)
        self.quality_label = QLabel("")
        self.quality_label.setWordWrap(True)
        self.quality_label.setVisible(False)
        layout.addWidget(self.quality_label)
        self.heldout_check = QCheckBox("judge on held-out sections")
        self.heldout_check.setToolTip(
            "After training: hold every other section of the stack out, restore it from the others with a small "
            "judge trained like the model, and score it against the real sections (dB over cubic). Costs a "
            "short training; shown in the quality line and as a point in the gain plot"
        )
        self.heldout_check.setChecked(params.heldout)
        self.heldout_check.toggled.connect(lambda on: setattr(params, "heldout", bool(on)))
        params.events.heldout.connect(self._show_heldout)
        # NOTE: the held-out box goes in the row under the quality line (the panel puts it beside Compare, so that
        # the panel fits a 1600 x 1150 window unscrolled)
        layout.addWidget(self.heldout_check)
        self._show_planes(params.planes)
        for check in self.checks.values():
            check.toggled.connect(self._on_checked)
        params.events.planes.connect(self._show_planes)
        self.enhance_check.setChecked(params.enhance)
        self.enhance_check.toggled.connect(lambda on: setattr(params, "enhance", bool(on)))
        self.deband_check.setChecked(params.deband)
        self.deband_check.toggled.connect(lambda on: setattr(params, "deband", bool(on)))
        params.events.enhance.connect(self._show_enhance)
        self.button.clicked.connect(self.reconstruct_requested)

    def set_lateral(self, on: bool) -> None:
        """A paired method: the enhance check box instead of the xz / yz / fused ones (it restores xy planes)."""
        for check in self.checks.values():
            check.setVisible(not on)
        self.deband_check.setVisible(not on)
        self.heldout_check.setVisible(not on)
        self.enhance_check.setVisible(on)

    def _show_enhance(self, on: bool, *_: Any) -> None:
        blocked = self.enhance_check.blockSignals(True)
        self.enhance_check.setChecked(bool(on))
        self.enhance_check.blockSignals(blocked)

    def _show_heldout(self, on: bool, *_: Any) -> None:
        blocked = self.heldout_check.blockSignals(True)
        self.heldout_check.setChecked(bool(on))
        self.heldout_check.blockSignals(blocked)

    def _show_planes(self, planes: Any, *_: Any) -> None:
        for plane, check in self.checks.items():
            blocked = check.blockSignals(True)
            check.setChecked(plane in planes)
            check.blockSignals(blocked)

    def _on_checked(self, _: bool) -> None:
        self.params.planes = tuple(plane for plane, check in self.checks.items() if check.isChecked())

    def show_estimate(self, text: str, tip: str = "") -> None:
        """Show, under the button, how long a new plane or block takes here (empty: hide it)."""
        self.estimate_label.setText(text)
        self.estimate_label.setToolTip(tip)
        self.estimate_label.setVisible(bool(text))

    def show_quality(self, text: str, tip: str = "") -> None:
        """Show the reference-free measures of the last reconstruction (empty: hide the line)."""
        self.quality_label.setText(text)
        self.quality_label.setToolTip(tip)
        self.quality_label.setVisible(bool(text))
