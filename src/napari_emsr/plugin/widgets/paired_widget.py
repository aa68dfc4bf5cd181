"""Paired LR / HR: the two image layers of the paired method, its lateral factor and the registration.

Shown instead of the Input box when the method is ``paired``. The widget shows a
:class:`~napari_emsr.plugin.state.PairedParameters` and writes the user's edits to it; the panel derives the
factor, registers the pair and says what is wrong (:mod:`napari_emsr.plugin.flows.paired`).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from napari_emsr.plugin.state import PairedParameters

#: The first item of each picker: no layer.
NO_LR = "(none: LR made from the HR by the recipe)"
NO_HR = "(none: apply a trained or loaded model)"


class PairedWidget(QGroupBox):
    """LR and HR layer pickers, the factor s (derived, editable), a Register button and its result.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose image layers are offered.
    params : PairedParameters
        What the widget shows and edits.

    Signals
    -------
    register_requested()
        The Register button was pressed.
    """

    register_requested = Signal()

    def __init__(self, viewer: Any, params: PairedParameters, parent: QWidget | None = None):
        super().__init__("Paired LR / HR", parent)
        self._viewer = viewer
        self.params = params
        self.lr_combo = QComboBox()
        self.lr_combo.setToolTip(
            "The low-resolution (LR) layer: a large field or a whole series, image or stack. Training pairs it with "
            "the HR (the HR field is found in it); Reconstruct and Export make its xy planes s times finer. None: "
            "the HR alone trains, LR inputs made from it by the Recipe (I: bicubic; II: blur and noise)"
        )
        self.hr_combo = QComboBox()
        self.hr_combo.setToolTip(
            "The high-resolution (HR) layer: a small field of the LR's region at s times finer pixels (noise is fine: "
            "EMSR, Khateri et al., needs no clean reference); the training target. Same pixel type and number of "
            "planes as the LR"
        )
        self.factor_box = QDoubleSpinBox()
        self.factor_box.setDecimals(3)
        self.factor_box.setRange(1.0, 100.0)
        self.factor_box.setSingleStep(0.5)
        self.factor_box.setKeyboardTracking(False)
        self.factor_box.setValue(float(params.factor))
        self.factor_box.setMinimumWidth(self.factor_box.sizeHint().width())
        self.factor_box.setToolTip(
            "s: HR pixels per LR pixel (e.g. 2, or 3.33). Read from the layers' pixel sizes (their scale), else "
            "from their shapes (two images of the same field); type it to override"
        )
        self.factor_note = QLabel("")
        self.register_button = QPushButton("Register")
        self.register_button.setToolTip(
            "Find the HR field in the LR field (normalised cross-correlation, then phase correlation; "
            "napari_emsr.methods.paired.registration) and outline it on the LR layer"
        )
        self.registration_label = QLabel("")
        self.registration_label.setWordWrap(True)

        form = QFormLayout(self)
        form.addRow("LR layer", self.lr_combo)
        form.addRow("HR layer", self.hr_combo)
        factor_row = QHBoxLayout()
        factor_row.addWidget(self.factor_box)
        factor_row.addWidget(self.factor_note, 1)
        factor_row.addWidget(self.register_button)
        form.addRow("Factor s", factor_row)
        form.addRow(self.registration_label)

        self.lr_combo.currentIndexChanged.connect(lambda _: setattr(params, "lr", self.lr_combo.currentData()))
        self.hr_combo.currentIndexChanged.connect(lambda _: setattr(params, "hr", self.hr_combo.currentData()))
        self.factor_box.valueChanged.connect(self._on_factor_typed)
        self.register_button.clicked.connect(self.register_requested)
        params.events.lr.connect(lambda name: self._show_layer(self.lr_combo, name))
        params.events.hr.connect(lambda name: self._show_layer(self.hr_combo, name))
        params.events.factor.connect(self._show_factor)
        params.events.factor_from.connect(self._show_factor)
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self._show_factor()

    # -- layers ---------------------------------------------------------------------------------------
    def _image_names(self) -> list[str]:
        from napari.layers import Image

        return [layer.name for layer in self._viewer.layers if isinstance(layer, Image)]

    def _refresh_layers(self, event: Any = None) -> None:
        try:
            self.lr_combo.count()
        except RuntimeError:  # the panel was closed while the viewer lives on
            self._disconnect()
            return
        names = self._image_names()
        for layer in self._viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        for combo, none, picked in ((self.lr_combo, NO_LR, "lr"), (self.hr_combo, NO_HR, "hr")):
            items = [None, *names]
            if items == [combo.itemData(i) for i in range(combo.count())]:
                continue
            blocked = combo.blockSignals(True)
            combo.clear()
            combo.addItem(none, None)
            for name in names:
                combo.addItem(name, name)
            combo.blockSignals(blocked)
            current = getattr(self.params, picked)
            if current in names:
                self._show_layer(combo, current)
            else:
                setattr(self.params, picked, None)
                self._show_layer(combo, None)

    def _disconnect(self) -> None:
        events = self._viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.disconnect(self._refresh_layers)

    def _show_layer(self, combo: QComboBox, name: str | None) -> None:
        index = max(combo.findData(name), 0) if name is not None else 0
        if combo.currentIndex() != index:
            blocked = combo.blockSignals(True)
            combo.setCurrentIndex(index)
            combo.blockSignals(blocked)

    def set_layers(self, lr: Any = None, hr: Any = None) -> None:
        """Pick the LR and HR layers (layers of the viewer, or their names; None: none): the pair is checked once,
        with both (never the new LR with the old HR)."""
        self._refresh_layers()
        lr, hr = getattr(lr, "name", lr), getattr(hr, "name", hr)
        if lr != self.params.lr and hr != self.params.hr:
            with self.params.events.lr.blocked():
                self.params.lr = lr
            self._show_layer(self.lr_combo, lr)
        self.params.lr = lr
        self.params.hr = hr

    # -- factor ---------------------------------------------------------------------------------------
    def _on_factor_typed(self, value: float) -> None:
        self.params.factor_from = "typed"
        self.params.factor = float(value)

    def _show_factor(self, *_: Any) -> None:
        blocked = self.factor_box.blockSignals(True)
        self.factor_box.setValue(float(self.params.factor))
        self.factor_box.blockSignals(blocked)
        source = self.params.factor_from
        self.factor_note.setText(f"from {source}" if source in ("pixel sizes", "sizes") else source)

    def show_registration(self, text: str, tip: str = "") -> None:
        """Show the registration's result (or what went wrong) under the factor."""
        self.registration_label.setText(text)
        self.registration_label.setToolTip(tip)
