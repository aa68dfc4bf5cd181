"""Compare: the input, its cubic interpolation and the restored volume side by side, or flipped in one view."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget

#: (label, planes) of the views offered: the planes a restoration is made for.
VIEW_CHOICES = (("xz (page y)", "xz"), ("yz (page x)", "yz"))


class CompareWidget(QWidget):
    """A plane picker, a *Side by side* button and a *Flip* (cubic / restored) button, in one row.

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
        super().__init__(parent)
        self.planes_combo = QComboBox()
        for label, planes in VIEW_CHOICES:
            self.planes_combo.addItem(label, planes)
        self.planes_combo.setToolTip("The planes to compare in: those the restoration is made for")
        self.side_button = QPushButton("Side by side")
        self.side_button.setToolTip(
            "Input, cubic interpolation and restored in napari's grid, at the same plane and zoom, each labelled "
            "(restores first if needed)"
        )
        self.flip_button = QPushButton("Flip")
        self.flip_button.setToolTip(
            "One view: swap the cubic interpolation and the restored plane, at the same plane and zoom"
        )
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Compare in"))
        row.addWidget(self.planes_combo, 1)
        row.addWidget(self.side_button)
        row.addWidget(self.flip_button)
        self.side_button.clicked.connect(lambda: self.side_by_side_requested.emit(self.planes()))
        self.flip_button.clicked.connect(self.flip_requested)

    def planes(self) -> str:
        """The planes picked (``"xz"`` or ``"yz"``)."""
        return str(self.planes_combo.currentData())
