"""Compare: the input, its cubic interpolation and the restored volume side by side, or flipped in one view."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

#: (label, planes) of the views offered: the planes a restoration is made for.
VIEW_CHOICES = (("xz planes (page through y)", "xz"), ("yz planes (page through x)", "yz"))


class CompareWidget(QGroupBox):
    """A plane picker, a *Side by side* button and a *Flip cubic / restored* button.

    Signals
    -------
    side_by_side_requested(str)
        Show input, cubic and restored side by side in napari's grid, in these planes (``"xz"``, ``"yz"``).
    flip_requested()
        Show, in one view, cubic where restored was shown and the other way round (same plane).
    """

    side_by_side_requested = Signal(str)
    flip_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Compare", parent)
        self.planes_combo = QComboBox()
        for label, planes in VIEW_CHOICES:
            self.planes_combo.addItem(label, planes)
        self.planes_combo.setToolTip("The planes to compare in: those the restoration is made for")
        self.side_button = QPushButton("Side by side")
        self.side_button.setToolTip(
            "Input, cubic interpolation and restored in napari's grid, at the same plane and zoom, each labelled "
            "(restores first if needed)"
        )
        self.flip_button = QPushButton("Flip cubic / restored")
        self.flip_button.setToolTip("One view: swap the cubic interpolation and the restored plane (same plane)")
        row = QHBoxLayout()
        row.addWidget(self.planes_combo, 1)
        row.addWidget(self.side_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.flip_button)
        self.side_button.clicked.connect(lambda: self.side_by_side_requested.emit(self.planes()))
        self.flip_button.clicked.connect(self.flip_requested)

    def planes(self) -> str:
        """The planes picked (``"xz"`` or ``"yz"``)."""
        return str(self.planes_combo.currentData())
